"""`/healthz`, `/readyz`, `/version`, `/metrics` against a real server (F-025..F-028, F-148/F-149)."""

from __future__ import annotations

from aero_relay.buildinfo import BuildInfo
from aero_relay.observability.metrics import Event
from tests.conftest import StartRelay
from tests.helpers import METRIC_LINE, parse_event_metrics


async def test_healthz_is_ok_json_with_newline(start_relay: StartRelay) -> None:
    """F-025."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/healthz")
    assert r.status_code == 200
    assert r.content == b'{"ok":true}\n'
    assert r.headers["content-type"] == "application/json"


async def test_head_is_served_for_get_routes(start_relay: StartRelay) -> None:
    """F-012: a GET pattern also matches HEAD."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.head("/healthz")
    assert r.status_code == 200
    assert r.content == b""


async def test_readyz_ready_once_serving(start_relay: StartRelay) -> None:
    """F-026, F-213: 200 and a body with ready === true."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True}


async def test_readyz_503_when_shutting_down(start_relay: StartRelay) -> None:
    """F-026/F-207: readiness drops before the listener closes."""
    relay = await start_relay()
    relay.server.ctx.shutting_down = True
    async with relay.client() as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.content == b'{"ready":false}\n'


async def test_readyz_503_with_error_when_ice_config_invalid(start_relay: StartRelay) -> None:
    """F-026: invalid ICE config is not fatal; readyz reports it with sorted keys."""
    relay = await start_relay({"AERO_ICE_SERVERS_JSON": '[{"urls":["turn:t.example:3478"]}]'})
    async with relay.client() as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    body = r.content.decode()
    assert body.startswith('{"error":"') and body.endswith(',"ready":false}\n')
    assert "turn urls require username" in r.json()["error"]


async def test_version_reports_build_metadata(start_relay: StartRelay) -> None:
    """F-027."""
    relay = await start_relay(build=BuildInfo("abc123", "2026-01-01T00:00:00Z"))
    async with relay.client() as c:
        r = await c.get("/version")
    assert r.status_code == 200
    assert r.content == b'{"commit":"abc123","buildTime":"2026-01-01T00:00:00Z"}\n'


async def test_version_allows_empty_metadata(start_relay: StartRelay) -> None:
    relay = await start_relay(build=BuildInfo("", ""))
    async with relay.client() as c:
        r = await c.get("/version")
    assert r.json() == {"commit": "", "buildTime": ""}


async def test_metrics_content_type_and_event_family(start_relay: StartRelay) -> None:
    """F-028, F-149, F-214: exact header, sorted integer samples, one per line."""
    relay = await start_relay()
    relay.metrics.inc(Event.UDP_WS_CONNECTIONS, 3)
    relay.metrics.inc(Event.AUTH_FAILURE)
    async with relay.client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = r.text
    assert text.startswith(
        "# HELP aero_webrtc_udp_relay_events_total Internal event counters.\n"
        "# TYPE aero_webrtc_udp_relay_events_total counter\n"
        'aero_webrtc_udp_relay_events_total{event="auth_failure"} 1\n'
        'aero_webrtc_udp_relay_events_total{event="udp_ws_connections"} 3\n'
    )
    assert parse_event_metrics(text) == {"auth_failure": 1, "udp_ws_connections": 3}
    family = [ln for ln in text.splitlines() if ln.startswith("aero_webrtc_udp_relay_events_total")]
    assert all(METRIC_LINE.match(ln) for ln in family)


async def test_metrics_has_no_zero_series(start_relay: StartRelay) -> None:
    """F-148."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/metrics")
    assert parse_event_metrics(r.text) == {}
    assert "process_" in r.text  # standard process metrics come after the event family
