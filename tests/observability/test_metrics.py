"""Event counters and the /metrics exposition (spec §18: F-148, F-149, F-214; F-028)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aero_relay.observability.metrics import (
    CONTENT_TYPE,
    EVENT_HELP,
    EXTENSION_EVENTS,
    UDP_WS,
    WEBRTC_UDP,
    Event,
    Metrics,
    events_markdown,
    render_all,
    render_events,
)

HEADER = (
    "# HELP aero_webrtc_udp_relay_events_total Internal event counters.\n"
    "# TYPE aero_webrtc_udp_relay_events_total counter\n"
)
F214 = re.compile(r'^aero_webrtc_udp_relay_events_total\{event="([^"]+)"\} ([0-9]+)$')

# Copied from the spec's event table (§18), in its order.
SPEC_EVENTS = [
    "auth_failure",
    "rate_limited",
    "quota_exceeded",
    "too_many_destinations",
    "too_many_sessions",
    "session_hard_closed",
    "webrtc_session_connect_timeout",
    "ice_gathering_timeout",
    "udp_ws_connections",
    "udp_ws_datagrams_in",
    "udp_ws_datagrams_out",
    "udp_ws_dropped",
    "udp_ws_dropped_backpressure",
    "udp_ws_dropped_malformed",
    "udp_ws_dropped_oversized",
    "udp_ws_dropped_rate_limited",
    "udp_ws_dropped_quota_exceeded",
    "udp_ws_dropped_denied_by_policy",
    "webrtc_udp_datagrams_in",
    "webrtc_udp_datagrams_out",
    "webrtc_udp_dropped",
    "webrtc_udp_dropped_backpressure",
    "webrtc_udp_dropped_malformed",
    "webrtc_udp_dropped_oversized",
    "webrtc_udp_dropped_rate_limited",
    "webrtc_udp_dropped_quota_exceeded",
    "webrtc_udp_dropped_denied_by_policy",
    "webrtc_udp_dropped_too_many_bindings",
    "webrtc_datachannel_rejected_unknown_label",
    "webrtc_datachannel_rejected_duplicate_udp",
    "webrtc_datachannel_rejected_duplicate_l2",
    "webrtc_datachannel_udp_message_too_large",
    "webrtc_datachannel_l2_message_too_large",
    "l2_bridge_dials_total",
    "l2_bridge_dial_errors_total",
    "l2_bridge_messages_from_client_total",
    "l2_bridge_messages_to_client_total",
    "l2_bridge_bytes_from_client_total",
    "l2_bridge_bytes_to_client_total",
    "l2_bridge_dropped_oversized_total",
    "l2_bridge_dropped_rate_limited_total",
    "udp_remote_allowlist_evictions_total",
    "udp_remote_allowlist_overflow_drops_total",
    "udp_per_dest_bucket_evictions",
]


@attrs.frozen
class FakeSource:
    """A counter source with arbitrary names, as a future multi-process aggregator might give."""

    counts: Mapping[str, int]

    def snapshot(self) -> Mapping[str, int]:
        return self.counts


def parse_samples(text: str) -> list[tuple[str, int]]:
    """The sample lines after the header, each checked against the F-214 regex."""
    assert text.startswith(HEADER)
    samples = []
    for line in text[len(HEADER) :].splitlines():
        match = F214.match(line)
        assert match is not None, line
        samples.append((match.group(1), int(match.group(2))))
    return samples


# --- the table ----------------------------------------------------------------------------------


def test_event_table_has_exactly_the_44_spec_names_in_spec_order() -> None:
    assert len(SPEC_EVENTS) == 44
    assert [e.value for e in Event if e not in EXTENSION_EVENTS] == SPEC_EVENTS
    assert {e.value for e in EXTENSION_EVENTS} == {
        "session_registry_unavailable",
        "l2_bridge_dropped_backpressure_total",
    }


def test_every_event_has_one_line_of_help() -> None:
    assert set(EVENT_HELP) == set(Event)
    for event, text in EVENT_HELP.items():
        assert text.strip() == text and text, event
        assert "\n" not in text, event


def test_webrtc_udp_transport_uses_the_webrtc_udp_names() -> None:
    assert attrs.asdict(WEBRTC_UDP) == {
        "name": "webrtc_udp",
        "datagrams_in": "webrtc_udp_datagrams_in",
        "datagrams_out": "webrtc_udp_datagrams_out",
        "dropped": "webrtc_udp_dropped",
        "dropped_backpressure": "webrtc_udp_dropped_backpressure",
        "dropped_malformed": "webrtc_udp_dropped_malformed",
        "dropped_oversized": "webrtc_udp_dropped_oversized",
        "dropped_rate_limited": "webrtc_udp_dropped_rate_limited",
        "dropped_quota_exceeded": "webrtc_udp_dropped_quota_exceeded",
        "dropped_denied_by_policy": "webrtc_udp_dropped_denied_by_policy",
        "dropped_too_many_bindings": "webrtc_udp_dropped_too_many_bindings",
    }


def test_udp_ws_transport_uses_the_udp_ws_names_and_has_no_binding_cap_event() -> None:
    assert attrs.asdict(UDP_WS) == {
        "name": "udp_ws",
        "datagrams_in": "udp_ws_datagrams_in",
        "datagrams_out": "udp_ws_datagrams_out",
        "dropped": "udp_ws_dropped",
        "dropped_backpressure": "udp_ws_dropped_backpressure",
        "dropped_malformed": "udp_ws_dropped_malformed",
        "dropped_oversized": "udp_ws_dropped_oversized",
        "dropped_rate_limited": "udp_ws_dropped_rate_limited",
        "dropped_quota_exceeded": "udp_ws_dropped_quota_exceeded",
        "dropped_denied_by_policy": "udp_ws_dropped_denied_by_policy",
        "dropped_too_many_bindings": None,
    }


def test_transport_event_fields_are_events() -> None:
    for transport in (WEBRTC_UDP, UDP_WS):
        for field in attrs.fields(type(transport)):
            value = getattr(transport, field.name)
            if field.name != "name" and value is not None:
                assert isinstance(value, Event)


# --- the counter map (F-148) ----------------------------------------------------------------------


def test_new_metrics_have_no_series() -> None:
    m = Metrics()
    assert m.snapshot() == {}
    assert m.value(Event.AUTH_FAILURE) == 0


def test_inc_adds_one_by_default_and_n_when_given() -> None:
    m = Metrics()
    m.inc(Event.AUTH_FAILURE)
    m.inc(Event.AUTH_FAILURE)
    m.inc(Event.L2_BRIDGE_BYTES_TO_CLIENT_TOTAL, 1500)
    assert m.value(Event.AUTH_FAILURE) == 2
    assert m.snapshot() == {"auth_failure": 2, "l2_bridge_bytes_to_client_total": 1500}


def test_inc_by_zero_is_a_no_op_that_creates_no_series() -> None:
    """F-148: ``Add(name, 0)`` does nothing."""
    m = Metrics()
    m.inc(Event.RATE_LIMITED, 0)
    assert m.snapshot() == {}
    assert render_events(m) == HEADER


def test_inc_by_a_negative_amount_is_a_bug() -> None:
    m = Metrics()
    with pytest.raises(ValueError):
        m.inc(Event.RATE_LIMITED, -1)
    assert m.snapshot() == {}


def test_snapshot_is_a_copy_with_plain_string_keys() -> None:
    m = Metrics()
    m.inc(Event.QUOTA_EXCEEDED)
    snap = m.snapshot()
    snap["quota_exceeded"] = 99
    assert m.value(Event.QUOTA_EXCEEDED) == 1
    assert all(type(k) is str for k in m.snapshot())


def test_pipeline_counts_through_transport_fields() -> None:
    m = Metrics()
    m.inc(UDP_WS.dropped)
    m.inc(UDP_WS.dropped_malformed)
    assert m.snapshot() == {"udp_ws_dropped": 1, "udp_ws_dropped_malformed": 1}


# --- exposition (F-149, F-214, F-028) -------------------------------------------------------------


def test_empty_metrics_render_only_the_header() -> None:
    assert render_events(Metrics()) == HEADER


def test_render_events_is_byte_exact_and_sorted_by_name() -> None:
    """F-149: one line per counter, sorted by name, integer values."""
    m = Metrics()
    m.inc(Event.WEBRTC_UDP_DATAGRAMS_IN, 3)
    m.inc(Event.AUTH_FAILURE)
    m.inc(Event.UDP_WS_CONNECTIONS, 12345678901234)
    assert render_events(m) == (
        HEADER + 'aero_webrtc_udp_relay_events_total{event="auth_failure"} 1\n'
        'aero_webrtc_udp_relay_events_total{event="udp_ws_connections"} 12345678901234\n'
        'aero_webrtc_udp_relay_events_total{event="webrtc_udp_datagrams_in"} 3\n'
    )


def test_label_values_escape_only_backslash_and_double_quote() -> None:
    """F-149: ``\\`` -> ``\\\\`` and ``"`` -> ``\\"``; a newline is left alone, as in the original."""
    src = FakeSource({'a"b': 1, "c\\d": 2, "e\nf": 3})
    assert render_events(src) == (
        HEADER + 'aero_webrtc_udp_relay_events_total{event="a\\"b"} 1\n'
        'aero_webrtc_udp_relay_events_total{event="c\\\\d"} 2\n'
        'aero_webrtc_udp_relay_events_total{event="e\nf"} 3\n'
    )


def test_zero_counts_from_any_source_are_not_rendered() -> None:
    """F-148: no zero series, even if a source reports one."""
    assert render_events(FakeSource({"auth_failure": 0, "rate_limited": 2})) == (
        HEADER + 'aero_webrtc_udp_relay_events_total{event="rate_limited"} 2\n'
    )


def test_every_sample_line_matches_the_e2e_regex() -> None:
    """F-214: the proxy e2e parses each sample with a fixed regex."""
    m = Metrics()
    for i, event in enumerate(Event, start=1):
        m.inc(event, i)
    samples = parse_samples(render_events(m))
    assert len(samples) == len(Event) == 44 + len(EXTENSION_EVENTS)
    assert dict(samples) == {e.value: i for i, e in enumerate(Event, start=1)}


@given(st.lists(st.tuples(st.sampled_from(list(Event)), st.integers(0, 10**12)), max_size=60))
def test_rendered_counts_are_the_sums_of_increments(incs: list[tuple[Event, int]]) -> None:
    m = Metrics()
    expected: dict[str, int] = {}
    for event, n in incs:
        m.inc(event, n)
        if n:
            expected[event.value] = expected.get(event.value, 0) + n
    samples = parse_samples(render_events(m))
    assert [name for name, _ in samples] == sorted(expected)
    assert dict(samples) == expected


def test_metrics_body_starts_with_the_event_family_then_process_metrics() -> None:
    m = Metrics()
    m.inc(Event.AUTH_FAILURE)
    body = render_all(m)
    events = render_events(m).encode()
    assert body.startswith(HEADER.encode())
    assert body.startswith(events)
    rest = body[len(events) :].decode()
    assert "# TYPE python_info gauge" in rest
    assert "python_gc_collections_total" in rest
    assert "process_cpu_seconds_total" in rest  # Linux: /proc is available
    assert "aero_webrtc_udp_relay_events_total" not in rest


def test_metrics_body_lines_of_the_event_family_match_the_e2e_regex() -> None:
    m = Metrics()
    m.inc(Event.TOO_MANY_SESSIONS, 2)
    for line in render_all(m).decode().splitlines():
        if line.startswith("aero_webrtc_udp_relay_events_total"):
            assert F214.match(line), line


def test_metrics_content_type_is_the_prometheus_text_format() -> None:
    """F-028."""
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_events_markdown_lists_every_event_with_its_help() -> None:
    doc = events_markdown()
    lines = doc.splitlines()
    assert lines[:2] == ["| Event | Incremented when |", "|---|---|"]
    assert lines[2:] == [f"| `{e.value}` | {EVENT_HELP[e]} |" for e in Event]
    assert doc.endswith("\n")
