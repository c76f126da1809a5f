"""A real L2 backend for tests: a Trio WebSocket server on 127.0.0.1 that checks a dial as
`aero-l2-proxy` does and speaks just enough `aero-l2-tunnel-v1` (PING -> PONG, echo).

Admission, in aero-l2-proxy's order: the Origin (403 when required and wrong or missing), the
token (401 unless `?token=`, `?apiKey=` or an offered `aero-l2-token.<token>` carries it), the
`aero_session` cookie (401). Then it selects `aero-l2-tunnel-v1` when offered (unless told to
refuse it), records the request, and echoes binary messages (a PING gets its PONG). Tests can
also drive each accepted connection directly (`next_connection()`) to misbehave: send text or
oversized messages, close with any code, or stop reading (`stall=True`); `accept_delay` answers
the upgrade late and `stall_handshake=True` never answers it.

PING and PONG bytes come from the shared vectors (`aero-l2-tunnel-v1` in aero-vectors-v1.json).
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from pathlib import Path

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
SUBPROTOCOL = "aero-l2-tunnel-v1"
TOKEN_PREFIX = "aero-l2-token."

MAGIC, VERSION = 0xA2, 0x03
TYPE_PING, TYPE_PONG = 0x01, 0x02


def l2_vector(name: str) -> bytes:
    """The wire bytes of a valid `aero-l2-tunnel-v1` vector (e.g. ``ping.u64be_timestamp_ms``)."""
    doc = json.loads((VECTORS / "aero-vectors-v1.json").read_text())
    for v in doc["aero-l2-tunnel-v1"]["valid"]:
        if v["name"] == name:
            return bytes.fromhex(v["wireHex"])
    raise KeyError(name)


PING = l2_vector("ping.u64be_timestamp_ms")
PONG = l2_vector("pong.echo_u64be_timestamp_ms")


def pong_for(ping: bytes) -> bytes | None:
    """The PONG answering `ping` (same flags and payload), or None if it is not a PING."""
    if len(ping) >= 4 and ping[0] == MAGIC and ping[1] == VERSION and ping[2] == TYPE_PING:
        return bytes((MAGIC, VERSION, TYPE_PONG)) + ping[3:]
    return None


@attrs.frozen
class SeenRequest:
    """One upgrade request as the backend saw it."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]  # lowercased names
    subprotocols: tuple[str, ...]
    status: int  # 101, or the rejection status

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


@attrs.define(eq=False)
class L2Backend:
    require_origin: str | None = None
    require_token: str | None = None
    require_cookie: str | None = None
    refuse_subprotocol: bool = False
    stall: bool = False
    stall_handshake: bool = False
    accept_delay: float = 0.0  # seconds before answering the upgrade
    url: str = ""
    requests: list[SeenRequest] = attrs.field(factory=list)
    received: list[bytes] = attrs.field(factory=list)
    texts: list[str] = attrs.field(factory=list)
    closes: list[tuple[int, str | None]] = attrs.field(factory=list)
    _conn_send: trio.MemorySendChannel[WebSocketConnection] | None = None
    _conn_recv: trio.MemoryReceiveChannel[WebSocketConnection] | None = None

    def __attrs_post_init__(self) -> None:
        self._conn_send, self._conn_recv = trio.open_memory_channel[WebSocketConnection](16)

    async def next_connection(self, timeout: float = 10) -> WebSocketConnection:
        """The next accepted connection (the server side), to drive directly."""
        assert self._conn_recv is not None
        with trio.fail_after(timeout):
            return await self._conn_recv.receive()

    async def handle(self, request: WebSocketRequest) -> None:
        headers: dict[str, list[str]] = {}
        for k, v in request.headers:
            headers.setdefault(k.decode("latin-1").lower(), []).append(v.decode("utf-8", "surrogateescape"))
        parts = urllib.parse.urlsplit(request.path)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        offered = request.proposed_subprotocols

        def seen(status: int) -> None:
            self.requests.append(SeenRequest(parts.path, query, headers, offered, status))

        if self.stall_handshake:
            seen(0)
            await trio.sleep_forever()
        await trio.sleep(self.accept_delay)
        if self.require_origin is not None and headers.get("origin") != [self.require_origin]:
            seen(403)
            await request.reject(403, body=b"origin not allowed")
            return
        if self.require_token is not None:
            presented = query.get("token", []) + query.get("apiKey", [])
            presented += [p[len(TOKEN_PREFIX) :] for p in offered if p.startswith(TOKEN_PREFIX)]
            if self.require_token not in presented:
                seen(401)
                await request.reject(401, body=b"unauthorized")
                return
        if self.require_cookie is not None:
            cookies = [c.strip() for line in headers.get("cookie", []) for c in line.split(";")]
            if f"aero_session={self.require_cookie}" not in cookies:
                seen(401)
                await request.reject(401, body=b"session required")
                return
        seen(101)
        chosen = SUBPROTOCOL if SUBPROTOCOL in offered and not self.refuse_subprotocol else None
        conn = await request.accept(subprotocol=chosen)
        assert self._conn_send is not None
        self._conn_send.send_nowait(conn)
        if self.stall:
            await trio.sleep_forever()
        try:
            while True:
                msg = await conn.get_message()
                if isinstance(msg, str):
                    self.texts.append(msg)
                    continue
                self.received.append(msg)
                await conn.send_message(pong_for(msg) or msg)
        except ConnectionClosed as exc:
            reason = exc.reason
            if reason is not None:
                self.closes.append((int(reason.code), reason.reason))


async def start_backend(nursery: trio.Nursery, **behaviour: object) -> L2Backend:
    """Serve an `L2Backend` on 127.0.0.1 (a free port) until `nursery` is cancelled."""
    backend = L2Backend(**behaviour)  # type: ignore[arg-type]
    server = await nursery.start(
        lambda task_status: serve_websocket(
            backend.handle,
            "127.0.0.1",
            0,
            None,
            max_message_size=1 << 20,
            connect_timeout=30,
            disconnect_timeout=2,
            task_status=task_status,
        )
    )
    backend.url = f"ws://127.0.0.1:{server.port}/l2"
    return backend


def dead_url() -> str:
    """A ws:// URL on a loopback port where nothing listens (the backend is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}/l2"
