"""Event counters and the ``/metrics`` exposition (spec §18: F-148, F-149, F-214, F-028).

`Event` and `EVENT_HELP` are the one metrics table: the code records events through
`Metrics.inc(Event.X)` (or a `TransportEvents` field on the shared datagram pipeline), and the
docs and tests read the same table. Nobody spells an event name as a string literal.

Why the event family is rendered by hand rather than through prometheus-client: the original
exposes ``aero_webrtc_udp_relay_events_total`` byte for byte as in F-149, and dashboards and the
e2e suite (F-214 regex) parse it. prometheus-client would break that: it prints counter values as
floats (``1.0``), adds a ``_created`` sample per series, and a labelled counter child created
before its first increment shows up as a zero series (F-148 says there are none). So the family is
a plain ``dict`` rendered here, and prometheus-client only contributes the standard process and
Python metrics, appended after it.

Multi-process mode (a later issue): `render_events` takes anything with a ``snapshot()`` giving
``{event name: count}`` (`CounterSource`), so an aggregator that sums the workers' counters can be
rendered by the same function; the process/Python collectors would then move to
prometheus-client's multiprocess collector.

This module is part of the Trio shell but imports neither trio nor asyncio: it does no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol

import attrs
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = [
    "CONTENT_TYPE",
    "EVENT_HELP",
    "FAMILY",
    "UDP_WS",
    "WEBRTC_UDP",
    "CounterSource",
    "Event",
    "Metrics",
    "TransportEvents",
    "events_markdown",
    "render_all",
    "render_events",
]

#: F-028: the Content-Type of ``GET /metrics``.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The one metric family of the original (F-149).
FAMILY = "aero_webrtc_udp_relay_events_total"

_HEADER = f"# HELP {FAMILY} Internal event counters.\n# TYPE {FAMILY} counter\n"


class Event(enum.StrEnum):
    """The 44 event counter names of spec §18, spelled exactly as the original exposes them."""

    AUTH_FAILURE = "auth_failure"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    TOO_MANY_DESTINATIONS = "too_many_destinations"
    TOO_MANY_SESSIONS = "too_many_sessions"
    SESSION_HARD_CLOSED = "session_hard_closed"
    WEBRTC_SESSION_CONNECT_TIMEOUT = "webrtc_session_connect_timeout"
    ICE_GATHERING_TIMEOUT = "ice_gathering_timeout"
    UDP_WS_CONNECTIONS = "udp_ws_connections"
    UDP_WS_DATAGRAMS_IN = "udp_ws_datagrams_in"
    UDP_WS_DATAGRAMS_OUT = "udp_ws_datagrams_out"
    UDP_WS_DROPPED = "udp_ws_dropped"
    UDP_WS_DROPPED_BACKPRESSURE = "udp_ws_dropped_backpressure"
    UDP_WS_DROPPED_MALFORMED = "udp_ws_dropped_malformed"
    UDP_WS_DROPPED_OVERSIZED = "udp_ws_dropped_oversized"
    UDP_WS_DROPPED_RATE_LIMITED = "udp_ws_dropped_rate_limited"
    UDP_WS_DROPPED_QUOTA_EXCEEDED = "udp_ws_dropped_quota_exceeded"
    UDP_WS_DROPPED_DENIED_BY_POLICY = "udp_ws_dropped_denied_by_policy"
    WEBRTC_UDP_DATAGRAMS_IN = "webrtc_udp_datagrams_in"
    WEBRTC_UDP_DATAGRAMS_OUT = "webrtc_udp_datagrams_out"
    WEBRTC_UDP_DROPPED = "webrtc_udp_dropped"
    WEBRTC_UDP_DROPPED_BACKPRESSURE = "webrtc_udp_dropped_backpressure"
    WEBRTC_UDP_DROPPED_MALFORMED = "webrtc_udp_dropped_malformed"
    WEBRTC_UDP_DROPPED_OVERSIZED = "webrtc_udp_dropped_oversized"
    WEBRTC_UDP_DROPPED_RATE_LIMITED = "webrtc_udp_dropped_rate_limited"
    WEBRTC_UDP_DROPPED_QUOTA_EXCEEDED = "webrtc_udp_dropped_quota_exceeded"
    WEBRTC_UDP_DROPPED_DENIED_BY_POLICY = "webrtc_udp_dropped_denied_by_policy"
    WEBRTC_UDP_DROPPED_TOO_MANY_BINDINGS = "webrtc_udp_dropped_too_many_bindings"
    WEBRTC_DATACHANNEL_REJECTED_UNKNOWN_LABEL = "webrtc_datachannel_rejected_unknown_label"
    WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_UDP = "webrtc_datachannel_rejected_duplicate_udp"
    WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_L2 = "webrtc_datachannel_rejected_duplicate_l2"
    WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE = "webrtc_datachannel_udp_message_too_large"
    WEBRTC_DATACHANNEL_L2_MESSAGE_TOO_LARGE = "webrtc_datachannel_l2_message_too_large"
    L2_BRIDGE_DIALS_TOTAL = "l2_bridge_dials_total"
    L2_BRIDGE_DIAL_ERRORS_TOTAL = "l2_bridge_dial_errors_total"
    L2_BRIDGE_MESSAGES_FROM_CLIENT_TOTAL = "l2_bridge_messages_from_client_total"
    L2_BRIDGE_MESSAGES_TO_CLIENT_TOTAL = "l2_bridge_messages_to_client_total"
    L2_BRIDGE_BYTES_FROM_CLIENT_TOTAL = "l2_bridge_bytes_from_client_total"
    L2_BRIDGE_BYTES_TO_CLIENT_TOTAL = "l2_bridge_bytes_to_client_total"
    L2_BRIDGE_DROPPED_OVERSIZED_TOTAL = "l2_bridge_dropped_oversized_total"
    L2_BRIDGE_DROPPED_RATE_LIMITED_TOTAL = "l2_bridge_dropped_rate_limited_total"
    UDP_REMOTE_ALLOWLIST_EVICTIONS_TOTAL = "udp_remote_allowlist_evictions_total"
    UDP_REMOTE_ALLOWLIST_OVERFLOW_DROPS_TOTAL = "udp_remote_allowlist_overflow_drops_total"
    UDP_PER_DEST_BUCKET_EVICTIONS = "udp_per_dest_bucket_evictions"
    # Ours, not the original's (EXTENSION_EVENTS below):
    # the shared session registry could not be reached (scale-out);
    SESSION_REGISTRY_UNAVAILABLE = "session_registry_unavailable"
    # the l2 client->backend queue overflowed (we never block the SCTP association, F-200).
    L2_BRIDGE_DROPPED_BACKPRESSURE_TOTAL = "l2_bridge_dropped_backpressure_total"


_E = Event

#: One line of help per event: when it is incremented (spec §18, in our words).
EVENT_HELP: dict[Event, str] = {
    _E.AUTH_FAILURE: (
        "A request or WebSocket failed authentication (401 on the HTTP endpoints, "
        "auth failure or auth timeout on /webrtc/signal and /udp)."
    ),
    _E.RATE_LIMITED: (
        "A rate limit refused something: a signalling message, a client datagram "
        "(pps, bps or per-destination), or a relay-to-client send over the bps budget."
    ),
    _E.QUOTA_EXCEEDED: "A datagram was refused because the session reached its unique-destination quota.",
    _E.TOO_MANY_DESTINATIONS: "Recorded together with quota_exceeded on every unique-destination refusal.",
    _E.TOO_MANY_SESSIONS: "A new session was refused because MAX_SESSIONS sessions were already open.",
    _E.SESSION_HARD_CLOSED: "A session was closed after too many rate or quota violations.",
    _E.WEBRTC_SESSION_CONNECT_TIMEOUT: "A WebRTC session did not connect before its connect timeout.",
    _E.ICE_GATHERING_TIMEOUT: (
        "An HTTP offer (/offer or /webrtc/offer) was answered before ICE gathering completed."
    ),
    _E.UDP_WS_CONNECTIONS: "A /udp WebSocket upgrade succeeded.",
    _E.UDP_WS_DATAGRAMS_IN: "A binary message arrived on /udp (counted before decoding).",
    _E.UDP_WS_DATAGRAMS_OUT: "A binary frame was written to a /udp client.",
    _E.UDP_WS_DROPPED: "A /udp datagram was dropped, for any reason (each drop also counts one reason).",
    _E.UDP_WS_DROPPED_BACKPRESSURE: "A /udp datagram was dropped because the client send queue was full.",
    _E.UDP_WS_DROPPED_MALFORMED: "A /udp frame failed to decode (other than payload too large).",
    _E.UDP_WS_DROPPED_OVERSIZED: "A /udp payload was too large, or a message exceeded the WS read limit.",
    _E.UDP_WS_DROPPED_RATE_LIMITED: (
        "A /udp datagram was refused by the session rate limits or the relay-to-client bps budget."
    ),
    _E.UDP_WS_DROPPED_QUOTA_EXCEEDED: "A /udp datagram was refused by the unique-destination quota.",
    _E.UDP_WS_DROPPED_DENIED_BY_POLICY: "A /udp datagram was refused by the destination policy.",
    _E.WEBRTC_UDP_DATAGRAMS_IN: (
        "A message on the udp DataChannel reached the relay (including ones rejected as over max+24)."
    ),
    _E.WEBRTC_UDP_DATAGRAMS_OUT: "A relay-to-client frame was queued on the udp DataChannel.",
    _E.WEBRTC_UDP_DROPPED: (
        "A udp DataChannel datagram was dropped, for any reason, or a binding socket could not be created."
    ),
    _E.WEBRTC_UDP_DROPPED_BACKPRESSURE: "A udp DataChannel datagram was dropped: the send queue was full.",
    _E.WEBRTC_UDP_DROPPED_MALFORMED: "A udp DataChannel frame failed to decode.",
    _E.WEBRTC_UDP_DROPPED_OVERSIZED: (
        "A udp DataChannel payload was too large, a message exceeded max+24, "
        "or an inbound UDP datagram exceeded the maximum payload."
    ),
    _E.WEBRTC_UDP_DROPPED_RATE_LIMITED: (
        "A udp DataChannel datagram was refused by the session rate limits or the relay-to-client bps budget."
    ),
    _E.WEBRTC_UDP_DROPPED_QUOTA_EXCEEDED: (
        "A udp DataChannel datagram was refused by the unique-destination quota."
    ),
    _E.WEBRTC_UDP_DROPPED_DENIED_BY_POLICY: (
        "A udp DataChannel datagram was refused by the destination policy (or no policy was set)."
    ),
    _E.WEBRTC_UDP_DROPPED_TOO_MANY_BINDINGS: (
        "A udp DataChannel datagram was refused by the binding cap (bindings are LRU-evicted, so in "
        "practice this never fires)."
    ),
    _E.WEBRTC_DATACHANNEL_REJECTED_UNKNOWN_LABEL: "A DataChannel with an unknown label was rejected.",
    _E.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_UDP: "A second udp DataChannel in one session was rejected.",
    _E.WEBRTC_DATACHANNEL_REJECTED_DUPLICATE_L2: "A second l2 DataChannel in one session was rejected.",
    _E.WEBRTC_DATACHANNEL_UDP_MESSAGE_TOO_LARGE: (
        "A udp DataChannel message exceeded WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES (the session was closed)."
    ),
    _E.WEBRTC_DATACHANNEL_L2_MESSAGE_TOO_LARGE: (
        "An l2 DataChannel message exceeded WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES (the session was closed)."
    ),
    _E.L2_BRIDGE_DIALS_TOTAL: "The L2 bridge attempted to dial the backend WebSocket.",
    _E.L2_BRIDGE_DIAL_ERRORS_TOTAL: (
        "An L2 backend dial failed (not counted when the dial was cancelled by the bridge closing)."
    ),
    _E.L2_BRIDGE_MESSAGES_FROM_CLIENT_TOTAL: "An l2 message from the client was written to the backend.",
    _E.L2_BRIDGE_MESSAGES_TO_CLIENT_TOTAL: "An l2 message from the backend was sent on the DataChannel.",
    _E.L2_BRIDGE_BYTES_FROM_CLIENT_TOTAL: "Bytes of l2 messages written to the backend.",
    _E.L2_BRIDGE_BYTES_TO_CLIENT_TOTAL: "Bytes of l2 messages sent on the DataChannel.",
    _E.L2_BRIDGE_DROPPED_OVERSIZED_TOTAL: "An l2 message exceeded L2_MAX_MESSAGE_BYTES, in either direction.",
    _E.L2_BRIDGE_DROPPED_RATE_LIMITED_TOTAL: (
        "A backend-to-client l2 message was dropped by the DataChannel bps budget."
    ),
    _E.UDP_REMOTE_ALLOWLIST_EVICTIONS_TOTAL: "Inbound allowlist entries evicted because the list was full.",
    _E.UDP_REMOTE_ALLOWLIST_OVERFLOW_DROPS_TOTAL: (
        "An inbound UDP datagram was dropped by the inbound filter (remote not allowed or expired)."
    ),
    _E.UDP_PER_DEST_BUCKET_EVICTIONS: "A per-destination rate bucket was evicted by the LRU cap.",
    _E.SESSION_REGISTRY_UNAVAILABLE: (
        "A shared session registry (Redis) operation failed or timed out: a new session or reservation "
        "refused with registry_unavailable, or a lease heartbeat or release that will be retried."
    ),
    _E.L2_BRIDGE_DROPPED_BACKPRESSURE_TOTAL: (
        "The backend could not keep up with the client's l2 messages: the bounded queue overflowed and "
        "the l2 channel was closed (the udp channel is never stalled)."
    ),
}
del _E

#: Events this project adds to the original's 44.
EXTENSION_EVENTS: frozenset[Event] = frozenset(
    {Event.SESSION_REGISTRY_UNAVAILABLE, Event.L2_BRIDGE_DROPPED_BACKPRESSURE_TOTAL}
)


@attrs.frozen
class TransportEvents:
    """The event names one transport uses on the shared datagram pipeline.

    The pipeline is written once for both transports; the original's per-transport metric
    prefixes (``webrtc_udp_*``, ``udp_ws_*``) are kept by handing it one of these. A drop counts
    `dropped` plus exactly one reason.
    """

    name: str
    datagrams_in: Event
    datagrams_out: Event
    dropped: Event
    dropped_backpressure: Event
    dropped_malformed: Event
    dropped_oversized: Event
    dropped_rate_limited: Event
    dropped_quota_exceeded: Event
    dropped_denied_by_policy: Event
    #: None for /udp: the original has no such event there.
    dropped_too_many_bindings: Event | None


WEBRTC_UDP = TransportEvents(
    name="webrtc_udp",
    datagrams_in=Event.WEBRTC_UDP_DATAGRAMS_IN,
    datagrams_out=Event.WEBRTC_UDP_DATAGRAMS_OUT,
    dropped=Event.WEBRTC_UDP_DROPPED,
    dropped_backpressure=Event.WEBRTC_UDP_DROPPED_BACKPRESSURE,
    dropped_malformed=Event.WEBRTC_UDP_DROPPED_MALFORMED,
    dropped_oversized=Event.WEBRTC_UDP_DROPPED_OVERSIZED,
    dropped_rate_limited=Event.WEBRTC_UDP_DROPPED_RATE_LIMITED,
    dropped_quota_exceeded=Event.WEBRTC_UDP_DROPPED_QUOTA_EXCEEDED,
    dropped_denied_by_policy=Event.WEBRTC_UDP_DROPPED_DENIED_BY_POLICY,
    dropped_too_many_bindings=Event.WEBRTC_UDP_DROPPED_TOO_MANY_BINDINGS,
)

UDP_WS = TransportEvents(
    name="udp_ws",
    datagrams_in=Event.UDP_WS_DATAGRAMS_IN,
    datagrams_out=Event.UDP_WS_DATAGRAMS_OUT,
    dropped=Event.UDP_WS_DROPPED,
    dropped_backpressure=Event.UDP_WS_DROPPED_BACKPRESSURE,
    dropped_malformed=Event.UDP_WS_DROPPED_MALFORMED,
    dropped_oversized=Event.UDP_WS_DROPPED_OVERSIZED,
    dropped_rate_limited=Event.UDP_WS_DROPPED_RATE_LIMITED,
    dropped_quota_exceeded=Event.UDP_WS_DROPPED_QUOTA_EXCEEDED,
    dropped_denied_by_policy=Event.UDP_WS_DROPPED_DENIED_BY_POLICY,
    dropped_too_many_bindings=None,
)


class CounterSource(Protocol):
    """Anything `render_events` can render: a map of event name to count."""

    def snapshot(self) -> Mapping[str, int]: ...


class Metrics:
    """The process-wide event counters (F-148).

    A plain dict without locks: the relay runs on one Trio thread, and `inc` is on the
    per-datagram hot path. Only events incremented at least once have an entry, so there are
    no zero series.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[Event, int] = {}

    def inc(self, event: Event, n: int = 1) -> None:
        """Add `n` to `event`. ``n == 0`` is a no-op that creates no series (F-148)."""
        if n <= 0:
            if n == 0:
                return
            raise ValueError(f"counter increment must not be negative: {event}={n}")
        counts = self._counts
        counts[event] = counts.get(event, 0) + n

    def value(self, event: Event) -> int:
        return self._counts.get(event, 0)

    def snapshot(self) -> dict[str, int]:
        """A copy of the counters keyed by plain event name, only those incremented."""
        return {event.value: count for event, count in self._counts.items()}


def _escape_label_value(value: str) -> str:
    # F-149: the original escapes only backslash and double quote (not newline).
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render_events(metrics: CounterSource) -> str:
    """The ``aero_webrtc_udp_relay_events_total`` family, byte-compatible with the original.

    F-149: HELP and TYPE lines, then one line per incremented counter sorted by name, with an
    integer value. Every sample line matches the F-214 e2e regex.
    """
    snapshot = metrics.snapshot()
    lines = [_HEADER]
    for name in sorted(snapshot):
        count = snapshot[name]
        if count:  # F-148: never a zero series, whatever the source
            lines.append(f'{FAMILY}{{event="{_escape_label_value(name)}"}} {count}\n')
    return "".join(lines)


_standard_registry: CollectorRegistry | None = None


def _standard_collectors() -> CollectorRegistry:
    # A private registry: prometheus-client's global REGISTRY may hold whatever other libraries
    # register, and our event family must stay out of it (see the module docstring).
    global _standard_registry
    if _standard_registry is None:
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        _standard_registry = registry
    return _standard_registry


def render_all(metrics: CounterSource) -> bytes:
    """The ``GET /metrics`` body (F-028): the event family first, then process and Python metrics."""
    return render_events(metrics).encode("utf-8") + generate_latest(_standard_collectors())


def events_markdown() -> str:
    """A Markdown table of every event and its help, in table order, for generated docs."""
    rows = ["| Event | Incremented when |", "|---|---|"]
    rows.extend(f"| `{event.value}` | {EVENT_HELP[event]} |" for event in Event)
    return "\n".join(rows) + "\n"
