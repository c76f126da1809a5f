"""WebRTC session lifecycle (spec section 11, F-078, F-045) and `/webrtc/signal` edge cases (section 9).

A real in-process relay and loopback-only aiortc client peers on their own trio-asyncio loop
(see test_peer.py). The leak checks look at the relay from four sides once a session is gone:
asyncio tasks on the relay's loop, open peer connections and their sockets, the session
registry, and Trio tasks started by session code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from aiortc import RTCSessionDescription

import aero_relay.server
import aero_relay.transports.offer as offer_module
import aero_relay.transports.signal_ws as signal_ws_module
import aero_relay.webrtc.peer as peer_module
from aero_relay.core.frames import encode_v1
from aero_relay.observability.metrics import Event
from aero_relay.webrtc.bridge import Bridge, close_peer, open_bridge, run_aio
from aero_relay.webrtc.peer import RelayPeer, live_peers
from tests.conftest import RunningRelay, StartRelay
from tests.helpers import mint_jwt
from tests.transports.test_udp_ws import udp_echo, wait_for
from tests.webrtc.peers import client_peer
from tests.webrtc.test_peer import (
    GUEST_PORT,
    LOOPBACK4,
    TIMEOUT,
    UDP,
    WEBRTC,
    Client,
    client_bridge,
    first_channel,
    offer_message,
    signaled_client,
    wait_connected,
    wait_state,
)
from tests.wsclient import WSClient, connect

__all__ = ["client_bridge"]  # a fixture, re-exported for pytest

NOW = 1_700_000_000
JWT = {"AUTH_MODE": "jwt", "JWT_SECRET": "s", **WEBRTC}


def token(sid: str, exp: int = NOW + 600) -> str:
    return mint_jwt("s", {"sid": sid, "iat": NOW, "exp": exp})


async def expect_error(ws: WSClient, code: str, close_code: int) -> dict[str, Any]:
    """Skip answer/candidate messages; the first error must have `code`; then the close code."""
    with trio.fail_after(TIMEOUT):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == "error":
                break
    assert msg["code"] == code, msg
    closed = await ws.expect_close(timeout=TIMEOUT)
    assert closed.code == close_code, closed
    return msg  # type: ignore[no-any-return]


# --- leak checks ------------------------------------------------------------------------------

SESSION_CODE = (
    "aero_relay.webrtc.",
    "aero_relay.relay.pipeline.",
    "aero_relay.relay.binding.",
    "aero_relay.transports.signal_ws.",
)


class SessionTasks(trio.abc.Instrument):
    """The live Trio tasks running session code (spawned by the relay for WebRTC sessions)."""

    def __init__(self) -> None:
        self.live: set[trio.lowlevel.Task] = set()
        self.seen: set[str] = set()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith(SESSION_CODE):
            self.live.add(task)
            self.seen.add(task.name)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live.discard(task)


@pytest.fixture
async def session_tasks() -> AsyncIterator[SessionTasks]:
    instrument = SessionTasks()
    trio.lowlevel.add_instrument(instrument)
    try:
        yield instrument
    finally:
        trio.lowlevel.remove_instrument(instrument)


class Resources:
    """What one relay session holds, captured while it is live, to check after it ended."""

    def __init__(self, relay: RunningRelay) -> None:
        self.relay = relay
        self.peers: list[RelayPeer] = []
        self.sockets: list[Any] = []  # ICE and UDP binding sockets

    def capture(self) -> None:
        self.peers = list(live_peers(self.relay.server.ctx))
        assert len(self.peers) == 1, self.peers
        for peer in self.peers:
            for conn in peer.pc.ice_connections:
                for protocol in conn._protocols:
                    if protocol.transport is not None:
                        self.sockets.append(protocol.transport.get_extra_info("socket"))
            pipeline = peer.udp_pipeline
            if pipeline is not None:
                binding = pipeline.binding(GUEST_PORT)
                assert binding is not None
                self.sockets += [s for s in (binding.sock4, binding.sock6) if s is not None]

    async def assert_released(self, session_tasks: SessionTasks) -> None:
        ctx = self.relay.server.ctx
        with trio.fail_after(TIMEOUT):
            for peer in self.peers:
                await peer.finished.wait()
        await wait_for(lambda: live_peers(ctx) == ())
        for peer in self.peers:
            assert peer.pc.connectionState == "closed"
            sctp = peer.pc.sctp
            if sctp is not None:  # nothing runs on: no SCTP timers, no DTLS receive task
                assert sctp.state == "closed"
                assert sctp._t1_handle is None and sctp._t3_handle is None
                assert sctp.transport.state not in ("connecting", "connected")
        await wait_for(lambda: all(s.fileno() == -1 for s in self.sockets))
        assert ctx.registry.active_count() == 0
        # The signalling connection (if any) ends right after its session.
        await wait_for(lambda: not ctx.sessions)  # no cancel scope left registered for shutdown
        await wait_for(lambda: not session_tasks.live)


async def drained(bridge: Bridge, baseline: set[asyncio.Task[Any]], timeout: float = TIMEOUT) -> set[Any]:
    """The bridge's asyncio tasks beyond `baseline` once they had `timeout` to finish."""
    with trio.move_on_after(timeout):
        while bridge.tasks() - baseline:
            await trio.sleep(0.01)
    return bridge.tasks() - baseline


# --- section 11: how sessions end -----------------------------------------------------------------


async def test_connect_timeout_closes_the_session_and_frees_the_sid(
    start_relay: StartRelay, client_bridge: Bridge, session_tasks: SessionTasks
) -> None:
    """F-101/F-078/F-210: metric, the WebSocket closes, the slot and the sid are free again."""
    relay = await start_relay({**JWT, "WEBRTC_SESSION_CONNECT_TIMEOUT": "300ms"}, unix_now=lambda: NOW)
    bridge = relay.server.ctx.bridge
    assert bridge is not None
    baseline = bridge.tasks()
    res = Resources(relay)
    path = f"/webrtc/signal?token={token('alice')}"
    async with signaled_client(relay, client_bridge, path=path, apply_answer=False) as client:
        res.capture()
        closed = await client.ws.expect_close(timeout=TIMEOUT)
        assert (closed.code, closed.reason) == (1000, "session closed")
    assert relay.metrics.value(Event.WEBRTC_SESSION_CONNECT_TIMEOUT) == 1
    await res.assert_released(session_tasks)
    assert await drained(bridge, baseline) == set()
    async with relay.client() as c:
        r = await c.post("/session", headers={"Authorization": f"Bearer {token('alice')}"})
    assert r.status_code == 201


async def test_peer_connection_closed_by_the_client_ends_the_session(
    start_relay: StartRelay, client_bridge: Bridge, session_tasks: SessionTasks
) -> None:
    """F-102/F-078: the relay sees the peer connection close and closes the WebSocket."""
    relay = await start_relay(WEBRTC)
    res = Resources(relay)
    async with signaled_client(relay, client_bridge) as client:
        await wait_state(first_channel(client), "open")
        res.capture()
        await close_peer(client_bridge, client.pc, timeout=5)
        closed = await client.ws.expect_close(timeout=TIMEOUT)
        assert (closed.code, closed.reason) == (1000, "session closed")
    await res.assert_released(session_tasks)


async def test_hard_close_on_violations_closes_the_session_and_the_websocket(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery, session_tasks: SessionTasks
) -> None:
    """F-105/F-146: rate refusals past HARD_CLOSE_AFTER_VIOLATIONS end the whole WebRTC session."""
    env = {**WEBRTC, "MAX_UDP_PPS_PER_SESSION": "1", "HARD_CLOSE_AFTER_VIOLATIONS": "2"}
    relay = await start_relay(env)
    port = await udp_echo(nursery)
    res = Resources(relay)
    async with signaled_client(relay, client_bridge) as client:
        udp = first_channel(client)
        await wait_state(udp, "open")
        for _ in range(4):
            udp.send(encode_v1(GUEST_PORT, LOOPBACK4, port, b"flood"))
        res.capture()
        closed = await client.ws.expect_close(timeout=TIMEOUT)
        assert (closed.code, closed.reason) == (1000, "session closed")
        # The relay closed its peer connection; the client sees it go.
        await wait_for(lambda: client.pc.connectionState == "closed", timeout=TIMEOUT)
    m = relay.metrics
    assert m.value(Event.SESSION_HARD_CLOSED) == 1
    assert m.value(Event.WEBRTC_UDP_DROPPED_RATE_LIMITED) >= 2
    await res.assert_released(session_tasks)


async def test_shutdown_closes_every_webrtc_session_and_signaling_socket(
    start_relay: StartRelay, client_bridge: Bridge
) -> None:
    """F-005 (fixed): every live session ends, each signalling WebSocket gets Close 1001, and the
    HTTP-offer session (which has no socket) ends too."""
    relay = await start_relay({**WEBRTC, "AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT": "3s"})
    ctx = relay.server.ctx
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(signaled_client(relay, client_bridge)) for _ in range(2)]
        http_pc = client_peer()
        stack.push_async_callback(close_peer, client_bridge, http_pc, timeout=5)
        http_pc.createDataChannel("udp", **UDP)
        await run_aio(client_bridge, http_pc.setLocalDescription)
        async with relay.client() as c:
            r = await c.post("/webrtc/offer", json={"type": "offer", "sdp": http_pc.localDescription.sdp})
        assert r.status_code == 200, r.text
        await run_aio(client_bridge, http_pc.setRemoteDescription, RTCSessionDescription(**r.json()["sdp"]))
        await wait_connected(http_pc)
        peers = live_peers(ctx)
        assert len(peers) == 3 and ctx.registry.active_count() == 3

        relay.server.request_shutdown()
        for client in clients:
            closed = await client.ws.expect_close(timeout=TIMEOUT)
            assert (closed.code, closed.reason) == (1001, "server shutting down")
        with trio.fail_after(TIMEOUT):
            for peer in peers:
                await peer.finished.wait()
        assert {p.end_reason for p in peers} == {"shutdown"}
        assert live_peers(ctx) == ()
        assert ctx.registry.active_count() == 0
        # Every client is told (DTLS close_notify), also one whose handshake was still settling.
        await wait_for(lambda: http_pc.connectionState == "closed", timeout=TIMEOUT)
        for client in clients:
            await wait_for(lambda c=client: c.pc.connectionState == "closed", timeout=TIMEOUT)
        for peer in peers:
            assert peer.pc.sctp is not None and peer.pc.sctp.state == "closed"


async def test_jwt_sid_lock_spans_every_endpoint_and_is_released_with_the_session(
    start_relay: StartRelay, client_bridge: Bridge
) -> None:
    """F-045/F-046/F-090/F-074: a live WebRTC session's sid refuses /session, /offer, /webrtc/offer
    (409), /udp (1013) and /webrtc/signal (1008), even with a new token; F-078: the sid can be
    used again right after the signalling WebSocket closed."""
    relay = await start_relay(JWT, unix_now=lambda: NOW)
    fresh = token("alice", exp=NOW + 601)  # another token for the same sid
    auth = {"Authorization": f"Bearer {fresh}"}
    async with signaled_client(relay, client_bridge, path=f"/webrtc/signal?token={token('alice')}") as ws1:
        await wait_state(first_channel(ws1), "open")
        async with relay.client() as c:
            bodies: list[tuple[str, dict[str, Any]]] = [
                ("/session", {}),
                ("/offer", {"version": 1, "offer": {"type": "offer", "sdp": "v=0"}}),
                ("/webrtc/offer", {"type": "offer", "sdp": "v=0"}),
            ]
            for path, body in bodies:
                r = await c.post(path, json=body, headers=auth)
                assert r.status_code == 409, (path, r.text)
                assert r.json() == {"code": "session_already_active", "message": "session already active"}
        async with connect(relay.host_port, f"/udp?token={fresh}") as udp_ws:
            err = await expect_error(udp_ws, "session_already_active", 1013)
            assert err["message"] == "session already active"
        async with connect(relay.host_port, f"/webrtc/signal?token={fresh}") as ws:
            await ws.send_json(offer_message("v=0"))
            await expect_error(ws, "session_already_active", 1008)
        assert relay.server.ctx.registry.active_count() == 1
        await ws1.ws.close()
    # Right away: no waiting for the relay to notice (the lease goes before the peer closes).
    async with signaled_client(relay, client_bridge, path=f"/webrtc/signal?token={fresh}") as ws2:
        await wait_state(first_channel(ws2), "open")
        assert relay.server.ctx.registry.active_count() == 1


# --- cancellation at every stage: nothing leaks --------------------------------------------------

STAGES = [
    "before_negotiation",
    "inside_negotiation",
    "during_ice",
    "dtls_handshake",
    "channel_open",
    "mid_traffic",
]


class HeldNegotiation:
    """Parks the relay's negotiation: in Trio before it starts, or inside aiortc (asyncio) once the
    answer is set and the ICE sockets are bound, until `release()` (or cancellation)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
        self.entered = trio.Event()
        self._trio_release = trio.Event()
        self._aio_release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        real = RelayPeer.negotiate

        async def before(peer: RelayPeer, offer_sdp: str) -> str:
            self.entered.set()
            await self._trio_release.wait()
            return await real(peer, offer_sdp)

        async def inside(peer: RelayPeer, offer_sdp: str) -> str:
            real_sld = peer.pc.setLocalDescription

            async def set_and_park(desc: RTCSessionDescription | None = None) -> None:
                await real_sld(desc)
                self._loop = asyncio.get_running_loop()
                self._aio_release = asyncio.Event()
                self.entered.set()
                await self._aio_release.wait()

            peer.pc.setLocalDescription = set_and_park  # type: ignore[method-assign,assignment]
            return await real(peer, offer_sdp)

        if stage == "before_negotiation":
            monkeypatch.setattr(RelayPeer, "negotiate", before)
        elif stage == "inside_negotiation":
            monkeypatch.setattr(RelayPeer, "negotiate", inside)

    def release(self) -> None:
        self._trio_release.set()
        if self._loop is not None and self._aio_release is not None:
            self._loop.call_soon_threadsafe(self._aio_release.set)


class BridgeExitRecorder:
    """Records the relay loop's asyncio tasks as the server closes it (after every session ended);
    the loop itself would cancel leftovers and hide a leak."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.leftovers: set[Any] | None = None
        self.done = trio.Event()
        real = open_bridge  # what aero_relay.server uses

        @asynccontextmanager
        async def recording() -> AsyncIterator[Bridge]:
            async with real() as bridge:
                try:
                    yield bridge
                finally:
                    with trio.CancelScope(shield=True):
                        self.leftovers = await drained(bridge, set(), timeout=2.0)
                    self.done.set()

        monkeypatch.setattr(aero_relay.server, "open_bridge", recording)


async def traffic(client: Client, port: int) -> None:
    """Datagrams through the relay to an echo server, about one a millisecond, until cancelled."""
    udp = first_channel(client)
    while udp.readyState == "open":
        udp.send(encode_v1(GUEST_PORT, LOOPBACK4, port, b"t" * 500))
        await trio.sleep(0.001)


@pytest.mark.parametrize("how", ["ws_close", "shutdown"])
@pytest.mark.parametrize("stage", STAGES)
async def test_ending_a_session_at_any_stage_leaks_nothing(
    start_relay: StartRelay,
    client_bridge: Bridge,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    session_tasks: SessionTasks,
    stage: str,
    how: str,
) -> None:
    """F-078/F-104: closing the signalling WebSocket, or shutting down, before the answer, inside
    aiortc's negotiation, during ICE, during the DTLS handshake, with an open channel, or
    mid-traffic releases everything the session held."""
    recorder = BridgeExitRecorder(monkeypatch)
    relay = await start_relay({**WEBRTC, "AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT": "3s"})
    ctx = relay.server.ctx
    server_bridge = ctx.bridge
    assert server_bridge is not None
    baseline = server_bridge.tasks()
    port = await udp_echo(nursery)
    held = HeldNegotiation(monkeypatch, stage)
    res = Resources(relay)
    client_bridge.attach()
    pc = client_peer()
    try:
        dc = pc.createDataChannel("udp", **UDP)
        await run_aio(client_bridge, pc.setLocalDescription)
        async with connect(relay.host_port, "/webrtc/signal") as ws, trio.open_nursery() as traffic_nursery:
            await ws.send_json(offer_message(pc.localDescription.sdp))
            client = Client(relay, client_bridge, pc, ws)
            client.channels.append(client.listen(dc))
            with trio.fail_after(TIMEOUT):
                if stage in ("before_negotiation", "inside_negotiation"):
                    await held.entered.wait()
                else:
                    answer = RTCSessionDescription(**(await ws.receive_json())["sdp"])
            if stage == "during_ice":
                await wait_for(lambda: live_peers(ctx)[0].pc.iceConnectionState == "checking")
            elif stage == "dtls_handshake":
                sctp = live_peers(ctx)[0].pc.sctp
                assert sctp is not None
                handshaking = trio.Event()
                sctp.transport.on(
                    "statechange",
                    lambda: handshaking.set() if sctp.transport.state == "connecting" else None,
                )
                await run_aio(client_bridge, pc.setRemoteDescription, answer)
                with trio.fail_after(TIMEOUT):
                    await handshaking.wait()
            elif stage in ("channel_open", "mid_traffic"):
                await run_aio(client_bridge, pc.setRemoteDescription, answer)
                await wait_state(dc, "open")
                await client.echo(dc, port, b"binding")
                if stage == "mid_traffic":
                    traffic_nursery.start_soon(traffic, client, port)
                    out = relay.metrics.value(Event.WEBRTC_UDP_DATAGRAMS_OUT)
                    await wait_for(lambda: relay.metrics.value(Event.WEBRTC_UDP_DATAGRAMS_OUT) >= out + 20)
            res.capture()

            if how == "ws_close":
                await ws.close()
                # The relay reads the socket again (and sees it closed) once the offer is handled,
                # like the original (negotiation is bounded by the ICE gathering timeout).
                held.release()
            else:
                relay.server.request_shutdown()
                closed = await ws.expect_close(timeout=TIMEOUT)
                assert (closed.code, closed.reason) == (1001, "server shutting down")
            await res.assert_released(session_tasks)
            if stage in ("dtls_handshake", "channel_open", "mid_traffic"):
                # The client is told (DTLS close_notify), even mid-handshake.
                await wait_for(lambda: pc.connectionState == "closed", timeout=TIMEOUT)
            traffic_nursery.cancel_scope.cancel()
    finally:
        await close_peer(client_bridge, pc, timeout=5)
    if how == "ws_close":
        assert await drained(server_bridge, baseline) == set()
    else:
        with trio.fail_after(TIMEOUT):
            await recorder.done.wait()
        assert recorder.leftovers == set()
    assert "aero_relay.webrtc.peer.RelayPeer.run" in session_tasks.seen


@pytest.mark.parametrize("path", ["/webrtc/offer", "/offer"])
async def test_shutdown_during_an_http_offer_negotiation_ends_it_at_once(
    start_relay: StartRelay,
    client_bridge: Bridge,
    monkeypatch: pytest.MonkeyPatch,
    session_tasks: SessionTasks,
    path: str,
) -> None:
    """An HTTP offer negotiates in its request, outside the session's task: ending the session
    (here, shutdown) cancels the negotiation too, so the request answers 500 at once, and no ICE
    gathering goes on on a closed peer connection."""
    recorder = BridgeExitRecorder(monkeypatch)
    relay = await start_relay({**WEBRTC, "AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT": "5s"})
    held = HeldNegotiation(monkeypatch, "inside_negotiation")
    res = Resources(relay)
    client_bridge.attach()
    pc = client_peer()
    try:
        pc.createDataChannel("udp", **UDP)
        await run_aio(client_bridge, pc.setLocalDescription)
        sdp = pc.localDescription.sdp
        body = (
            {"type": "offer", "sdp": sdp}
            if path == "/webrtc/offer"
            else {"version": 1, "offer": {"type": "offer", "sdp": sdp}}
        )
        responses: list[Any] = []
        answered = trio.Event()

        async def post() -> None:
            async with relay.client() as c:
                responses.append(await c.post(path, json=body))
            answered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            with trio.fail_after(TIMEOUT):
                await held.entered.wait()
            res.capture()
            relay.server.request_shutdown()
            with trio.fail_after(2.0):  # well inside the 5 s graceful shutdown
                await answered.wait()
        (r,) = responses
        assert r.status_code == 500
        assert r.json()["code"] == "internal_error"
        await res.assert_released(session_tasks)
        with trio.fail_after(TIMEOUT):
            await recorder.done.wait()
        assert recorder.leftovers == set()
    finally:
        await close_peer(client_bridge, pc, timeout=5)


async def test_the_lease_is_released_before_the_peer_connection_closes(
    start_relay: StartRelay, client_bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F-104: the slot and the sid go first, then pc.Close() (a slow close delays no reuse)."""
    relay = await start_relay(WEBRTC)
    active_at_close: list[int] = []
    real = close_peer  # what aero_relay.webrtc.peer uses

    async def recording(bridge: Bridge, pc: Any, *, timeout: float) -> bool:
        active_at_close.append(relay.server.ctx.registry.active_count())
        return await real(bridge, pc, timeout=timeout)

    monkeypatch.setattr(peer_module, "close_peer", recording)
    async with signaled_client(relay, client_bridge) as client:
        await wait_state(first_channel(client), "open")
        await client.ws.close()
        await wait_for(lambda: bool(active_at_close))
    assert active_at_close[0] == 0


# --- /webrtc/signal edge cases (section 9) --------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "auth"),
    [
        ({}, {"type": "auth", "token": "t", "apiKey": "t"}),  # F-208: accepted and ignored
        ({"AUTH_MODE": "api_key", "API_KEY": "k"}, {"type": "auth", "apiKey": "k"}),
    ],
    ids=["none", "api_key"],
)
async def test_auth_then_offer_back_to_back(
    start_relay: StartRelay, client_bridge: Bridge, env: dict[str, str], auth: dict[str, object]
) -> None:
    """F-208/F-072: an auth message and the offer sent without waiting are handled in order."""
    relay = await start_relay({**WEBRTC, **env})
    async with signaled_client(relay, client_bridge, before_offer=(auth,)) as client:
        await wait_state(first_channel(client), "open")
        peer = client.peer()
        assert peer.info.credential == ("k" if env else "")  # F-047: kept for the L2 bridge


async def test_auth_after_the_offer_is_an_unexpected_message(
    start_relay: StartRelay, client_bridge: Bridge
) -> None:
    """F-073: after the offer an auth message ends the connection, and the session with it."""
    relay = await start_relay(WEBRTC)
    async with signaled_client(relay, client_bridge) as client:
        await client.ws.send_json({"type": "auth", "token": "t"})
        err = await expect_error(client.ws, "unexpected_message", 1008)
        assert err["message"] == "auth received after offer"
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "answer", "sdp": {"type": "answer", "sdp": "v=0"}},
        {"type": "error", "code": "x", "message": "y"},
    ],
    ids=["answer", "error"],
)
async def test_client_answer_or_error_message_is_a_bad_message(
    start_relay: StartRelay, message: dict[str, object]
) -> None:
    """F-077: valid to parse, not acceptable from a client."""
    relay = await start_relay()
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        await ws.send_json(message)
        err = await ws.receive_json()
        closed = await ws.expect_close()
    assert err == {
        "type": "error",
        "code": "bad_message",
        "message": f'unexpected message type "{message["type"]}"',
    }
    assert (closed.code, closed.reason) == (1008, "bad message")


async def test_empty_candidate_is_ignored(start_relay: StartRelay, client_bridge: Bridge) -> None:
    """F-076: an empty candidate string (end-of-candidates) is ignored; the session goes on."""
    relay = await start_relay(WEBRTC)
    end_of_candidates = {"type": "candidate", "candidate": {"candidate": "", "sdpMid": "0"}}
    async with signaled_client(relay, client_bridge) as client:
        await client.ws.send_json(end_of_candidates)
        await client.ws.send_json({"type": "candidate", "candidate": {"candidate": ""}})
        await wait_state(first_channel(client), "open")
        # The first error the client gets is the one provoked now: the candidates caused none.
        await client.ws.send_json({"type": "answer", "sdp": {"type": "answer", "sdp": "v=0"}})
        err = await expect_error(client.ws, "bad_message", 1008)
        assert err["message"] == 'unexpected message type "answer"'


@pytest.mark.parametrize(
    "candidate",
    [
        {"candidate": "candidate:garbage", "sdpMid": "0"},
        {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"},  # no sdpMid/sdpMLineIndex
    ],
    ids=["unparsable", "no_mid"],
)
async def test_bad_candidate_is_a_bad_message(
    start_relay: StartRelay, client_bridge: Bridge, candidate: dict[str, object]
) -> None:
    """F-076: a candidate the peer connection refuses -> bad_message, close 1008 "bad message"."""
    relay = await start_relay(WEBRTC)
    async with signaled_client(relay, client_bridge, apply_answer=False) as client:
        await client.ws.send_json({"type": "candidate", "candidate": candidate})
        await expect_error(client.ws, "bad_message", 1008)
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)
    assert live_peers(relay.server.ctx) == ()


KEEPALIVE = {"SIGNALING_WS_IDLE_TIMEOUT": "400ms", "SIGNALING_WS_PING_INTERVAL": "100ms"}


async def test_idle_timeout_when_pings_go_unanswered_ends_the_session(
    start_relay: StartRelay, client_bridge: Bridge
) -> None:
    """F-079/F-078: pings every interval; no pong or message within the idle timeout -> Close
    1000 "idle timeout", and the WebRTC session (alive and well) ends with the socket."""
    relay = await start_relay({**WEBRTC, **KEEPALIVE})
    async with signaled_client(relay, client_bridge, answer_pings=False) as client:
        await wait_state(first_channel(client), "open")
        closed = await client.ws.expect_close(timeout=TIMEOUT)
        assert (closed.code, closed.reason) == (1000, "idle timeout")
        assert client.ws.pings_received >= 2
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


async def test_answered_pings_keep_the_signaling_socket_open(
    start_relay: StartRelay, client_bridge: Bridge
) -> None:
    """F-079: every pong pushes the idle deadline forward."""
    relay = await start_relay({**WEBRTC, **KEEPALIVE})
    async with signaled_client(relay, client_bridge) as client:
        with trio.move_on_after(1.0):  # 2.5 idle timeouts
            while True:
                await client.ws.receive()  # answers pings; raises Closed if the relay closes
        assert client.ws.pings_received >= 5
        assert relay.server.ctx.registry.active_count() == 1


@pytest.mark.parametrize("path", ["/webrtc/signal", "/webrtc/offer", "/offer"])
async def test_a_session_that_cannot_be_created_releases_its_lease(
    start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """F-074/F-055/F-061: NewSession failing after the slot and sid were taken gives them back."""
    relay = await start_relay(JWT, unix_now=lambda: NOW)

    def broken(*_args: object) -> RelayPeer:
        raise RuntimeError("no peer connection today")

    module = signal_ws_module if path == "/webrtc/signal" else offer_module
    monkeypatch.setattr(module, "RelayPeer", broken)
    tok = token("bob")
    if path == "/webrtc/signal":
        async with connect(relay.host_port, f"/webrtc/signal?token={tok}") as ws:
            await ws.send_json(offer_message("v=0"))
            err = await expect_error(ws, "internal_error", 1011)
        assert err["message"] == "no peer connection today"
    else:
        offer = {"type": "offer", "sdp": "v=0"}
        body: dict[str, object] = {"version": 1, "offer": offer} if path == "/offer" else dict(offer)
        async with relay.client() as c:
            r = await c.post(path, json=body, headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 500
        text = "failed to create session" if path == "/offer" else "no peer connection today"
        assert r.json() == {"code": "internal_error", "message": text}
    assert relay.server.ctx.registry.active_count() == 0
    assert not relay.server.ctx.sessions
