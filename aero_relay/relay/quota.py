"""The quota session: the limits and the violation count of one relay session (spec §17).

One :class:`QuotaSession` exists per relay session and is shared by everything that spends its
budget: the ``/udp`` pipeline, or a WebRTC session's ``udp`` DataChannel pipeline and ``l2`` bridge
(F-220: they share the relay->client bps budget and the violation counter). The decisions live in
the sans-IO core (:class:`~aero_relay.core.limits.SessionLimiter`,
:class:`~aero_relay.core.limits.ViolationTracker`); this is the thin stateful shell around them
that reads the clock and runs the hard-close callback.

Decisions
---------
* **``closed`` is a plain attribute**: the owner sets it when the session ends for any reason, and
  a hard close sets it too. Every user checks it first and refuses everything (F-147): a closed
  session's traffic is discarded without metrics or violations, since the session is going away.
* **The hard-close callback runs exactly once**, synchronously, from whatever path recorded the
  deciding violation (a client frame or a UDP reader). It must not block: it typically cancels the
  session's scope (F-146, F-097, F-105). Violations recorded after that are ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from aero_relay.config import Config
from aero_relay.core.limits import SessionLimiter, ViolationTracker
from aero_relay.observability.metrics import Event, Metrics

__all__ = ["QuotaSession"]


class QuotaSession:
    """Limits, violation tracking and hard close of one relay session (F-141 .. F-147)."""

    __slots__ = ("_clock", "_metrics", "_on_hard_close", "closed", "limiter", "limits_outbound", "violations")

    def __init__(
        self,
        cfg: Config,
        metrics: Metrics,
        on_hard_close: Callable[[], None],
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.limiter = SessionLimiter(
            max_udp_pps_per_session=cfg.max_udp_pps_per_session,
            max_udp_bps_per_session=cfg.max_udp_bps_per_session,
            max_unique_destinations=cfg.max_unique_destinations_per_session,
            max_udp_pps_per_dest=cfg.max_udp_pps_per_dest,
            max_dest_buckets=cfg.max_udp_dest_buckets_per_session,
            max_dc_bps_per_session=cfg.max_dc_bps_per_session,
        )
        # Whether any client->UDP limit is on: lets the per-datagram path skip the limiter call.
        self.limits_outbound = (
            cfg.max_udp_pps_per_session > 0
            or cfg.max_udp_bps_per_session > 0
            or cfg.max_unique_destinations_per_session > 0
            or cfg.max_udp_pps_per_dest > 0
        )
        self.violations = ViolationTracker(cfg.hard_close_after_violations, cfg.violation_window)
        self.closed = False
        self._metrics = metrics
        self._on_hard_close = on_hard_close
        self._clock = clock

    def record_violation(self) -> None:
        """Count one rate or quota refusal (F-144, F-145; never a policy denial, F-227). When the
        violation tracker says so: metric ``session_hard_closed``, ``closed = True`` and the
        hard-close callback, exactly once (F-146)."""
        if self.closed:
            return
        if self.violations.record(self._clock()):
            self.closed = True
            self._metrics.inc(Event.SESSION_HARD_CLOSED)
            self._on_hard_close()

    def close(self) -> None:
        """End the session without a hard close (the owner is done with it). Idempotent."""
        self.closed = True
