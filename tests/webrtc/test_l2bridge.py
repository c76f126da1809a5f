"""The L2 tunnel bridge (spec §19, F-109, F-111, F-150 .. F-161, F-200, F-212, F-220, F-221).

End to end: a real relay (in-process hypercorn), in-process aiortc client peers on 127.0.0.1
signalling over `POST /webrtc/offer`, and a real WebSocket backend (`tests/webrtc/l2_backend.py`).
Logs are captured as JSON lines. Where a failure must leave the rest of the session alone
(F-221), the `udp` channel relays a datagram afterwards and the PeerConnection is still connected.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import attrs
import pytest
import trio
from aiortc import RTCDataChannel, RTCSessionDescription

from aero_relay.config import load
from aero_relay.core.frames import decode, encode_v1
from aero_relay.observability.logging import configure_logging
from aero_relay.observability.metrics import Event, Metrics
from aero_relay.relay.quota import QuotaSession
from aero_relay.webrtc import l2bridge
from aero_relay.webrtc.bridge import Bridge, close_peer, forward_to_trio, run_aio
from aero_relay.webrtc.hooks import HardenedPeerConnection
from aero_relay.webrtc.l2bridge import (
    L2Bridge,
    L2DialError,
    build_dial_plan,
    forward_query_credential,
    ws_close_error_text,
)
from aero_relay.webrtc.peer import PeerInfo
from tests.conftest import RunningRelay, StartRelay
from tests.helpers import mint_jwt
from tests.transports.test_udp_ws import udp_echo, wait_for
from tests.webrtc.l2_backend import PING, PONG, dead_url, start_backend
from tests.webrtc.peers import client_peer, ignore_max_message_size

LOOPBACK4 = socket.inet_aton("127.0.0.1")
BASE = {"WEBRTC_UDP_LISTEN_IP": "127.0.0.1", "DESTINATION_POLICY_PRESET": "dev"}
APP_ORIGIN = "https://app.example"


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The relay's log output as JSON lines (INFO and up); logging is restored afterwards."""
    root = logging.getLogger()
    ours = logging.getLogger("aero_relay")
    saved = (list(root.handlers), root.level, ours.level)
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    yield out
    assert records(out, "l2 bridge failed") == []  # no test may hit the bridge's catch-all
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    ours.setLevel(saved[2])


def records(out: io.StringIO, msg: str) -> list[dict[str, Any]]:
    found = []
    for line in out.getvalue().splitlines():
        rec = json.loads(line)
        if rec["msg"] == msg:
            found.append(rec)
    return found


async def one_record(out: io.StringIO, msg: str, timeout: float = 10) -> dict[str, Any]:
    await wait_for(lambda: records(out, msg), timeout)
    [rec] = records(out, msg)
    return rec


def fields(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("time", "level", "msg")}


@attrs.define(eq=False)
class Chan:
    """A client-side DataChannel with its messages and close as Trio objects."""

    dc: RTCDataChannel
    inbox: trio.MemoryReceiveChannel[bytes | str]
    closed: trio.Event

    @classmethod
    def wrap(cls, dc: RTCDataChannel) -> Chan:
        send, recv = trio.open_memory_channel[bytes | str](4096)
        closed = trio.Event()
        dc.on("message", forward_to_trio(send))
        dc.on("close", closed.set)
        return cls(dc, recv, closed)

    async def recv(self, timeout: float = 10) -> bytes | str:
        with trio.fail_after(timeout):
            return await self.inbox.receive()

    async def wait_closed(self, timeout: float = 10) -> None:
        with trio.fail_after(timeout):
            await self.closed.wait()

    async def wait_settled(self, timeout: float = 10) -> None:
        """Until the channel is open, or closed without ever opening."""
        with trio.fail_after(timeout):
            while self.dc.readyState not in ("open", "closed"):
                await trio.sleep(0.005)


@attrs.define(eq=False)
class Client:
    bridge: Bridge
    pc: HardenedPeerConnection
    udp: Chan
    l2: Chan | None
    extra: list[Chan]

    async def udp_round_trip(self, port: int) -> None:
        """F-221: the udp channel still relays a datagram (to a UDP echo server and back)."""
        self.udp.dc.send(encode_v1(40000, LOOPBACK4, port, b"still relaying"))
        reply = await self.udp.recv()
        assert isinstance(reply, bytes)
        assert decode(reply, max_payload=1200).payload == b"still relaying"
        assert self.pc.connectionState == "connected"

    def open_l2(self) -> Chan:
        """A new reliable l2 channel on the established connection (no renegotiation needed)."""
        chan = Chan.wrap(self.pc.createDataChannel("l2"))
        self.extra.append(chan)
        return chan


def bridge_of(relay: RunningRelay) -> Bridge:
    bridge = relay.server.ctx.bridge
    assert bridge is not None
    bridge.attach()
    return bridge


@asynccontextmanager
async def client(
    relay: RunningRelay,
    *,
    headers: Mapping[str, str] | None = None,
    l2: dict[str, Any] | None = None,
    extra_l2: tuple[dict[str, Any], ...] = (),
) -> AsyncIterator[Client]:
    """A client peer connected through `POST /webrtc/offer`, with a `udp` channel, an `l2` channel
    created with the options `l2` (default: ordered and reliable) and one more `l2` channel per
    entry of `extra_l2`. The peer is closed on exit."""
    bridge = bridge_of(relay)
    pc = client_peer()
    try:
        udp = Chan.wrap(pc.createDataChannel("udp", ordered=False, maxRetransmits=0))
        l2_chan = Chan.wrap(pc.createDataChannel("l2", **(l2 or {})))
        extra = [Chan.wrap(pc.createDataChannel("l2", **opts)) for opts in extra_l2]
        await run_aio(bridge, pc.setLocalDescription)
        async with relay.client() as http:
            r = await http.post(
                "/webrtc/offer",
                json={"type": "offer", "sdp": pc.localDescription.sdp},
                headers=dict(headers or {}),
            )
        assert r.status_code == 200, r.text
        await run_aio(bridge, pc.setRemoteDescription, RTCSessionDescription(**r.json()["sdp"]))
        with trio.fail_after(10):
            while udp.dc.readyState != "open":
                await trio.sleep(0.005)
        await l2_chan.wait_settled()
        yield Client(bridge, pc, udp, l2_chan, extra)
    finally:
        await close_peer(bridge, pc, timeout=5)


async def relay_with(start_relay: StartRelay, env: Mapping[str, str]) -> RunningRelay:
    return await start_relay({**BASE, **env})


# --- the happy path -------------------------------------------------------------------------------


async def test_ping_pong_round_trip_through_the_bridge(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-150, F-156, F-157, F-158: dial at once, forward both ways unparsed, count both ways."""
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        assert c.l2 is not None
        c.l2.dc.send(PING)
        assert await c.l2.recv() == PONG  # the shared vector's PONG
        frame = bytes.fromhex("a2030000") + bytes(range(200))
        c.l2.dc.send(frame)
        assert await c.l2.recv() == frame
        ok = await one_record(logs, "l2_bridge_backend_dial_succeeded")
        assert ok["level"] == "INFO"
        assert list(fields(ok)) == ["session_id", "backend_ws_url", "dial_duration_ms"]
        assert ok["backend_ws_url"] == backend.url
        assert isinstance(ok["dial_duration_ms"], int)
    m = relay.metrics
    assert m.value(Event.L2_BRIDGE_DIALS_TOTAL) == 1
    assert m.value(Event.L2_BRIDGE_DIAL_ERRORS_TOTAL) == 0
    assert m.value(Event.L2_BRIDGE_MESSAGES_FROM_CLIENT_TOTAL) == 2
    assert m.value(Event.L2_BRIDGE_MESSAGES_TO_CLIENT_TOTAL) == 2
    assert m.value(Event.L2_BRIDGE_BYTES_FROM_CLIENT_TOTAL) == len(PING) + len(frame)
    assert m.value(Event.L2_BRIDGE_BYTES_TO_CLIENT_TOTAL) == len(PONG) + len(frame)
    [seen] = backend.requests
    assert seen.subprotocols == ("aero-l2-tunnel-v1",)
    assert seen.header("origin") == [f"http://{relay.host_port}"]  # F-153: derived from Host
    assert seen.header("cookie") == []


async def test_messages_sent_before_the_dial_completes_are_queued_in_order(
    start_relay: StartRelay, nursery: trio.Nursery
) -> None:
    """F-157: the client may send as soon as the channel is open; nothing is lost or reordered."""
    backend = await start_backend(nursery, accept_delay=0.3)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        assert c.l2 is not None
        sent = [bytes([i]) * (i + 1) for i in range(20)]
        for msg in sent:
            c.l2.dc.send(msg)
        assert [await c.l2.recv() for _ in sent] == sent
    assert backend.received == sent


# --- the dial request: subprotocols, credential, Origin, cookie (F-151 .. F-155) -------------------

SECRET_KEY = "k3y-Secret_V4lue"


@pytest.mark.parametrize(
    ("env", "headers", "query", "subprotocols", "origin", "cookie"),
    [
        pytest.param(  # the defaults: query mode, forwarded client Origin, no cookie
            {"AUTH_MODE": "api_key", "API_KEY": SECRET_KEY},
            {"X-API-Key": SECRET_KEY, "Origin": APP_ORIGIN, "Cookie": "a=1; aero_session=s1; b=2"},
            {"apiKey": [SECRET_KEY], "token": [SECRET_KEY], "x": ["1"]},
            ("aero-l2-tunnel-v1",),
            [APP_ORIGIN],
            [],
            id="query-forwarded-origin",
        ),
        pytest.param(  # subprotocol mode offers the credential; only the aero_session cookie goes
            {
                "AUTH_MODE": "api_key",
                "API_KEY": SECRET_KEY,
                "L2_BACKEND_AUTH_FORWARD_MODE": "subprotocol",
                "L2_BACKEND_FORWARD_AERO_SESSION": "1",
            },
            {"X-API-Key": SECRET_KEY, "Origin": APP_ORIGIN, "Cookie": "a=1; aero_session=s1; b=2"},
            {"x": ["1"]},
            ("aero-l2-tunnel-v1", f"aero-l2-token.{SECRET_KEY}"),
            [APP_ORIGIN],
            ["aero_session=s1"],
            id="subprotocol-cookie",
        ),
        pytest.param(  # a static token wins over the credential; the override wins over the client
            {
                "AUTH_MODE": "api_key",
                "API_KEY": SECRET_KEY,
                "L2_BACKEND_AUTH_FORWARD_MODE": "subprotocol",
                "L2_BACKEND_TOKEN": "st4tic",
                "L2_BACKEND_ORIGIN": "https://pinned.example",
                "L2_BACKEND_WS_ORIGIN": "https://static.example",
            },
            {"X-API-Key": SECRET_KEY, "Origin": APP_ORIGIN},
            {"x": ["1"]},
            ("aero-l2-tunnel-v1", "aero-l2-token.st4tic"),
            ["https://pinned.example"],
            [],
            id="static-token-origin-override",
        ),
        pytest.param(  # none mode and no Origin forwarding; an empty cookie is still sent (F-212)
            {
                "AUTH_MODE": "api_key",
                "API_KEY": SECRET_KEY,
                "L2_BACKEND_AUTH_FORWARD_MODE": "none",
                "L2_BACKEND_FORWARD_ORIGIN": "false",
                "L2_BACKEND_FORWARD_AERO_SESSION": "true",
            },
            {"X-API-Key": SECRET_KEY, "Origin": APP_ORIGIN, "Cookie": "aero_session="},
            {"x": ["1"]},
            ("aero-l2-tunnel-v1",),
            [],
            ["aero_session="],
            id="none-no-origin-empty-cookie",
        ),
        pytest.param(  # L2_BACKEND_WS_ORIGIN is used when no override is set
            {"L2_BACKEND_WS_ORIGIN": "https://static.example"},
            {"Origin": APP_ORIGIN},
            {"x": ["1"]},
            ("aero-l2-tunnel-v1",),
            ["https://static.example"],
            [],
            id="static-origin-auth-none",
        ),
    ],
)
async def test_backend_dial_carries_what_the_options_say(
    start_relay: StartRelay,
    nursery: trio.Nursery,
    env: dict[str, str],
    headers: dict[str, str],
    query: dict[str, list[str]],
    subprotocols: tuple[str, ...],
    origin: list[str],
    cookie: list[str],
) -> None:
    """F-151 .. F-155; the backend admits the dial the way aero-l2-proxy would."""
    backend = await start_backend(
        nursery,
        require_origin=origin[0] if origin else None,
        require_token=SECRET_KEY if SECRET_KEY in str(query) + str(subprotocols) else None,
        require_cookie=cookie[0].partition("=")[2] if cookie else None,
    )
    relay = await relay_with(
        start_relay, {"ALLOWED_ORIGINS": APP_ORIGIN, "L2_BACKEND_WS_URL": backend.url + "?x=1", **env}
    )
    async with client(relay, headers=headers) as c:
        assert c.l2 is not None
        c.l2.dc.send(PING)
        assert await c.l2.recv() == PONG
    [seen] = backend.requests
    assert seen.path == "/l2"
    assert seen.query == query
    assert seen.subprotocols == subprotocols
    assert seen.header("origin") == origin
    assert seen.header("cookie") == cookie


def _cfg(**env: str) -> Any:
    return load({"AUTH_MODE": "none", "L2_BACKEND_WS_URL": "ws://backend:8090/l2", **env}, [])


def test_query_mode_replaces_existing_credentials_sorts_keys_and_escapes() -> None:
    """F-152: Go's url.Values.Set + Encode (keys sorted, QueryEscape, space as '+')."""
    url = "ws://b:1/l2?z=last&token=old&apiKey=old2&token=old3&a=first%20x&bad=%zz&s;x=1#frag"
    out = forward_query_credential(url, "new cred/=&")
    parts = urllib.parse.urlsplit(out)
    assert parts.query == "a=first+x&apiKey=new+cred%2F%3D%26&token=new+cred%2F%3D%26&z=last"
    assert (parts.path, parts.fragment) == ("/l2", "frag")


def test_dial_plan_offers_the_static_token_and_checks_it_is_a_tchar_token() -> None:
    """F-151: the token entry follows the tunnel protocol; a non-tchar one fails the dial."""
    cfg = _cfg(L2_BACKEND_TOKEN="abc")
    plan = build_dial_plan(cfg, credential="", client_origin="", aero_session=None)
    assert plan.subprotocols == ("aero-l2-tunnel-v1", "aero-l2-token.abc")
    bad = attrs.evolve(cfg, l2_backend_token="has space")  # config refuses it; the dial checks again
    with pytest.raises(L2DialError) as err:
        build_dial_plan(bad, credential="", client_origin="", aero_session=None)
    assert err.value.message == (
        "l2 backend token is not valid for Sec-WebSocket-Protocol; use query-string auth instead"
    )


def test_dial_plan_refuses_a_non_tchar_credential_in_subprotocol_mode() -> None:
    """F-152: the exact error text; with a static token the credential is not offered at all."""
    cfg = _cfg(L2_BACKEND_AUTH_FORWARD_MODE="subprotocol")
    with pytest.raises(L2DialError) as err:
        build_dial_plan(cfg, credential="a/b=c", client_origin="", aero_session=None)
    assert err.value.message == (
        'l2 auth forwarding mode "subprotocol" requires a credential that is valid for '
        'Sec-WebSocket-Protocol; use "query" instead'
    )
    with_token = _cfg(L2_BACKEND_AUTH_FORWARD_MODE="subprotocol", L2_BACKEND_TOKEN="t")
    plan = build_dial_plan(with_token, credential="a/b=c", client_origin="", aero_session=None)
    assert plan.subprotocols == ("aero-l2-tunnel-v1", "aero-l2-token.t")


def test_dial_plan_without_a_credential_forwards_nothing() -> None:
    """F-152: AUTH_MODE=none leaves the credential empty, so no mode adds anything."""
    for mode in ("query", "subprotocol", "none"):
        plan = build_dial_plan(
            _cfg(L2_BACKEND_AUTH_FORWARD_MODE=mode), credential="", client_origin="", aero_session=None
        )
        assert (plan.url, plan.subprotocols) == ("ws://backend:8090/l2", ("aero-l2-tunnel-v1",))


def test_dial_plan_origin_and_cookie_headers() -> None:
    """F-153, F-154: override first, then the client origin when forwarding; only aero_session."""
    fwd = build_dial_plan(_cfg(), credential="", client_origin="https://c.example", aero_session="v")
    assert fwd.headers() == [(b"Origin", b"https://c.example")]
    off = _cfg(L2_BACKEND_FORWARD_ORIGIN="0", L2_BACKEND_FORWARD_AERO_SESSION="1")
    plan = build_dial_plan(off, credential="", client_origin="https://c.example", aero_session="v")
    assert plan.headers() == [(b"Cookie", b"aero_session=v")]
    pinned = _cfg(L2_BACKEND_ORIGIN_OVERRIDE="https://p.example")
    plan = build_dial_plan(pinned, credential="", client_origin="https://c.example", aero_session=None)
    assert plan.headers() == [(b"Origin", b"https://p.example")]


def test_close_errors_read_like_gorilla() -> None:
    assert ws_close_error_text(1000, "") == "websocket: close 1000 (normal)"
    assert (
        ws_close_error_text(1006, "unexpected EOF")
        == "websocket: close 1006 (abnormal closure): unexpected EOF"
    )
    assert ws_close_error_text(4000, "bye") == "websocket: close 4000: bye"


# --- dial failures (F-156): only the l2 channel closes ------------------------------------------


async def assert_dial_failed(
    relay: RunningRelay, logs: io.StringIO, c: Client, echo_port: int
) -> dict[str, Any]:
    """F-156, F-221: WARN + metric, the l2 channel closed, no shutdown record, udp and PC fine."""
    assert c.l2 is not None
    await c.l2.wait_closed()
    rec = await one_record(logs, "l2_bridge_backend_dial_failed")
    assert rec["level"] == "WARN"
    assert relay.metrics.value(Event.L2_BRIDGE_DIALS_TOTAL) == 1
    assert relay.metrics.value(Event.L2_BRIDGE_DIAL_ERRORS_TOTAL) == 1
    await c.udp_round_trip(echo_port)
    assert records(logs, "l2_bridge_shutdown") == []
    return rec


async def test_backend_down(start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO) -> None:
    port = await udp_echo(nursery)
    url = dead_url()
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": url})
    async with client(relay) as c:
        rec = await assert_dial_failed(relay, logs, c, port)
    assert list(fields(rec)) == ["session_id", "backend_ws_url", "dial_duration_ms", "err"]
    assert rec["backend_ws_url"] == url
    assert rec["err"].startswith(f"dial tcp {urllib.parse.urlsplit(url).netloc}: ")


async def test_backend_refusing_the_dial_logs_its_status(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    port = await udp_echo(nursery)
    backend = await start_backend(nursery, require_origin="https://only.example")
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        rec = await assert_dial_failed(relay, logs, c, port)
    assert list(fields(rec)) == ["session_id", "backend_ws_url", "dial_duration_ms", "status_code", "err"]
    assert (rec["status_code"], rec["err"]) == (403, "websocket: bad handshake")


async def test_backend_not_selecting_the_tunnel_subprotocol_fails_the_dial(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-151: strict negotiation."""
    port = await udp_echo(nursery)
    backend = await start_backend(nursery, refuse_subprotocol=True)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        rec = await assert_dial_failed(relay, logs, c, port)
    assert rec["err"] == 'l2 backend did not negotiate required subprotocol "aero-l2-tunnel-v1" (got "")'
    assert "status_code" not in rec


async def test_non_tchar_credential_in_subprotocol_mode_fails_the_dial(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-152: the credential that authenticated signalling cannot be a subprotocol entry."""
    port = await udp_echo(nursery)
    backend = await start_backend(nursery)
    key = "s3cret/with=chars"
    env = {"AUTH_MODE": "api_key", "API_KEY": key, "L2_BACKEND_AUTH_FORWARD_MODE": "subprotocol"}
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url, **env})
    async with client(relay, headers={"X-API-Key": key}) as c:
        rec = await assert_dial_failed(relay, logs, c, port)
    assert rec["err"].startswith('l2 auth forwarding mode "subprotocol" requires a credential')
    assert backend.requests == []  # nothing was sent
    assert key not in logs.getvalue()


async def test_dial_timeout(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F-150: a backend that never answers the upgrade fails the dial at the dial timeout."""
    monkeypatch.setattr(l2bridge, "DIAL_TIMEOUT", 0.3)
    port = await udp_echo(nursery)
    backend = await start_backend(nursery, stall_handshake=True)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        rec = await assert_dial_failed(relay, logs, c, port)
    assert rec["err"] == "l2 backend dial timed out after 0.3s"
    assert rec["dial_duration_ms"] >= 300


# --- running bridge: oversized, text, closes, rate limits -----------------------------------------


async def assert_shutdown(
    logs: io.StringIO, c: Client, echo_port: int, level: str, **expected: object
) -> dict[str, Any]:
    """F-159, F-221: one shutdown record with these fields, l2 closed, udp and PC unaffected."""
    assert c.l2 is not None
    await c.l2.wait_closed()
    rec = await one_record(logs, "l2_bridge_shutdown")
    assert rec["level"] == level
    got = fields(rec)
    assert got.pop("session_id")
    assert got == expected
    await c.udp_round_trip(echo_port)
    return rec


async def test_client_message_over_l2_max_shuts_the_bridge_down(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-157: metric, WARN oversized_message from_client, the channel closed."""
    port = await udp_echo(nursery)
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url, "L2_MAX_MESSAGE_BYTES": "1000"})
    async with client(relay) as c:
        assert c.l2 is not None
        c.l2.dc.send(PING)
        assert await c.l2.recv() == PONG
        c.l2.dc.send(b"\xa2" * 1001)
        await assert_shutdown(
            logs,
            c,
            port,
            "WARN",
            reason="oversized_message",
            backend_ws_url=backend.url,
            direction="from_client",
            msg_bytes=1001,
            max_bytes=1000,
        )
    assert relay.metrics.value(Event.L2_BRIDGE_DROPPED_OVERSIZED_TOTAL) == 1
    assert backend.received == [PING]
    await wait_for(lambda: backend.closes == [(1000, "oversized_message")])


async def test_backend_message_over_l2_max_shuts_the_bridge_down(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-158: the read limit answers the backend with 1009; WARN oversized_message to_client."""
    port = await udp_echo(nursery)
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url, "L2_MAX_MESSAGE_BYTES": "1000"})
    async with client(relay) as c:
        assert c.l2 is not None
        conn = await backend.next_connection()
        await conn.send_message(b"x" * 1000)  # at the limit: delivered
        assert await c.l2.recv() == b"x" * 1000
        await conn.send_message(b"y" * 1001)
        await assert_shutdown(
            logs,
            c,
            port,
            "WARN",
            reason="oversized_message",
            backend_ws_url=backend.url,
            direction="to_client",
            max_bytes=1000,
            err="l2 message too large (max 1000)",
        )
        assert conn.closed is not None and conn.closed.code == 1009
    assert relay.metrics.value(Event.L2_BRIDGE_DROPPED_OVERSIZED_TOTAL) == 1
    assert relay.metrics.value(Event.L2_BRIDGE_MESSAGES_TO_CLIENT_TOTAL) == 1


async def test_backend_text_messages_are_ignored(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    """F-158; client text messages are ignored too (F-112 for l2)."""
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        assert c.l2 is not None
        conn = await backend.next_connection()
        await conn.send_message("text from the backend")
        await conn.send_message(b"binary")
        assert await c.l2.recv() == b"binary"
        c.l2.dc.send("text from the client")
        c.l2.dc.send(PING)
        assert await c.l2.recv() == PONG
    assert backend.texts == []
    assert backend.received == [PING]
    assert relay.metrics.value(Event.L2_BRIDGE_MESSAGES_TO_CLIENT_TOTAL) == 2


async def test_backend_pings_are_answered(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    """F-150, F-161: the dial happens before any client message; control frames are answered."""
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay):
        conn = await backend.next_connection()
        with trio.fail_after(5):
            await conn.ping(b"heartbeat")  # returns when the matching pong arrives
    assert backend.received == []


async def test_backend_closing_mid_stream(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-159, F-161: messages before the close are delivered; INFO backend_closed with the close
    code and a redacted close text (F-160); the close handshake is answered."""
    port = await udp_echo(nursery)
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        assert c.l2 is not None
        conn = await backend.next_connection()
        await conn.send_message(b"last words")
        await conn.aclose(4000, "bye token=abc")
        assert await c.l2.recv() == b"last words"
        await assert_shutdown(
            logs,
            c,
            port,
            "INFO",
            reason="backend_closed",
            backend_ws_url=backend.url,
            ws_close_code=4000,
            ws_close_text="bye token=<redacted>",
            err="ws_read: websocket: close 4000: bye token=<redacted>",
        )


async def test_backend_dropping_tcp_mid_stream(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """A TCP close without a close frame reads as gorilla's 1006 "unexpected EOF"."""
    port = await udp_echo(nursery)
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        conn = await backend.next_connection()
        await conn._stream.aclose()  # the test server's own socket, closed without a close frame
        await assert_shutdown(
            logs,
            c,
            port,
            "INFO",
            reason="backend_closed",
            backend_ws_url=backend.url,
            ws_close_code=1006,
            ws_close_text="unexpected EOF",
            err="ws_read: websocket: close 1006 (abnormal closure): unexpected EOF",
        )


async def test_client_closing_l2_closes_the_backend_and_frees_the_slot(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-159: datachannel_closed at INFO, a close frame to the backend; a new l2 may be opened."""
    port = await udp_echo(nursery)
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        assert c.l2 is not None
        c.l2.dc.send(PING)
        assert await c.l2.recv() == PONG
        c.l2.dc.close()
        await assert_shutdown(logs, c, port, "INFO", reason="datachannel_closed", backend_ws_url=backend.url)
        await wait_for(lambda: backend.closes == [(1000, "datachannel_closed")])
        again = c.open_l2()
        await again.wait_settled()
        again.dc.send(PING)
        assert await again.recv() == PONG
    assert relay.metrics.value(Event.L2_BRIDGE_DIALS_TOTAL) == 2
    assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_L2) == 0


async def test_backend_to_client_over_the_dc_budget_is_dropped(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-145, F-158, F-189, F-220: the session's DC bps budget; one WARN per bridge."""
    backend = await start_backend(nursery)
    relay = await relay_with(
        start_relay, {"L2_BACKEND_WS_URL": backend.url, "MAX_DC_BPS_PER_SESSION": "1000"}
    )
    async with client(relay) as c:
        assert c.l2 is not None
        conn = await backend.next_connection()
        for _ in range(4):
            await conn.send_message(b"z" * 600)
        assert await c.l2.recv() == b"z" * 600  # the bucket starts full: 1000 bytes
        await wait_for(lambda: relay.metrics.value(Event.L2_BRIDGE_DROPPED_RATE_LIMITED_TOTAL) == 3)
        rec = await one_record(logs, "l2_bridge_dropped_rate_limited")
        assert rec["level"] == "WARN"
        assert list(fields(rec)) == ["session_id", "msg_bytes"] and rec["msg_bytes"] == 600
        assert relay.metrics.value(Event.RATE_LIMITED) == 3
        assert c.l2.dc.readyState == "open"


async def test_l2_message_over_the_session_cap_closes_the_whole_session(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-111: over WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES (4352) the session ends, not just l2."""
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        assert c.l2 is not None
        ignore_max_message_size(c.pc)
        c.l2.dc.send(b"q" * 4353)
        rec = await one_record(logs, "l2 datachannel message too large")
        assert rec["level"] == "WARN"
        assert list(fields(rec)) == ["session_id", "msg_bytes", "max_bytes"]
        assert (rec["msg_bytes"], rec["max_bytes"]) == (4353, 4352)
        await c.udp.wait_closed()
        await c.l2.wait_closed()
    assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_L2_MESSAGE_TOO_LARGE) == 1
    assert relay.metrics.value(Event.L2_BRIDGE_DROPPED_OVERSIZED_TOTAL) == 0


# --- backpressure (F-200): l2 never stalls udp ------------------------------------------------------


async def test_backend_not_reading_closes_l2_and_never_stalls_udp(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """Ours, not the original's (F-200): a full to-backend queue (256 messages, here while the
    handshake hangs) shuts the bridge down with WARN backpressure; udp keeps relaying meanwhile."""
    port = await udp_echo(nursery)
    backend = await start_backend(nursery, stall_handshake=True)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay) as c:
        assert c.l2 is not None
        await c.udp_round_trip(port)
        for i in range(l2bridge.TO_BACKEND_QUEUE_MESSAGES + 1):
            c.l2.dc.send(i.to_bytes(2, "big") * 100)
        await c.udp_round_trip(port)
        await assert_shutdown(
            logs,
            c,
            port,
            "WARN",
            reason="backpressure",
            backend_ws_url=backend.url,
            direction="from_client",
            msg_bytes=200,
            err="backend is not reading: 256 messages queued",
        )
    assert relay.metrics.value(Event.L2_BRIDGE_DIAL_ERRORS_TOTAL) == 0  # cancelled: not a dial error
    assert relay.metrics.value(Event.L2_BRIDGE_DROPPED_BACKPRESSURE_TOTAL) == 1
    assert records(logs, "l2_bridge_backend_dial_failed") == []


# --- channel admission (F-109), kept from peer.py ---------------------------------------------------


async def test_unreliable_or_unordered_l2_is_rejected_with_a_warning(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-109: WARN "rejecting l2 datachannel" with the channel's options; no dial."""
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay, l2={"maxRetransmits": 3}, extra_l2=({"ordered": False},)) as c:
        assert c.l2 is not None
        await c.l2.wait_closed()
        await c.extra[0].wait_closed()
        await wait_for(lambda: len(records(logs, "rejecting l2 datachannel")) == 2)
    got = sorted((fields(r) for r in records(logs, "rejecting l2 datachannel")), key=lambda f: f["reason"])
    for f in got:
        assert f.pop("session_id")
    assert got == [
        {
            "reason": "partial_reliability",
            "label": "l2",
            "ordered": True,
            "max_retransmits": 3,
            "max_packet_life_time": None,
            "err": "",
        },
        {
            "reason": "unordered",
            "label": "l2",
            "ordered": False,
            "max_retransmits": None,
            "max_packet_life_time": None,
            "err": "",
        },
    ]
    assert relay.metrics.value(Event.L2_BRIDGE_DIALS_TOTAL) == 0


async def test_second_l2_channel_is_rejected_as_duplicate(
    start_relay: StartRelay, nursery: trio.Nursery
) -> None:
    """F-109: the first keeps working."""
    backend = await start_backend(nursery)
    relay = await relay_with(start_relay, {"L2_BACKEND_WS_URL": backend.url})
    async with client(relay, extra_l2=({},)) as c:
        first, second = c.l2, c.extra[0]
        assert first is not None
        await second.wait_closed()
        first.dc.send(PING)
        assert await first.recv() == PONG
        assert first.dc.readyState == "open"
    assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_L2) == 1
    assert relay.metrics.value(Event.L2_BRIDGE_DIALS_TOTAL) == 1


async def test_l2_without_a_backend_is_closed_silently(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-109: L2_BACKEND_WS_URL empty -> closed, no metric, no log."""
    port = await udp_echo(nursery)
    relay = await relay_with(start_relay, {})
    async with client(relay) as c:
        assert c.l2 is not None
        await c.l2.wait_closed()
        await c.udp_round_trip(port)
    msgs = [json.loads(line)["msg"] for line in logs.getvalue().splitlines()]
    assert [m for m in msgs if "l2" in m] == []
    assert not any(name.startswith(("l2_", "webrtc_datachannel")) for name in relay.metrics.snapshot())


# --- credentials never reach the logs (F-160) -------------------------------------------------------


async def test_no_credential_token_or_cookie_value_in_any_log_line(
    start_relay: StartRelay, nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """F-160: a JWT credential (query mode), a static backend token and the aero_session value,
    echoed back by a backend in its close text and in the dial URL, never appear in the output."""
    # Short enough to fit a WebSocket close reason (123 bytes) whole.
    jwt = mint_jwt("jwt-secret", {"sid": "s", "iat": 1, "exp": 1_700_000_600}, header={"alg": "HS256"})
    token, cookie = "St4tic-Backend-T0ken", "C00kie-Secret-V4lue"
    backend = await start_backend(nursery, require_token=jwt, require_cookie=cookie)
    env = {
        "AUTH_MODE": "jwt",
        "JWT_SECRET": "jwt-secret",
        "L2_BACKEND_WS_URL": f"{backend.url}?apiKey={token}",
        "L2_BACKEND_TOKEN": token,
        "L2_BACKEND_FORWARD_AERO_SESSION": "1",
    }
    relay = await start_relay({**BASE, **env}, unix_now=lambda: 1_700_000_100)
    headers = {"Authorization": f"Bearer {jwt}", "Cookie": f"aero_session={cookie}"}
    leaks = [jwt, f"aero_session={cookie} aero-l2-token.{token} {urllib.parse.quote_plus(token + '/')}"]
    async with client(relay, headers=headers) as c:
        for i, leak in enumerate(leaks):  # one bridge per leak, the backend closing with it
            chan = c.l2 if i == 0 else c.open_l2()
            assert chan is not None
            await chan.wait_settled()
            chan.dc.send(PING)
            assert await chan.recv() == PONG
            conn = await backend.next_connection()
            await conn.aclose(4001, leak)
            await chan.wait_closed()
        await wait_for(lambda: len(records(logs, "l2_bridge_shutdown")) == 2)
    seen = backend.requests[0]
    assert seen.query == {"token": [jwt], "apiKey": [jwt]}  # F-155: forwarded, replacing the URL's
    assert seen.subprotocols == ("aero-l2-tunnel-v1", f"aero-l2-token.{token}")
    out = logs.getvalue()
    assert len(records(logs, "l2_bridge_backend_dial_succeeded")) == 2
    for secret in (jwt, token, cookie):
        for form in (secret, urllib.parse.quote_plus(secret), urllib.parse.quote(secret, safe="")):
            assert form not in out
    texts = [r["ws_close_text"] for r in records(logs, "l2_bridge_shutdown")]
    assert texts == ["<redacted>", "aero_session=<redacted> aero-l2-token.<redacted> <redacted>%2F"]


# --- the bridge on its own: early messages, lossless backpressure toward the client ---------------


class FakeChannel:
    """Just what L2Bridge uses of an RTCDataChannel, driven by the test (no aiortc)."""

    label = "l2"

    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list[bytes] = []
        self.listeners: dict[str, list[Any]] = {}

    def on(self, event: str, fn: Any) -> Any:
        self.listeners.setdefault(event, []).append(fn)
        return fn

    def remove_all_listeners(self, event: str) -> None:
        self.listeners.pop(event, None)

    def emit(self, event: str, *args: Any) -> None:
        for fn in list(self.listeners.get(event, [])):
            fn(*args)

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        self.bufferedAmount += len(data)

    def close(self) -> None:
        if self.readyState != "closed":
            self.readyState = "closed"
            self.emit("close")


def bare_bridge(
    channel: FakeChannel, url: str, early: trio.MemoryReceiveChannel[bytes | str] | None = None, **env: str
) -> L2Bridge:
    cfg = load({"AUTH_MODE": "none", "L2_BACKEND_WS_URL": url, **env}, [])
    metrics = Metrics()
    return L2Bridge(
        cast(RTCDataChannel, channel),
        cfg=cfg,
        metrics=metrics,
        quota=QuotaSession(cfg, metrics, on_hard_close=lambda: None),
        session_id="s",
        info=PeerInfo(),
        close_session=lambda reason: None,
        early=early,
    )


async def test_messages_taken_in_before_routing_go_first_in_order(nursery: trio.Nursery) -> None:
    """Messages an intake handler queued before the bridge existed are forwarded first, in order."""
    backend = await start_backend(nursery)
    early_send, early = trio.open_memory_channel[bytes | str](8)
    for m in (b"one", "text is ignored", b"two"):
        early_send.send_nowait(m)
    channel = FakeChannel()
    channel.on("message", lambda m: None)  # the intake's handler: replaced
    bridge = bare_bridge(channel, backend.url, early=early)
    assert len(channel.listeners["message"]) == 1
    channel.emit("message", b"three")
    nursery.start_soon(bridge.run)
    await wait_for(lambda: len(channel.sent) == 3)
    assert channel.sent == [b"one", b"two", b"three"]  # echoed back in order
    channel.close()
    await wait_for(bridge.stopped.is_set)


async def test_a_slow_client_pauses_reading_from_the_backend_instead_of_buffering(
    nursery: trio.Nursery,
) -> None:
    """Backend -> client: over DATACHANNEL_SEND_QUEUE_BYTES buffered, the bridge stops reading
    (lossless), and resumes at a quarter of it (aiortc's bufferedamountlow)."""
    backend = await start_backend(nursery)
    channel = FakeChannel()
    bridge = bare_bridge(channel, backend.url, DATACHANNEL_SEND_QUEUE_BYTES="3000")
    assert channel.bufferedAmountLowThreshold == 750
    nursery.start_soon(bridge.run)
    conn = await backend.next_connection()
    for i in range(6):
        await conn.send_message(bytes([i]) * 1000)
    await wait_for(lambda: len(channel.sent) == 4)  # 4000 > 3000: paused after the 4th
    await trio.sleep(0.1)
    assert len(channel.sent) == 4
    channel.bufferedAmount = 700
    channel.emit("bufferedamountlow")
    await wait_for(lambda: len(channel.sent) == 6)
    assert channel.sent == [bytes([i]) * 1000 for i in range(6)]
    channel.close()
    await wait_for(bridge.stopped.is_set)


async def feed_until_stopped(channel: FakeChannel, bridge: L2Bridge, *, batch: int, pause: float) -> int:
    """Emit 4 KiB client messages (`batch` per `pause`) until the bridge stops; bounded at 64 MiB."""
    sent = 0
    while not bridge.stopped.is_set() and sent < 16384:
        for _ in range(batch):
            channel.emit("message", b"\xa2" * 4096)
            sent += 1
        await trio.sleep(pause)
    return sent


async def test_backend_that_stops_reading_mid_stream_ends_in_backpressure(
    nursery: trio.Nursery, logs: io.StringIO
) -> None:
    """Client -> backend, mid-stream (fixes F-200): once the socket buffers and the 256-message
    queue are full, the bridge shuts down instead of blocking aiortc's callback."""
    backend = await start_backend(nursery, stall=True)
    channel = FakeChannel()
    bridge = bare_bridge(channel, backend.url)
    nursery.start_soon(bridge.run)
    await backend.next_connection()
    sent = await feed_until_stopped(channel, bridge, batch=8, pause=0.001)
    rec = await one_record(logs, "l2_bridge_shutdown")
    assert (rec["level"], rec["reason"], rec["direction"]) == ("WARN", "backpressure", "from_client")
    assert channel.readyState == "closed"
    assert bridge.metrics.value(Event.L2_BRIDGE_DROPPED_BACKPRESSURE_TOTAL) == 1
    # Loopback socket buffers took the first ~100+ KiB: the writer was blocked by TCP, not starved.
    assert bridge.metrics.value(Event.L2_BRIDGE_BYTES_FROM_CLIENT_TOTAL) > 100_000
    assert sent > l2bridge.TO_BACKEND_QUEUE_MESSAGES


async def test_backend_write_stalled_past_the_write_deadline(
    nursery: trio.Nursery, logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F-157: a write blocked for WRITE_TIMEOUT ends the bridge with backend_closed."""
    monkeypatch.setattr(l2bridge, "WRITE_TIMEOUT", 0.2)
    backend = await start_backend(nursery, stall=True)
    channel = FakeChannel()
    bridge = bare_bridge(channel, backend.url)
    nursery.start_soon(bridge.run)
    await backend.next_connection()
    # A trickle: at most ~50 messages per write deadline, far below the 256-message queue.
    await feed_until_stopped(channel, bridge, batch=10, pause=0.04)
    rec = await one_record(logs, "l2_bridge_shutdown")
    assert (rec["level"], rec["reason"]) == ("INFO", "backend_closed")
    assert rec["err"] == "ws_write: write timed out after 0.2s"
