#!/usr/bin/env python3
"""Scale-out benchmark: `aero-relay serve --workers 1` vs `--workers 2`, driven by headless Chromium.

Reuses benchmarks/webrtc_bench.py's pieces (page, UDP echo helper, /proc meters). For each run it starts
a redis-server of its own on a free loopback port (no persistence) and a relay subprocess:

* ``mem``: ``--workers 1``, in-memory registry: session creation time only (the baseline).
* ``w1``: ``--workers 1`` with SESSION_REGISTRY_URL: session creation time, then ``--sessions`` concurrent
  sessions each running a full-rate echo loop (``--window`` frames outstanding): aggregate relayed
  datagrams/s (two per round trip).
* ``w2``: ``--workers 2`` with SESSION_REGISTRY_URL: the same concurrent echo.

Nothing is pinned (the 2-worker relay must be free to use both cores), so Chromium and the echo helper
compete with the relay for the same CPUs; the report shows each party's CPU. Session creation time is
the page's ``answer`` mark minus its ``gathered`` mark for ``POST /webrtc/offer`` (non-trickle): the
offer POST until the answer is in hand, over ``--connects`` sequential sessions. Before the runs, the
registry itself is timed: ``--registry-ops`` acquire + release pairs in-memory and against the Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import webrtc_bench as wb  # noqa: E402

from e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from e2e.harness import PageServer, Relay, temp_dir  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Page

PORT_MIN, PORT_MAX = 41000, 41199  # 200 ICE ports: 100 per worker with --workers 2


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    with socket.socket() as s:
        s.bind((wb.HOST, 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="aero-redis-") as d:
        cmd = [exe, "--bind", wb.HOST, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection((wb.HOST, port), 0.5) as c:
                    c.sendall(b"*1\r\n$4\r\nPING\r\n")
                    if c.recv(64).startswith(b"+PONG"):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://{wb.HOST}:{port}/0"
        finally:
            proc.terminate()
            proc.wait(5)


def tree_cpu(pid: int) -> float:
    """CPU seconds of the relay and its worker processes."""
    return wb.descendants_cpu_seconds(pid, set())


def snap(relay: Relay, echo: wb.UdpHelper) -> tuple[float, float, float, float, float]:
    """relay tree CPU, machine busy, echo helper CPU, browser-side CPU, wall clock."""
    browser = wb.descendants_cpu_seconds(os.getpid(), {relay.proc.pid, echo.proc.pid})
    return (
        tree_cpu(relay.proc.pid),
        wb.busy_seconds(),
        wb.cpu_seconds(echo.proc.pid),
        browser,
        time.perf_counter(),
    )


def connect_times(page: Page, relay: Relay, n: int) -> dict[str, Any]:
    """Offer POST -> answer received, for `n` sequential non-trickle sessions."""
    post_to_answer: list[float] = []
    total: list[float] = []
    for _ in range(n):
        sid = wb.open_session(page, relay, "webrtc-offer")
        got = page.evaluate("id => { const s = AeroRtc.session(id); return [s.connectMs(), s.marks]; }", sid)
        total.append(float(got[0]))
        post_to_answer.append(float(got[1]["answer"]) - float(got[1]["gathered"]))
        wb.close_session(page, sid)
        time.sleep(0.05)
    return {
        "sessions": n,
        "offer_to_answer_p50_ms": round(wb.percentile(post_to_answer, 0.5), 2),
        "offer_to_answer_p95_ms": round(wb.percentile(post_to_answer, 0.95), 2),
        "offer_to_answer_mean_ms": round(sum(post_to_answer) / n, 2),
        "connect_p50_ms": round(wb.percentile(total, 0.5), 1),
    }


def concurrent_echo(page: Page, relay: Relay, echo: wb.UdpHelper, args: argparse.Namespace) -> dict[str, Any]:
    sids = [wb.open_session(page, relay, "signal") for _ in range(args.sessions)]
    loops = [
        page.evaluate(
            "([id, port, payload, window]) => AeroRtc.startEcho(id, '127.0.0.1', port, payload, window)",
            [sid, echo.port, args.payload, args.window],
        )
        for sid in sids
    ]
    marks = "ids => ids.map(i => AeroRtc.loop(i).mark())"
    try:
        time.sleep(args.warmup)
        m0 = page.evaluate(marks, loops)
        s0 = snap(relay, echo)
        time.sleep(args.duration)
        s1 = snap(relay, echo)
        m1 = page.evaluate(marks, loops)
    finally:
        for loop in loops:
            page.evaluate("id => AeroRtc.stopLoop(id)", loop)
        for sid in sids:
            wb.close_session(page, sid)
    c0, b0, h0, g0, w0 = s0
    c1, b1, h1, g1, w1 = s1
    wall = w1 - w0
    replies = sum(b["replies"] - a["replies"] for a, b in zip(m0, m1, strict=True))
    per_session = [2 * (b["replies"] - a["replies"]) / wall for a, b in zip(m0, m1, strict=True)]
    return {
        "sessions": args.sessions,
        "payload": args.payload,
        "window": args.window,
        "datagrams_per_s": round(2 * replies / wall),
        "per_session_min": round(min(per_session)),
        "per_session_max": round(max(per_session)),
        "relay_cpu_pct": round(100 * (c1 - c0) / wall, 1),
        "echo_helper_cpu_pct": round(100 * (h1 - h0) / wall, 1),
        "browser_cpu_pct": round(100 * (g1 - g0) / wall, 1),  # Chromium (all processes) + Playwright
        "machine_busy_pct": round(100 * (b1 - b0) / wall, 1),
        "relay_us_per_datagram": round(1e6 * (c1 - c0) / (2 * replies), 1) if replies else None,
    }


def registry_timing(url: str, n: int) -> dict[str, Any]:
    """acquire + release of `n` sessions (half keyed by a sid) straight on the registry, timed each."""
    import trio

    from aero_relay.config import load
    from aero_relay.relay.redis_registry import registry_from_config

    env = {"AUTH_MODE": "none", "SESSION_REGISTRY_URL": url, "MAX_SESSIONS": "1000"}
    times: dict[str, list[float]] = {"acquire": [], "release": []}

    async def main() -> None:
        registry = registry_from_config(load(env))
        async with trio.open_nursery() as nursery:
            if hasattr(registry, "run"):
                await nursery.start(registry.run)
            for i in range(n):
                t0 = time.perf_counter()
                lease = await registry.acquire(f"sid-{i}" if i % 2 else "", kind="webrtc")
                t1 = time.perf_counter()
                await registry.release(lease)
                times["acquire"].append(1e3 * (t1 - t0))
                times["release"].append(1e3 * (time.perf_counter() - t1))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return {
        f"{op}_{q}_ms": round(wb.percentile(v, p), 3)
        for op, v in times.items()
        for q, p in (("p50", 0.5), ("p99", 0.99))
    }


def one_run(name: str, workers: int, registry: str, args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    page_server = PageServer()
    rargs = argparse.Namespace(
        relay_log_level="info",
        relay_env=[
            f"WEBRTC_UDP_PORT_MIN={PORT_MIN}",
            f"WEBRTC_UDP_PORT_MAX={PORT_MAX}",
            f"AERO_RELAY_WORKERS={workers}",
            *([f"SESSION_REGISTRY_URL={registry}"] if registry else []),
        ],
        label=f"{args.label}-{name}",
    )
    out: dict[str, Any] = {"workers": workers, "registry": "redis" if registry else "memory"}
    try:
        with wb.relay_process(rargs, page_server.origin, None) as relay:
            echo = wb.UdpHelper("echo", 3600.0, None)
            try:
                with temp_dir("aero-workers-bench-") as profile, sync_playwright() as pw:
                    context = pw.chromium.launch_persistent_context(
                        str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                    )
                    try:
                        page = context.new_page()
                        page.goto(page_server.url("index.html"))
                        page.wait_for_function("() => typeof window.AeroRtc === 'object'")
                        if name in ("mem", "w1"):
                            out["connect"] = connect_times(page, relay, args.connects)
                            print(name, "connect:", json.dumps(out["connect"]), flush=True)
                        if name in ("w1", "w2"):
                            out["echo"] = concurrent_echo(page, relay, echo, args)
                            print(name, "echo:", json.dumps(out["echo"]), flush=True)
                    finally:
                        context.close()
            finally:
                echo.stop()
    finally:
        page_server.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=8, help="concurrent full-rate echo sessions")
    p.add_argument("--window", type=int, default=16, help="frames outstanding per session")
    p.add_argument("--payload", type=int, default=1000)
    p.add_argument("--connects", type=int, default=20, help="sequential sessions for the creation time")
    p.add_argument("--registry-ops", type=int, default=2000, help="direct registry acquire+release pairs")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--label", default=datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S"))
    args = p.parse_args()
    wb.RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"label": args.label, "cpus": os.cpu_count(), "args": vars(args)}
    results["registry_memory"] = registry_timing("", args.registry_ops)
    with redis_server() as url:
        results["registry_redis"] = registry_timing(url, args.registry_ops)
    print("registry:", json.dumps({k: results[k] for k in ("registry_memory", "registry_redis")}), flush=True)
    results["mem"] = one_run("mem", 1, "", args)
    for name, workers in (("w1", 1), ("w2", 2)):
        with redis_server() as url:
            results[name] = one_run(name, workers, url, args)
    e1, e2 = results["w1"]["echo"]["datagrams_per_s"], results["w2"]["echo"]["datagrams_per_s"]
    results["speedup_w2_over_w1"] = round(e2 / e1, 2) if e1 else None
    c_mem, c_redis = results["mem"]["connect"], results["w1"]["connect"]
    results["redis_added_offer_to_answer_p50_ms"] = round(
        c_redis["offer_to_answer_p50_ms"] - c_mem["offer_to_answer_p50_ms"], 2
    )
    path = wb.RESULTS / f"workers-{args.label}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("speedup_w2_over_w1", "redis_added_offer_to_answer_p50_ms")}))
    print("results:", path)


if __name__ == "__main__":
    main()
