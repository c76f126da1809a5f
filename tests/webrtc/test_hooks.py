"""The aiortc/aioice hardening hooks (F-099, F-115), with real in-process peers on loopback only."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import aioice.ice
import aioice.mdns
import pytest
import trio
from aioice import Connection
from aiortc import RTCPeerConnection, RTCSctpTransport
from aiortc.rtcsctptransport import SCTP_DATA_FIRST_FRAG, SCTP_DATA_LAST_FRAG, DataChunk

from aero_relay.core.ice import IceServer
from aero_relay.webrtc import hooks
from aero_relay.webrtc.bridge import Bridge, close_peer, forward_to_trio, open_bridge, run_aio
from aero_relay.webrtc.hooks import (
    DEFAULT_SOCKET_RCVBUF,
    HardenedConnection,
    HardenedPeerConnection,
    HardenedSctpTransport,
    HookError,
    PeerHardening,
    ReassemblyOverflow,
    bind_udp_in_range,
    rtc_configuration,
)
from tests.webrtc.peers import (
    LOOPBACK,
    client_peer,
    connected_pair,
    ignore_max_message_size,
    offer_answer,
    relay_config,
    sdp_candidates,
    sdp_max_message_size,
    server_peer,
)


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    async with open_bridge() as b:
        yield b


def free_port_range(size: int) -> tuple[int, int]:
    """A range of `size` loopback UDP ports, all free right now."""
    for _ in range(50):
        low = 20000 + secrets.randbelow(30000)
        socks: list[socket.socket] = []
        try:
            for port in range(low, low + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((LOOPBACK, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return low, low + size - 1
    raise RuntimeError("no free port range")


@pytest.fixture
def occupied() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def occupy(socks: list[socket.socket], ports: range) -> None:
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(s)
        s.bind((LOOPBACK, port))


async def gather_answer(
    bridge: Bridge, server: HardenedPeerConnection, before_close: Callable[[], None] | None = None
) -> str:
    """The server's answer SDP to a loopback client offer; the client never sees it."""
    client = client_peer()
    client.createDataChannel("udp", ordered=False, maxRetransmits=0)
    try:
        answer = await offer_answer(bridge, client, server, apply_answer=False)
        if before_close is not None:
            before_close()
    finally:
        await close_peer(bridge, client, timeout=5)
        await close_peer(bridge, server, timeout=5)
    return answer.sdp


# -- startup verification ------------------------------------------------------------------------


def test_verify_passes_on_the_pinned_aiortc_and_aioice() -> None:
    assert hooks.problems() == []
    hooks.verify()


def test_verify_fails_loudly_on_another_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "_installed_version", lambda dist: "9.9.9")
    with pytest.raises(
        HookError, match=r"aiortc 9\.9\.9 is installed, the hooks are written for aiortc==1\.16\.0"
    ):
        hooks.verify()


def test_verify_fails_loudly_when_an_internal_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCSctpTransport, "_receive_data_chunk")
    monkeypatch.delattr(Connection, "_remote_candidates_expected")
    with pytest.raises(HookError) as info:
        hooks.verify()
    assert "aiortc.rtcsctptransport.RTCSctpTransport._receive_data_chunk is missing" in str(info.value)
    assert "aioice.ice.Connection._remote_candidates_expected is missing" in str(info.value)


def test_hardening_from_config() -> None:
    """F-099: every SettingEngine knob comes from config."""
    low, high = 50000, 50099
    cfg = relay_config(
        {
            "WEBRTC_UDP_PORT_MIN": str(low),
            "WEBRTC_UDP_PORT_MAX": str(high),
            "WEBRTC_NAT_1TO1_IPS": "203.0.113.7",
            "WEBRTC_NAT_1TO1_IP_CANDIDATE_TYPE": "srflx",
        }
    )
    h = PeerHardening.from_config(cfg)
    assert (h.port_min, h.port_max, h.listen_ip) == (low, high, LOOPBACK)
    assert (h.nat_1to1_ips, h.nat_candidate_type) == (("203.0.113.7",), "srflx")
    assert h.max_message_size == cfg.webrtc_datachannel_max_message_bytes == 4352
    assert h.max_receive_buffer == cfg.webrtc_sctp_max_receive_buffer_bytes == 1048576
    assert h.socket_rcvbuf == DEFAULT_SOCKET_RCVBUF


# -- a. ICE UDP port range ----------------------------------------------------------------------


async def test_host_candidates_bind_inside_the_port_range(bridge: Bridge) -> None:
    low, high = free_port_range(100)
    cfg = relay_config({"WEBRTC_UDP_PORT_MIN": str(low), "WEBRTC_UDP_PORT_MAX": str(high)})
    server = server_peer(cfg)
    sdp = await gather_answer(bridge, server)
    cands = sdp_candidates(sdp)
    assert cands
    assert all(low <= c.port <= high for c in cands)


def test_bind_in_range_skips_ports_in_use(occupied: list[socket.socket]) -> None:
    low, high = free_port_range(100)
    occupy(occupied, range(low, high))  # all but `high`
    for _ in range(3):
        sock = bind_udp_in_range(LOOPBACK, low, high)
        assert sock.getsockname() == (LOOPBACK, high)
        sock.close()


def test_bind_in_range_reports_an_exhausted_range(occupied: list[socket.socket]) -> None:
    low, high = free_port_range(3)
    occupy(occupied, range(low, high + 1))
    with pytest.raises(OSError, match="no free UDP port"):
        bind_udp_in_range(LOOPBACK, low, high)


async def test_exhausted_range_gathers_no_candidate_and_says_why(
    bridge: Bridge, occupied: list[socket.socket]
) -> None:
    low, high = free_port_range(3)
    occupy(occupied, range(low, high + 1))
    server = HardenedPeerConnection(
        rtc_configuration(()), PeerHardening(port_min=low, port_max=high, listen_ip=LOOPBACK)
    )
    sdp = await gather_answer(bridge, server)
    assert sdp_candidates(sdp) == []
    assert len(server.bind_failures) == 1
    assert server.bind_failures[0].startswith("127.0.0.1: ")


# -- b. listen IP (loopback included) -----------------------------------------------------------


async def test_listen_ip_127_gathers_only_a_loopback_candidate(bridge: Bridge) -> None:
    """aioice skips 127.0.0.1; with WEBRTC_UDP_LISTEN_IP=127.0.0.1 it is the only candidate."""
    async with connected_pair(bridge, relay_config()) as pair:
        for pc in (pair.server, pair.client):
            cands = sdp_candidates(pc.localDescription.sdp)
            assert [(c.ip, c.type) for c in cands] == [(LOOPBACK, "host")]
            for conn in pc.ice_connections:
                assert [p.transport.get_extra_info("sockname")[0] for p in conn._protocols] == [LOOPBACK]


def test_unspecified_listen_ip_keeps_the_interface_list() -> None:
    defaults = ["192.0.2.2", "fd00::2"]
    assert PeerHardening(listen_ip="0.0.0.0").host_addresses(defaults) == defaults
    assert PeerHardening(listen_ip="::").host_addresses(defaults) == defaults
    assert PeerHardening(listen_ip="fd00::2").host_addresses(defaults) == ["fd00::2"]


# -- c. NAT 1:1 ---------------------------------------------------------------------------------


async def test_nat_1to1_host_type_rewrites_host_candidates(bridge: Bridge) -> None:
    cfg = relay_config({"WEBRTC_NAT_1TO1_IPS": "203.0.113.7,2001:db8::7"})
    server = server_peer(cfg)
    bound: list[tuple[str, int]] = []

    def sockets() -> None:
        for p in server.ice_connections[0]._protocols:
            bound.append(p.transport.get_extra_info("sockname")[:2])

    cands = sdp_candidates(await gather_answer(bridge, server, sockets))
    assert [(c.ip, c.port, c.type) for c in cands] == [("203.0.113.7", bound[0][1], "host")]
    assert bound[0][0] == LOOPBACK


async def test_nat_1to1_host_type_without_an_ip_of_the_family_gathers_nothing(bridge: Bridge) -> None:
    server = server_peer(relay_config({"WEBRTC_NAT_1TO1_IPS": "2001:db8::7"}))
    assert sdp_candidates(await gather_answer(bridge, server)) == []


async def test_nat_1to1_srflx_type_adds_srflx_candidates(bridge: Bridge) -> None:
    cfg = relay_config({"WEBRTC_NAT_1TO1_IPS": "203.0.113.7", "WEBRTC_NAT_1TO1_IP_CANDIDATE_TYPE": "srflx"})
    cands = sdp_candidates(await gather_answer(bridge, server_peer(cfg)))
    host = [c for c in cands if c.type == "host"]
    srflx = [c for c in cands if c.type == "srflx"]
    assert [c.ip for c in host] == [LOOPBACK]
    assert [(c.ip, c.port, c.raddr, c.rport) for c in srflx] == [
        ("203.0.113.7", host[0].port, LOOPBACK, host[0].port)
    ]


# -- d. a=max-message-size ----------------------------------------------------------------------


async def test_answer_advertises_the_configured_max_message_size(bridge: Bridge) -> None:
    """F-099: a=max-message-size = WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES (aiortc: fixed 262144)."""
    cfg = relay_config({"WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES": "5000"})
    assert sdp_max_message_size(await gather_answer(bridge, server_peer(cfg))) == 5000


async def test_peers_that_do_not_opt_in_keep_aiortc_defaults(bridge: Bridge) -> None:
    plain = client_peer()
    plain.createDataChannel("udp")
    await run_aio(bridge, plain.setLocalDescription)
    assert sdp_max_message_size(plain.localDescription.sdp) == 262144
    assert type(plain.sctp) is RTCSctpTransport
    await close_peer(bridge, plain, timeout=5)


# -- e. SCTP reassembly cap ---------------------------------------------------------------------

CAP = 65536


@pytest.mark.parametrize(
    ("size", "reason"),
    [(CAP + 1, "buffer"), (400_000, "buffer")],
)
async def test_message_over_the_reassembly_cap_is_never_delivered_and_tears_down(
    bridge: Bridge, size: int, reason: str
) -> None:
    """F-115: a client that ignores a=max-message-size cannot make us buffer past the cap."""
    events_send, events = trio.open_memory_channel[ReassemblyOverflow](4)
    cfg = relay_config({"WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": str(CAP)})
    async with connected_pair(bridge, cfg, on_overflow=forward_to_trio(events_send)) as pair:
        sctp = pair.server.sctp
        assert isinstance(sctp, HardenedSctpTransport)
        delivered: list[int] = []
        pair.server_channel.on("message", lambda m: delivered.append(len(m)))
        ignore_max_message_size(pair.client)
        pair.client_channel.send(b"\x01" * 100)
        pair.client_channel.send(b"\x02" * size)
        with trio.fail_after(10):
            event = await events.receive()
        assert event.reason == reason
        assert event.limit_bytes == CAP
        assert delivered == [100]
        assert sctp.peak_reassembly_bytes <= CAP
        assert sctp.reassembly_bytes() == 0
        assert sctp.state == "closed"
        assert pair.server_channel.readyState == "closed"


async def test_message_under_the_reassembly_cap_is_delivered(bridge: Bridge) -> None:
    """Size above WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES is the session layer's rule (F-111)."""
    events_send, events = trio.open_memory_channel[ReassemblyOverflow](4)
    cfg = relay_config({"WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": str(CAP)})
    async with connected_pair(bridge, cfg, label="l2", on_overflow=forward_to_trio(events_send)) as pair:
        got_send, got = trio.open_memory_channel[bytes | str](4)
        pair.server_channel.on("message", forward_to_trio(got_send))
        ignore_max_message_size(pair.client)
        pair.client_channel.send(b"\x03" * (CAP - 100))
        with trio.fail_after(10):
            assert len(await got.receive()) == CAP - 100
        with pytest.raises(trio.WouldBlock):
            events.receive_nowait()


async def test_overflow_of_too_many_small_chunks_tears_down(bridge: Bridge) -> None:
    """Chunk objects cost memory too: at most max(1024, cap/64) may wait for reassembly."""
    events_send, events = trio.open_memory_channel[ReassemblyOverflow](4)
    cfg = relay_config({"WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": str(CAP)})
    async with connected_pair(bridge, cfg, on_overflow=forward_to_trio(events_send)) as pair:
        sctp = pair.server.sctp
        assert isinstance(sctp, HardenedSctpTransport)
        assert pair.client.sctp is not None
        first = pair.client.sctp._local_tsn  # next TSN the client uses; leave it missing forever

        # A hole at the head of an ordered stream: every later 1-byte message must wait.
        chunks = []
        for i in range(1, 1100):
            chunk = aiortc_data_chunk(tsn=(first + i) % (1 << 32), stream_id=9, seq=i)
            chunks.append(chunk)

        async def feed() -> None:
            for chunk in chunks:
                await sctp._receive_chunk(chunk)

        await run_aio(bridge, feed)
        event = events.receive_nowait()
        assert event.reason == "chunks"
        assert sctp.reassembly_bytes() == 0


def aiortc_data_chunk(*, tsn: int, stream_id: int, seq: int) -> DataChunk:
    chunk = DataChunk(flags=SCTP_DATA_FIRST_FRAG | SCTP_DATA_LAST_FRAG)
    chunk.tsn = tsn
    chunk.stream_id = stream_id
    chunk.stream_seq = seq
    chunk.protocol = 53
    chunk.user_data = b"x"
    return chunk


# -- f. socket receive buffer -------------------------------------------------------------------


async def test_ice_sockets_get_a_4_mib_receive_buffer(bridge: Bridge) -> None:
    async with connected_pair(bridge, relay_config()) as pair:
        for pc in (pair.server, pair.client):
            for conn in pc.ice_connections:
                for protocol in conn._protocols:
                    sock = protocol.transport.get_extra_info("socket")
                    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                    if got < DEFAULT_SOCKET_RCVBUF:
                        pytest.skip(f"kernel granted only {got} (net.core.rmem_max, no CAP_NET_ADMIN)")
                    assert got >= DEFAULT_SOCKET_RCVBUF


# -- g. no leaked asyncio tasks -----------------------------------------------------------------


async def test_no_asyncio_task_is_left_after_closing_connected_peers(bridge: Bridge) -> None:
    async with connected_pair(bridge, relay_config()) as pair:
        assert pair.server.connectionState == "connected"
    await trio.sleep(0.05)
    assert bridge.tasks() == set()


async def test_no_asyncio_task_is_left_after_closing_peers_mid_ice(bridge: Bridge) -> None:
    client = client_peer()
    server = server_peer(relay_config())
    client.createDataChannel("udp", ordered=False, maxRetransmits=0)
    await offer_answer(bridge, client, server)
    assert server.iceConnectionState in ("new", "checking")
    await close_peer(bridge, client, timeout=5)
    await close_peer(bridge, server, timeout=5)
    await trio.sleep(0.05)
    assert bridge.tasks() == set()


async def close_as_ice_completes(bridge: Bridge) -> tuple[HardenedConnection, asyncio.Task[None] | None]:
    """Close the server peer in the window where ICE has completed but connect() has not resumed.

    The close task is scheduled before connect()'s wake-up, so close() passes its consent-task
    check before connect() starts that task: the race that leaks it in aioice 0.13.0.
    """
    client = client_peer()
    server = server_peer(relay_config())
    client.createDataChannel("udp", ordered=False, maxRetransmits=0)
    answer = await offer_answer(bridge, client, server, apply_answer=False)
    conn = server.ice_connections[0]
    queue = conn._check_list_state
    real_put = queue.put_nowait
    closing: list[asyncio.Future[None]] = []

    def put_nowait(item: int) -> None:
        if item == aioice.ice.ICE_COMPLETED and not closing:
            closing.append(asyncio.ensure_future(server.close()))
        real_put(item)

    queue.put_nowait = put_nowait  # type: ignore[method-assign]
    await run_aio(bridge, client.setRemoteDescription, answer)
    with trio.fail_after(5):
        while not (closing and closing[0].done()):
            await trio.sleep(0.01)
    await trio.sleep(0.05)
    await close_peer(bridge, client, timeout=5)
    return conn, conn._query_consent_task


async def test_consent_task_does_not_leak_when_closed_as_ice_completes(bridge: Bridge) -> None:
    conn, _ = await close_as_ice_completes(bridge)
    assert conn._closing
    await trio.sleep(0.05)
    assert bridge.tasks() == set()


async def test_aioice_alone_leaks_the_consent_task_in_that_race(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: without hook g the race above leaves aioice's consent loop running forever."""
    monkeypatch.setattr(HardenedConnection, "connect", Connection.connect)
    _, consent = await close_as_ice_completes(bridge)
    assert consent is not None
    assert not consent.done()
    assert {t.get_coro().__qualname__ for t in bridge.tasks()} == {"Connection.query_consent"}  # type: ignore[union-attr]
    consent.cancel()


# -- h. never aiortc's default STUN -------------------------------------------------------------


def test_rtc_configuration_is_an_explicit_list() -> None:
    assert rtc_configuration(()).iceServers == []
    cfg = rtc_configuration(
        [
            IceServer(urls=("stun:stun.example.net:3478",)),
            IceServer(
                urls=("turn:turn.example.net:3478?transport=udp", "stun:[::1]:3478"),
                username="u",
                credential="p",
            ),
            IceServer(urls=("stun:[2001:db8::1]",)),
        ]
    )
    assert cfg.iceServers is not None
    assert [(s.urls, s.username, s.credential) for s in cfg.iceServers] == [
        (["stun:stun.example.net:3478"], None, None),
        (["turn:turn.example.net:3478?transport=udp"], "u", "p"),
    ]


def test_hardened_peer_refuses_the_default_ice_servers() -> None:
    from aiortc import RTCConfiguration

    with pytest.raises(ValueError, match="explicit list"):
        HardenedPeerConnection(RTCConfiguration(), PeerHardening())


# -- i. mDNS candidates -------------------------------------------------------------------------


async def test_mdns_candidates_are_dropped_and_peer_reflexive_learning_connects(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser offer whose only candidate is `<uuid>.local` (with end-of-candidates)."""

    async def no_multicast(*args: object) -> None:
        raise AssertionError("mDNS must never be resolved")

    monkeypatch.setattr(aioice.ice, "get_or_create_mdns_protocol", no_multicast)
    hidden = aioice.mdns.create_mdns_hostname()

    def hide(sdp: str) -> str:
        out = re.sub(
            r"^(a=candidate:\S+ \d+ \S+ \d+ )127\.0\.0\.1 ", rf"\g<1>{hidden} ", sdp, flags=re.MULTILINE
        )
        assert hidden in out and "a=end-of-candidates" in out
        return out

    async with connected_pair(bridge, relay_config(), munge_offer=hide) as pair:
        conn = pair.server.ice_connections[0]
        assert conn._aero_mdns_dropped == 1
        assert [c.type for c in conn.remote_candidates] == ["prflx"]
        assert pair.server.connectionState == "connected"
        pair.client_channel.send(b"ping")
        got_send, got = trio.open_memory_channel[bytes | str](1)
        pair.server_channel.on("message", forward_to_trio(got_send))
        with trio.fail_after(5):
            assert await got.receive() == b"ping"


# -- j. bounded ICE receive queue ---------------------------------------------------------------


async def test_ice_receive_queue_is_bounded(bridge: Bridge) -> None:
    async def make() -> HardenedConnection:
        return HardenedConnection.adopt(
            Connection(ice_controlling=False), PeerHardening(ice_queue_max_packets=3)
        )

    conn = await run_aio(bridge, make)
    for i in range(5):
        conn.data_received(bytes([i]), 1)
    assert conn._queue.qsize() == 3
    assert conn._aero_queue_drops == 2


def test_plain_aiortc_peers_are_not_touched() -> None:
    """Hooks are per peer: nothing global is patched."""
    assert aioice.ice.Connection is Connection
    assert RTCPeerConnection.__dict__.get("_RTCPeerConnection__createDtlsTransport") is not None
    assert not issubclass(RTCSctpTransport, HardenedSctpTransport)
