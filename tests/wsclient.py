"""A small, fully controllable WebSocket test client (trio + wsproto).

Unlike browser-like clients it can refuse to answer pings, send arbitrary frames and report the
exact close code and reason the server sent, which the close-code tests need.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


class Rejected(Exception):
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body


@attrs.define
class Closed(Exception):
    code: int | None
    reason: str


class WSClient:
    def __init__(self, stream: trio.SocketStream, conn: WSConnection, answer_pings: bool) -> None:
        self.stream = stream
        self.conn = conn
        self.answer_pings = answer_pings
        self.pings_received = 0
        self.accept: AcceptConnection | None = None
        self._pending: list[Event] = []
        self._text_parts: list[str] = []
        self._byte_parts: list[bytes] = []
        self.close_event: CloseConnection | None = None

    async def _flush(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def _next_event(self) -> Event:
        while not self._pending:
            data = await self.stream.receive_some(65536)
            self.conn.receive_data(data if data else None)
            self._pending.extend(self.conn.events())
            if not data and not self._pending:
                raise Closed(None, "connection lost")
        return self._pending.pop(0)

    async def receive(self) -> bytes | str:
        """The next complete data message; raises Closed when the server closes."""
        while True:
            event = await self._next_event()
            if isinstance(event, TextMessage):
                self._text_parts.append(event.data)
                if event.message_finished:
                    text = "".join(self._text_parts)
                    self._text_parts.clear()
                    return text
            elif isinstance(event, BytesMessage):
                self._byte_parts.append(bytes(event.data))
                if event.message_finished:
                    data = b"".join(self._byte_parts)
                    self._byte_parts.clear()
                    return data
            elif isinstance(event, Ping):
                self.pings_received += 1
                if self.answer_pings:
                    await self._flush(event.response())
            elif isinstance(event, Pong):
                continue
            elif isinstance(event, CloseConnection):
                self.close_event = event
                with contextlib.suppress(Exception):  # the server may have gone already
                    await self._flush(event.response())
                raise Closed(event.code, event.reason or "")

    async def receive_json(self) -> Any:
        msg = await self.receive()
        assert isinstance(msg, str), f"expected text, got {msg!r}"
        return json.loads(msg)

    async def expect_close(self, timeout: float = 5.0) -> Closed:
        """Read (and discard) messages until the server closes; return the close code and reason."""
        with trio.fail_after(timeout):
            while True:
                try:
                    await self.receive()
                except Closed as closed:
                    return closed

    async def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            await self._flush(TextMessage(data=data))
        else:
            await self._flush(BytesMessage(data=data))

    async def send_json(self, obj: object) -> None:
        await self.send(json.dumps(obj))

    async def ping(self, payload: bytes = b"") -> None:
        await self._flush(Ping(payload=payload))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self._flush(CloseConnection(code=code, reason=reason))
        await self.stream.aclose()


@asynccontextmanager
async def connect(
    host_port: str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    subprotocols: list[str] | None = None,
    extensions: list[Any] | None = None,
    answer_pings: bool = True,
) -> AsyncIterator[WSClient]:
    host, port = host_port.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    conn = WSConnection(ConnectionType.CLIENT)
    client = WSClient(stream, conn, answer_pings)
    try:
        req = Request(
            host=host_port,
            target=path,
            extra_headers=[(k.encode(), v.encode()) for k, v in (headers or [])],
            subprotocols=subprotocols or [],
            extensions=extensions or [],
        )
        await stream.send_all(conn.send(req))
        event = await client._next_event()
        if isinstance(event, RejectConnection):
            body = b""
            if event.has_body:
                while True:
                    ev = await client._next_event()
                    if isinstance(ev, RejectData):
                        body += ev.data
                        if ev.body_finished:
                            break
            raise Rejected(event.status_code, list(event.headers), body)
        assert isinstance(event, AcceptConnection), event
        client.accept = event
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
