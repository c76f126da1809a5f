"""One WebRTC relay session: an aiortc peer connection inside a Trio cancel scope (section 11, 12).

`RelayPeer.run()` is the session: it owns the peer connection, the connect timeout, the
DataChannel tasks (the `udp` channel feeds the shared datagram pipeline) and the teardown.
Every way a session ends (connect timeout, PC failed/closed, SCTP overflow, an oversized
message, hard close on violations, the signaling WebSocket closing, server shutdown) cancels
the session scope; the peer connection is closed in a shielded `finally` with a deadline.

aiortc callbacks reach Trio only through a bounded memory channel (`forward_to_trio`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import trio
from aiortc import RTCDataChannel, RTCIceCandidate, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from aero_relay.context import RelayContext
from aero_relay.core.frames import MAX_FRAME_OVERHEAD_BYTES
from aero_relay.core.ice import server_side_ice_servers
from aero_relay.observability.logging import GoDuration, get_logger
from aero_relay.observability.metrics import WEBRTC_UDP, Event
from aero_relay.relay.manager import SessionLease
from aero_relay.relay.pipeline import DatagramPipeline
from aero_relay.relay.quota import QuotaSession
from aero_relay.webrtc.bridge import Bridge, close_peer, forward_to_trio, run_aio
from aero_relay.webrtc.hooks import (
    HardenedPeerConnection,
    PeerHardening,
    ReassemblyOverflow,
    rtc_configuration,
)

__all__ = [
    "NegotiationError",
    "PeerInfo",
    "RelayPeer",
    "is_udp_channel_ok",
    "l2_rejection_reason",
    "sdp_candidates",
]

_log = get_logger("aero_relay.webrtc")

# Bounded hand-off from aiortc callbacks to Trio. The `udp` channel is unreliable anyway, so a
# full queue drops (and counts) instead of buffering without limit.
_EVENT_QUEUE = 256
_UDP_MESSAGE_QUEUE = 1024
_PEER_CLOSE_TIMEOUT = 5.0


class NegotiationError(Exception):
    """Applying an offer failed; `status` 400 for a bad remote description, 500 otherwise."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.frozen
class PeerInfo:
    """What the signaling request told us about the client (F-100, F-047, F-153, F-154)."""

    origin: str = ""
    remote_addr: str = ""
    credential: str = ""
    aero_session: str | None = None


@attrs.frozen
class _StateChanged:
    kind: str  # "connection" or "ice"
    state: str


@attrs.frozen
class _Overflow:
    event: ReassemblyOverflow


def is_udp_channel_ok(channel: RTCDataChannel) -> bool:
    """F-107: unordered, maxRetransmits exactly 0, no maxPacketLifeTime."""
    return (not channel.ordered) and channel.maxRetransmits == 0 and channel.maxPacketLifeTime is None


def l2_rejection_reason(channel: RTCDataChannel) -> str | None:
    """F-109: `l2` must be ordered and fully reliable."""
    if channel.maxRetransmits is not None or channel.maxPacketLifeTime is not None:
        return "partial_reliability"
    if not channel.ordered:
        return "unordered"
    return None


class RelayPeer:
    """A WebRTC session. Create, `negotiate()`, then run `run()` in a nursery until it returns."""

    def __init__(self, ctx: RelayContext, bridge: Bridge, lease: SessionLease, info: PeerInfo) -> None:
        self.ctx = ctx
        self.bridge = bridge
        self.lease = lease
        self.info = info
        self.session_id = lease.session_id
        cfg = ctx.config
        self._events_send, self._events_recv = trio.open_memory_channel[Any](_EVENT_QUEUE)
        servers = server_side_ice_servers(cfg.ice.servers, cfg.turn_rest_enabled)  # F-035
        self.pc = HardenedPeerConnection(
            rtc_configuration(servers),
            PeerHardening.from_config(cfg),
            on_reassembly_overflow=lambda ev: self._post(_Overflow(ev)),
        )
        self.pc.on("datachannel", forward_to_trio(self._events_send))
        self.pc.on(
            "connectionstatechange", lambda: self._post(_StateChanged("connection", self.pc.connectionState))
        )
        self.pc.on(
            "iceconnectionstatechange", lambda: self._post(_StateChanged("ice", self.pc.iceConnectionState))
        )
        self.scope = ctx.open_session_scope()
        self.connected = trio.Event()
        self.end_reason = ""
        self.quota = QuotaSession(cfg, ctx.metrics, on_hard_close=lambda: self.close("hard_close"))
        self._udp_channel: RTCDataChannel | None = None
        self._l2_channel: RTCDataChannel | None = None
        self.finished = trio.Event()

    def _post(self, event: object) -> None:
        # A full queue loses nothing that matters: state events are re-read from the peer.
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._events_send.send_nowait(event)

    def close(self, reason: str) -> None:
        """End the session (idempotent): cancel its scope; `run()` tears everything down."""
        if not self.end_reason:
            self.end_reason = reason
        self.scope.cancel()

    # --- negotiation -------------------------------------------------------------------------

    async def negotiate(self, offer_sdp: str) -> str:
        """Apply the offer, create and set the answer; return the local SDP (candidates included)."""
        pc = self.pc
        if not any(line.startswith("m=application") for line in offer_sdp.splitlines()):
            # aiortc would answer an offer without a data section; the relay has nothing to offer it.
            raise NegotiationError(400, "offer has no data channel section (m=application)")
        try:
            await run_aio(
                self.bridge, pc.setRemoteDescription, RTCSessionDescription(sdp=offer_sdp, type="offer")
            )
        except trio.Cancelled:
            raise
        except Exception as err:
            raise NegotiationError(400, _err_text(err, "failed to set remote description")) from None
        try:
            answer = await run_aio(self.bridge, pc.createAnswer)
        except trio.Cancelled:
            raise
        except Exception as err:
            raise NegotiationError(500, _err_text(err, "failed to create answer")) from None
        try:
            await run_aio(self.bridge, pc.setLocalDescription, answer)
        except trio.Cancelled:
            raise
        except Exception as err:
            raise NegotiationError(500, _err_text(err, "failed to set local description")) from None
        local = pc.localDescription
        if local is None:
            raise NegotiationError(500, "missing local description")
        return str(local.sdp)

    async def add_remote_candidate(
        self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        """F-076: an empty candidate string is end-of-candidates and is ignored."""
        text = candidate.strip()
        if not text:
            return
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        try:
            ice: RTCIceCandidate = candidate_from_sdp(text)
        except Exception as err:
            raise NegotiationError(400, f"invalid candidate: {err}") from None
        ice.sdpMid = sdp_mid
        ice.sdpMLineIndex = sdp_mline_index
        try:
            await run_aio(self.bridge, self.pc.addIceCandidate, ice)
        except trio.Cancelled:
            raise
        except Exception as err:
            raise NegotiationError(400, _err_text(err, "failed to add ICE candidate")) from None

    # --- the session -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The session task. Returns when the session has ended and everything is closed."""
        ctx = self.ctx
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._connect_timeout)
                    task_status.started()
                    await self._events(nursery)
        finally:
            self.quota.closed = True
            ctx.close_session_scope(self.scope)
            self._events_send.close()
            with trio.CancelScope(shield=True):
                await close_peer(self.bridge, self.pc, timeout=_PEER_CLOSE_TIMEOUT)
                await ctx.registry.release(self.lease)
            if not self.end_reason and ctx.shutting_down:
                self.end_reason = "shutdown"
            _log.debug(
                "webrtc session closed", session_id=self.session_id, reason=self.end_reason or "closed"
            )
            self.finished.set()

    async def _connect_timeout(self) -> None:
        """F-101: connected = PC connected, or ICE connected/completed, within the timeout."""
        cfg = self.ctx.config
        with trio.move_on_after(cfg.webrtc_session_connect_timeout):
            await self.connected.wait()
            return
        if self.connected.is_set() or self._is_connected():
            return
        self.ctx.metrics.inc(Event.WEBRTC_SESSION_CONNECT_TIMEOUT)
        _log.warn(
            "webrtc session connect timeout",
            session_id=self.session_id,
            origin=self.info.origin,
            remote_addr=self.info.remote_addr,
            timeout=GoDuration.from_seconds(cfg.webrtc_session_connect_timeout),
        )
        self.close("connect_timeout")

    def _is_connected(self) -> bool:
        return self.pc.connectionState == "connected" or self.pc.iceConnectionState in (
            "connected",
            "completed",
        )

    async def _events(self, nursery: trio.Nursery) -> None:
        async for event in self._events_recv:
            if isinstance(event, _StateChanged):
                if self._is_connected():
                    self.connected.set()
                if event.kind == "connection" and event.state in ("failed", "closed"):
                    self.close(f"pc_{event.state}")  # F-102: disconnected is not acted on
            elif isinstance(event, _Overflow):
                ev = event.event
                self.ctx.metrics.inc(Event.WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE)
                _log.warn(
                    "sctp transport error",
                    session_id=self.session_id,
                    err=f"reassembly cap exceeded ({ev.reason}: {ev.buffered_bytes} > {ev.limit_bytes})",
                )
                self.close("sctp_overflow")
            elif isinstance(event, RTCDataChannel):
                self._on_datachannel(event, nursery)

    # --- DataChannels ------------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel, nursery: trio.Nursery) -> None:
        """F-106..F-110: route by label; reject bad reliability, duplicates and unknown labels."""
        metrics = self.ctx.metrics
        label = channel.label
        if label == "udp":
            if not is_udp_channel_ok(channel):
                channel.close()  # F-107: no metric, no log
                return
            if self._udp_channel is not None:
                metrics.inc(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_UDP)
                channel.close()
                return
            self._udp_channel = channel
            nursery.start_soon(self._run_udp_channel, channel)
        elif label == "l2":
            if not self.ctx.config.l2_enabled:
                channel.close()  # F-109: L2 off -> closed silently
                return
            reason = l2_rejection_reason(channel)
            if reason is not None:
                _log.warn(
                    "rejecting l2 datachannel",
                    reason=reason,
                    session_id=self.session_id,
                    label=label,
                    ordered=channel.ordered,
                    max_retransmits=channel.maxRetransmits,
                    max_packet_life_time=channel.maxPacketLifeTime,
                    err="",
                )
                channel.close()
                return
            if self._l2_channel is not None:
                metrics.inc(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_L2)
                channel.close()
                return
            # The L2 bridge is a separate component (issue: L2 tunnel bridge); until it lands
            # an accepted-looking channel must not be left dangling.
            channel.close()
        else:
            metrics.inc(Event.WEBRTC_DATACHANNEL_REJECTED_UNKNOWN_LABEL)
            channel.close()

    async def _run_udp_channel(self, channel: RTCDataChannel) -> None:
        ctx = self.ctx
        cfg = ctx.config
        metrics = ctx.metrics
        send, recv = trio.open_memory_channel[Any](_UDP_MESSAGE_QUEUE)

        def on_drop(_msg: object) -> None:
            metrics.inc(WEBRTC_UDP.datagrams_in)
            metrics.inc(WEBRTC_UDP.dropped)

        channel.on("message", forward_to_trio(send, on_drop=on_drop))
        channel.on("close", send.close)
        if channel.readyState == "closed":
            send.close()

        queue_limit = cfg.datachannel_send_queue_bytes

        async def send_to_client(frame: bytes) -> None:
            # aiortc queues sends without bound; drop once the channel's buffer is over the limit.
            if channel.readyState != "open":
                raise trio.ClosedResourceError
            if channel.bufferedAmount > queue_limit:
                metrics.inc(WEBRTC_UDP.dropped)
                metrics.inc(WEBRTC_UDP.dropped_backpressure)
                raise trio.BrokenResourceError
            channel.send(frame)

        pipeline = DatagramPipeline(
            cfg=cfg, metrics=metrics, transport=WEBRTC_UDP, quota=self.quota, send_to_client=send_to_client
        )
        dc_max = cfg.webrtc_datachannel_max_message_bytes
        frame_max = cfg.max_datagram_payload_bytes + MAX_FRAME_OVERHEAD_BYTES
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                async for msg in recv:
                    size = len(msg)
                    if size > dc_max:  # F-111: the whole session closes
                        metrics.inc(Event.WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE)
                        _log.warn(
                            "udp datachannel message too large",
                            session_id=self.session_id,
                            msg_bytes=size,
                            max_bytes=dc_max,
                        )
                        self.close("udp_message_too_large")
                        return
                    if isinstance(msg, str):
                        continue  # F-112
                    if size > frame_max:  # F-113: only the udp channel closes
                        metrics.inc(WEBRTC_UDP.datagrams_in)
                        metrics.inc(WEBRTC_UDP.dropped)
                        metrics.inc(WEBRTC_UDP.dropped_oversized)
                        _log.warn(
                            "rejecting oversized udp datachannel message",
                            session_id=self.session_id,
                            msg_bytes=size,
                            max_bytes=frame_max,
                        )
                        break
                    pipeline.handle_client_frame(msg)
                nursery.cancel_scope.cancel()
        finally:
            if channel.readyState != "closed":
                channel.close()
            if self._udp_channel is channel:
                self._udp_channel = None  # F-108: a new udp channel may be opened later


def _err_text(err: BaseException, fallback: str) -> str:
    text = str(err).strip()
    return text or fallback


def sdp_candidates(sdp: str) -> tuple[str, list[str]]:
    """The first m-line's mid and its `a=candidate:` values (for trickling them, F-075)."""
    mid = "0"
    candidates: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("a=mid:") and not candidates:
            mid = line[len("a=mid:") :].strip()
        elif line.startswith("a=candidate:"):
            candidates.append(line[len("a=") :].strip())
    return mid, candidates
