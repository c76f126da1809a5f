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

__all__ = ["WebSocketConn", "WebSocketDisconnect"]

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
