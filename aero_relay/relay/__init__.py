"""Trio shell for relay sessions: registry, session nursery, datagram pipeline, bindings."""
