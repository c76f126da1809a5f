"""`GET /udp` end to end: a real server, a real WebSocket client, real UDP echo servers (section 10)."""

from __future__ import annotations

import json
import re
import socket
import struct

import pytest
import trio

from aero_relay.core.frames import decode, encode_v1, encode_v2
from aero_relay.observability.metrics import Event
from tests.conftest import RunningRelay, StartRelay
from tests.helpers import mint_jwt
from tests.wsclient import Closed, Rejected, WSClient, connect

HEX32 = re.compile(r"^[0-9a-f]{32}$")
NOW = 1_700_000_000
DEV = {"DESTINATION_POLICY_PRESET": "dev"}  # loopback echo servers need private networks allowed
LOOPBACK4 = socket.inet_aton("127.0.0.1")


async def udp_echo(nursery: trio.Nursery, family: int = socket.AF_INET) -> int:
    """A UDP echo server on loopback; returns its port."""
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))

    async def serve() -> None:
        with sock:
            while True:
                data, addr = await sock.recvfrom(65536)
                await sock.sendto(data, addr)

    nursery.start_soon(serve)
    return int(sock.getsockname()[1])


async def ready(client: WSClient) -> str:
    msg = await client.receive_json()
    assert msg["type"] == "ready", msg
    assert HEX32.match(msg["sessionId"])
    assert list(msg) == ["type", "sessionId"]
    return str(msg["sessionId"])


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.005)


async def test_plain_get_is_400_upgrade_required(start_relay: StartRelay) -> None:
    """F-081."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/udp")
    assert r.status_code == 400
    assert r.content == b'{"type":"error","code":"bad_message","message":"websocket upgrade required"}\n'


async def test_ready_in_mode_none_and_echo_v1(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    """F-082, F-083, F-092, F-095: v1 frame out, reply back as v1."""
    relay = await start_relay(DEV)
    port = await udp_echo(nursery)
    async with connect(relay.host_port, "/udp") as ws:
        await ready(ws)
        assert ws.accept is not None and ws.accept.subprotocol is None
        await ws.send(encode_v1(40000, LOOPBACK4, port, b"hello"))
        with trio.fail_after(5):
            reply = await ws.receive()
    assert isinstance(reply, bytes)
    frame = decode(reply, max_payload=1200)
    assert (frame.version, frame.guest_port, frame.remote_ip, frame.remote_port, frame.payload) == (
        1,
        40000,
        LOOPBACK4,
        port,
        b"hello",
    )
    m = relay.metrics
    assert m.value(Event.UDP_WS_CONNECTIONS) == 1
    assert m.value(Event.UDP_WS_DATAGRAMS_IN) == 1
    assert m.value(Event.UDP_WS_DATAGRAMS_OUT) == 1


async def test_v2_ipv6_echo(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    """F-118, F-120: a v2 IPv6 frame to ::1 comes back as v2 af 6."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        port = await udp_echo(nursery, socket.AF_INET6)
    except OSError:
        pytest.skip("::1 unavailable")
    relay = await start_relay(DEV)
    ip6 = socket.inet_pton(socket.AF_INET6, "::1")
    async with connect(relay.host_port, "/udp") as ws:
        await ready(ws)
        await ws.send(encode_v2(5000, ip6, port, b"six"))
        with trio.fail_after(5):
            reply = await ws.receive()
    frame = decode(reply, max_payload=1200)  # type: ignore[arg-type]
    assert (frame.version, frame.remote_ip, frame.payload) == (2, ip6, b"six")


async def test_default_policy_denies_loopback(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    """F-137: default prod preset denies everything; counted, connection stays up."""
    relay = await start_relay()
    port = await udp_echo(nursery)
    async with connect(relay.host_port, "/udp") as ws:
        await ready(ws)
        await ws.send(encode_v1(1, LOOPBACK4, port, b"x"))
        await wait_for(lambda: relay.metrics.value(Event.UDP_WS_DROPPED_DENIED_BY_POLICY) == 1)
        assert relay.metrics.value(Event.UDP_WS_DROPPED) == 1


async def test_malformed_and_oversized_payload_dropped_connection_continues(
    start_relay: StartRelay, nursery: trio.Nursery
) -> None:
    """F-095, F-097: decode errors are counted; the connection continues."""
    relay = await start_relay({**DEV, "MAX_DATAGRAM_PAYLOAD_BYTES": "100"})
    port = await udp_echo(nursery)
    async with connect(relay.host_port, "/udp") as ws:
        await ready(ws)
        await ws.send(b"\x00\x01")  # too short
        await ws.send(encode_v1(1, LOOPBACK4, port, b"y" * 101))  # within 124 bytes, payload over 100
        await ws.send(encode_v1(1, LOOPBACK4, port, b"ok"))
        with trio.fail_after(5):
            reply = await ws.receive()
    assert decode(reply, max_payload=100).payload == b"ok"  # type: ignore[arg-type]
    m = relay.metrics
    assert m.value(Event.UDP_WS_DROPPED_MALFORMED) == 1
    assert m.value(Event.UDP_WS_DROPPED_OVERSIZED) == 1
    assert m.value(Event.UDP_WS_DROPPED) == 2


async def test_frame_over_read_limit_closes_1009(start_relay: StartRelay) -> None:
    """F-093: a message larger than MAX_DATAGRAM_PAYLOAD_BYTES + 24 ends the connection with 1009."""
    relay = await start_relay({"MAX_DATAGRAM_PAYLOAD_BYTES": "100"})
    async with connect(relay.host_port, "/udp") as ws:
        await ready(ws)
        await ws.send(b"\x00" * 125)
        closed = await ws.expect_close()
    assert closed.code == 1009
    await wait_for(lambda: relay.metrics.value(Event.UDP_WS_DROPPED_OVERSIZED) == 1)
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


async def test_text_after_ready(start_relay: StartRelay) -> None:
    """F-094: a later auth message is ignored; other text -> bad_message + 1003."""
    relay = await start_relay()
    async with connect(relay.host_port, "/udp") as ws:
        await ready(ws)
        await ws.send_json({"type": "auth", "token": "whatever"})
        await ws.send("hello")
        err = await ws.receive_json()
        closed = await ws.expect_close()
    assert err == {"type": "error", "code": "bad_message", "message": "expected binary message"}
    assert (closed.code, closed.reason) == (1003, "expected binary message")


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ([("X-API-Key", "k")], "/udp"),
        ([("Authorization", "Bearer k")], "/udp"),
        ([], "/udp?apiKey=k"),
        ([], "/udp?token=k"),
    ],
)
async def test_api_key_from_headers_or_query(
    start_relay: StartRelay, headers: list[tuple[str, str]], path: str
) -> None:
    """F-084/F-048/F-049."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with connect(relay.host_port, path, headers=headers) as ws:
        await ready(ws)


async def test_invalid_header_credential_closes_1008(start_relay: StartRelay) -> None:
    """F-084."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with connect(relay.host_port, "/udp", headers=[("X-API-Key", "nope")]) as ws:
        err = await ws.receive_json()
        closed = await ws.expect_close()
    assert err == {"type": "error", "code": "unauthorized", "message": "invalid credentials"}
    assert (closed.code, closed.reason) == (1008, "invalid credentials")
    assert relay.metrics.value(Event.AUTH_FAILURE) == 1
    assert relay.metrics.value(Event.UDP_WS_CONNECTIONS) == 1


async def test_first_message_auth(start_relay: StartRelay) -> None:
    """F-085/F-088: {"type":"auth","apiKey":...} as the first message."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with connect(relay.host_port, "/udp") as ws:
        await ws.send_json({"type": "auth", "apiKey": "k", "token": "k"})
        await ready(ws)


@pytest.mark.parametrize(
    ("first", "code", "message", "close"),
    [
        (b"\x00\x01", "unauthorized", "authentication required", 1008),
        ("not json", "unauthorized", "authentication required", 1008),
        ('{"type":"hello"}', "unauthorized", "authentication required", 1008),
        ('{"type":"auth"}', "unauthorized", "missing credentials", 1008),
        ('{"type":"auth","apiKey":"k","token":"other"}', "bad_message", "invalid auth message", 1008),
        ('{"type":"auth","apiKey":5}', "bad_message", "invalid auth message", 1003),
        ('{"type":"auth","apiKey":"wrong"}', "unauthorized", "invalid credentials", 1008),
    ],
)
async def test_first_message_auth_errors(
    start_relay: StartRelay, first: bytes | str, code: str, message: str, close: int
) -> None:
    """F-086..F-088: error JSON, close code, auth_failure."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with connect(relay.host_port, "/udp") as ws:
        await ws.send(first)
        err = await ws.receive_json()
        closed = await ws.expect_close()
    assert err == {"type": "error", "code": code, "message": message}
    assert closed.code == close
    assert relay.metrics.value(Event.AUTH_FAILURE) == 1


async def test_auth_timeout(start_relay: StartRelay) -> None:
    """F-085: no message within SIGNALING_AUTH_TIMEOUT; client pings don't extend it."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k", "SIGNALING_AUTH_TIMEOUT": "200ms"})
    async with connect(relay.host_port, "/udp") as ws:
        await ws.ping(b"still here")
        err = await ws.receive_json()
        closed = await ws.expect_close()
    assert err == {"type": "error", "code": "unauthorized", "message": "authentication timeout"}
    assert (closed.code, closed.reason) == (1008, "authentication timeout")
    assert relay.metrics.value(Event.AUTH_FAILURE) == 1


async def test_auth_message_over_signaling_limit_is_1009(start_relay: StartRelay) -> None:
    """F-085: the pre-auth read limit is MAX_SIGNALING_MESSAGE_BYTES; 1009, no JSON, no metric."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k", "MAX_SIGNALING_MESSAGE_BYTES": "64"})
    async with connect(relay.host_port, "/udp") as ws:
        await ws.send(json.dumps({"type": "auth", "apiKey": "k" * 100}))
        closed = await ws.expect_close()
    assert closed.code == 1009
    assert relay.metrics.value(Event.AUTH_FAILURE) == 0


async def test_jwt_sid_lock_across_session_and_udp(start_relay: StartRelay) -> None:
    """F-045/F-090: a sid held by a /session reservation refuses /udp with 1013."""
    relay = await start_relay({"AUTH_MODE": "jwt", "JWT_SECRET": "s"}, unix_now=lambda: NOW)
    token = mint_jwt("s", {"sid": "user", "iat": NOW, "exp": NOW + 60})
    async with relay.client() as c:
        assert (await c.post("/session", headers={"Authorization": f"Bearer {token}"})).status_code == 201
    async with connect(relay.host_port, f"/udp?token={token}") as ws:
        err = await ws.receive_json()
        closed = await ws.expect_close()
    assert err == {"type": "error", "code": "session_already_active", "message": "session already active"}
    assert (closed.code, closed.reason) == (1013, "session already active")


async def test_sid_released_when_udp_connection_closes(start_relay: StartRelay) -> None:
    """F-231: closing the WebSocket releases the sid at once."""
    relay = await start_relay({"AUTH_MODE": "jwt", "JWT_SECRET": "s"}, unix_now=lambda: NOW)
    token = mint_jwt("s", {"sid": "user", "iat": NOW, "exp": NOW + 60})
    async with connect(relay.host_port, "/udp", headers=[("Authorization", f"Bearer {token}")]) as ws:
        await ready(ws)
        await ws.close()
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)
    async with connect(relay.host_port, "/udp") as ws2:
        await ws2.send_json({"type": "auth", "token": token})
        await ready(ws2)


async def test_too_many_sessions_1013(start_relay: StartRelay) -> None:
    """F-090."""
    relay = await start_relay({"MAX_SESSIONS": "1"})
    async with connect(relay.host_port, "/udp") as first:
        await ready(first)
        async with connect(relay.host_port, "/udp") as second:
            err = await second.receive_json()
            closed = await second.expect_close()
    assert err == {"type": "error", "code": "too_many_sessions", "message": "too many sessions"}
    assert (closed.code, closed.reason) == (1013, "too many sessions")
    assert relay.metrics.value(Event.TOO_MANY_SESSIONS) == 1


async def test_idle_timeout_when_client_ignores_pings(start_relay: StartRelay) -> None:
    """F-089: pings every UDP_WS_PING_INTERVAL; without any frame from the client, close 1000."""
    relay = await start_relay({"UDP_WS_IDLE_TIMEOUT": "400ms", "UDP_WS_PING_INTERVAL": "100ms"})
    async with connect(relay.host_port, "/udp", answer_pings=False) as ws:
        await ready(ws)
        closed = await ws.expect_close()
        assert ws.pings_received >= 2
    assert (closed.code, closed.reason) == (1000, "idle timeout")


async def test_pongs_keep_connection_alive(start_relay: StartRelay) -> None:
    """F-089: pongs push the idle deadline forward."""
    relay = await start_relay({"UDP_WS_IDLE_TIMEOUT": "300ms", "UDP_WS_PING_INTERVAL": "50ms"})
    async with connect(relay.host_port, "/udp", answer_pings=True) as ws:
        await ready(ws)
        with trio.move_on_after(1.0):
            await ws.receive()
        assert ws.close_event is None
        assert ws.pings_received >= 5


async def test_hard_close_after_violations(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    """F-146/F-097: repeated rate-limit refusals close the session with 1008 "session closed"."""
    relay = await start_relay({**DEV, "MAX_UDP_PPS_PER_SESSION": "1", "HARD_CLOSE_AFTER_VIOLATIONS": "3"})
    port = await udp_echo(nursery)
    async with connect(relay.host_port, "/udp") as ws:
        await ready(ws)
        for _ in range(6):
            await ws.send(encode_v1(1, LOOPBACK4, port, b"z"))
        closed = await ws.expect_close()
    assert (closed.code, closed.reason) == (1008, "session closed")
    assert relay.metrics.value(Event.SESSION_HARD_CLOSED) == 1
    assert relay.metrics.value(Event.UDP_WS_DROPPED_RATE_LIMITED) >= 3
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


async def test_shutdown_closes_sessions_with_1001(start_relay: StartRelay) -> None:
    """Graceful shutdown sends a proper close frame (the original drops /udp sockets, F-005)."""
    relay = await start_relay()
    async with connect(relay.host_port, "/udp") as ws:
        await ready(ws)
        relay.server.request_shutdown()
        closed = await ws.expect_close()
    assert closed.code == 1001


async def test_no_permessage_deflate(start_relay: StartRelay) -> None:
    """F-064: the extension is never negotiated."""
    from wsproto.extensions import PerMessageDeflate

    relay = await start_relay()
    async with connect(relay.host_port, "/udp", extensions=[PerMessageDeflate()]) as ws:
        await ready(ws)
        assert ws.accept is not None and ws.accept.extensions == []


async def test_unknown_websocket_path_is_404(start_relay: StartRelay) -> None:
    relay = await start_relay()
    with pytest.raises(Rejected) as err:
        async with connect(relay.host_port, "/nope"):
            pass
    assert err.value.status == 404


async def test_cross_origin_upgrade_forbidden(start_relay: StartRelay) -> None:
    """F-017/F-081: the origin policy runs before the upgrade."""
    relay = await start_relay()
    with pytest.raises(Rejected) as err:
        async with connect(relay.host_port, "/udp", headers=[("Origin", "https://evil.example")]):
            pass
    assert err.value.status == 403
    assert json.loads(err.value.body)["code"] == "forbidden"


def _unused(_: RunningRelay, __: Closed, ___: struct.Struct) -> None:  # keep imports honest for mypy
    return None


async def test_text_right_after_an_oversized_frame_is_handled(start_relay: StartRelay) -> None:
    """Regression: hypercorn kept the oversized message's BytesIO after sending 1009, and a text frame
    in the same read was written into it (TypeError in the connection task, fatal before the fix)."""
    import logging

    from wsproto.events import BytesMessage, TextMessage

    failures: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "connection handler failed":
                failures.append(record)

    handler = Capture()
    logging.getLogger("aero_relay").addHandler(handler)
    try:
        relay = await start_relay({"MAX_DATAGRAM_PAYLOAD_BYTES": "100"})
        async with connect(relay.host_port, "/udp") as ws:
            await ready(ws)
            data = ws.conn.send(BytesMessage(data=b"x" * 300)) + ws.conn.send(TextMessage(data="hello"))
            await ws.stream.send_all(data)
            closed = await ws.expect_close()
        assert closed.code == 1009
        async with connect(relay.host_port, "/udp") as again:
            await ready(again)
    finally:
        logging.getLogger("aero_relay").removeHandler(handler)
    assert failures == []
