"""QuotaSession: the per-session limits, violations and hard close (F-141 .. F-147)."""

from __future__ import annotations

from aero_relay.config import Config, load
from aero_relay.core.limits import Verdict
from aero_relay.observability.metrics import Event, Metrics
from aero_relay.relay.quota import QuotaSession


def make_cfg(**env: str) -> Config:
    return load({"AUTH_MODE": "none", "DESTINATION_POLICY_PRESET": "dev", **env})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_quota(**env: str) -> tuple[QuotaSession, Metrics, list[str], FakeClock]:
    metrics = Metrics()
    calls: list[str] = []
    clock = FakeClock()
    quota = QuotaSession(make_cfg(**env), metrics, lambda: calls.append("closed"), clock=clock)
    return quota, metrics, calls, clock


def test_the_limiter_is_built_from_the_session_limits() -> None:
    """F-142: pps, bps, unique destinations and per-destination pps come from the config."""
    quota, _, _, clock = make_quota(
        MAX_UDP_PPS_PER_SESSION="3", MAX_UNIQUE_DESTINATIONS_PER_SESSION="1", MAX_UDP_PPS_PER_DEST="2"
    )
    check = quota.limiter.check_outbound
    assert check(("1.2.3.4", 53), 10, clock.now).verdict is Verdict.OK
    assert check(("1.2.3.4", 53), 10, clock.now).verdict is Verdict.OK
    assert check(("1.2.3.4", 53), 10, clock.now).verdict is Verdict.RATE_LIMITED  # per-dest 2
    assert check(("5.6.7.8", 53), 10, clock.now).verdict is Verdict.QUOTA_EXCEEDED


def test_the_limiter_uses_the_bps_limits_of_both_directions() -> None:
    """F-142 (bytes out) and F-145 (relay->client bytes)."""
    quota, _, _, clock = make_quota(MAX_UDP_BPS_PER_SESSION="100", MAX_DC_BPS_PER_SESSION="50")
    limiter = quota.limiter
    assert limiter.check_outbound(("1.2.3.4", 53), 100, clock.now).ok
    assert not limiter.check_outbound(("1.2.3.4", 53), 1, clock.now).ok
    assert limiter.allow_to_client(50, clock.now)
    assert not limiter.allow_to_client(1, clock.now)


def test_no_limits_configured_admits_everything() -> None:
    quota, _, _, clock = make_quota()
    for i in range(1000):
        assert quota.limiter.check_outbound((f"10.0.{i // 250}.{i % 250}", 53), 1200, clock.now).ok
        assert quota.limiter.allow_to_client(1224, clock.now)


def test_violations_never_close_when_hard_close_is_off() -> None:
    """F-146: HARD_CLOSE_AFTER_VIOLATIONS=0 does not count violations."""
    quota, metrics, calls, _ = make_quota()
    for _ in range(100):
        quota.record_violation()
    assert not quota.closed
    assert calls == []
    assert metrics.value(Event.SESSION_HARD_CLOSED) == 0


def test_nth_violation_within_the_window_hard_closes_once() -> None:
    """F-146: N violations -> session_hard_closed, closed, and the callback exactly once."""
    quota, metrics, calls, clock = make_quota(HARD_CLOSE_AFTER_VIOLATIONS="3", VIOLATION_WINDOW_SECONDS="10")
    quota.record_violation()
    clock.now += 1
    quota.record_violation()
    assert not quota.closed
    clock.now += 1
    quota.record_violation()
    assert quota.closed
    assert calls == ["closed"]
    assert metrics.value(Event.SESSION_HARD_CLOSED) == 1
    for _ in range(5):
        quota.record_violation()
    assert calls == ["closed"]
    assert metrics.value(Event.SESSION_HARD_CLOSED) == 1


def test_violations_spread_wider_than_the_window_do_not_close() -> None:
    quota, _, calls, clock = make_quota(HARD_CLOSE_AFTER_VIOLATIONS="2", VIOLATION_WINDOW_SECONDS="10")
    for _ in range(5):
        quota.record_violation()
        clock.now += 11
    assert not quota.closed
    assert calls == []


def test_a_closed_session_ignores_violations() -> None:
    """F-147: once the owner closed it, nothing is counted and no hard close runs."""
    quota, metrics, calls, _ = make_quota(HARD_CLOSE_AFTER_VIOLATIONS="1")
    quota.close()
    quota.record_violation()
    assert calls == []
    assert metrics.value(Event.SESSION_HARD_CLOSED) == 0


def test_closed_can_be_set_directly_by_the_owner() -> None:
    quota, _, calls, _ = make_quota(HARD_CLOSE_AFTER_VIOLATIONS="1")
    quota.closed = True
    quota.record_violation()
    assert calls == []
