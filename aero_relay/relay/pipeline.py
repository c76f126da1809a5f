"""The datagram pipeline shared by ``/udp`` and the WebRTC ``udp`` DataChannel (DESIGN principle 3).

One :class:`DatagramPipeline` is one relay instance (one ``/udp`` connection, or one ``udp``
DataChannel). Outbound, :meth:`~DatagramPipeline.handle_client_frame` runs synchronously per client
frame: count -> decode -> policy -> quota -> binding -> allow-list -> ``sendto``. Inbound, one reader
task per binding socket runs: size check -> inbound filter -> encode -> relay->client budget ->
send queue; the sender task drains the queue into ``send_to_client``. Metric names come only from
the :class:`~aero_relay.observability.metrics.TransportEvents` passed in, so both transports share
one code path and keep the original metric prefixes.

Decisions
---------
* **One decode, one policy check (fixes weakness 3 / F-198).** ``/udp`` gets exactly the DataChannel
  path. The v2 flag (F-120) is set right after a successful decode, before the policy and quota
  checks, as on the original DataChannel path (on ``/udp`` the original set it only after both).
* **Inbound oversize counts ``dropped`` + ``dropped_oversized`` on both transports.** The original
  counts it only on the DataChannel path (F-126, F-098, weakness 3); with one pipeline both count it.
* **Inbound traffic does not refresh a binding's idle timer (fixes weakness 7 / F-196).** Only
  guest traffic (an outbound frame) keeps a binding alive, as RFC 4787 requires of NATs ("outbound
  refresh"), so an unsolicited or hostile remote cannot hold a socket open. The allow-list entry of
  a permitted remote is still refreshed by its replies (core ``RemoteAllowlist``, F-132).
* **Idle expiry at ``>= UDP_BINDING_IDLE_TIMEOUT``**, checked by one task that sleeps until the
  oldest binding's deadline (no ticker). Bindings live in an ``OrderedDict`` in last-use order, so
  the LRU victim at the cap (F-124) and every expired binding sit at the front: O(1) amortised. The
  original expires at ``>`` with a ticker of half the timeout, i.e. somewhere in 1x..1.5x.
* **A binding whose IPv4 socket cannot be created** (e.g. out of descriptors) drops the frame with
  ``dropped`` only, as the original (F-123); the pipeline carries on.
* **Tokens follow what really happens (fixes weakness 9 / F-199)**: outbound refusals refund the
  earlier limiter stages (core), and a frame admitted by the relay->client budget but then dropped
  for backpressure is refunded.
* **``datagrams_out`` counts frames handed to ``send_to_client`` that returned normally.** The
  original counts at enqueue on the DataChannel and after the write on ``/udp``; counting after the
  send is the only point where both mean "delivered to the transport". ``send_to_client`` owns its
  write deadline (F-096). Raising ``trio.BrokenResourceError`` or ``trio.ClosedResourceError`` from
  it means "write failed": ignored and not counted (F-096); any other exception ends :meth:`run`.
* **A closed quota session or a closed pipeline refuses everything silently (F-147)**: no metric,
  no violation, not even ``datagrams_in``; the session is being torn down.
* **Frames before :meth:`run` has started are ignored** like frames after close; transports start
  the pipeline with ``await nursery.start(pipeline.run)`` before reading client frames.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from aero_relay.config import Config
from aero_relay.core.allowlist import RemoteAllowlist
from aero_relay.core.frames import V4_MAPPED_PREFIX, FrameError, decode, encode_reply, ip_to_text
from aero_relay.core.limits import Verdict
from aero_relay.observability.metrics import Event, Metrics, TransportEvents
from aero_relay.relay.binding import Binding, RemoteKey, pack_ipv4, pack_ipv6, read_loop
from aero_relay.relay.quota import QuotaSession
from aero_relay.relay.sendqueue import SendQueue

__all__ = ["FILTER_ANY", "SEND_BATCH_BYTES", "DatagramPipeline"]

FILTER_ANY: Final = "any"

SEND_BATCH_BYTES: Final = 64 * 1024
"""Most frame bytes one ``send_batch_to_client`` call carries (about 53 full-size frames): big
enough to amortise a write, small enough to keep the write one socket call on loopback or LAN."""

_RATE_LIMITED: Final = Verdict.RATE_LIMITED
_OK: Final = Verdict.OK


class DatagramPipeline:
    """Client frames <-> UDP bindings for one relay instance (spec §13 .. §17)."""

    def __init__(
        self,
        *,
        cfg: Config,
        metrics: Metrics,
        transport: TransportEvents,
        quota: QuotaSession,
        send_to_client: Callable[[bytes], Awaitable[None]],
        send_batch_to_client: Callable[[list[bytes]], Awaitable[None]] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._inc = metrics.inc
        self._t = transport
        self._quota = quota
        self._limiter = quota.limiter
        self._limits_outbound = quota.limits_outbound
        self._send_to_client = send_to_client
        self._send_batch_to_client = send_batch_to_client
        self._clock = clock
        self._policy = cfg.policy
        self._max_payload = cfg.max_datagram_payload_bytes
        self._prefer_v2 = cfg.prefer_v2
        self._filter = cfg.udp_inbound_filter_mode != FILTER_ANY
        self._max_bindings = max(cfg.max_udp_bindings_per_session, 1)
        self._allow_cap = cfg.max_allowed_remotes_per_binding
        self._allow_ttl = cfg.udp_remote_allowlist_idle_timeout
        self._idle = cfg.udp_binding_idle_timeout
        self._bufsize = max(cfg.udp_read_buffer_bytes, cfg.max_datagram_payload_bytes + 1)
        self._queue = SendQueue(cfg.datachannel_send_queue_bytes)
        self._bindings: OrderedDict[int, Binding] = OrderedDict()  # guest port -> binding, LRU first
        self._client_v2 = False
        self._nursery: trio.Nursery | None = None
        self._open = False  # accepting traffic: run() has started and nothing has closed us
        self._closed = False

    # --- introspection ---------------------------------------------------------------------------

    @property
    def binding_count(self) -> int:
        return len(self._bindings)

    @property
    def client_sent_v2(self) -> bool:
        """Whether the client has sent a decodable v2 frame (sticky, F-120)."""
        return self._client_v2

    @property
    def send_queue(self) -> SendQueue:
        return self._queue

    @property
    def closed(self) -> bool:
        return self._closed

    def binding(self, guest_port: int) -> Binding | None:
        return self._bindings.get(guest_port)

    # --- lifecycle -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the sender, the binding readers and the expiry task until cancelled (or :meth:`close`).
        Every socket is closed on the way out; closing needs no await."""
        if self._nursery is not None:
            raise RuntimeError("DatagramPipeline.run() can only be called once")
        if self._closed:  # closed before it ran
            task_status.started()
            return
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._open = True
                nursery.start_soon(self._sender)
                nursery.start_soon(self._expire_bindings)
                task_status.started()
        finally:
            self._shutdown()

    def close(self) -> None:
        """Stop accepting frames, close every binding and end :meth:`run`. Idempotent."""
        self._shutdown()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _shutdown(self) -> None:
        self._open = False
        self._closed = True
        self._queue.close()
        bindings = self._bindings
        while bindings:
            bindings.popitem(last=False)[1].close()

    # --- client -> UDP ---------------------------------------------------------------------------

    def handle_client_frame(self, data: bytes) -> None:
        """One frame from the client (F-095, F-123). Synchronous and non-blocking."""
        if not self._open or self._quota.closed:
            return
        inc = self._inc
        t = self._t
        inc(t.datagrams_in)
        try:
            frame = decode(data, max_payload=self._max_payload)
        except FrameError as err:
            inc(t.dropped)
            inc(t.dropped_oversized if err.kind == "payload_too_large" else t.dropped_malformed)  # F-119
            return
        if frame.version == 2:
            self._client_v2 = True  # F-120: sticky, even if this frame is then refused
        ip = frame.remote_ip
        port = frame.remote_port
        if self._policy.check(ip, port) is not None:
            inc(t.dropped)
            inc(t.dropped_denied_by_policy)  # F-227: not a violation
            return
        v6 = len(ip) == 16
        mapped = v6 and ip[:12] == V4_MAPPED_PREFIX
        if mapped:
            ip = ip[12:]
            v6 = False
        dest: RemoteKey = (ip_to_text(ip), port)
        payload = frame.payload
        now = self._clock()

        if self._limits_outbound:
            outcome = self._limiter.check_outbound(dest, len(payload), now)
            if outcome.evicted:
                inc(Event.UDP_PER_DEST_BUCKET_EVICTIONS, outcome.evicted)
            verdict = outcome.verdict
            if verdict is not _OK:
                self._refuse_outbound(verdict)
                return

        bindings = self._bindings
        guest_port = frame.guest_port
        b = bindings.get(guest_port)
        if b is None:
            b = self._open_binding(guest_port, now)
            if b is None:
                inc(t.dropped)  # F-123: a binding socket error counts only `dropped`
                return
        else:
            bindings.move_to_end(guest_port)
            b.last_used = now
        allowlist = b.allowlist
        if allowlist is not None:
            evicted = allowlist.admit(dest, now)
            if evicted:
                inc(Event.UDP_REMOTE_ALLOWLIST_EVICTIONS_TOTAL, evicted)
        if mapped:
            b.note_mapped(dest, self._allow_cap)
        elif b.mapped_remotes:
            b.mapped_remotes.pop(dest, None)
        sock = b.sock6 if v6 else b.sock4
        if sock is None:
            return  # no IPv6 on this host: fails silently (F-122)
        try:  # noqa: SIM105 - contextlib.suppress costs a context manager per datagram
            sock.sendto(payload, dest)
        except OSError:
            pass  # F-123: write errors (including a full socket buffer) are ignored

    def _refuse_outbound(self, verdict: Verdict) -> None:
        """F-144: transport drop counters, the session-wide event(s), one violation."""
        inc = self._inc
        t = self._t
        inc(t.dropped)
        if verdict is _RATE_LIMITED:
            inc(t.dropped_rate_limited)
            inc(Event.RATE_LIMITED)
        else:
            inc(t.dropped_quota_exceeded)
            inc(Event.QUOTA_EXCEEDED)
            inc(Event.TOO_MANY_DESTINATIONS)
        self._quota.record_violation()

    def _open_binding(self, guest_port: int, now: float) -> Binding | None:
        """F-122, F-124: a new binding, evicting the least recently used one at the cap."""
        bindings = self._bindings
        while len(bindings) >= self._max_bindings:
            bindings.popitem(last=False)[1].close()
        allowlist = RemoteAllowlist(self._allow_cap, self._allow_ttl) if self._filter else None
        try:
            b = Binding.open(guest_port, allowlist, now)
        except OSError:
            return None
        bindings[guest_port] = b
        nursery = self._nursery
        assert nursery is not None
        nursery.start_soon(read_loop, b, b.sock4, False, self._on_datagram, self._bufsize)
        if b.sock6 is not None:
            nursery.start_soon(read_loop, b, b.sock6, True, self._on_datagram, self._bufsize)
        return b

    async def _expire_bindings(self) -> None:
        """F-125: close bindings idle (no outbound traffic) for UDP_BINDING_IDLE_TIMEOUT. Sleeps until
        the oldest binding's deadline; a refreshed binding just moves to the back."""
        idle = self._idle
        bindings = self._bindings
        while True:
            now = self._clock()
            while bindings:
                oldest = next(iter(bindings.values()))
                if now - oldest.last_used < idle:
                    break
                bindings.popitem(last=False)
                oldest.close()
            # With no binding, any new one expires at least `idle` from now.
            wake = next(iter(bindings.values())).last_used + idle if bindings else now + idle
            await trio.sleep(max(wake - now, 0.0))

    # --- UDP -> client ---------------------------------------------------------------------------

    def _on_datagram(self, b: Binding, data: bytes, remote: RemoteKey, from_v6: bool) -> None:
        """One datagram read from a binding socket (F-126, F-127)."""
        quota = self._quota
        if quota.closed or not self._open:
            return
        inc = self._inc
        t = self._t
        if len(data) > self._max_payload:
            inc(t.dropped)
            inc(t.dropped_oversized)  # both transports (module docstring)
            return
        now = self._clock()
        allowlist = b.allowlist
        if allowlist is not None and not allowlist.permits(remote, now):
            inc(Event.UDP_REMOTE_ALLOWLIST_OVERFLOW_DROPS_TOTAL)  # F-132: not a *_dropped
            return
        try:
            if from_v6:
                ip = pack_ipv6(remote[0])
            else:
                ip = pack_ipv4(remote[0])
                mapped = b.mapped_remotes
                if mapped and remote in mapped:
                    ip = V4_MAPPED_PREFIX + ip
        except (
            OSError,
            ValueError,
        ):  # an address text inet_pton cannot parse; cannot happen for real sockets
            return
        frame = encode_reply(b.guest_port, ip, remote[1], data, use_v2=self._prefer_v2 and self._client_v2)
        n = len(frame)
        limiter = self._limiter
        if not limiter.allow_to_client(n, now):
            inc(t.dropped)
            inc(t.dropped_rate_limited)
            inc(Event.RATE_LIMITED)
            quota.record_violation()  # F-145
            return
        if not self._queue.offer(frame):
            limiter.refund_to_client(n)  # fixes F-199
            inc(t.dropped)
            inc(t.dropped_backpressure)

    async def _sender(self) -> None:
        """Drain the send queue into the transport (F-128): one frame per ``send_to_client`` call,
        or, when the transport gave ``send_batch_to_client``, every queued frame (up to
        :data:`SEND_BATCH_BYTES`) per call, so a burst costs one write instead of one per frame."""
        send_batch = self._send_batch_to_client
        if send_batch is not None:
            await self._batch_sender(send_batch)
            return
        get = self._queue.get
        send = self._send_to_client
        inc = self._inc
        out = self._t.datagrams_out
        while True:
            try:
                frame = await get()
            except trio.EndOfChannel:
                return
            try:
                await send(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # F-096: write errors are ignored
            inc(out)

    async def _batch_sender(self, send_batch: Callable[[list[bytes]], Awaitable[None]]) -> None:
        get_batch = self._queue.get_batch
        inc = self._inc
        out = self._t.datagrams_out
        while True:
            try:
                batch = await get_batch(SEND_BATCH_BYTES)
            except trio.EndOfChannel:
                return
            try:
                await send_batch(batch)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # F-096: write errors are ignored
            inc(out, len(batch))  # every frame of the batch was handed over
