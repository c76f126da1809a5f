"""WebRTC session DataChannel rules, size limits and backpressure, end to end (spec sections 11, 12).

A real in-process relay (`start_relay`) and browser-like aiortc client peers restricted to
127.0.0.1 (tests/webrtc/peers.py), signalled over `/webrtc/signal`. The client peers run on
their own trio-asyncio loop, so the relay's loop only ever holds the relay's asyncio tasks.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from aiortc import RTCDataChannel, RTCSessionDescription
from aiortc.rtcsctptransport import SCTP_DATA_FIRST_FRAG, SCTP_DATA_LAST_FRAG, SCTP_DATA_UNORDERED, DataChunk

from aero_relay.core.frames import decode, encode_v1
from aero_relay.observability.metrics import Event
from aero_relay.webrtc.bridge import Bridge, close_peer, forward_to_trio, open_bridge, run_aio
from aero_relay.webrtc.hooks import HardenedPeerConnection, HardenedSctpTransport
from aero_relay.webrtc.peer import RelayPeer, live_peers
from tests.conftest import RunningRelay, StartRelay
from tests.transports.test_udp_ws import udp_echo, wait_for
from tests.webrtc.peers import client_peer, ignore_max_message_size
from tests.wsclient import Closed, WSClient, connect

WEBRTC = {"WEBRTC_UDP_LISTEN_IP": "127.0.0.1", "DESTINATION_POLICY_PRESET": "dev"}
UDP: dict[str, Any] = {"ordered": False, "maxRetransmits": 0}  # F-107: what a udp channel must be
LOOPBACK4 = socket.inet_aton("127.0.0.1")
GUEST_PORT = 40000
MAX_FRAME = 1200 + 24  # MAX_DATAGRAM_PAYLOAD_BYTES + MAX_FRAME_OVERHEAD_BYTES (F-113)
DC_MAX = 4352  # the default WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES (section 20)
TIMEOUT = 10.0


# --- client side -------------------------------------------------------------------------------


@pytest.fixture
async def client_bridge() -> AsyncIterator[Bridge]:
    """A trio-asyncio loop for the client peers, separate from the relay's."""
    async with open_bridge() as bridge:
        yield bridge


@attrs.define(eq=False)
class Client:
    """A browser-like client: one aiortc peer connection and its signalling WebSocket."""

    relay: RunningRelay
    bridge: Bridge
    pc: HardenedPeerConnection
    ws: WSClient
    answer_sdp: str = ""
    channels: list[RTCDataChannel] = attrs.field(factory=list)
    _inboxes: dict[RTCDataChannel, trio.MemoryReceiveChannel[bytes | str]] = attrs.field(factory=dict)

    def listen(self, dc: RTCDataChannel) -> RTCDataChannel:
        send, recv = trio.open_memory_channel[bytes | str](4096)
        dc.on("message", forward_to_trio(send))
        self._inboxes[dc] = recv
        return dc

    def open_channel(self, label: str = "udp", **opts: Any) -> RTCDataChannel:
        """A channel created after the session is up (DCEP over the live association)."""
        return self.listen(self.pc.createDataChannel(label, **(UDP if label == "udp" and not opts else opts)))

    async def receive(self, dc: RTCDataChannel, timeout: float = TIMEOUT) -> bytes | str:
        with trio.fail_after(timeout):
            return await self._inboxes[dc].receive()

    async def echo(self, dc: RTCDataChannel, port: int, payload: bytes) -> None:
        """One datagram through the relay to a UDP echo server and back (F-123, F-127)."""
        dc.send(encode_v1(GUEST_PORT, LOOPBACK4, port, payload))
        reply = await self.receive(dc)
        assert isinstance(reply, bytes)
        frame = decode(reply, max_payload=1200)
        assert (frame.guest_port, frame.remote_port, frame.payload) == (GUEST_PORT, port, payload)

    def peer(self) -> RelayPeer:
        """The relay's side of this session (the relay runs one session per test here)."""
        peers = live_peers(self.relay.server.ctx)
        assert len(peers) == 1, peers
        return peers[0]


def offer_message(sdp: str) -> dict[str, object]:
    return {"type": "offer", "sdp": {"type": "offer", "sdp": sdp}}


async def wait_state(dc: RTCDataChannel, state: str, timeout: float = TIMEOUT) -> None:
    """Wait (event-driven) until a channel is `open` or `closed`."""
    if dc.readyState == state:
        return
    reached = trio.Event()
    dc.on(state.replace("closed", "close"), reached.set)
    with trio.fail_after(timeout):
        await reached.wait()


async def wait_connected(pc: HardenedPeerConnection, timeout: float = TIMEOUT) -> None:
    if pc.connectionState == "connected":
        return
    changed = trio.Event()

    def on_change() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            changed.set()

    pc.on("connectionstatechange", on_change)
    with trio.fail_after(timeout):
        await changed.wait()
    assert pc.connectionState == "connected"


@asynccontextmanager
async def signaled_client(
    relay: RunningRelay,
    bridge: Bridge,
    *,
    channels: tuple[tuple[str, dict[str, Any]], ...] = (("udp", UDP),),
    path: str = "/webrtc/signal",
    munge_offer: Callable[[str], str] | None = None,
    apply_answer: bool = True,
    before_offer: tuple[dict[str, object], ...] = (),
    answer_pings: bool = True,
) -> AsyncIterator[Client]:
    """Offer over `/webrtc/signal`, apply the answer, wait for the peer connection to connect.

    The client's channels are created before the offer, like a browser's; `before_offer`
    messages are sent back-to-back with it. The peer connection and the WebSocket are closed
    on exit.
    """
    bridge.attach()
    pc = client_peer()
    try:
        created = [pc.createDataChannel(label, **opts) for label, opts in channels]
        await run_aio(bridge, pc.setLocalDescription)
        sdp = pc.localDescription.sdp
        async with connect(relay.host_port, path, answer_pings=answer_pings) as ws:
            for message in before_offer:
                await ws.send_json(message)
            await ws.send_json(offer_message(munge_offer(sdp) if munge_offer else sdp))
            with trio.fail_after(TIMEOUT):
                answer = await ws.receive_json()
            assert answer["type"] == "answer", answer
            client = Client(relay, bridge, pc, ws, answer["sdp"]["sdp"])
            for dc in created:
                client.channels.append(client.listen(dc))
            if apply_answer:
                await run_aio(bridge, pc.setRemoteDescription, RTCSessionDescription(**answer["sdp"]))
                await wait_connected(pc)
            yield client
    finally:
        with trio.CancelScope(shield=True):
            await close_peer(bridge, pc, timeout=5)


def first_channel(client: Client, label: str = "udp") -> RTCDataChannel:
    """The first channel with this label that the client created before its offer."""
    return next(dc for dc in client.channels if dc.label == label)


async def session_stays_up(client: Client, port: int) -> None:
    """The peer connection is still usable: a fresh udp channel relays a datagram."""
    dc = client.open_channel()
    await wait_state(dc, "open")
    await client.echo(dc, port, b"still up")


def datachannel_events(relay: RunningRelay) -> dict[str, int]:
    return {k: v for k, v in relay.metrics.snapshot().items() if k.startswith("webrtc_datachannel_")}


async def expect_ws_close(ws: WSClient) -> Closed:
    return await ws.expect_close(timeout=TIMEOUT)


# --- 1. DataChannel rules (section 12) ----------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        {"ordered": True, "maxRetransmits": 0},
        {"ordered": False, "maxRetransmits": 1},
        {"ordered": False, "maxPacketLifeTime": 100},
        {"ordered": False},  # unordered but fully reliable
    ],
    ids=["ordered", "retransmits", "lifetime", "reliable"],
)
async def test_udp_channel_with_other_reliability_is_closed_without_a_metric(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery, opts: dict[str, Any]
) -> None:
    """F-107: unordered, maxRetransmits exactly 0, no maxPacketLifeTime; else closed, no metric."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    async with signaled_client(relay, client_bridge, channels=(("udp", opts),)) as client:
        await wait_state(first_channel(client), "closed")
        assert datachannel_events(relay) == {}
        # The refused channel did not take the session's udp slot.
        await session_stays_up(client, port)
        assert datachannel_events(relay) == {}


async def test_second_udp_channel_is_rejected_until_the_first_one_closes(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """F-108: one udp channel per peer connection; a duplicate is counted and closed."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    async with signaled_client(relay, client_bridge) as client:
        first = first_channel(client)
        await wait_state(first, "open")
        duplicate = client.open_channel()
        await wait_state(duplicate, "closed")
        assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_UDP) == 1
        await client.echo(first, port, b"first still works")

        first.close()
        await wait_state(first, "closed")
        third = client.open_channel()
        await wait_state(third, "open")
        await client.echo(third, port, b"accepted after the first closed")
        assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_UDP) == 1


async def test_udp_channel_can_be_reopened_right_after_closing(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """F-108: a client reopening at once (no wait for the close to complete) gets the new
    channel: a closing first channel no longer holds the slot."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    async with signaled_client(relay, client_bridge) as client:
        first = first_channel(client)
        await wait_state(first, "open")
        await client.echo(first, port, b"first")
        first.close()
        second = client.open_channel()
        await wait_state(second, "open")
        await client.echo(second, port, b"second")
        assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_UDP) == 0


def sctp_data_chunk(tsn: int, stream_id: int, ppid: int, data: bytes, *, unordered: bool) -> DataChunk:
    flags = SCTP_DATA_FIRST_FRAG | SCTP_DATA_LAST_FRAG | (SCTP_DATA_UNORDERED if unordered else 0)
    chunk = DataChunk(flags=flags)
    chunk.tsn = tsn
    chunk.stream_id = stream_id
    chunk.stream_seq = 0
    chunk.protocol = ppid
    chunk.user_data = data
    return chunk


async def test_datagram_bundled_with_the_channel_open_is_relayed(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """A browser may send before the DCEP ACK (RFC 8832), so the first datagram can share an SCTP
    packet with the DATA_CHANNEL_OPEN: aiortc then emits it right after the channel, before any
    Trio task ran. It must still be relayed, not lost while the channel is being routed."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    # The offer needs a data section: a channel the relay refuses (F-110) provides it.
    async with signaled_client(relay, client_bridge, channels=(("other", {}),)) as client:
        await wait_state(first_channel(client, "other"), "closed")  # SCTP is up both ways
        client_sctp, server_sctp = client.pc.sctp, client.peer().pc.sctp
        assert client_sctp is not None and server_sctp is not None
        stream = 1001  # the client side of the channel is pre-registered (negotiated) on it
        udp = client.listen(
            client.pc.createDataChannel("udp", negotiated=True, id=stream, ordered=False, maxRetransmits=0)
        )
        label = b"udp"
        dcep_open = struct.pack("!BBHLHH", 3, 0x81, 0, 0, len(label), 0) + label  # unordered, rexmit 0
        frame = encode_v1(GUEST_PORT, LOOPBACK4, port, b"first")
        tsn = client_sctp._local_tsn
        chunks = [
            sctp_data_chunk(tsn, stream, 50, dcep_open, unordered=False),
            sctp_data_chunk((tsn + 1) % 2**32, stream, 53, frame, unordered=True),
        ]
        client_sctp._local_tsn = (tsn + 2) % 2**32  # the client's next real chunk follows them

        async def one_packet() -> None:  # what one bundled SCTP packet does, without a yield
            for chunk in chunks:
                await server_sctp._receive_chunk(chunk)

        server_bridge = relay.server.ctx.bridge
        assert server_bridge is not None
        await run_aio(server_bridge, one_packet)
        reply = await client.receive(udp)
        assert isinstance(reply, bytes) and reply.endswith(b"first")
        assert relay.metrics.value(Event.WEBRTC_UDP_DATAGRAMS_IN) == 1


async def test_unknown_label_is_rejected_and_the_session_stays_up(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """F-110: counted and closed; the udp channel next to it keeps working."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    channels: tuple[tuple[str, dict[str, Any]], ...] = (("udp", UDP), ("chat", {}))
    async with signaled_client(relay, client_bridge, channels=channels) as client:
        await wait_state(first_channel(client, "chat"), "closed")
        assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_REJECTED_UNKNOWN_LABEL) == 1
        udp = first_channel(client)
        await wait_state(udp, "open")
        await client.echo(udp, port, b"udp unaffected")


async def test_string_messages_on_the_udp_channel_are_ignored(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """F-112: a text message is neither relayed nor counted; the channel stays open."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    async with signaled_client(relay, client_bridge) as client:
        udp = first_channel(client)
        await wait_state(udp, "open")
        udp.send("not a frame")
        udp.send(encode_v1(GUEST_PORT, LOOPBACK4, port, b"x").decode("latin-1"))  # a frame, as text
        await client.echo(udp, port, b"binary")
        udp.send("")
        await client.echo(udp, port, b"binary again")
        assert relay.metrics.value(Event.WEBRTC_UDP_DATAGRAMS_IN) == 2
        assert relay.metrics.value(Event.WEBRTC_UDP_DROPPED) == 0
        assert udp.readyState == "open"


# --- 2. Size limits (F-111, F-113, F-115, F-222) --------------------------------------------------


async def test_message_over_the_frame_limit_closes_only_the_udp_channel(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """F-113/F-222: MAX_DATAGRAM_PAYLOAD_BYTES+24 < len <= DC max: counted, the udp channel closes,
    the peer connection and the signalling WebSocket stay up."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    async with signaled_client(relay, client_bridge) as client:
        udp = first_channel(client)
        await wait_state(udp, "open")
        udp.send(encode_v1(GUEST_PORT, LOOPBACK4, port, b"\x00" * (MAX_FRAME - 8 + 1)))
        await wait_state(udp, "closed")
        m = relay.metrics
        assert m.value(Event.WEBRTC_UDP_DATAGRAMS_IN) == 1
        assert m.value(Event.WEBRTC_UDP_DROPPED) == 1
        assert m.value(Event.WEBRTC_UDP_DROPPED_OVERSIZED) == 1
        assert m.value(Event.WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE) == 0
        await session_stays_up(client, port)
        assert relay.server.ctx.registry.active_count() == 1


async def test_frame_at_the_limit_with_an_oversized_payload_keeps_the_channel(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """F-113 note: a v1 frame of exactly max+24 bytes carries 1216 > 1200 payload bytes; it is
    dropped as oversized by the decoder and the channel stays open."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    async with signaled_client(relay, client_bridge) as client:
        udp = first_channel(client)
        await wait_state(udp, "open")
        udp.send(encode_v1(GUEST_PORT, LOOPBACK4, port, b"\x00" * (MAX_FRAME - 8)))
        await client.echo(udp, port, b"after")
        assert relay.metrics.value(Event.WEBRTC_UDP_DROPPED_OVERSIZED) == 1
        assert udp.readyState == "open"


@pytest.mark.parametrize("kind", ["binary", "text"])
async def test_message_over_the_datachannel_max_closes_the_session(
    start_relay: StartRelay, client_bridge: Bridge, kind: str
) -> None:
    """F-111: checked before anything else (also for text, F-112); the whole session closes."""
    relay = await start_relay(WEBRTC)
    async with signaled_client(relay, client_bridge) as client:
        udp = first_channel(client)
        await wait_state(udp, "open")
        ignore_max_message_size(client.pc)  # a client that ignores our a=max-message-size
        udp.send(b"\x00" * (DC_MAX + 1) if kind == "binary" else "é" * (DC_MAX // 2 + 1))
        closed = await expect_ws_close(client.ws)
        assert (closed.code, closed.reason) == (1000, "session closed")
    m = relay.metrics
    assert m.value(Event.WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE) == 1
    assert m.value(Event.WEBRTC_UDP_DATAGRAMS_IN) == 0
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)
    assert live_peers(relay.server.ctx) == ()


async def test_message_at_the_datachannel_max_is_not_a_session_error(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """F-111 boundary: exactly WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES falls to the F-113 rule."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)
    async with signaled_client(relay, client_bridge) as client:
        udp = first_channel(client)
        await wait_state(udp, "open")
        udp.send(b"\x00" * DC_MAX)
        await wait_state(udp, "closed")
        assert relay.metrics.value(Event.WEBRTC_UDP_DROPPED_OVERSIZED) == 1
        assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE) == 0
        await session_stays_up(client, port)


async def test_message_over_the_sctp_receive_buffer_is_never_delivered(
    start_relay: StartRelay, client_bridge: Bridge
) -> None:
    """F-115: reassembly stops at WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES; the session closes."""
    cap = 16384
    relay = await start_relay({**WEBRTC, "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": str(cap)})
    async with signaled_client(relay, client_bridge) as client:
        udp = first_channel(client)
        await wait_state(udp, "open")
        sctp = client.peer().pc.sctp
        assert isinstance(sctp, HardenedSctpTransport)
        ignore_max_message_size(client.pc)
        udp.send(b"\x00" * 200_000)
        closed = await expect_ws_close(client.ws)
        assert closed.code == 1000
        assert sctp.overflow is not None
        assert sctp.peak_reassembly_bytes <= cap
        assert sctp.reassembly_bytes() == 0
    m = relay.metrics
    assert m.value(Event.WEBRTC_UDP_DATAGRAMS_IN) == 0  # never delivered
    assert m.value(Event.WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE) == 1
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


# --- 3. relay -> client ----------------------------------------------------------------------


def freeze_receive(pc: HardenedPeerConnection) -> None:
    """The client stops taking in SCTP data (no SACKs): the relay's sends pile up in aiortc."""
    assert pc.sctp is not None

    async def drop(_data: bytes) -> None:
        return None

    pc.sctp._handle_data = drop  # type: ignore[method-assign,assignment]


async def test_replies_are_dropped_once_the_channel_buffer_is_over_the_queue_limit(
    start_relay: StartRelay, client_bridge: Bridge
) -> None:
    """F-127/F-128: relay->client sends never buffer past DATACHANNEL_SEND_QUEUE_BYTES; over it
    replies are dropped as webrtc_udp_dropped_backpressure."""
    limit = 4096
    relay = await start_relay({**WEBRTC, "DATACHANNEL_SEND_QUEUE_BYTES": str(limit)})
    remote = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await remote.bind(("127.0.0.1", 0))
    with remote:
        async with signaled_client(relay, client_bridge) as client:
            udp = first_channel(client)
            await wait_state(udp, "open")
            # The guest talks first, so the binding's allow-list admits the remote (F-131).
            udp.send(encode_v1(GUEST_PORT, LOOPBACK4, remote.getsockname()[1], b"hi"))
            with trio.fail_after(TIMEOUT):
                _, binding_addr = await remote.recvfrom(2048)
            server_dc = client.peer()._udp_channel
            assert server_dc is not None
            freeze_receive(client.pc)
            m = relay.metrics
            sent = 40
            peak = 0
            for i in range(sent):
                await remote.sendto(b"r" * 1000, binding_addr)
                await wait_for(
                    lambda i=i: (
                        m.value(Event.WEBRTC_UDP_DATAGRAMS_OUT)
                        + m.value(Event.WEBRTC_UDP_DROPPED_BACKPRESSURE)
                        == i + 1
                    )
                )
                peak = max(peak, server_dc.bufferedAmount)
            assert m.value(Event.WEBRTC_UDP_DROPPED_BACKPRESSURE) > 0
            assert m.value(Event.WEBRTC_UDP_DROPPED) == m.value(Event.WEBRTC_UDP_DROPPED_BACKPRESSURE)
            assert peak <= limit + 1008  # at most one frame past the limit is ever buffered


async def test_reply_larger_than_the_client_max_message_size_is_dropped_not_fatal(
    start_relay: StartRelay, client_bridge: Bridge, nursery: trio.Nursery
) -> None:
    """A client may advertise a small a=max-message-size: a reply over it is a write error,
    ignored like the original's (F-096), and must not end the session."""
    relay = await start_relay(WEBRTC)
    port = await udp_echo(nursery)

    def small_max(sdp: str) -> str:
        munged = re.sub(r"^a=max-message-size:\d+", "a=max-message-size:100", sdp, flags=re.MULTILINE)
        assert munged != sdp
        return munged

    async with signaled_client(relay, client_bridge, munge_offer=small_max) as client:
        udp = first_channel(client)
        await wait_state(udp, "open")
        udp.send(encode_v1(GUEST_PORT, LOOPBACK4, port, b"L" * 200))  # its reply: 208 bytes > 100
        await client.echo(udp, port, b"small")
        assert relay.metrics.value(Event.WEBRTC_UDP_DATAGRAMS_OUT) == 1
        assert relay.server.ctx.registry.active_count() == 1
