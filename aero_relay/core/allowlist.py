"""Inbound remote allow-list of one guest-port binding (spec §15, F-129 .. F-133, F-196, F-197, F-206).

In ``address_and_port`` mode (the default) a binding forwards an inbound datagram only from a remote
it has recently sent to. Outbound sends call :meth:`RemoteAllowlist.admit`; inbound datagrams call
:meth:`RemoteAllowlist.permits`. ``UDP_INBOUND_FILTER_MODE=any`` uses no allow-list at all (F-129):
the shell then neither admits nor asks. The cap is per binding, not per session (F-133).

Keys are opaque hashables. The shell must normalise them so that the key it admits on send equals
the key it sees on receive: the original keyed on ``netip.AddrPort``, so a frame sent to
``::ffff:a.b.c.d`` (sent on the IPv4 socket) was admitted under its IPv6 form and the IPv4 reply was
dropped (F-197). Unmapping before admitting fixes that.

Decisions
---------
* **O(1) amortised, not O(n) (F-206).** Entries live in an ``OrderedDict`` in order of last touch;
  since time never goes backwards, that is also timestamp order, so the oldest entry (the one to
  evict) and every expired entry sit at the front. Eviction is ``popitem(last=False)``; pruning pops
  the expired prefix on each :meth:`~RemoteAllowlist.admit` (each entry is popped at most once, so
  this is amortised O(1), cheaper than the original's full scan once per TTL). The original also
  force-prunes before evicting at the cap so that expired entries never count as evictions; here
  that holds on every call.
* **Ties break by touch order.** Entries touched at the same instant are evicted least recently
  touched first. The original breaks timestamp ties by lowest IP bytes then port, which is arbitrary
  and needs comparable keys; with a monotonic clock exact ties are rare anyway.
* **Time is clamped to be non-decreasing**: a ``now`` earlier than one already seen is treated as
  the latest seen, which keeps the order invariant (Trio's clock never does this).
* Expiry follows the original: an entry is expired when ``now - last_seen > ttl``; ``ttl <= 0``
  never expires and ``cap <= 0`` has no cap (the config layer requires both to be > 0).
* Inbound traffic from a permitted remote refreshes its entry (F-132, F-196), so a remote that keeps
  talking stays admitted, as in the original.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["RemoteAllowlist"]


class RemoteAllowlist:
    """Remotes a binding may receive from: TTL since last seen, a cap, least-recently-seen eviction."""

    __slots__ = ("_cap", "_entries", "_now", "_ttl")

    def __init__(self, cap: int, ttl: float) -> None:
        self._cap = cap
        self._ttl = ttl
        self._entries: OrderedDict[Hashable, float] = OrderedDict()  # remote -> last seen, oldest first
        self._now = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, remote: object) -> bool:
        """Whether ``remote`` has an entry (expired or not); for tests and diagnostics."""
        return remote in self._entries

    def _clock(self, now: float) -> float:
        if now < self._now:
            return self._now
        self._now = now
        return now

    def admit(self, remote: Hashable, now: float) -> int:
        """Record an outbound send to ``remote`` (F-131). Returns how many *live* entries the cap
        evicted (``udp_remote_allowlist_evictions_total``); pruned expired entries do not count."""
        now = self._clock(now)
        entries = self._entries
        if remote in entries:
            entries[remote] = now
            entries.move_to_end(remote)
            self._prune(now)
            return 0
        self._prune(now)
        evicted = 0
        cap = self._cap
        if cap > 0:
            while len(entries) >= cap:
                entries.popitem(last=False)
                evicted += 1
        entries[remote] = now  # after eviction, so the size never exceeds the cap
        return evicted

    def permits(self, remote: Hashable, now: float) -> bool:
        """Inbound filter (F-132): unknown -> False; expired -> forget it, False; else refresh, True.

        A False is ``udp_remote_allowlist_overflow_drops_total`` and not a ``*_dropped`` metric.
        """
        entries = self._entries
        last = entries.get(remote)
        if last is None:
            return False
        now = self._clock(now)
        if self._ttl > 0 and now - last > self._ttl:
            del entries[remote]
            return False
        entries[remote] = now
        entries.move_to_end(remote)
        return True

    def _prune(self, now: float) -> None:
        ttl = self._ttl
        if ttl <= 0:
            return
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest <= ttl:
                return
            entries.popitem(last=False)
