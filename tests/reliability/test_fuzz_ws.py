"""Fuzzing the `/udp` and `/webrtc/signal` WebSocket state machines against a live relay.

One relay runs in a background thread for the whole module (its own ``trio.run``), so it lives
through every hypothesis example: random sequences of auth messages (good, bad, malformed), offers
(junk SDP and a real aiortc offer), candidates, close messages, garbage text, binary frames (valid,
junk, over the read limit), pings and pauses. For every example the server may answer only with
documented messages (F-075, F-092, ``{"type":"error"}`` with a documented code) and documented close
codes, must always send a Close frame, and must free the session afterwards. At the end the relay
is still healthy and hypercorn logged no application error.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.utilities import LocalProtocolError

from aero_relay.core.frames import decode, encode_v1
from aero_relay.server import RelayServer
from aero_relay.webrtc.bridge import close_peer, open_bridge, run_aio
from tests.conftest import make_config
from tests.webrtc.peers import client_peer
from tests.wsclient import Closed, WSClient, connect

# F-081..F-098 and F-063..F-080: every code the relay documents, per endpoint.
UDP_ERROR_CODES = {
    "unauthorized",
    "bad_message",
    "internal_error",
    "too_many_sessions",
    "session_already_active",
}
UDP_CLOSE_CODES = {1000, 1001, 1003, 1008, 1009, 1011, 1013}
SIGNAL_ERROR_CODES = UDP_ERROR_CODES | {"rate_limited", "unexpected_message"}
SIGNAL_CLOSE_CODES = {1000, 1001, 1003, 1008, 1009, 1011}
HEX32 = re.compile(r"^[0-9a-f]{32}$")
SEND_ERRORS = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.BusyResourceError,
    OSError,
    LocalProtocolError,
)

ENV = {
    "AUTH_MODE": "api_key",
    "API_KEY": "k",
    "DESTINATION_POLICY_PRESET": "dev",
    "SIGNALING_AUTH_TIMEOUT": "300ms",
    "MAX_DATAGRAM_PAYLOAD_BYTES": "100",
    "MAX_SIGNALING_MESSAGE_BYTES": "8192",
    "MAX_SIGNALING_MESSAGES_PER_SECOND": "25",
    "MAX_UNIQUE_DESTINATIONS_PER_SESSION": "3",
    "HARD_CLOSE_AFTER_VIOLATIONS": "3",
    "WEBRTC_UDP_LISTEN_IP": "127.0.0.1",
    "WEBRTC_SESSION_CONNECT_TIMEOUT": "400ms",
}


# The relay currently dies under these sequences (BusyResourceError out of hypercorn's connection
# task when the app's close races the client's Close frame; the strict reproducer is
# tests/reliability/test_hostile.py::test_close_race_does_not_crash_the_relay). Not strict: whether a
# given run hits the race depends on the examples drawn. Remove once that bug is fixed.


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RelayThread:
    """A relay serving from its own thread and Trio run, shared by all examples of this module."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.server = RelayServer(make_config(env))
        self.started = threading.Event()
        self.host_port = ""
        self.token: trio.lowlevel.TrioToken | None = None
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(self.server.run)
            self.host_port = next(b for b in bound if b.startswith("http://")).split("://", 1)[1]
            self.token = trio.lowlevel.current_trio_token()
            self.started.set()

    def __enter__(self) -> RelayThread:
        self.thread.start()
        assert self.started.wait(30), "relay did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.token is not None
        self.token.run_sync_soon(self.server.request_shutdown)
        self.thread.join(30)
        assert not self.thread.is_alive(), "relay did not shut down"


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayThread]:
    errors = ErrorRecords()
    loggers = [logging.getLogger("hypercorn.error"), logging.getLogger("aero_relay")]
    for log in loggers:
        log.addHandler(errors)
    try:
        with RelayThread(ENV) as r:
            yield r
            trio.run(healthy, r)
    finally:
        for log in loggers:
            log.removeHandler(errors)
    assert [(rec.getMessage(), dict(getattr(rec, "aero_fields", ()))) for rec in errors.records] == []


async def healthy(r: RelayThread) -> None:
    """After everything: no session left, and a fresh /udp session still works."""
    with trio.fail_after(5):
        while r.server.ctx.registry.active_count() or r.server.ctx.sessions:
            await trio.sleep(0.02)
    async with connect(r.host_port, "/udp?apiKey=k") as ws:
        assert (await ws.receive_json())["type"] == "ready"


@pytest.fixture(scope="module")
def real_offer_sdp() -> str:
    """A real browser-like offer (aiortc, loopback host candidates only)."""

    async def make() -> str:
        async with open_bridge() as bridge:
            pc = client_peer()
            pc.createDataChannel("udp", ordered=False, maxRetransmits=0)
            await run_aio(bridge, pc.setLocalDescription)
            sdp: str = pc.localDescription.sdp
            await close_peer(bridge, pc, timeout=5)
            return sdp

    return trio.run(make)


# --- the client side ------------------------------------------------------------------------------

Action = tuple[str, Any]


async def play(
    host_port: str, path: str, actions: list[Action], udp_port: int
) -> tuple[list[Any], Closed | None]:
    """Connect, perform ``actions`` while a reader collects what the server sends, then close."""
    received: list[Any] = []
    closed: list[Closed | None] = [None]
    async with connect(host_port, path) as ws:
        done = trio.Event()

        async def reader() -> None:
            try:
                while True:
                    received.append(await ws.receive())
            except Closed as c:
                closed[0] = c
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                done.set()

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            try:
                for kind, arg in actions:
                    if done.is_set():
                        break
                    await perform(ws, kind, arg, udp_port)
                if not done.is_set():
                    await ws._flush(close_event(1000))
            except SEND_ERRORS:
                pass
            with trio.move_on_after(3):
                await done.wait()
            n.cancel_scope.cancel()
    return received, closed[0]


def close_event(code: int) -> Any:
    from wsproto.events import CloseConnection

    return CloseConnection(code=code, reason="")


async def perform(ws: WSClient, kind: str, arg: Any, udp_port: int) -> None:
    if kind == "sleep":
        await trio.sleep(arg)
    elif kind == "ping":
        await ws.ping(b"p")
    elif kind == "text":
        await ws.send(arg)
    elif kind == "json":
        await ws.send(json.dumps(arg))
    elif kind == "binary":
        await ws.send(arg)
    elif kind == "frame":  # a valid datagram frame to the loopback UDP echo (or another port)
        port = udp_port if arg == 0 else 20000 + arg
        await ws.send(encode_v1(40000, b"\x7f\x00\x00\x01", port, b"fz"))
    elif kind == "close":
        await ws._flush(close_event(arg))
    else:  # pragma: no cover
        raise AssertionError(kind)


TEXTS = st.sampled_from(
    [
        '{"type":"auth"',
        "{}",
        "null",
        "[]",
        '"x"',
        "auth",
        '{"type":"auth","apiKey":1}',
        '{"type":"auth","apiKey":"k","token":"j"}',
        '{"type":"AUTH","apiKey":"k"}',
        "\x00",
        "",
    ]
) | st.text(max_size=40)
JUNK = st.binary(max_size=40)
COMMON = [
    st.tuples(st.just("sleep"), st.sampled_from((0.0, 0.01, 0.05))),
    st.tuples(st.just("ping"), st.none()),
    st.tuples(st.just("text"), TEXTS),
    st.tuples(st.just("binary"), JUNK),
    st.tuples(st.just("binary"), st.integers(125, 9000).map(lambda n: b"\x00" * n)),  # over the read limits
    st.tuples(st.just("close"), st.sampled_from((1000, 1001, 4000))),
]
UDP_ACTIONS = st.one_of(
    *COMMON,
    st.tuples(
        st.just("json"),
        st.sampled_from(
            (
                {"type": "auth", "apiKey": "k"},
                {"type": "auth", "token": "k"},
                {"type": "auth", "apiKey": "bad"},
                {"type": "auth"},
            )
        ),
    ),
    st.tuples(st.just("frame"), st.integers(0, 6)),
    st.tuples(st.just("frame"), st.just(0)),
)
UDP_PATHS = st.sampled_from(("/udp", "/udp?apiKey=k", "/udp?apiKey=bad", "/udp?token=k"))


def check_udp_transcript(received: list[Any], closed: Closed | None, actions: list[Action]) -> None:
    ready_seen = False
    error_seen = False
    for msg in received:
        if isinstance(msg, bytes):
            # A reply already queued may still go out between an error message and the close.
            assert ready_seen, "datagram before ready"
            decode(msg, max_payload=65535)  # F-120: a well-formed reply frame
            continue
        obj = json.loads(msg)
        if obj.get("type") == "ready":
            assert not ready_seen and not error_seen, received
            assert list(obj) == ["type", "sessionId"] and HEX32.match(obj["sessionId"])  # F-092
            ready_seen = True
        else:
            assert list(obj) == ["type", "code", "message"] and obj["type"] == "error", obj
            assert obj["code"] in UDP_ERROR_CODES, obj
            error_seen = True
    assert closed is not None, f"no Close frame (actions={actions})"
    # 4000: our own close echoed back (the client closes at the end, possibly before the server's
    # close arrives, so the code seen after an error may be the echo of ours).
    assert closed.code in UDP_CLOSE_CODES | {4000}, closed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(UDP_PATHS, st.lists(UDP_ACTIONS, max_size=8))
def test_udp_websocket_answers_only_with_documented_messages(
    relay: RelayThread, path: str, actions: list[Action]
) -> None:
    """F-081..F-098 under random message sequences."""

    async def scenario() -> None:
        echo = trio.socket.socket(type=2)  # SOCK_DGRAM
        await echo.bind(("127.0.0.1", 0))
        async with trio.open_nursery() as n:

            async def serve() -> None:
                while True:
                    data, addr = await echo.recvfrom(2048)
                    await echo.sendto(data, addr)

            n.start_soon(serve)
            received, closed = await play(relay.host_port, path, actions, echo.getsockname()[1])
            check_udp_transcript(received, closed, actions)
            n.cancel_scope.cancel()
        echo.close()
        with trio.fail_after(3):  # the session is gone: slot free, scope unregistered
            while relay.server.ctx.registry.active_count() or relay.server.ctx.sessions:
                await trio.sleep(0.01)

    trio.run(scenario)


def signal_actions(real_sdp: str) -> st.SearchStrategy[Action]:
    offer = {"type": "offer", "sdp": {"type": "offer", "sdp": real_sdp}}
    candidate = {
        "type": "candidate",
        "candidate": {
            "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        },
    }
    messages = st.sampled_from(
        (
            {"type": "auth", "apiKey": "k"},
            {"type": "auth", "token": "k"},
            {"type": "auth", "apiKey": "bad"},
            {"type": "offer", "sdp": {"type": "offer", "sdp": "v=0"}},
            offer,
            candidate,
            {"type": "candidate", "candidate": {"candidate": ""}},
            {"type": "close"},
            {"type": "answer", "sdp": {"type": "answer", "sdp": "v=0"}},
            {"type": "error", "code": "x", "message": "y"},
            {"type": "offer"},
            {"type": "nope"},
            {"type": "auth", "apiKey": "k", "extra": 1},
        )
    )
    return st.one_of(*COMMON, st.tuples(st.just("json"), messages), st.tuples(st.just("json"), messages))


def check_signal_transcript(received: list[Any], closed: Closed | None, actions: list[Action]) -> None:
    error_seen = False
    for msg in received:
        assert not error_seen, f"message after an error: {msg!r}"
        assert isinstance(msg, str), f"binary from /webrtc/signal: {msg!r}"
        obj = json.loads(msg)
        t = obj.get("type")
        if t == "answer":  # F-075
            assert set(obj) == {"type", "sdp"} and obj["sdp"]["type"] == "answer", obj
        elif t == "candidate":
            assert set(obj) == {"type", "candidate"}, obj
            assert set(obj["candidate"]) <= {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}, obj
        else:
            assert t == "error" and set(obj) == {"type", "code", "message"}, obj
            assert obj["code"] in SIGNAL_ERROR_CODES, obj
            error_seen = True
    assert closed is not None, f"no Close frame (actions={actions})"
    assert closed.code in SIGNAL_CLOSE_CODES | {4000}, closed


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_signal_websocket_answers_only_with_documented_messages(
    relay: RelayThread, real_offer_sdp: str, data: st.DataObject
) -> None:
    """F-063..F-080 under random message sequences (junk and real offers, candidates, floods)."""
    path = data.draw(
        st.sampled_from(("/webrtc/signal", "/webrtc/signal?apiKey=k", "/webrtc/signal?token=bad"))
    )
    actions = data.draw(st.lists(signal_actions(real_offer_sdp), max_size=8))

    async def scenario() -> None:
        received, closed = await play(relay.host_port, path, actions, 9)
        check_signal_transcript(received, closed, actions)
        with trio.fail_after(5):  # the WebRTC session (if any) is gone too
            while relay.server.ctx.registry.active_count() or relay.server.ctx.sessions:
                await trio.sleep(0.01)

    trio.run(scenario)
