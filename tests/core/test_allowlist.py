"""Inbound remote allow-list of a binding (spec §15, F-129 .. F-133, F-196, F-206)."""

from __future__ import annotations

from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from aero_relay.core.allowlist import RemoteAllowlist

A = ("203.0.113.1", 53)
B = ("203.0.113.2", 53)
C = ("203.0.113.3", 53)
T0 = 5_000.0


def test_unknown_remote_is_not_permitted() -> None:
    """F-132: missing -> drop."""
    assert not RemoteAllowlist(4, 10.0).permits(A, T0)


def test_admitted_remote_is_permitted() -> None:
    allowlist = RemoteAllowlist(4, 10.0)
    assert allowlist.admit(A, T0) == 0
    assert allowlist.permits(A, T0 + 1)
    assert not allowlist.permits(B, T0 + 1)


def test_the_key_is_address_and_port() -> None:
    allowlist = RemoteAllowlist(4, 10.0)
    allowlist.admit(A, T0)
    assert not allowlist.permits((A[0], A[1] + 1), T0)


def test_expired_remote_is_forgotten_and_refused() -> None:
    """F-132: expired when now - last_seen > ttl; it is deleted."""
    allowlist = RemoteAllowlist(4, 10.0)
    allowlist.admit(A, T0)
    assert not allowlist.permits(A, T0 + 10.5)
    assert A not in allowlist
    assert not allowlist.permits(A, T0 + 10.6)


def test_ttl_boundary_is_still_permitted() -> None:
    allowlist = RemoteAllowlist(4, 10.0)
    allowlist.admit(A, T0)
    assert allowlist.permits(A, T0 + 10.0)


def test_inbound_traffic_refreshes_the_entry() -> None:
    """F-132/F-196: a permitted inbound datagram refreshes last-seen."""
    allowlist = RemoteAllowlist(4, 10.0)
    allowlist.admit(A, T0)
    assert allowlist.permits(A, T0 + 8)
    assert allowlist.permits(A, T0 + 16)
    assert allowlist.permits(A, T0 + 24)


def test_outbound_traffic_refreshes_the_entry() -> None:
    allowlist = RemoteAllowlist(4, 10.0)
    allowlist.admit(A, T0)
    assert allowlist.admit(A, T0 + 8) == 0
    assert allowlist.permits(A, T0 + 16)


def test_cap_evicts_the_least_recently_seen_and_counts_it() -> None:
    """F-131: udp_remote_allowlist_evictions_total += n."""
    allowlist = RemoteAllowlist(2, 100.0)
    assert allowlist.admit(A, T0) == 0
    assert allowlist.admit(B, T0 + 1) == 0
    assert allowlist.admit(C, T0 + 2) == 1
    assert len(allowlist) == 2
    assert not allowlist.permits(A, T0 + 3)
    assert allowlist.permits(B, T0 + 3)
    assert allowlist.permits(C, T0 + 3)


def test_outbound_refresh_protects_from_eviction() -> None:
    allowlist = RemoteAllowlist(2, 100.0)
    allowlist.admit(A, T0)
    allowlist.admit(B, T0 + 1)
    allowlist.admit(A, T0 + 2)
    assert allowlist.admit(C, T0 + 3) == 1
    assert B not in allowlist
    assert A in allowlist


def test_inbound_refresh_protects_from_eviction() -> None:
    allowlist = RemoteAllowlist(2, 100.0)
    allowlist.admit(A, T0)
    allowlist.admit(B, T0 + 1)
    assert allowlist.permits(A, T0 + 2)
    assert allowlist.admit(C, T0 + 3) == 1
    assert B not in allowlist


def test_timestamp_ties_evict_the_least_recently_touched() -> None:
    """Decision: ties break by touch order (the original: lowest IP bytes, then port)."""
    allowlist = RemoteAllowlist(2, 100.0)
    allowlist.admit(B, T0)
    allowlist.admit(A, T0)
    assert allowlist.admit(C, T0) == 1
    assert B not in allowlist
    assert A in allowlist


def test_expired_entries_are_pruned_before_eviction_and_not_counted() -> None:
    """F-131: force-prune expired entries first; they are not evictions."""
    allowlist = RemoteAllowlist(2, 10.0)
    allowlist.admit(A, T0)
    allowlist.admit(B, T0 + 1)
    assert allowlist.admit(C, T0 + 20) == 0
    assert len(allowlist) == 1


def test_readmitting_an_expired_entry_still_present_is_a_refresh() -> None:
    allowlist = RemoteAllowlist(2, 10.0)
    allowlist.admit(A, T0)
    allowlist.admit(B, T0 + 1)
    assert allowlist.admit(A, T0 + 30) == 0
    assert allowlist.permits(A, T0 + 31)
    assert not allowlist.permits(B, T0 + 31)


def test_never_exceeds_the_cap() -> None:
    allowlist = RemoteAllowlist(3, 1e9)
    evicted = sum(allowlist.admit((f"198.51.100.{i}", 53), T0 + i) for i in range(50))
    assert len(allowlist) == 3
    assert evicted == 47


def test_eviction_at_a_large_cap_does_not_scan() -> None:
    """F-206: eviction is O(1); 100k evictions at a 50k cap would take minutes with a scan."""
    allowlist = RemoteAllowlist(50_000, 1e9)
    evicted = sum(allowlist.admit(i, T0 + i * 1e-6) for i in range(150_000))
    assert evicted == 100_000
    assert len(allowlist) == 50_000


def test_zero_ttl_never_expires() -> None:
    allowlist = RemoteAllowlist(2, 0.0)
    allowlist.admit(A, T0)
    assert allowlist.permits(A, T0 + 1e9)


def test_time_going_backwards_is_clamped() -> None:
    allowlist = RemoteAllowlist(2, 10.0)
    allowlist.admit(A, T0 + 100)
    allowlist.admit(B, T0)  # treated as T0 + 100
    assert allowlist.permits(B, T0 + 105)
    assert allowlist.admit(C, T0 + 106) == 1
    assert A not in allowlist


def test_each_binding_has_its_own_cap() -> None:
    """F-133: the cap is per guest-port binding."""
    first, second = RemoteAllowlist(1, 10.0), RemoteAllowlist(1, 10.0)
    first.admit(A, T0)
    second.admit(B, T0)
    assert first.permits(A, T0)
    assert second.permits(B, T0)


# --- a reference model --------------------------------------------------------------------------------


class ReferenceAllowlist:
    """The original's semantics as a plain dict and linear scans, tie-broken by touch order."""

    def __init__(self, cap: int, ttl: float) -> None:
        self.cap = cap
        self.ttl = ttl
        self.entries: dict[Hashable, tuple[float, int]] = {}
        self.seq = 0

    def _touch(self, remote: Hashable, now: float) -> None:
        self.seq += 1
        self.entries[remote] = (now, self.seq)

    def _expired(self, remote: Hashable, now: float) -> bool:
        return self.ttl > 0 and now - self.entries[remote][0] > self.ttl

    def admit(self, remote: Hashable, now: float) -> int:
        if remote in self.entries:
            self._touch(remote, now)
            return 0
        evicted = 0
        if self.cap > 0 and len(self.entries) + 1 > self.cap:
            for key in [k for k in self.entries if self._expired(k, now)]:
                del self.entries[key]
            while len(self.entries) + 1 > self.cap:
                del self.entries[min(self.entries, key=self.entries.__getitem__)]
                evicted += 1
        self._touch(remote, now)
        return evicted

    def permits(self, remote: Hashable, now: float) -> bool:
        if remote not in self.entries:
            return False
        if self._expired(remote, now):
            del self.entries[remote]
            return False
        self._touch(remote, now)
        return True


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["admit", "permits"]),
        st.integers(0, 7),  # remote
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0, 10.0, 25.0]),  # time advance (ties are common)
    ),
    max_size=80,
)


@settings(max_examples=300)
@given(cap=st.integers(1, 5), ttl=st.sampled_from([0.0, 3.0, 10.0, 30.0]), ops=_OPS)
def test_agrees_with_the_reference_model_and_never_exceeds_the_cap(
    cap: int, ttl: float, ops: list[tuple[str, int, float]]
) -> None:
    allowlist = RemoteAllowlist(cap, ttl)
    model = ReferenceAllowlist(cap, ttl)
    now = T0
    for op, remote, advance in ops:
        now += advance
        if op == "admit":
            assert allowlist.admit(remote, now) == model.admit(remote, now)
        else:
            assert allowlist.permits(remote, now) == model.permits(remote, now)
        assert len(allowlist) <= cap
    # Live entries agree at the end.
    for remote in range(8):
        live = remote in model.entries and not model._expired(remote, now)
        assert live == allowlist.permits(remote, now)
