"""One WebRTC relay session: an aiortc peer connection inside a Trio cancel scope (section 11, 12).

`RelayPeer.run()` is the session: it owns the peer connection, the connect timeout, the
DataChannel tasks (the `udp` channel feeds the shared datagram pipeline) and the teardown.
Every way a session ends (connect timeout, PC failed/closed, SCTP overflow, an oversized
message, hard close on violations, the signaling WebSocket closing, server shutdown) cancels
the session scope; the peer connection is closed in a shielded `finally` with a deadline.

aiortc callbacks reach Trio only through a bounded memory channel (`forward_to_trio`).

Hardening decisions:

- A `udp` or `l2` channel gets a message handler inside aiortc's `datachannel` callback, not
  later in a Trio task: aiortc emits messages right after the channel event (a browser may send
  before the DCEP ACK, in the same SCTP packet), so a late handler would lose the first ones.
- `negotiate()` and `add_remote_candidate()` run in the caller's task but are linked to the
  session: ending the session cancels them, and the teardown waits for them to unwind before
  closing the peer connection (no ICE gathering, hence no socket or TURN allocation, can
  continue on a closed peer).
- Teardown follows F-104: the quota session and the lease (MAX_SESSIONS slot, JWT sid) are
  released first, then the peer connection is closed, so a client can reuse its sid as soon as
  the session is gone (F-078).
- `live_peers(ctx)` lists the sessions whose peer connection is not closed yet (leak checks).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import attrs
import trio
from aiortc import InvalidStateError, RTCDataChannel, RTCIceCandidate, RTCSessionDescription
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
    "live_peers",
    "sdp_candidates",
]

_log = get_logger("aero_relay.webrtc")

# Bounded hand-off from aiortc callbacks to Trio. The `udp` channel is unreliable anyway, so a
# full queue drops (and counts) instead of buffering without limit.
_EVENT_QUEUE = 256
_UDP_MESSAGE_QUEUE = 1024
_PEER_CLOSE_TIMEOUT = 5.0
# How long a close waits for a DTLS handshake in flight to finish (normally milliseconds).
_HANDSHAKE_SETTLE_TIMEOUT = 1.0

# Sessions whose peer connection is not closed yet, per relay (added at construction, removed
# once `run()` has closed the peer): a session that never ran or never closed stays visible.
_LIVE: weakref.WeakKeyDictionary[RelayContext, set[RelayPeer]] = weakref.WeakKeyDictionary()


def live_peers(ctx: RelayContext) -> tuple[RelayPeer, ...]:
    """The relay's sessions whose RTCPeerConnection is not closed yet."""
    return tuple(_LIVE.get(ctx, ()))


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
        self.pc.on("datachannel", self._intake_datachannel)
        self.pc.on(
            "connectionstatechange", lambda: self._post(_StateChanged("connection", self.pc.connectionState))
        )
        self.pc.on(
            "iceconnectionstatechange", lambda: self._post(_StateChanged("ice", self.pc.iceConnectionState))
        )
        self.connected = trio.Event()
        self.end_reason = ""
        self.quota = QuotaSession(cfg, ctx.metrics, on_hard_close=lambda: self.close("hard_close"))
        self._udp_channel: RTCDataChannel | None = None
        self._l2_channel: RTCDataChannel | None = None
        # Message queues of `udp` channels, filled from aiortc's callback until routed.
        self._inboxes: dict[RTCDataChannel, trio.MemoryReceiveChannel[bytes | str]] = {}
        self.udp_pipeline: DatagramPipeline | None = None  # the live udp channel's pipeline
        # Negotiation steps running in callers' tasks, cancelled when the session ends.
        self._ops: set[trio.CancelScope] = set()
        self._ops_idle = trio.Event()
        self._ops_idle.set()
        self._ended = False
        self.finished = trio.Event()
        # Last, so a failure above leaves nothing registered.
        self.scope = ctx.open_session_scope()
        _LIVE.setdefault(ctx, set()).add(self)

    def _post(self, event: object) -> None:
        # A full queue loses nothing that matters: state events are re-read from the peer.
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._events_send.send_nowait(event)

    def close(self, reason: str) -> None:
        """End the session (idempotent): cancel its scope; `run()` tears everything down."""
        if not self.end_reason:
            self.end_reason = reason
        self._ended = True
        self.scope.cancel()
        for op in self._ops:
            op.cancel()

    @contextlib.contextmanager
    def _session_op(self) -> Iterator[trio.CancelScope]:
        """A cancel scope for a negotiation step in a caller's task, cancelled with the session."""
        scope = trio.CancelScope()
        if self._ended:
            scope.cancel()
        if not self._ops:
            self._ops_idle = trio.Event()
        self._ops.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._ops.discard(scope)
            if not self._ops:
                self._ops_idle.set()

    # --- negotiation -------------------------------------------------------------------------

    async def negotiate(self, offer_sdp: str) -> str:
        """Apply the offer, create and set the answer; return the local SDP (candidates included).

        Raises NegotiationError; (500, "session closed") when the session ended meanwhile.
        """
        if not any(line.startswith("m=application") for line in offer_sdp.splitlines()):
            # aiortc would answer an offer without a data section; the relay has nothing to offer it.
            raise NegotiationError(400, "offer has no data channel section (m=application)")
        local: str | None = None
        with self._session_op():
            local = await self._negotiate(offer_sdp)
        if local is None:
            raise NegotiationError(500, "session closed")
        return local

    async def _negotiate(self, offer_sdp: str) -> str:
        pc = self.pc
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
        """F-076: an empty candidate string is end-of-candidates and is ignored; so is any
        candidate once the session has ended."""
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
        with self._session_op():
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
            if not self.end_reason and ctx.shutting_down:
                self.end_reason = "shutdown"
            self.close(self.end_reason or "closed")  # cancels negotiation steps in other tasks
            self.quota.closed = True
            ctx.close_session_scope(self.scope)
            self._events_send.close()
            for inbox in self._inboxes.values():
                inbox.close()
            self._inboxes.clear()
            with trio.CancelScope(shield=True):
                # F-104: release the slot and the sid first, then close the peer connection.
                await ctx.registry.release(self.lease)
                with trio.move_on_after(_PEER_CLOSE_TIMEOUT):
                    await self._ops_idle.wait()
                await self._close_pc()
            live = _LIVE.get(ctx)
            if live is not None:
                live.discard(self)
            _log.debug(
                "webrtc session closed", session_id=self.session_id, reason=self.end_reason or "closed"
            )
            self.finished.set()

    async def _close_pc(self) -> None:
        """Close the peer connection (shielded, bounded).

        aiortc 1.16's `close()` does not stop a DTLS handshake in progress: the connect task can
        then finish it and start SCTP on the closed peer (INIT retransmission timers for minutes),
        and the client is never told (no close_notify, no ABORT). So a running handshake is given
        a moment to settle first, and whatever still came alive after `close()` is stopped.
        """
        pc = self.pc
        sctp = pc.sctp
        dtls = sctp.transport if sctp is not None else None
        with trio.CancelScope(shield=True):
            if dtls is not None and dtls.state == "connecting":
                settled = trio.Event()
                dtls.on("statechange", settled.set)
                with trio.move_on_after(_HANDSHAKE_SETTLE_TIMEOUT):
                    await settled.wait()
                dtls.remove_listener("statechange", settled.set)
            if not await close_peer(self.bridge, pc, timeout=_PEER_CLOSE_TIMEOUT):
                _log.warn("webrtc peer close timed out", session_id=self.session_id)
            if (
                sctp is not None
                and dtls is not None
                and (sctp.state != "closed" or dtls.state == "connected")
            ):
                _log.debug("webrtc transports started after close", session_id=self.session_id)
                await close_peer(self.bridge, _LateTransports(sctp, dtls), timeout=_PEER_CLOSE_TIMEOUT)

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

    def _intake_datachannel(self, channel: RTCDataChannel) -> None:
        """aiortc's `datachannel` handler (sync, on the bridge loop): queue the channel for routing.

        The messages of a `udp` (or, with L2 on, an `l2`) channel are queued from this moment
        (module docstring); the routed channel's handler takes the queue over. When the session
        cannot take the channel (its event queue is full or closed), the channel is closed.
        """
        label = channel.label
        if label == "udp" or (label == "l2" and self.ctx.config.l2_enabled):
            send, recv = trio.open_memory_channel[bytes | str](_UDP_MESSAGE_QUEUE)
            metrics = self.ctx.metrics

            def on_drop(_msg: object) -> None:
                # The Trio side is behind. An unreliable udp channel drops (counted); an l2 stream
                # cannot lose a message, so the l2 channel fails instead (F-221: only it closes).
                if label == "udp":
                    metrics.inc(WEBRTC_UDP.datagrams_in)
                    metrics.inc(WEBRTC_UDP.dropped)
                else:
                    channel.close()

            channel.on("message", forward_to_trio(send, on_drop=on_drop))
            channel.on("close", send.close)
            self._inboxes[channel] = recv
        try:
            self._events_send.send_nowait(channel)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._reject(channel)

    def _reject(self, channel: RTCDataChannel) -> None:
        """Close a channel the session does not use; its queued messages are discarded uncounted."""
        inbox = self._inboxes.pop(channel, None)
        if inbox is not None:
            channel.remove_all_listeners("message")
            inbox.close()
        channel.close()

    def _on_datachannel(self, channel: RTCDataChannel, nursery: trio.Nursery) -> None:
        """F-106..F-110: route by label; reject bad reliability, duplicates and unknown labels."""
        metrics = self.ctx.metrics
        label = channel.label
        if label == "udp":
            if not is_udp_channel_ok(channel):
                self._reject(channel)  # F-107: no metric, no log
                return
            current = self._udp_channel
            # F-108: a closed first channel frees the slot even before its task has finished.
            if current is not None and current.readyState not in ("closing", "closed"):
                metrics.inc(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_UDP)
                self._reject(channel)
                return
            inbox = self._inboxes.pop(channel, None)
            if inbox is None:  # not taken in by _intake_datachannel; cannot happen
                self._reject(channel)
                return
            self._udp_channel = channel
            nursery.start_soon(self._run_udp_channel, channel, inbox)
        elif label == "l2":
            if not self.ctx.config.l2_enabled:
                self._reject(channel)  # F-109: L2 off -> closed silently
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
                self._reject(channel)
                return
            current_l2 = self._l2_channel
            # As for udp: a closed first channel frees the slot even before its bridge has finished.
            if current_l2 is not None and current_l2.readyState not in ("closing", "closed"):
                metrics.inc(Event.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_L2)
                self._reject(channel)
                return
            from aero_relay.webrtc.l2bridge import L2Bridge  # here: the module imports PeerInfo

            def release_l2() -> None:
                if self._l2_channel is channel:
                    self._l2_channel = None

            self._l2_channel = channel
            l2_bridge = L2Bridge(
                channel,
                cfg=self.ctx.config,
                metrics=metrics,
                quota=self.quota,  # F-220: the udp channel's budget and violation counter
                session_id=self.session_id,
                info=self.info,
                close_session=self.close,
                on_done=release_l2,
                early=self._inboxes.pop(channel, None),
            )
            nursery.start_soon(l2_bridge.run)
        else:
            metrics.inc(Event.WEBRTC_DATACHANNEL_REJECTED_UNKNOWN_LABEL)
            channel.close()

    async def _run_udp_channel(
        self, channel: RTCDataChannel, recv: trio.MemoryReceiveChannel[bytes | str]
    ) -> None:
        ctx = self.ctx
        cfg = ctx.config
        metrics = ctx.metrics
        queue_limit = cfg.datachannel_send_queue_bytes

        async def send_to_client(frame: bytes) -> None:
            # aiortc queues sends without bound; drop once the channel's buffer is over the limit.
            if channel.readyState != "open":
                raise trio.ClosedResourceError
            if channel.bufferedAmount > queue_limit:
                metrics.inc(WEBRTC_UDP.dropped)
                metrics.inc(WEBRTC_UDP.dropped_backpressure)
                raise trio.BrokenResourceError
            try:
                channel.send(frame)
            except (ValueError, InvalidStateError):
                # The client's a=max-message-size is below this frame: a write error, ignored
                # like the original's (F-096, F-128); it must not end the session.
                raise trio.BrokenResourceError from None

        pipeline = DatagramPipeline(
            cfg=cfg, metrics=metrics, transport=WEBRTC_UDP, quota=self.quota, send_to_client=send_to_client
        )
        dc_max = cfg.webrtc_datachannel_max_message_bytes
        frame_max = cfg.max_datagram_payload_bytes + MAX_FRAME_OVERHEAD_BYTES
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                self.udp_pipeline = pipeline
                async for msg in recv:
                    if isinstance(msg, str):
                        # The cap is on bytes (Go's len); a character is at most 4 UTF-8 bytes.
                        size = len(msg) if len(msg) * 4 <= dc_max else len(msg.encode())
                        if size > dc_max:  # F-111, before F-112
                            self._udp_message_too_large(size, dc_max)
                            return
                        continue  # F-112
                    size = len(msg)
                    if size > dc_max:  # F-111: the whole session closes
                        self._udp_message_too_large(size, dc_max)
                        return
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
            recv.close()
            pipeline.close()
            if self.udp_pipeline is pipeline:
                self.udp_pipeline = None
            if channel.readyState != "closed":
                channel.close()
            if self._udp_channel is channel:
                self._udp_channel = None  # F-108: a new udp channel may be opened later
            sctp = self.pc.sctp
            if not self._ended and sctp is not None and sctp.state == "closed":
                # F-103: the association is gone (every channel closed with it): so is the session.
                _log.warn("sctp transport closed", session_id=self.session_id, err="")
                self.close("sctp_closed")

    def _udp_message_too_large(self, size: int, dc_max: int) -> None:
        """F-111: a message over WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES closes the whole session."""
        self.ctx.metrics.inc(Event.WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE)
        _log.warn(
            "udp datachannel message too large", session_id=self.session_id, msg_bytes=size, max_bytes=dc_max
        )
        self.close("udp_message_too_large")


@attrs.define
class _LateTransports:
    """SCTP and DTLS transports that aiortc started after the peer connection closed."""

    sctp: Any
    dtls: Any

    async def close(self) -> None:
        if self.sctp.state != "closed":
            await self.sctp.stop()  # cancels its timers; the ABORT cannot be sent any more
        if self.dtls.state == "connected":
            await self.dtls.stop()  # cancels its receive task


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
