"""WebRTC cancellation matrix: every way a WebRTC session ends, at every stage, leaks nothing.

Transports: an offer over `/webrtc/signal`, an offer over `POST /webrtc/offer`, and the latter with
an `l2` channel bridged to a test backend. Stages: negotiating (answer received, never applied),
connected and idle (one binding open), mid-traffic in both directions (the client streams to a UDP
peer that echoes and also floods the binding), L2 dialing (the backend never answers the upgrade)
and L2 streaming (PINGs and PONGs flowing). Causes: the client closes its peer connection, the
client vanishes (its ICE sockets stop sending and answering: the relay notices by ICE consent
failure, shortened here), the connect timeout, a hard close on rate violations, the signalling
WebSocket closing, and server shutdown.

After each: the session's Trio tasks are gone (instrument), no new asyncio task on the relay's
bridge loop, no live relay peer, every ICE and binding socket closed, the descriptor count back to
its baseline, the registry slot and sid free, the right metric counted, and for `l2` the relay's
backend connection closed (F-078, F-101, F-102, F-104, F-146, F-159, F-005 as fixed by the design).
A last cell checks that an unused `/session` reservation expires (F-053).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import Any

import aioice.ice
import pytest
import trio
from aiortc import RTCDataChannel, RTCSessionDescription

from aero_relay.core.frames import encode_v1
from aero_relay.observability.metrics import Event
from aero_relay.webrtc.bridge import Bridge, close_peer, open_bridge, run_aio
from aero_relay.webrtc.hooks import HardenedPeerConnection
from aero_relay.webrtc.peer import RelayPeer, live_peers
from tests.conftest import RunningRelay
from tests.helpers import mint_jwt
from tests.reliability.support import (
    TaskCounter,
    fds_back_to,
    open_fds,
    running_relay,
    task_counter,
    wait_until,
)
from tests.reliability.test_udp_cancellation import FloodingEcho
from tests.webrtc.l2_backend import PING, PONG, L2Backend, start_backend
from tests.webrtc.peers import client_peer
from tests.webrtc.test_l2bridge import Chan
from tests.webrtc.test_peer import GUEST_PORT, LOOPBACK4, TIMEOUT, UDP, WEBRTC, offer_message
from tests.webrtc.test_session_lifecycle import (
    BridgeExitRecorder,
    Resources,
    SessionTasks,
    drained,
    session_tasks,
)
from tests.wsclient import WSClient, connect

__all__ = ["session_tasks"]  # a fixture, re-exported for pytest

BASE = {**WEBRTC, "AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT": "3s"}
HARD_CLOSE = {"MAX_UDP_PPS_PER_SESSION": "1", "HARD_CLOSE_AFTER_VIOLATIONS": "2"}
CONNECT_TIMEOUT = {"WEBRTC_SESSION_CONNECT_TIMEOUT": "300ms"}

# Which causes make sense at which stage, per transport.
CAUSES_AT = {
    "negotiating": ("connect_timeout", "ws_close", "shutdown"),
    "idle": ("client_close", "vanish", "hard_close", "ws_close", "shutdown"),
    "traffic": ("client_close", "vanish", "ws_close", "shutdown"),
    "l2_dialing": ("client_close", "vanish", "shutdown"),
    "l2_streaming": ("client_close", "vanish", "shutdown"),
}
STAGES_OF = {
    "signal": ("negotiating", "idle", "traffic"),
    "offer": ("negotiating", "idle", "traffic"),
    "l2": ("l2_dialing", "l2_streaming"),
}
MATRIX = [
    pytest.param(transport, stage, cause, id=f"{transport}-{stage}-{cause}")
    for transport, stages in STAGES_OF.items()
    for stage in stages
    for cause in CAUSES_AT[stage]
    if not (cause == "ws_close" and transport != "signal")  # only /webrtc/signal has a socket
]


@pytest.fixture
async def client_bridge() -> AsyncIterator[Bridge]:
    """The client peers' own trio-asyncio loop (the relay's loop holds only relay tasks)."""
    async with open_bridge() as bridge:
        yield bridge


def env_for(transport: str, stage: str, cause: str, backend: L2Backend | None) -> dict[str, str]:
    env = dict(BASE)
    if cause == "connect_timeout":
        env.update(CONNECT_TIMEOUT)
    if cause == "hard_close":
        env.update(HARD_CLOSE)
    if backend is not None:
        env["L2_BACKEND_WS_URL"] = backend.url
    return env


class Counter:
    """Counts a client channel's messages (no buffering: traffic floods them)."""

    def __init__(self, dc: RTCDataChannel) -> None:
        self.count = 0
        dc.on("message", self._on_message)

    def _on_message(self, _msg: object) -> None:
        self.count += 1


def silence(pc: HardenedPeerConnection) -> None:
    """Vanish without a word: the client's ICE sockets stop sending and stop answering."""
    for conn in pc.ice_connections:
        for protocol in conn._protocols:
            protocol.datagram_received = lambda *_a: None  # type: ignore[method-assign]
            if protocol.transport is not None:
                protocol.transport.sendto = lambda *_a, **_k: None  # type: ignore[method-assign]


def backend_port(backend: L2Backend) -> int:
    return int(backend.url.rsplit(":", 1)[1].split("/", 1)[0])


def tcp_connections_to(port: int) -> int:
    """TCP sockets this process holds whose remote end is `port` (the relay's backend dials)."""
    ours = {t[len("socket:[") : -1] for t in open_fds().values() if t.startswith("socket:[")}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[9] in ours:
                    count += 1
    return count


def under(task: trio.lowlevel.Task, nursery: trio.Nursery) -> bool:
    """Whether `task` runs (directly or not) inside `nursery`."""
    parent = task.parent_nursery
    while parent is not None:
        if parent is nursery:
            return True
        owner = parent.parent_task
        parent = owner.parent_nursery
    return False


@pytest.mark.parametrize(("transport", "stage", "cause"), MATRIX)
async def test_webrtc_session_teardown_frees_everything(
    transport: str,
    stage: str,
    cause: str,
    client_bridge: Bridge,
    session_tasks: SessionTasks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await run_cell(transport, stage, cause, client_bridge, session_tasks, monkeypatch)


async def run_cell(
    transport: str,
    stage: str,
    cause: str,
    client_bridge: Bridge,
    session_tasks: SessionTasks,
    monkeypatch: pytest.MonkeyPatch,
    *,
    late_reaction: bool = False,
) -> None:
    bridge_exit = BridgeExitRecorder(monkeypatch)
    if cause == "vanish":  # consent lost after 2 missed checks ~0.1 s apart (aioice: 6 x 5 s)
        monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)
        monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    fd_baseline = open_fds()
    async with task_counter() as tasks:
        task_baseline = tasks.snapshot()
        async with trio.open_nursery() as outer:
            echo = FloodingEcho()
            await outer.start(echo.run)
            backend = None
            if transport == "l2":
                backend = await start_backend(outer, stall_handshake=stage == "l2_dialing")
            async with running_relay(env_for(transport, stage, cause, backend)) as relay:
                cell = Cell(transport, stage, cause, relay, client_bridge, echo, backend)
                cell.late_reaction = late_reaction
                await cell.run(session_tasks, tasks, outer)
            outer.cancel_scope.cancel()
        # The relay has fully shut down: everything it ever started or opened must be gone.
        assert tasks.since(task_baseline) == []
    with trio.fail_after(TIMEOUT):
        await bridge_exit.done.wait()
    assert bridge_exit.leftovers == set()
    await fds_back_to(fd_baseline)


LATE = 0.2  # how late the relay handles its peer connection closing (a busy relay)


class RelayCrashed(Exception):
    """The relay's server task died of an error from the asyncio side."""


@pytest.mark.parametrize("transport", ["signal", "offer"])
async def test_a_datagram_for_a_vanished_client_does_not_crash_the_relay(
    transport: str, client_bridge: Bridge, session_tasks: SessionTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client vanishes; the relay's ICE consent expires; a datagram for the client arrives before
    DTLS and the session have caught up (here both LATE seconds late, as on a busy relay; under load
    the same race happens by itself: three parallel runs of an earlier version of this file made the
    "vanish" cells mid-traffic fail this way). The session must end as usual, the relay keep running."""
    real_close = RelayPeer.close

    def late_close(peer: RelayPeer, reason: str) -> None:
        if reason.startswith(("pc_", "sctp_")) and not peer.end_reason:

            async def later() -> None:
                await trio.sleep(LATE)
                real_close(peer, reason)

            trio.lowlevel.spawn_system_task(later)
            return
        real_close(peer, reason)

    monkeypatch.setattr(RelayPeer, "close", late_close)
    real_recv = aioice.ice.Connection.recv

    async def late_recv(conn: aioice.ice.Connection) -> bytes:
        try:
            return await real_recv(conn)
        except ConnectionError:
            await asyncio.sleep(LATE)  # DTLS sees the closed ICE connection late
            raise

    monkeypatch.setattr(aioice.ice.Connection, "recv", late_recv)
    try:
        await run_cell(
            transport, "idle", "vanish", client_bridge, session_tasks, monkeypatch, late_reaction=True
        )
    except BaseExceptionGroup as eg:
        if eg.subgroup(ConnectionError) is not None:
            raise RelayCrashed(repr(eg.subgroup(ConnectionError))) from eg
        raise


class Cell:
    def __init__(
        self,
        transport: str,
        stage: str,
        cause: str,
        relay: RunningRelay,
        client_bridge: Bridge,
        echo: FloodingEcho,
        backend: L2Backend | None,
    ) -> None:
        self.transport, self.stage, self.cause = transport, stage, cause
        self.relay = relay
        self.bridge = client_bridge
        self.echo = echo
        self.backend = backend
        self.ws: WSClient | None = None
        self.late_reaction = False
        self.peer: RelayPeer | None = None
        self.traffic_scope = trio.CancelScope()  # the client's and the echo's traffic tasks

    async def run(self, session_tasks: SessionTasks, tasks: TaskCounter, outer: trio.Nursery) -> None:
        ctx = self.relay.server.ctx
        server_bridge = ctx.bridge
        assert server_bridge is not None
        aio_baseline = server_bridge.tasks()
        fds = open_fds()
        relay_tasks = tasks.snapshot()
        res = Resources(self.relay)
        self.bridge.attach()
        pc = client_peer()
        try:
            udp_dc = pc.createDataChannel("udp", **UDP)
            udp = Counter(udp_dc)
            l2 = Chan.wrap(pc.createDataChannel("l2")) if self.transport == "l2" else None
            await run_aio(self.bridge, pc.setLocalDescription)
            async with AsyncExitStack() as stack:
                answer = await self.offer(stack, pc.localDescription.sdp)
                traffic = await stack.enter_async_context(trio.open_nursery())
                if self.stage != "negotiating":
                    await run_aio(self.bridge, pc.setRemoteDescription, RTCSessionDescription(**answer))
                    await wait_until(lambda: udp_dc.readyState == "open", TIMEOUT, "udp channel open")
                    udp_dc.send(encode_v1(GUEST_PORT, LOOPBACK4, self.echo.port, b"first"))
                    await wait_until(lambda: udp.count >= 1, TIMEOUT, "first datagram echoed")
                await self.reach(traffic, udp_dc, udp, l2)
                res.capture()
                (peer,) = res.peers
                self.peer = peer
                assert res.sockets, "nothing captured to check"
                if self.backend is not None:  # the relay's dial is open (or still handshaking)
                    assert tcp_connections_to(backend_port(self.backend)) == 1
                await self.end(pc, udp_dc)
                with trio.fail_after(TIMEOUT):
                    await peer.finished.wait()
                traffic.cancel_scope.cancel()
            gc.collect()  # collect aiortc's fire-and-forget tasks now: their unretrieved errors surface
            await trio.sleep(0.01)
            await self.check_end_reason(peer.end_reason)
            await res.assert_released(session_tasks)
            assert live_peers(ctx) == ()
            if self.backend is not None:
                port = backend_port(self.backend)
                await wait_until(lambda: tcp_connections_to(port) == 0, what="backend connection closed")
            self.check_metrics()
            if self.cause == "shutdown":
                return
            assert await drained(server_bridge, aio_baseline) == set()
            await close_peer(self.bridge, pc, timeout=5)
            if self.stage != "l2_dialing":  # the stalled backend keeps its accepted socket open
                await fds_back_to(fds)

            def leftover() -> list[str]:
                return sorted(t.name for t in tasks.live - relay_tasks if not under(t, outer))

            await wait_until(lambda: not leftover(), what=f"session tasks to exit: {leftover()}")
            await self.slot_is_free()
        finally:
            with trio.CancelScope(shield=True):
                await close_peer(self.bridge, pc, timeout=5)

    async def offer(self, stack: AsyncExitStack, sdp: str) -> dict[str, Any]:
        """Send the offer on this cell's transport; the answer's `sdp` object."""
        if self.transport == "signal":
            self.ws = ws = await stack.enter_async_context(connect(self.relay.host_port, "/webrtc/signal"))
            await ws.send_json(offer_message(sdp))
            with trio.fail_after(TIMEOUT):
                msg = await ws.receive_json()
            assert msg["type"] == "answer", msg
            return msg["sdp"]  # type: ignore[no-any-return]
        async with self.relay.client() as http:
            r = await http.post("/webrtc/offer", json={"type": "offer", "sdp": sdp})
        assert r.status_code == 200, r.text
        return r.json()["sdp"]  # type: ignore[no-any-return]

    async def reach(
        self, traffic: trio.Nursery, udp_dc: RTCDataChannel, udp: Counter, l2: Chan | None
    ) -> None:
        metrics = self.relay.metrics
        if self.stage == "traffic":
            traffic.start_soon(self.until_quiet, stream_frames(udp_dc, self.echo.port))
            await wait_until(
                lambda: metrics.value(Event.WEBRTC_UDP_DATAGRAMS_OUT) > 20 and udp.count > 20,
                TIMEOUT,
                "traffic in both directions",
            )
        elif self.stage == "l2_dialing":
            backend = self.backend
            assert backend is not None
            await wait_until(lambda: bool(backend.requests), TIMEOUT, "the backend dial")
        elif self.stage == "l2_streaming":
            assert l2 is not None
            await l2.wait_settled()
            l2.dc.send(PING)
            assert await l2.recv() == PONG
            traffic.start_soon(self.until_quiet, stream_pings(l2))
            await wait_until(
                lambda: metrics.value(Event.L2_BRIDGE_MESSAGES_TO_CLIENT_TOTAL) > 10, TIMEOUT, "l2 streaming"
            )

    async def end(self, pc: HardenedPeerConnection, udp_dc: RTCDataChannel) -> None:
        """The cause; then the signalling socket's close, when there is one."""
        ws = self.ws
        cause = self.cause
        if cause == "client_close":
            await close_peer(self.bridge, pc, timeout=5)
        elif cause == "vanish":
            await self.quiesce()
            silence(pc)
            if self.late_reaction:
                await self.datagram_after_ice_closed()
        elif cause == "hard_close":  # F-146: refusals past HARD_CLOSE_AFTER_VIOLATIONS
            for i in range(4):
                udp_dc.send(encode_v1(GUEST_PORT, LOOPBACK4, self.echo.port, b"flood %d" % i))
        elif cause == "ws_close":
            assert ws is not None
            await ws.close()
            return
        elif cause == "shutdown":
            self.relay.server.request_shutdown()
        if ws is not None:
            want = (1001, "server shutting down") if cause == "shutdown" else (1000, "session closed")
            closed = await ws.expect_close(timeout=TIMEOUT)
            assert (closed.code, closed.reason) == want

    async def until_quiet(self, traffic: Awaitable[None]) -> None:
        with self.traffic_scope:
            await traffic

    async def quiesce(self) -> None:
        """Stop all traffic before the client vanishes, so nothing is unacknowledged when its ICE
        consent expires (a send in that window is covered by the test above)."""
        self.traffic_scope.cancel()
        self.echo.limit = 0
        await trio.sleep(0.05)  # what is in flight lands and is acknowledged while the client listens

    async def datagram_after_ice_closed(self) -> None:
        """Once the relay's ICE connection closed (consent expired), one datagram for the client."""
        assert self.peer is not None and self.peer.pc.sctp is not None
        pc = self.peer.pc
        await wait_until(lambda: pc.iceConnectionState in ("closed", "failed"), TIMEOUT, "relay ICE closed")
        assert pc.sctp is not None and pc.sctp.transport.state == "connected"  # DTLS has not noticed yet
        await self.echo.sock.sendto(b"late", self.echo.peer)
        await trio.sleep(0.05)
        gc.collect()  # the failed asyncio task is collected, its error reported

    async def check_end_reason(self, reason: str) -> None:
        """Why the relay says the session ended (its "webrtc session closed" log field)."""
        expected = {
            "connect_timeout": {"connect_timeout"},  # F-101
            "shutdown": {"shutdown"},
            "client_close": {"sctp_closed", "pc_closed"},  # F-102: the association goes first
            "vanish": {"pc_closed", "pc_failed", "sctp_closed"},  # ICE consent expired: aiortc closes the PC
            "hard_close": {"hard_close"},  # F-146
            "ws_close": {"closed"},  # F-078
        }[self.cause]
        assert reason in expected, reason

    def check_metrics(self) -> None:
        m = self.relay.metrics
        assert m.value(Event.WEBRTC_SESSION_CONNECT_TIMEOUT) == (1 if self.cause == "connect_timeout" else 0)
        assert m.value(Event.SESSION_HARD_CLOSED) == (1 if self.cause == "hard_close" else 0)
        if self.cause == "hard_close":
            assert m.value(Event.WEBRTC_UDP_DROPPED_RATE_LIMITED) >= 2
        if self.transport == "l2":
            assert m.value(Event.L2_BRIDGE_DIALS_TOTAL) == 1

    async def slot_is_free(self) -> None:
        """The registry holds nothing: a fresh `/session` reservation is granted."""
        ctx = self.relay.server.ctx
        assert ctx.registry.active_count() == 0
        async with self.relay.client() as http:
            r = await http.post("/session")
        assert r.status_code == 201, r.text
        assert ctx.registry.active_count() == 1


async def stream_frames(dc: RTCDataChannel, port: int) -> None:
    """Client->UDP traffic: a datagram about every millisecond while the channel is open."""
    i = 0
    while dc.readyState == "open":
        dc.send(encode_v1(GUEST_PORT, LOOPBACK4, port, b"t%d" % i))
        i += 1
        await trio.sleep(0.001)


async def stream_pings(l2: Chan) -> None:
    """L2 traffic both ways: a PING every 2 ms (the backend answers each with a PONG)."""
    while l2.dc.readyState == "open":
        l2.dc.send(PING)
        with contextlib.suppress(trio.WouldBlock):
            while True:
                l2.inbox.receive_nowait()
        await trio.sleep(0.002)


# --- /session reservations --------------------------------------------------------------------

NOW = 1_700_000_000


async def test_unused_session_reservation_expires_and_frees_slot_and_sid() -> None:
    """F-053: a `/session` reservation nobody uses goes at SESSION_PREALLOC_TTL: the slot and the
    sid are free again (the same sid can reserve again), and nothing it started runs on."""
    env = {**BASE, "AUTH_MODE": "jwt", "JWT_SECRET": "s", "SESSION_PREALLOC_TTL": "200ms"}
    tok = mint_jwt("s", {"sid": "alice", "iat": NOW, "exp": NOW + 600})
    auth = {"Authorization": f"Bearer {tok}"}
    fd_baseline = open_fds()
    async with task_counter() as tasks:
        baseline = tasks.snapshot()
        async with running_relay(env, unix_now=lambda: NOW) as relay:
            registry = relay.server.ctx.registry
            relay_tasks = tasks.snapshot()
            for _ in range(2):  # the second round proves the sid was released
                async with relay.client() as http:
                    r = await http.post("/session", headers=auth)
                    assert r.status_code == 201, r.text
                    assert registry.active_count() == 1
                    busy = await http.post("/session", headers=auth)
                    assert busy.status_code == 409, busy.text
                await wait_until(lambda: registry.active_count() == 0, 3.0, "reservation expired")
            await wait_until(lambda: not (tasks.live - relay_tasks), what="no task left by the reservations")
        assert tasks.since(baseline) == []
    await fds_back_to(fd_baseline)
