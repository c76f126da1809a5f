"""Token bucket, session limiter and violation tracker (spec §17, F-141 .. F-146, F-199)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aero_relay.core.limits import (
    DEFAULT_MAX_DEST_BUCKETS,
    Outcome,
    SessionLimiter,
    TokenBucket,
    Verdict,
    ViolationTracker,
)

OK = Verdict.OK
RATE = Verdict.RATE_LIMITED
QUOTA = Verdict.QUOTA_EXCEEDED
T0 = 12_345.5  # Trio's clock starts at an arbitrary large offset

# --- TokenBucket (F-141) ------------------------------------------------------------------------------


def test_bucket_starts_full() -> None:
    bucket = TokenBucket(5)
    assert [bucket.allow(1, T0) for _ in range(6)] == [True] * 5 + [False]


def test_bucket_refills_at_the_limit_per_second() -> None:
    bucket = TokenBucket(5)
    assert bucket.allow(5, T0)
    assert not bucket.allow(1, T0 + 0.1)  # half a token
    assert bucket.allow(1, T0 + 0.2)
    assert not bucket.allow(1, T0 + 0.2)


def test_bucket_arithmetic_is_exact_fixed_point() -> None:
    """1 token = 1e9 nano-tokens, `limit` nano-tokens per ns: 333,333,333 ns at 3/s is one nano short."""
    bucket = TokenBucket(3)
    assert bucket.allow(3, 0.0)
    assert not bucket.allow(1, 0.333333333)
    assert bucket.allow(1, 0.333333334)


def test_refill_within_one_nanosecond_of_full_fills_the_bucket() -> None:
    """As the original: 333,333,333 ns at 3/s is 999,999,999 nano-tokens, and that rounds up to full."""
    bucket = TokenBucket(3)
    assert bucket.allow(1, 0.0)
    assert bucket.allow(3, 0.333333333)


def test_bucket_never_holds_more_than_its_capacity() -> None:
    bucket = TokenBucket(4)
    assert bucket.allow(1, T0)
    assert bucket.available(T0 + 3600) == 4
    assert bucket.allow(4, T0 + 3600)
    assert not bucket.allow(1, T0 + 3600)


def test_time_going_backwards_gives_no_refill_and_moves_the_reference() -> None:
    bucket = TokenBucket(5)
    assert bucket.allow(5, T0)
    assert not bucket.allow(1, T0 - 10)  # no refill
    assert bucket.allow(1, T0 - 9.8)  # 0.2 s after the new reference point
    assert not bucket.allow(1, T0 - 9.8)


def test_zero_or_negative_cost_always_passes() -> None:
    bucket = TokenBucket(1)
    assert bucket.allow(1, T0)
    assert bucket.allow(0, T0)
    assert bucket.allow(-5, T0)


def test_cost_above_capacity_never_passes() -> None:
    """F-141: a 1500-byte frame against MAX_UDP_BPS_PER_SESSION=1000."""
    bucket = TokenBucket(1000)
    assert not bucket.allow(1500, T0)
    assert not bucket.allow(1500, T0 + 1e6)
    assert bucket.allow(1000, T0 + 1e6)


def test_zero_limit_refuses_every_positive_cost() -> None:
    bucket = TokenBucket(0)
    assert not bucket.allow(1, T0)
    assert not bucket.allow(1, T0 + 100)
    assert bucket.allow(0, T0)


def test_refund_is_capped_at_capacity() -> None:
    bucket = TokenBucket(2)
    assert bucket.allow(1, T0)
    bucket.refund(10)
    assert bucket.available(T0) == 2


@given(
    limit=st.integers(1, 1000),
    steps=st.lists(st.tuples(st.integers(0, 2_000_000), st.integers(-5, 300)), min_size=1, max_size=60),
)
def test_bucket_never_allows_more_than_capacity_plus_rate_times_elapsed(
    limit: int, steps: list[tuple[int, int]]
) -> None:
    """Over any run with a non-decreasing clock (steps in microseconds)."""
    bucket = TokenBucket(limit)
    now_us = 1_000_000_000_000  # ~11.6 days, a large monotonic offset
    start_us = now_us
    allowed = 0
    for delta_us, cost in steps:
        now_us += delta_us
        if bucket.allow(cost, now_us / 1e6) and cost > 0:
            allowed += cost
        # nano-tokens; +2 ns covers the float -> ns rounding at both ends
        assert allowed * 1_000_000_000 <= limit * 1_000_000_000 + limit * ((now_us - start_us) * 1000 + 2)


@given(limit=st.integers(1, 10_000), cost=st.integers(1, 10_000))
def test_bucket_admits_any_cost_within_capacity_after_a_full_refill(limit: int, cost: int) -> None:
    bucket = TokenBucket(limit)
    bucket.allow(limit, T0)  # drain
    assert bucket.allow(cost, T0 + 1.0) is (cost <= limit)


# --- SessionLimiter: outbound (F-142 .. F-144) ---------------------------------------------------------


def verdicts(
    limiter: SessionLimiter, sends: Sequence[tuple[Hashable, int]], now: float = T0
) -> list[Verdict]:
    return [limiter.check_outbound(key, size, now).verdict for key, size in sends]


A = ("1.1.1.1", 53)
B = ("8.8.8.8", 53)
C = ("9.9.9.9", 53)


def test_everything_off_always_admits() -> None:
    limiter = SessionLimiter()
    assert set(verdicts(limiter, [((str(i), 53), 65_000) for i in range(2000)])) == {OK}
    assert limiter.allow_to_client(10**9, T0)


def test_packets_per_second() -> None:
    """F-142: MAX_UDP_PPS_PER_SESSION, the first stage."""
    limiter = SessionLimiter(max_udp_pps_per_session=2)
    assert verdicts(limiter, [(A, 2)] * 5) == [OK, OK, RATE, RATE, RATE]
    assert limiter.check_outbound(A, 2, T0 + 0.5).verdict is OK


def test_bytes_per_second_counts_payload_bytes() -> None:
    limiter = SessionLimiter(max_udp_bps_per_session=4)
    assert verdicts(limiter, [(A, 4), (A, 1)]) == [OK, RATE]


def test_bytes_per_second_never_admits_a_payload_above_the_limit() -> None:
    """F-141."""
    limiter = SessionLimiter(max_udp_bps_per_session=1000)
    assert limiter.check_outbound(A, 1500, T0 + 100).verdict is RATE


def test_unique_destinations_quota() -> None:
    """F-142/F-144: a set of destinations that only grows, capped by the limit."""
    limiter = SessionLimiter(max_unique_destinations=2)
    assert verdicts(limiter, [(A, 1), (B, 1), (C, 1), (A, 1), (B, 1), (C, 1)]) == [
        OK,
        OK,
        QUOTA,
        OK,
        OK,
        QUOTA,
    ]
    assert limiter.unique_destinations == 2


def test_unique_destination_set_never_shrinks() -> None:
    limiter = SessionLimiter(max_unique_destinations=1)
    assert limiter.check_outbound(A, 1, T0).verdict is OK
    assert limiter.check_outbound(B, 1, T0 + 1e6).verdict is QUOTA


def test_per_destination_packets_per_second() -> None:
    limiter = SessionLimiter(max_udp_pps_per_dest=1)
    assert verdicts(limiter, [(A, 1), (A, 1), (B, 1)]) == [OK, RATE, OK]
    assert limiter.check_outbound(A, 1, T0 + 1).verdict is OK


def test_packet_rate_is_checked_before_the_destination_quota() -> None:
    limiter = SessionLimiter(max_udp_pps_per_session=1, max_unique_destinations=1)
    assert verdicts(limiter, [(A, 1), (B, 1)]) == [OK, RATE]


def test_byte_rate_is_checked_before_the_destination_quota() -> None:
    limiter = SessionLimiter(max_udp_bps_per_session=10, max_unique_destinations=1)
    assert verdicts(limiter, [(A, 10), (B, 1)]) == [OK, RATE]


def test_destination_quota_is_checked_before_the_per_destination_rate() -> None:
    limiter = SessionLimiter(max_unique_destinations=1, max_udp_pps_per_dest=1)
    assert verdicts(limiter, [(A, 1), (B, 1), (A, 1)]) == [OK, QUOTA, RATE]


def test_quota_refusals_refund_the_rate_tokens() -> None:
    """Deliberate fix of weakness 9 / F-199: refused datagrams do not spend the session's budget."""
    limiter = SessionLimiter(
        max_udp_pps_per_session=2, max_udp_bps_per_session=100, max_unique_destinations=1
    )
    assert verdicts(limiter, [(A, 50)] + [(B, 50)] * 10 + [(A, 50)]) == [OK] + [QUOTA] * 10 + [OK]


def test_per_destination_refusals_refund_the_rate_tokens() -> None:
    limiter = SessionLimiter(max_udp_pps_per_session=3, max_udp_bps_per_session=30, max_udp_pps_per_dest=1)
    assert verdicts(limiter, [(A, 10)] + [(A, 10)] * 5 + [(B, 10), (C, 10)]) == [OK] + [RATE] * 5 + [OK, OK]


def test_byte_refusals_refund_the_packet_token() -> None:
    limiter = SessionLimiter(max_udp_pps_per_session=1, max_udp_bps_per_session=10)
    assert verdicts(limiter, [(A, 11), (A, 11), (A, 10)]) == [RATE, RATE, OK]


def test_per_destination_buckets_are_an_lru_with_counted_evictions() -> None:
    """F-143: a new destination at the cap evicts the least recently used bucket."""
    limiter = SessionLimiter(max_udp_pps_per_dest=1, max_dest_buckets=2)
    assert limiter.check_outbound(A, 1, T0) == Outcome(OK, 0)
    assert limiter.check_outbound(B, 1, T0) == Outcome(OK, 0)
    assert limiter.check_outbound(A, 1, T0) == Outcome(RATE, 0)  # a hit moves A to the front
    assert limiter.check_outbound(C, 1, T0) == Outcome(OK, 1)  # evicts B, the LRU
    assert limiter.check_outbound(A, 1, T0) == Outcome(RATE, 0)  # A's bucket survived
    assert limiter.check_outbound(B, 1, T0) == Outcome(OK, 1)  # re-created full; evicts C
    assert limiter.dest_buckets == 2


def test_dest_bucket_cap_defaults_to_the_unique_destination_quota() -> None:
    limiter = SessionLimiter(max_unique_destinations=3, max_udp_pps_per_dest=1)
    outcomes = [limiter.check_outbound((str(i), 53), 1, T0) for i in range(5)]
    assert [o.verdict for o in outcomes] == [OK, OK, OK, QUOTA, QUOTA]
    assert limiter.dest_buckets == 3
    assert sum(o.evicted for o in outcomes) == 0


def test_dest_bucket_cap_defaults_to_1024() -> None:
    limiter = SessionLimiter(max_udp_pps_per_dest=1)
    evicted = sum(limiter.check_outbound((str(i), 53), 1, T0).evicted for i in range(1100))
    assert limiter.dest_buckets == DEFAULT_MAX_DEST_BUCKETS == 1024
    assert evicted == 1100 - 1024


def test_outcome_ok_property() -> None:
    assert Outcome(OK).ok
    assert not Outcome(RATE).ok
    assert not Outcome(QUOTA, 1).ok


# --- SessionLimiter: relay -> client (F-145) ------------------------------------------------------------


def test_client_bytes_per_second() -> None:
    limiter = SessionLimiter(max_dc_bps_per_session=4)
    assert limiter.allow_to_client(4, T0)
    assert not limiter.allow_to_client(1, T0)
    assert limiter.allow_to_client(1, T0 + 0.25)


def test_client_budget_can_be_refunded_after_a_backpressure_drop() -> None:
    """Deliberate fix of F-199: the shell refunds a frame it then dropped."""
    limiter = SessionLimiter(max_dc_bps_per_session=4)
    assert limiter.allow_to_client(4, T0)
    limiter.refund_to_client(4)
    assert limiter.allow_to_client(4, T0)


def test_client_and_outbound_budgets_are_independent() -> None:
    limiter = SessionLimiter(max_udp_bps_per_session=4, max_dc_bps_per_session=4)
    assert limiter.allow_to_client(4, T0)
    assert limiter.check_outbound(A, 4, T0).verdict is OK


def test_refund_to_client_without_a_limit_is_a_no_op() -> None:
    limiter = SessionLimiter()
    limiter.refund_to_client(100)
    assert limiter.allow_to_client(100, T0)


# --- ViolationTracker (F-146) -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1])
def test_violations_are_not_counted_when_disabled(n: int) -> None:
    tracker = ViolationTracker(n, 10.0)
    assert not tracker.enabled
    assert not any(tracker.record(T0) for _ in range(100))


def test_n_violations_at_once_hard_close() -> None:
    tracker = ViolationTracker(2, 10.0)
    assert tracker.enabled
    assert not tracker.record(T0)
    assert tracker.record(T0)


def test_one_violation_hard_closes_when_n_is_one() -> None:
    assert ViolationTracker(1, 10.0).record(T0)


def test_violations_further_apart_than_the_window_never_close() -> None:
    tracker = ViolationTracker(2, 10.0)
    assert not any(tracker.record(T0 + 10.5 * i) for i in range(20))


def test_window_is_sliding_not_gap_based() -> None:
    """Deliberate change from F-146: a slow trickle (gaps under the window) is not a burst."""
    tracker = ViolationTracker(3, 10.0)
    assert [tracker.record(T0 + 6 * i) for i in range(10)] == [False] * 10
    assert tracker.record(T0 + 100) is False
    assert tracker.record(T0 + 101) is False  # two within 10 s
    assert tracker.record(T0 + 102) is True  # three within 10 s


def test_window_boundary_is_inclusive() -> None:
    """The original resets only when the gap is *greater* than the window."""
    tracker = ViolationTracker(2, 10.0)
    assert not tracker.record(T0)
    assert tracker.record(T0 + 10.0)


def test_zero_window_never_forgets() -> None:
    tracker = ViolationTracker(3, 0.0)
    assert [tracker.record(T0 + t) for t in (0, 1000, 100_000)] == [False, False, True]


def test_tracker_keeps_reporting_while_over_the_threshold() -> None:
    tracker = ViolationTracker(2, 10.0)
    tracker.record(T0)
    assert tracker.record(T0 + 1)
    assert tracker.record(T0 + 2)
