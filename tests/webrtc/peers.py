"""In-process aiortc peers for tests: a relay-side peer and a browser-like client peer.

Both are restricted to 127.0.0.1 host candidates and an empty ICE server list, so no WebRTC
packet ever leaves loopback and no STUN/TURN server is contacted. The client plays the
browser: it creates the channels and the offer; the server (our hardened peer) answers.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import attrs
import trio
from aiortc import RTCDataChannel, RTCSessionDescription

from aero_relay.config import Config, load
from aero_relay.webrtc.bridge import Bridge, close_peer, forward_to_trio, run_aio
from aero_relay.webrtc.hooks import (
    HardenedPeerConnection,
    PeerHardening,
    ReassemblyOverflow,
    rtc_configuration,
)

LOOPBACK = "127.0.0.1"
# A client test peer: loopback only, aiortc's own SCTP (it plays a browser, not the relay).
CLIENT_HARDENING = PeerHardening(listen_ip=LOOPBACK)

_CANDIDATE = re.compile(
    r"^a=candidate:(?P<foundation>\S+) (?P<component>\d+) (?P<transport>\S+) (?P<priority>\d+) "
    r"(?P<ip>\S+) (?P<port>\d+) typ (?P<type>\S+)(?: raddr (?P<raddr>\S+) rport (?P<rport>\d+))?",
    re.MULTILINE,
)


@attrs.frozen
class SdpCandidate:
    ip: str
    port: int
    type: str
    raddr: str | None
    rport: int | None


def sdp_candidates(sdp: str) -> list[SdpCandidate]:
    """The `a=candidate` lines of an SDP."""
    return [
        SdpCandidate(m["ip"], int(m["port"]), m["type"], m["raddr"], int(m["rport"]) if m["rport"] else None)
        for m in _CANDIDATE.finditer(sdp)
    ]


def sdp_max_message_size(sdp: str) -> int | None:
    m = re.search(r"^a=max-message-size:(\d+)", sdp, re.MULTILINE)
    return int(m.group(1)) if m else None


def relay_config(env: Mapping[str, str] | None = None) -> Config:
    """Relay config for WebRTC tests: loopback ICE unless the test says otherwise."""
    merged = {"AUTH_MODE": "none", "WEBRTC_UDP_LISTEN_IP": LOOPBACK}
    merged.update(env or {})
    return load(merged, [])


def server_peer(
    cfg: Config, *, on_overflow: Callable[[ReassemblyOverflow], None] | None = None
) -> HardenedPeerConnection:
    """The relay's side, hardened from config, with no ICE servers."""
    return HardenedPeerConnection(
        rtc_configuration(()), PeerHardening.from_config(cfg), on_reassembly_overflow=on_overflow
    )


def client_peer(hardening: PeerHardening = CLIENT_HARDENING) -> HardenedPeerConnection:
    return HardenedPeerConnection(rtc_configuration(()), hardening)


async def offer_answer(
    bridge: Bridge,
    client: HardenedPeerConnection,
    server: HardenedPeerConnection,
    *,
    munge_offer: Callable[[str], str] | None = None,
    apply_answer: bool = True,
) -> RTCSessionDescription:
    """Non-trickle negotiation, browser-style: the client offers, the server answers."""
    await run_aio(bridge, client.setLocalDescription)
    offer = client.localDescription
    sdp = munge_offer(offer.sdp) if munge_offer else offer.sdp
    await run_aio(bridge, server.setRemoteDescription, RTCSessionDescription(sdp=sdp, type="offer"))
    await run_aio(bridge, server.setLocalDescription)
    answer = server.localDescription
    if apply_answer:
        await run_aio(bridge, client.setRemoteDescription, answer)
    return answer


def ignore_max_message_size(pc: HardenedPeerConnection) -> None:
    """Make a client peer send messages of any size, whatever the remote SDP said (hostile)."""
    assert pc.sctp is not None
    pc.sctp._remote_max_message_size = 0


@attrs.define
class Pair:
    client: HardenedPeerConnection
    server: HardenedPeerConnection
    client_channel: RTCDataChannel
    server_channel: RTCDataChannel


async def wait_open(channel: RTCDataChannel) -> None:
    while channel.readyState != "open":
        await trio.sleep(0.005)


@asynccontextmanager
async def connected_pair(
    bridge: Bridge,
    cfg: Config,
    *,
    label: str = "udp",
    on_overflow: Callable[[ReassemblyOverflow], None] | None = None,
    munge_offer: Callable[[str], str] | None = None,
    timeout: float = 10,
) -> AsyncIterator[Pair]:
    """A client and a relay-side peer connected over loopback, with an open channel each side.

    The channel is a `udp`-style one (unordered, maxRetransmits=0) unless `label` is "l2".
    Both peers are closed on exit.
    """
    client = client_peer()
    server = server_peer(cfg, on_overflow=on_overflow)
    channels_send, channels_recv = trio.open_memory_channel[RTCDataChannel](4)
    server.on("datachannel", forward_to_trio(channels_send))
    try:
        with trio.fail_after(timeout):
            if label == "l2":
                channel = client.createDataChannel(label)
            else:
                channel = client.createDataChannel(label, ordered=False, maxRetransmits=0)
            await offer_answer(bridge, client, server, munge_offer=munge_offer)
            server_channel = await channels_recv.receive()
            await wait_open(channel)
        yield Pair(client, server, channel, server_channel)
    finally:
        await close_peer(bridge, client, timeout=5)
        await close_peer(bridge, server, timeout=5)
