"""aero-relay: a UDP relay for browsers (WebRTC DataChannel and WebSocket), on Trio."""

__version__ = "0.1.0"
