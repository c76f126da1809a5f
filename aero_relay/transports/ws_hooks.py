"""What ASGI does not expose about a WebSocket, hooked into hypercorn's WebSocket stream.

The original's keepalive rules need things ASGI hides: every received frame including pings
and pongs pushes the idle deadline forward (F-079, F-089), the server sends its own pings, the
read limit changes per connection and per phase (F-065, F-085, F-093) and the application must
know when the peer went over it (to count `*_dropped_oversized`). Also, like the original
(F-064), no permessage-deflate is negotiated: compression costs CPU per datagram and widens
the attack surface for no gain on binary frames.

`install()` adds, for each WebSocket, a `WsControl` at `scope["extensions"]["aero.ws"]`. It
wraps a few methods of hypercorn 0.18's `WSStream`, `WebsocketBuffer` and `Handshake`, which
are private API: hypercorn is pinned exactly and `install()` fails loudly at startup if the
shapes it relies on are gone.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

__all__ = ["EXTENSION", "HooksUnavailableError", "WsControl", "install", "ws_control"]

EXTENSION = "aero.ws"
_SUPPORTED_HYPERCORN = "0.18.0"


class HooksUnavailableError(RuntimeError):
    """hypercorn's internals changed; the WebSocket hooks cannot be installed."""


class WsControl:
    """Per-connection controls the application reaches through the ASGI scope."""

    __slots__ = ("_stream", "closed", "last_activity", "too_large", "too_large_event")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.last_activity = trio.current_time()
        # The peer sent a message over the read limit; hypercorn has already sent Close 1009.
        self.too_large = False
        self.too_large_event = trio.Event()
        self.closed = False

    def touch(self) -> None:
        self.last_activity = trio.current_time()

    def set_max_message_size(self, limit: int) -> None:
        self._stream.buffer.max_length = limit

    async def ping(self, payload: bytes = b"") -> bool:
        """Send a Ping frame; False when the connection is already gone."""
        from wsproto.events import Ping

        if self.closed or self._stream.closed:
            return False
        try:
            await self._stream._send_wsproto_event(Ping(payload=payload))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return not self._stream.closed


def ws_control(scope: dict[str, Any]) -> WsControl:
    ctl = scope.get("extensions", {}).get(EXTENSION)
    if not isinstance(ctl, WsControl):
        raise HooksUnavailableError("WebSocket hooks are not installed (call ws_hooks.install())")
    return ctl


class _ActivityConnection:
    """Wraps wsproto's Connection so every event from the peer touches the control."""

    __slots__ = ("_ctl", "_inner")

    def __init__(self, inner: Any, ctl: WsControl) -> None:
        self._inner = inner
        self._ctl = ctl

    def events(self) -> Iterator[Any]:
        for event in self._inner.events():
            self._ctl.touch()
            yield event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ScopeTaskGroup:
    """Puts the control into the scope before the application task can see it."""

    __slots__ = ("_ctl", "_inner")

    def __init__(self, inner: Any, ctl: WsControl) -> None:
        self._inner = inner
        self._ctl = ctl

    async def spawn_app(
        self, app: Any, config: Any, scope: Any, send: Any
    ) -> Callable[[Any], Awaitable[None]]:
        scope.setdefault("extensions", {})[EXTENSION] = self._ctl
        result: Callable[[Any], Awaitable[None]] = await self._inner.spawn_app(app, config, scope, send)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_installed = False


def install() -> None:
    """Install the hooks (idempotent). Raises HooksUnavailableError on an unsupported hypercorn."""
    global _installed
    if _installed:
        return
    import hypercorn
    import hypercorn.protocol.ws_stream as ws_stream
    from hypercorn.protocol.events import Request, StreamClosed

    version = getattr(hypercorn, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("hypercorn")
    required = {
        "WSStream": ("handle", "_accept", "_send_wsproto_event"),
        "WebsocketBuffer": ("extend",),
        "Handshake": ("__init__",),
    }
    for cls_name, attrs in required.items():
        cls = getattr(ws_stream, cls_name, None)
        if cls is None or any(not hasattr(cls, a) for a in attrs):
            raise HooksUnavailableError(f"hypercorn {version}: {cls_name} lacks {attrs}")
    if list(inspect.signature(ws_stream.Handshake.__init__).parameters) != [
        "self",
        "headers",
        "http_version",
    ]:
        raise HooksUnavailableError(f"hypercorn {version}: Handshake.__init__ signature changed")
    if version != _SUPPORTED_HYPERCORN:
        raise HooksUnavailableError(
            f"hypercorn {version} is not supported (pinned {_SUPPORTED_HYPERCORN}); the WebSocket hooks "
            "touch its internals"
        )

    wsstream = ws_stream.WSStream
    orig_handle = wsstream.handle
    orig_accept = wsstream._accept
    orig_extend = ws_stream.WebsocketBuffer.extend
    orig_handshake_init = ws_stream.Handshake.__init__
    too_large_error = ws_stream.FrameTooLargeError

    async def handle(self: Any, event: Any) -> None:
        if isinstance(event, Request) and getattr(self, "_aero_ctl", None) is None:
            ctl = WsControl(self)
            self._aero_ctl = ctl
            self.buffer._aero_ctl = ctl
            self.task_group = _ScopeTaskGroup(self.task_group, ctl)
        elif isinstance(event, StreamClosed):
            existing: WsControl | None = getattr(self, "_aero_ctl", None)
            if existing is not None:
                existing.closed = True
        await orig_handle(self, event)

    async def accept(self: Any, message: Any) -> None:
        await orig_accept(self, message)
        ctl = getattr(self, "_aero_ctl", None)
        if ctl is not None:
            self.connection = _ActivityConnection(self.connection, ctl)

    def extend(self: Any, event: Any) -> None:
        try:
            orig_extend(self, event)
        except too_large_error:
            ctl = getattr(self, "_aero_ctl", None)
            if ctl is not None:
                ctl.too_large = True
                ctl.too_large_event.set()
            raise

    def handshake_init(self: Any, headers: Any, http_version: str) -> None:
        orig_handshake_init(self, headers, http_version)
        self.extensions = None  # never negotiate permessage-deflate (F-064)

    wsstream.handle = handle  # type: ignore[method-assign]
    wsstream._accept = accept  # type: ignore[method-assign]
    ws_stream.WebsocketBuffer.extend = extend  # type: ignore[method-assign]
    ws_stream.Handshake.__init__ = handshake_init  # type: ignore[method-assign]
    _installed = True
