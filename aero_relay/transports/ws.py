"""A thin WebSocket connection over raw ASGI, shared by `/udp` and `/webrtc/signal`.

These endpoints bypass Quart: they are on the per-datagram path (Quart adds a request context,
queues and wrappers per message) and they need the keepalive controls of `ws_hooks`.
Writes after the connection is gone are silently dropped (like the original, whose write
errors are ignored); reads raise `WebSocketDisconnect`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from aero_relay.transports.http_util import go_json
from aero_relay.transports.ws_hooks import SINK_ERROR_MESSAGE, WsControl, ws_control

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TRY_AGAIN",
    "CLOSE_UNSUPPORTED",
    "WRITE_DEADLINE",
    "CloseWith",
    "WebSocketConn",
    "WebSocketDisconnect",
    "keepalive",
]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
# F-079/F-096: the original's WebSocket write deadline.
WRITE_DEADLINE = 1.0


class CloseWith(Exception):
    """End a WebSocket: an optional `{"type":"error",code,message}` first, then Close(close_code, reason)."""

    def __init__(self, close_code: int, reason: str, code: str = "", message: str = "") -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.code = code
        self.message = message


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class WebSocketDisconnect(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class WebSocketConn:
    __slots__ = ("_receive", "_send", "accepted", "closed", "ctl", "scope")

    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.ctl: WsControl = ws_control(scope)
        self.accepted = False
        self.closed = False

    async def _next(self) -> dict[str, Any]:
        msg = await self._receive()
        self.ctl.taken()  # off hypercorn's queue (the binary fast path waits for none left)
        return msg

    async def wait_connect(self) -> bool:
        msg = await self._next()
        return bool(msg["type"] == "websocket.connect")

    async def accept(self) -> None:
        # F-064: no subprotocol is ever selected.
        await self._send({"type": "websocket.accept"})
        self.accepted = True

    async def _write(self, message: dict[str, Any]) -> None:
        """Every write after the handshake: tracked for the write deadline (ws_hooks.write_watchdog)."""
        ctl = self.ctl
        ctl.begin_send()
        try:
            await self._send(message)
        finally:
            ctl.end_send()

    async def reject(self, status: int, body: bytes, content_type: str) -> None:
        """An HTTP response instead of the upgrade (ASGI websocket.http.response)."""
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await self._send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await self._send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        self.closed = True

    async def receive(self) -> bytes | str:
        """The next data message; raises WebSocketDisconnect when the peer is gone."""
        if self.closed:
            raise WebSocketDisconnect(1006)
        msg = await self._next()
        kind = msg["type"]
        if kind == "websocket.receive":
            data = msg.get("bytes")
            if data is not None:
                return bytes(data)
            return str(msg.get("text") or "")
        if kind == SINK_ERROR_MESSAGE and self.ctl.sink_error is not None:
            raise self.ctl.sink_error  # the binary sink's own exception, raised here in the app
        self.closed = True
        raise WebSocketDisconnect(int(msg.get("code", 1006)))

    async def send_bytes(self, data: bytes) -> None:
        if not self.closed:
            await self._write({"type": "websocket.send", "bytes": data})

    async def send_bytes_batch(self, frames: Sequence[bytes]) -> None:
        """Send each frame as one binary message, in one write (`WsControl.send_binary_batch`)."""
        if not self.closed:
            await self.ctl.send_binary_batch(frames)

    async def send_text(self, text: str) -> None:
        if not self.closed:
            await self._write({"type": "websocket.send", "text": text})

    async def send_json(self, obj: object) -> None:
        await self.send_text(go_json(obj))

    async def close(self, code: int, reason: str = "") -> None:
        """Send a Close frame (once); never raises."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            try:
                await self._write({"type": "websocket.close", "code": code, "reason": reason})
            except Exception:  # the transport may be gone already
                return


async def keepalive(
    ws: WebSocketConn, ping_interval: float, idle_timeout: float, end: Callable[[int, str], None]
) -> None:
    """F-079/F-089: ping every `ping_interval`; any frame from the peer (data, ping, pong) pushes the
    idle deadline; `end(1000, "idle timeout")` after `idle_timeout` without one, and
    `end(1001, "ping failed")` when a ping cannot be sent."""
    ctl = ws.ctl
    next_ping = trio.current_time() + ping_interval
    while True:
        idle_deadline = ctl.last_activity + idle_timeout
        now = trio.current_time()
        if now >= idle_deadline:
            end(CLOSE_NORMAL, "idle timeout")
            return
        if now >= next_ping:
            if not await ctl.ping():
                end(CLOSE_GOING_AWAY, "ping failed")
                return
            next_ping = now + ping_interval
        await trio.sleep_until(min(idle_deadline, next_ping))
