"""`aero-relay serve --workers N`: real worker processes sharing one port and a real redis-server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aero_relay.workers import FLUSH_INTERVAL_S, port_slice
from tests.helpers import mint_jwt, parse_event_metrics
from tests.relay.redis_server import RedisServer
from tests.test_cli import AERO_RELAY, WAIT, Relay, clean_env, run_cli

JWT_SECRET = "workers-secret"
CONNECTIONS = 60  # fresh connections to try before concluding one worker never accepts


def _token(sid: str) -> str:
    now = int(time.time())
    return mint_jwt(JWT_SECRET, {"sid": sid, "iat": now - 5, "exp": now + 600})


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _env(**overrides: str) -> dict[str, str]:
    return clean_env(
        AUTH_MODE="jwt",
        JWT_SECRET=JWT_SECRET,
        AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR="127.0.0.1:0",
        AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT="2s",
        **overrides,
    )


@pytest.fixture
def relay(redis: RedisServer) -> Iterator[Relay]:
    if not AERO_RELAY.exists():
        pytest.skip(f"{AERO_RELAY} missing: run `.venv/bin/pip install -q -e . --no-deps`")
    proc = Relay(
        [str(AERO_RELAY), "serve", "--workers", "2"],
        _env(SESSION_REGISTRY_URL=redis.url, WEBRTC_UDP_PORT_MIN="40000", WEBRTC_UDP_PORT_MAX="40201"),
    )
    yield proc
    if proc.proc.poll() is None:
        proc.proc.send_signal(signal.SIGTERM)  # the parent stops its workers (SIGKILL would orphan them)
        try:
            proc.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.proc.kill()


def _worker_of(resp: httpx.Response) -> str:
    worker = resp.headers["X-Aero-Relay-Worker"]
    assert re.fullmatch(r"[01] pid=\d+", worker), worker
    return worker


def _started_line(index: int) -> Callable[[str], bool]:
    return lambda ln: "worker started" in ln and f"worker={index} " in ln


def _serving(relay: Relay) -> str:
    relay.wait_for_msg("starting workers")
    started = [relay.wait_for_line(_started_line(i)) for i in (0, 1)]
    assert "webrtc_udp_port_min=40000 webrtc_udp_port_max=40100" in started[0]
    assert "webrtc_udp_port_min=40101 webrtc_udp_port_max=40201" in started[1]
    return relay.wait_serving()


def _post_session(base: str, sid: str) -> httpx.Response:
    # A new client per request: a fresh TCP connection that any worker may accept.
    with httpx.Client(timeout=WAIT) as http:
        return http.post(f"{base}/session", headers={"Authorization": f"Bearer {_token(sid)}"})


def test_port_slices_split_the_range_evenly_and_cover_it() -> None:
    slices = [port_slice(40000, 40300, i, 3) for i in range(3)]
    assert slices == [(40000, 40100), (40101, 40200), (40201, 40300)]
    assert port_slice(0, 0, 1, 2) == (0, 0)


def test_two_workers_share_the_port_and_the_sids_and_metrics_sum_them(relay: Relay) -> None:
    """Both workers accept on the one port; a sid reserved through one worker is 409 on the other
    (F-045); /metrics from either worker counts the events of both."""
    base = _serving(relay)
    first = _post_session(base, "alice")
    assert first.status_code == 201
    owner = _worker_of(first)
    workers_seen = {owner}
    refused_by_other = 0
    for _ in range(CONNECTIONS):
        dup = _post_session(base, "alice")
        assert dup.status_code == 409
        assert dup.content == b'{"code":"session_already_active","message":"session already active"}\n'
        worker = _worker_of(dup)
        workers_seen.add(worker)
        refused_by_other += worker != owner
        if refused_by_other >= 2:
            break
    assert len(workers_seen) == 2 and refused_by_other >= 1, workers_seen

    # Each worker counted its own auth failures; any worker's scrape shows the sum.
    failures = 0
    failing_workers: set[str] = set()
    while len(failing_workers) < 2 and failures < CONNECTIONS:
        with httpx.Client(timeout=WAIT) as http:
            bad = http.post(f"{base}/session", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        failing_workers.add(_worker_of(bad))
        failures += 1
    assert len(failing_workers) == 2
    # Within a flush interval, a scrape from either worker reports the total.
    deadline = time.monotonic() + FLUSH_INTERVAL_S * 3 + 2
    summed_by: set[str] = set()
    last: dict[str, int] = {}
    while summed_by != failing_workers and time.monotonic() < deadline:
        with httpx.Client(timeout=WAIT) as http:
            resp = http.get(f"{base}/metrics")
        last = parse_event_metrics(resp.text)
        assert last.get("auth_failure", 0) <= failures  # never more than happened
        if last.get("auth_failure") == failures:
            summed_by.add(_worker_of(resp))
        time.sleep(0.02)
    assert summed_by == failing_workers, (summed_by, failures, last)


def test_a_crashed_worker_is_logged_and_restarted(relay: Relay) -> None:
    base = _serving(relay)
    with httpx.Client(timeout=WAIT) as http:
        victim = _worker_of(http.get(f"{base}/healthz"))
    index, pid = victim.split(" pid=")
    os.kill(int(pid), signal.SIGKILL)
    crash = relay.wait_for_msg("worker exited unexpectedly")
    assert f"worker={index} pid={pid} code=-9" in crash
    restarted = relay.wait_for_line(
        lambda ln: "worker started" in ln and f"worker={index} " in ln and f"pid={pid} " not in ln
    )
    assert "webrtc_udp_port_min=" in restarted
    relay.proc.send_signal(signal.SIGTERM)
    assert relay.proc.wait(WAIT) == 0


def test_sigterm_stops_every_worker_and_exits_0(relay: Relay) -> None:
    _serving(relay)
    relay.proc.send_signal(signal.SIGTERM)
    assert relay.proc.wait(WAIT) == 0
    relay.wait_for_msg("workers exited")


def test_more_than_one_worker_without_a_shared_registry_exits_2() -> None:
    result = run_cli(["serve", "--workers", "2"], _env())
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "AERO_RELAY_WORKERS/--workers 2 requires SESSION_REGISTRY_URL/--session-registry-url "
        "(workers share sids, quotas and reservations through the shared registry)"
    ]


def test_a_port_range_too_small_for_the_workers_exits_2(redis: RedisServer) -> None:
    env = _env(SESSION_REGISTRY_URL=redis.url, WEBRTC_UDP_PORT_MIN="40000", WEBRTC_UDP_PORT_MAX="40150")
    result = run_cli(["serve", "--workers", "2"], env)
    assert result.returncode == 2
    assert "151 ports gives 75 per worker (min 100 each)" in result.stderr


def test_workers_must_be_positive() -> None:
    result = run_cli(["serve", "--workers", "0"], _env())
    assert result.returncode == 2
    assert "AERO_RELAY_WORKERS/--workers must be > 0 (got 0)" in result.stderr
