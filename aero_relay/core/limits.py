"""Token bucket, per-session limiter and violation tracker (spec §17, F-141 .. F-146, F-199).

One :class:`TokenBucket` serves every rate limit in the relay (the original had two copies). The
:class:`SessionLimiter` holds a quota session's buckets: outbound packets, outbound payload bytes,
the unique-destination set, the per-destination LRU of buckets and the relay->client byte budget.
:class:`ViolationTracker` decides when repeated refusals hard-close a session.

All of it is sans-IO: ``now`` is seconds on a monotonic clock (Trio's), passed in by the caller.

Decisions
---------
* **Refunds (fixes weakness 9 / F-199).** When a later outbound stage refuses a datagram, the pps and
  bps tokens that earlier stages took for it are given back, so the session budgets measure what
  actually left the relay and a burst of quota-refused datagrams cannot starve the session's
  legitimate traffic. The refund is exact: in the same call the buckets are refilled to the same
  instant, and a refund is capped at capacity. For the relay->client direction,
  :meth:`SessionLimiter.refund_to_client` lets the shell return the budget of a frame it then drops
  for backpressure. Refusals still count as violations (F-144); only the token accounting changes.
* **The unique-destination set needs no undo**: a destination added to it always gets a fresh, full
  per-destination bucket (buckets are only ever created after the set admitted the key), so the
  per-destination stage cannot refuse the datagram that added it.
* **Violation window: a true sliding window.** The original resets its counter when the gap since the
  previous violation exceeds the window (F-146), so a slow, steady trickle of violations (one every
  9 s with a 10 s window) eventually hard-closes a session however rare it is, and a burst just after
  a long quiet gap is judged only by its own count. The configuration calls it a window, so here a
  session is hard-closed when ``N`` violations fall within ``window`` seconds (the span from the
  oldest of the last ``N`` to now is ``<= window``, matching the original's "greater than the window
  resets"). Bursts are judged identically (N violations at one instant close in both). ``window <= 0``
  never forgets (as the original's ``--violation-window=0`` never resets); ``N <= 0`` disables it.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Final

import attrs

__all__ = [
    "DEFAULT_MAX_DEST_BUCKETS",
    "NANO_TOKENS_PER_TOKEN",
    "Outcome",
    "SessionLimiter",
    "TokenBucket",
    "Verdict",
    "ViolationTracker",
]

NANO_TOKENS_PER_TOKEN: Final = 1_000_000_000
DEFAULT_MAX_DEST_BUCKETS: Final = 1024  # F-143, when neither the cap nor the unique quota is set


class TokenBucket:
    """F-141: capacity = refill rate = ``limit`` tokens per second, starting full.

    Integer fixed point: one token is 1e9 nano-tokens and ``limit`` nano-tokens are added per elapsed
    nanosecond, so results are exact and deterministic. ``now`` is converted to nanoseconds once per
    call. Time going backwards moves the reference point back without refilling. A cost ``<= 0``
    always passes; a cost above the capacity never does (e.g. a 1500-byte frame against a 1000 B/s
    limit). ``limit <= 0`` gives an empty bucket that refuses every positive cost.

    No ``now`` is needed at construction: the bucket is full until its first use, and refilling a
    full bucket changes nothing, so starting the clock at the first call is equivalent.
    """

    __slots__ = ("_capacity", "_last_ns", "_rate", "_tokens")

    def __init__(self, limit: int) -> None:
        limit = max(limit, 0)
        self._rate = limit  # nano-tokens per ns == tokens per s
        self._capacity = limit * NANO_TOKENS_PER_TOKEN
        self._tokens = self._capacity
        self._last_ns: int | None = None

    @property
    def limit(self) -> int:
        return self._rate

    def available(self, now: float) -> float:
        """Tokens available at ``now`` (for tests and diagnostics; refills like ``allow``)."""
        self._refill(round(now * 1e9))
        return self._tokens / NANO_TOKENS_PER_TOKEN

    def _refill(self, now_ns: int) -> None:
        last = self._last_ns
        if last is None or now_ns < last:
            self._last_ns = now_ns
        elif now_ns > last:
            self._last_ns = now_ns
            missing = self._capacity - self._tokens
            if missing > 0:
                elapsed = now_ns - last
                # As the original: an elapsed time within one ns of filling the bucket fills it.
                if elapsed >= missing // self._rate:
                    self._tokens = self._capacity
                else:
                    self._tokens += elapsed * self._rate

    def allow(self, cost: int, now: float) -> bool:
        """Take ``cost`` tokens if available."""
        return self.allow_ns(cost, round(now * 1e9))

    def allow_ns(self, cost: int, now_ns: int) -> bool:
        """:meth:`allow` with ``now`` already in integer nanoseconds (one conversion per datagram)."""
        if cost <= 0:
            return True
        self._refill(now_ns)
        need = cost * NANO_TOKENS_PER_TOKEN
        if self._tokens < need:
            return False
        self._tokens -= need
        return True

    def refund(self, cost: int) -> None:
        """Give back tokens taken for something that did not happen (capped at capacity)."""
        if cost > 0:
            tokens = self._tokens + cost * NANO_TOKENS_PER_TOKEN
            self._tokens = tokens if tokens < self._capacity else self._capacity


class Verdict(enum.Enum):
    """Outbound decision; the refusals map to the ``rate_limited`` / ``quota_exceeded`` metrics."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"  # pps, bps or per-destination pps (F-144)
    QUOTA_EXCEEDED = "quota_exceeded"  # unique destinations (also ``too_many_destinations``, F-144)


@attrs.frozen
class Outcome:
    """A verdict plus the number of per-destination buckets evicted (``udp_per_dest_bucket_evictions``).

    ``evicted`` is 0 or 1 (one new destination evicts at most one bucket), so every outcome is one of
    six shared instances and the hot path allocates nothing.
    """

    verdict: Verdict
    evicted: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


_OK: Final = Outcome(Verdict.OK)
_OK_EVICTED: Final = Outcome(Verdict.OK, 1)
_RATE_LIMITED: Final = Outcome(Verdict.RATE_LIMITED)
_RATE_LIMITED_EVICTED: Final = Outcome(Verdict.RATE_LIMITED, 1)
_QUOTA_EXCEEDED: Final = Outcome(Verdict.QUOTA_EXCEEDED)


class SessionLimiter:
    """The limits of one quota session (F-142 .. F-145). Every limit ``<= 0`` is off.

    ``max_dest_buckets <= 0`` means the default: ``max_unique_destinations`` when that is on, else
    1024 (F-143; the config layer normally passes the resolved value).
    """

    __slots__ = (
        "_bps",
        "_dc_bps",
        "_dest_buckets",
        "_max_buckets",
        "_max_unique",
        "_per_dest",
        "_pps",
        "_seen",
    )

    def __init__(
        self,
        max_udp_pps_per_session: int = 0,
        max_udp_bps_per_session: int = 0,
        max_unique_destinations: int = 0,
        max_udp_pps_per_dest: int = 0,
        max_dest_buckets: int = 0,
        max_dc_bps_per_session: int = 0,
    ) -> None:
        self._pps = TokenBucket(max_udp_pps_per_session) if max_udp_pps_per_session > 0 else None
        self._bps = TokenBucket(max_udp_bps_per_session) if max_udp_bps_per_session > 0 else None
        self._dc_bps = TokenBucket(max_dc_bps_per_session) if max_dc_bps_per_session > 0 else None
        self._max_unique = max(max_unique_destinations, 0)
        self._seen: set[Hashable] = set()
        self._per_dest = max(max_udp_pps_per_dest, 0)
        if max_dest_buckets <= 0:
            max_dest_buckets = self._max_unique or DEFAULT_MAX_DEST_BUCKETS
        self._max_buckets = max_dest_buckets
        self._dest_buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()  # oldest first

    @property
    def unique_destinations(self) -> int:
        return len(self._seen)

    @property
    def dest_buckets(self) -> int:
        return len(self._dest_buckets)

    def check_outbound(self, dest_key: Hashable, payload_len: int, now: float) -> Outcome:
        """Admit one client->UDP datagram (F-142): pps -> bps -> unique destinations -> per-dest pps.

        ``dest_key`` is any hashable naming the destination (IP and port). Tokens taken by earlier
        stages are refunded when a later stage refuses (module docstring).
        """
        now_ns = round(now * 1e9)
        pps = self._pps
        if pps is not None and not pps.allow_ns(1, now_ns):
            return _RATE_LIMITED
        bps = self._bps
        if bps is not None and not bps.allow_ns(payload_len, now_ns):
            if pps is not None:
                pps.refund(1)
            return _RATE_LIMITED
        if self._max_unique and dest_key not in self._seen:
            if len(self._seen) >= self._max_unique:
                self._refund(pps, bps, payload_len)
                return _QUOTA_EXCEEDED
            self._seen.add(dest_key)  # the set only grows; the cap bounds it (F-142)
        if not self._per_dest:
            return _OK
        buckets = self._dest_buckets
        bucket = buckets.get(dest_key)
        evicted = False
        if bucket is None:
            if len(buckets) >= self._max_buckets:
                buckets.popitem(last=False)  # least recently used (F-143)
                evicted = True
            bucket = buckets[dest_key] = TokenBucket(self._per_dest)  # a re-created bucket starts full
        else:
            buckets.move_to_end(dest_key)
        if not bucket.allow_ns(1, now_ns):
            self._refund(pps, bps, payload_len)
            return _RATE_LIMITED_EVICTED if evicted else _RATE_LIMITED
        return _OK_EVICTED if evicted else _OK

    @staticmethod
    def _refund(pps: TokenBucket | None, bps: TokenBucket | None, payload_len: int) -> None:
        if pps is not None:
            pps.refund(1)
        if bps is not None:
            bps.refund(payload_len)

    def allow_to_client(self, frame_len: int, now: float) -> bool:
        """Relay->client budget, ``MAX_DC_BPS_PER_SESSION`` over frame bytes (F-145)."""
        dc = self._dc_bps
        return dc is None or dc.allow(frame_len, now)

    def refund_to_client(self, frame_len: int) -> None:
        """Return the budget of a frame that :meth:`allow_to_client` admitted but the shell then dropped
        (e.g. send-queue backpressure; fixes F-199)."""
        if self._dc_bps is not None:
            self._dc_bps.refund(frame_len)


class ViolationTracker:
    """Hard-close decision for repeated rate/quota refusals (F-146), as a true sliding window.

    :meth:`record` returns True when the session must be hard-closed: ``hard_close_after`` violations
    within ``window`` seconds. It keeps returning True while that holds; the shell closes once.
    Policy denials are not violations (F-227); the caller records only rate and quota refusals.
    """

    __slots__ = ("_times", "_window", "hard_close_after")

    def __init__(self, hard_close_after: int, window: float) -> None:
        self.hard_close_after = hard_close_after
        self._window = window
        # Only the last N violation times matter, so the memory is bounded by the configured N.
        self._times: deque[float] = deque(maxlen=max(hard_close_after, 1))

    @property
    def enabled(self) -> bool:
        return self.hard_close_after > 0

    def record(self, now: float) -> bool:
        """Count one violation at ``now``; True means hard-close the session."""
        n = self.hard_close_after
        if n <= 0:
            return False
        times = self._times
        times.append(now)
        if len(times) < n:
            return False
        return self._window <= 0 or now - times[0] <= self._window
