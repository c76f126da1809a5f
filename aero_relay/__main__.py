"""`python -m aero_relay` == `aero-relay`."""

from aero_relay.cli import entrypoint

entrypoint()
