#!/usr/bin/env python3
"""Benchmark of the WebRTC data plane, driven by headless Chromium against a relay subprocess.

Everything per datagram happens in Chromium's JavaScript (e2e/pages/webrtc_relay.js: AeroRtc's echo,
upload and paced loops over real `udp` DataChannels); this script only starts things, takes CPU
snapshots and reads counters. Processes:

* the relay (``aero-relay serve``, AUTH_MODE=none, dev policy, WEBRTC_UDP_LISTEN_IP=127.0.0.1, log level
  info), pinned to CPU 0 when the machine has two or more CPUs;
* Chromium (the e2e flags, loopback only) with Playwright and this script, and a UDP helper (echo or
  sink), all pinned to CPU 1.

Measurements:

* ``connect``: page start (``new RTCPeerConnection``) to DataChannel open, over ``--connects`` sequential
  sessions through ``/webrtc/signal`` (trickle) and ``POST /webrtc/offer`` (non-trickle): p50/p95.
* ``echo``: one session keeps ``--window`` frames outstanding through relay -> UDP echo -> relay.
  One round trip relays two datagrams (one each way).
* ``upload``: one session sends as fast as its channel takes frames (bufferedAmount bounded); a UDP
  sink counts what the relay delivered.
* ``capacity``: N concurrent sessions each echoing ``--paced-pps`` frames a second, N stepping up:
  relay CPU, loss and RTT at each step, and the idle CPU of the open sessions.

Relay CPU is utime + stime of /proc/<relay pid>/stat over the measured interval, divided by the
datagrams relayed in it. Results go to benchmarks/results/webrtc-<label>.json and a table.
``--profile`` samples the relay with py-spy during the first echo run. Run with ``--help``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (the e2e browser flags: loopback only)
from e2e.harness import PageServer, Relay, free_tcp_port, relay_command, temp_dir, wait_until  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Page

RESULTS = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --- /proc ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def busy_seconds() -> float:
    """Busy (non-idle, non-iowait) seconds of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def pin_all_threads(pid: int, cpu: int | None) -> None:
    """Pin every thread of `pid` (sched_setaffinity on a pid sets only that thread)."""
    if cpu is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {cpu})


def descendants_cpu_seconds(root: int, exclude: set[int]) -> float:
    """CPU seconds of `root` and all its descendants (Playwright's driver, every Chromium process),
    not counting the subtrees of `exclude`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total = 0.0
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in exclude:
            continue
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
        todo.extend(children.get(pid, []))
    return total


class Meter:
    """Relay CPU, helper CPU, browser-side CPU (this process and its descendants: Playwright and
    Chromium), whole-machine busy time and wall time between two snapshots."""

    def __init__(self, relay_pid: int, helper_pid: int, exclude: set[int]) -> None:
        self.relay_pid = relay_pid
        self.helper_pid = helper_pid
        self.exclude = exclude  # the relay and helpers are our children too, counted on their own

    def snap(self) -> dict[str, float]:
        return {
            "relay": cpu_seconds(self.relay_pid),
            "helper": cpu_seconds(self.helper_pid),
            "browser": descendants_cpu_seconds(os.getpid(), self.exclude),
            "busy": busy_seconds(),
            "wall": time.perf_counter(),
        }

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        d = {k: b[k] - a[k] for k in a}
        ours = d["relay"] + d["helper"] + d["browser"]
        return {
            "interval_s": d["wall"],
            "relay_cpu_s": d["relay"],
            "relay_cpu_pct": 100 * d["relay"] / d["wall"],
            "helper_cpu_pct": 100 * d["helper"] / d["wall"],
            "browser_cpu_pct": 100 * d["browser"] / d["wall"],  # Chromium (all processes) + Playwright
            "machine_busy_pct": 100 * d["busy"] / d["wall"],  # of all CPUs together (200% on two)
            "other_load_pct": round(100 * (d["busy"] - ours) / d["wall"], 1),  # not ours: noise
        }


# --- UDP helper role --------------------------------------------------------------------------------


def run_udp_helper(mode: str, lifetime: float) -> None:
    """Echo or sink on a data socket; answer ``stats`` / ``stop`` on a control socket."""
    data = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            data.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
    data.bind((HOST, 0))
    ctl.bind((HOST, 0))
    data.setblocking(False)
    ctl.setblocking(False)
    print(f"PORTS {data.getsockname()[1]} {ctl.getsockname()[1]}", flush=True)
    received = 0
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        readable, _, _ = select.select([data, ctl], [], [], 0.2)
        if ctl in readable:
            with contextlib.suppress(BlockingIOError):
                msg, peer = ctl.recvfrom(64)
                ctl.sendto(json.dumps({"received": received}).encode(), peer)
                if msg == b"stop":
                    return
        if data in readable:
            for _ in range(256):
                try:
                    buf, addr = data.recvfrom(65536)
                except BlockingIOError:
                    break
                received += 1
                if mode == "echo":
                    with contextlib.suppress(OSError):
                        data.sendto(buf, addr)


class UdpHelper:
    def __init__(self, mode: str, lifetime: float, cpu: int | None) -> None:
        cmd = [sys.executable, __file__, "--role", "udp", "--mode", mode, "--lifetime", str(lifetime)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        pin_all_threads(self.proc.pid, cpu)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "PORTS":
            self.proc.kill()
            raise RuntimeError("UDP helper did not start")
        self.port, self.ctl_port = int(line[1]), int(line[2])

    def query(self, msg: bytes = b"stats") -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(msg, (HOST, self.ctl_port))
            return int(json.loads(s.recv(4096))["received"])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.query(b"stop")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the relay --------------------------------------------------------------------------------------


@contextlib.contextmanager
def relay_process(args: argparse.Namespace, origin: str, cpu: int | None) -> Iterator[Relay]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    env.update(
        AUTH_MODE="none",
        DESTINATION_POLICY_PRESET="dev",
        WEBRTC_UDP_LISTEN_IP=HOST,
        ALLOWED_ORIGINS=origin,
        AERO_WEBRTC_UDP_RELAY_LOG_FORMAT="json",
        # dev mode's default (debug) lets aiortc log every SCTP chunk: not what a deployment runs.
        AERO_WEBRTC_UDP_RELAY_LOG_LEVEL=args.relay_log_level,
    )
    env.update(kv.split("=", 1) for kv in args.relay_env)
    port = free_tcp_port()
    log_path = RESULTS / f"webrtc-{args.label}-relay.log"

    def set_affinity() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*relay_command(), "serve", "--listen-addr", f"{HOST}:{port}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=set_affinity,  # this process is single-threaded here: Playwright starts later
        )
    relay = Relay(port=port, env=env, proc=proc, log_path=log_path)
    try:
        if not wait_until(relay.settled, timeout=20.0) or proc.poll() is not None:
            raise RuntimeError(f"relay did not start:\n{relay.log_tail()}")
        yield relay
    finally:
        relay.stop()


# --- page-side helpers ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _ms(value: float | None) -> float:
    return float("nan") if value is None else round(float(value), 1)


def open_session(page: Page, relay: Relay, via: str, timeout_ms: int = 10_000) -> int:
    """One connected session; returns its AeroRtc id (raises if the channel does not open)."""
    if via == "signal":
        sid = page.evaluate("url => AeroRtc.signal(url)", relay.ws_url("/webrtc/signal"))
    else:
        sid = page.evaluate("url => AeroRtc.http(url, 'webrtc')", relay.base_url + "/webrtc/offer")
    ok = page.evaluate("([id, ms]) => AeroRtc.session(id).waitOpen(ms)", [sid, timeout_ms])
    if not ok:
        summary = page.evaluate("id => AeroRtc.session(id).summary()", sid)
        raise RuntimeError(f"session did not open: {json.dumps(summary)[:2000]}")
    return int(sid)


def close_session(page: Page, sid: int) -> None:
    page.evaluate("id => AeroRtc.drop(id)", sid)


def relay_events(relay: Relay) -> dict[str, int]:
    return {k: v for k, v in relay.metrics().items() if k.startswith("webrtc_")}


def events_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] != before.get(k, 0)}


# --- scenarios --------------------------------------------------------------------------------------


def bench_connect(page: Page, relay: Relay, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for via in ("signal", "webrtc-offer"):
        times: list[float] = []
        marks: dict[str, list[float]] = {}
        for _ in range(args.connects):
            sid = open_session(page, relay, via)
            got = page.evaluate(
                "id => { const s = AeroRtc.session(id); return [s.connectMs(), s.marks]; }", sid
            )
            times.append(float(got[0]))
            for name, ms in got[1].items():
                marks.setdefault(name, []).append(float(ms))
            close_session(page, sid)
            time.sleep(0.05)  # let the relay tear the session down before the next one
        out[via] = {
            "sessions": len(times),
            "p50_ms": round(percentile(times, 0.5), 1),
            "p95_ms": round(percentile(times, 0.95), 1),
            "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1),
            # Where the time goes: p50 of each step's time since page start.
            "steps_p50_ms": {name: round(percentile(v, 0.5), 1) for name, v in marks.items()},
        }
    return out


def bench_echo(
    page: Page, relay: Relay, meter: Meter, echo: UdpHelper, payload: int, args: argparse.Namespace
) -> dict[str, Any]:
    sid = open_session(page, relay, "signal")
    loop = page.evaluate(
        "([id, port, payload, window]) => AeroRtc.startEcho(id, '127.0.0.1', port, payload, window)",
        [sid, echo.port, payload, args.window],
    )
    profiler = None
    try:
        time.sleep(args.warmup)
        ev0 = relay_events(relay)
        m0 = page.evaluate(
            "id => { const l = AeroRtc.loop(id); l.recordRtts = true; return l.mark(); }", loop
        )
        s0 = meter.snap()
        if args.profile and payload == args.payloads[0]:
            profiler = start_py_spy(args, relay.proc.pid, f"echo{payload}")
        time.sleep(args.duration)
        s1 = meter.snap()
        m1 = page.evaluate("id => AeroRtc.loop(id).mark()", loop)
    finally:
        final = page.evaluate("id => AeroRtc.stopLoop(id)", loop)
        close_session(page, sid)
    d = Meter.delta(s0, s1)
    page_s = (m1["t"] - m0["t"]) / 1000
    replies = m1["replies"] - m0["replies"]
    sent = m1["sent"] - m0["sent"]
    lost = m1["lost"] - m0["lost"]
    result: dict[str, Any] = {
        "payload": payload,
        "window": args.window,
        "round_trips": replies,
        "round_trips_per_s": replies / page_s,
        "datagrams_per_s": 2 * replies / page_s,
        "rtt_p50_ms": _ms(final["rttP50Ms"]),
        "rtt_p99_ms": _ms(final["rttP99Ms"]),
        "sent": sent,
        "lost": lost,
        "loss": lost / sent if sent else 0.0,
        **d,
        "relay_us_per_round_trip": 1e6 * d["relay_cpu_s"] / replies if replies else float("nan"),
        "relay_us_per_datagram": 1e6 * d["relay_cpu_s"] / (2 * replies) if replies else float("nan"),
        "relay_events": events_delta(ev0, relay_events(relay)),
    }
    result["relay_datagrams_per_cpu_s"] = 1e6 / result["relay_us_per_datagram"] if replies else 0.0
    if profiler is not None:
        result["profile"] = finish_py_spy(args, profiler)
    return result


def bench_upload(
    page: Page, relay: Relay, meter: Meter, sink: UdpHelper, payload: int, args: argparse.Namespace
) -> dict[str, Any]:
    sid = open_session(page, relay, "signal")
    start_count = sink.query()
    loop = page.evaluate(
        "([id, port, payload]) => AeroRtc.startUpload(id, '127.0.0.1', port, payload)",
        [sid, sink.port, payload],
    )
    try:
        time.sleep(args.warmup)
        ev0 = relay_events(relay)
        r0 = sink.query()
        s0 = meter.snap()
        m0 = page.evaluate("id => AeroRtc.loop(id).mark()", loop)
        time.sleep(args.duration)
        s1 = meter.snap()
        r1 = sink.query()
        m1 = page.evaluate("id => AeroRtc.loop(id).mark()", loop)
    finally:
        final = page.evaluate("id => AeroRtc.stopLoop(id)", loop)
    # Let what is in flight land, then count what never arrived.
    last = -1
    while True:
        time.sleep(0.3)
        now = sink.query()
        if now == last:
            break
        last = now
    close_session(page, sid)
    d = Meter.delta(s0, s1)
    delivered = r1 - r0
    sent_total = int(final["sent"])
    received_total = last - start_count
    result: dict[str, Any] = {
        "payload": payload,
        "datagrams": delivered,
        "datagrams_per_s": delivered / d["interval_s"],
        "page_sent_per_s": (m1["sent"] - m0["sent"]) / ((m1["t"] - m0["t"]) / 1000),
        "sent_total": sent_total,
        "received_total": received_total,
        "loss": 1 - received_total / sent_total if sent_total else 0.0,
        **d,
        "relay_us_per_datagram": 1e6 * d["relay_cpu_s"] / delivered if delivered else float("nan"),
        "relay_events": events_delta(ev0, relay_events(relay)),
    }
    result["relay_datagrams_per_cpu_s"] = 1e6 / result["relay_us_per_datagram"] if delivered else 0.0
    return result


def bench_capacity(
    page: Page, relay: Relay, meter: Meter, echo: UdpHelper, args: argparse.Namespace
) -> dict[str, Any]:
    sessions: list[int] = []
    steps: list[dict[str, Any]] = []
    rss0 = rss_bytes(relay.proc.pid)
    try:
        for n in args.capacity_steps:
            t_open = time.perf_counter()
            while len(sessions) < n:
                sessions.append(open_session(page, relay, "signal"))
            open_s = time.perf_counter() - t_open
            time.sleep(1.0)
            i0 = meter.snap()
            time.sleep(2.0)
            idle = Meter.delta(i0, meter.snap())
            loop = page.evaluate(
                "([ids, port, payload, pps]) => AeroRtc.startPaced(ids, '127.0.0.1', port, payload, pps)",
                [sessions, echo.port, args.paced_payload, args.paced_pps],
            )
            try:
                time.sleep(args.warmup)
                m0 = page.evaluate(
                    "id => { const l = AeroRtc.loop(id); l.recordRtts = true; return l.mark(); }", loop
                )
                s0 = meter.snap()
                time.sleep(args.duration)
                s1 = meter.snap()
                m1 = page.evaluate("id => AeroRtc.loop(id).mark()", loop)
            finally:
                final = page.evaluate("id => AeroRtc.stopLoop(id)", loop)
            d = Meter.delta(s0, s1)
            sent, replies = m1["sent"] - m0["sent"], m1["replies"] - m0["replies"]
            page_s = (m1["t"] - m0["t"]) / 1000
            step = {
                "sessions": n,
                "offered_pps_per_session": args.paced_pps,
                "echo_requests_per_s": sent / page_s,
                "relayed_datagrams_per_s": 2 * replies / page_s,
                "loss": max(0.0, 1 - replies / sent) if sent else 0.0,
                "rtt_p50_ms": _ms(final["rttP50Ms"]),
                "rtt_p99_ms": _ms(final["rttP99Ms"]),
                **d,
                "relay_us_per_datagram": 1e6 * d["relay_cpu_s"] / (2 * replies) if replies else float("nan"),
                "idle_relay_cpu_pct": idle["relay_cpu_pct"],
                "relay_rss_mib": rss_bytes(relay.proc.pid) / 2**20,
                "connect_all_s": open_s,
            }
            # Sessions one relay core carries at this rate: N scaled by the CPU share it took.
            step["sessions_per_core"] = n * 100 / step["relay_cpu_pct"] if step["relay_cpu_pct"] else 0.0
            steps.append(step)
            print(
                f"capacity: {n} sessions x {args.paced_pps} pps: relay {step['relay_cpu_pct']:.0f}% cpu, "
                f"loss {100 * step['loss']:.2f}%, rtt p50 {step['rtt_p50_ms']} ms, "
                f"~{step['sessions_per_core']:.0f} sessions/core",
                flush=True,
            )
            if step["loss"] > args.capacity_max_loss or step["relay_cpu_pct"] > 95:
                break
    finally:
        for sid in sessions:
            with contextlib.suppress(Exception):
                close_session(page, sid)
    ok = [s for s in steps if s["loss"] <= args.capacity_max_loss and s["relay_cpu_pct"] <= 95]
    best = max(ok, key=lambda s: s["sessions"]) if ok else None
    return {
        "paced_pps_per_session": args.paced_pps,
        "payload": args.paced_payload,
        "steps": steps,
        "relay_rss_before_mib": rss0 / 2**20,
        "sessions_per_core_estimate": best["sessions_per_core"] if best else None,
        "largest_clean_step": best["sessions"] if best else None,
    }


# --- py-spy -----------------------------------------------------------------------------------------


def start_py_spy(args: argparse.Namespace, pid: int, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    path = RESULTS / f"webrtc-{args.label}-{name}.pyspy.txt"
    pyspy = Path(sys.executable).with_name("py-spy")
    cmd = [
        str(pyspy), "record", "--pid", str(pid), "--format", "raw", "--rate", str(args.profile_rate),
        "--duration", str(max(1, int(args.duration))), "--nonblocking", "--output", str(path),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not m:
        return frame
    func, path, _ = m.groups()
    for marker in ("site-packages/", "lib/python3.11/"):
        i = path.find(marker)
        if i >= 0:
            path = path[i + len(marker) :]
            break
    i = path.find("aero_relay/")
    if i >= 0:
        path = path[i:]
    return f"{func} ({path})"


def _package(frame: str) -> str:
    """The top-level module a frame belongs to (aiortc, aioice, trio, asyncio, ...)."""
    m = re.search(r"\(([^:)]*)", frame)
    path = m.group(1) if m else frame
    first = path.split("/", 1)[0]
    return first.removesuffix(".py") or "?"


def finish_py_spy(args: argparse.Namespace, profiler: tuple[subprocess.Popen[bytes], Path]) -> dict[str, Any]:
    proc, path = profiler
    proc.wait(args.duration + 30)
    if not path.exists():
        return {"error": "py-spy wrote no profile"}
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    pkg_n: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + n
        pkg = _package(frames[-1])
        pkg_n[pkg] = pkg_n.get(pkg, 0) + n

    def top(d: dict[str, int], k: int) -> list[tuple[str, float]]:
        return [(name, round(100 * v / total, 1)) for name, v in sorted(d.items(), key=lambda kv: -kv[1])[:k]]

    return {
        "samples": total,
        "file": str(path),
        "self_pct": top(self_n, args.profile_top),
        "inclusive_pct": top(incl_n, args.profile_top * 2),
        "self_by_package_pct": top(pkg_n, 15),
    }


# --- report -----------------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    c = results.get("connect")
    if c:
        print("\nconnect (page start -> DataChannel open)")
        for via, r in c.items():
            steps = ", ".join(f"{k} {v:.0f}" for k, v in r["steps_p50_ms"].items())
            print(
                f"  {via:13s} n={r['sessions']:3d}  p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms"
                f"  (p50 ms since start: {steps})"
            )
    rows = [("scenario", "payload", "dgrams/s", "rt/s", "rtt p50/p99 ms", "loss", "relay cpu", "us/dgram",
             "dgrams/cpu-s", "chromium cpu", "other load")]  # fmt: skip
    for r in results.get("echo", []):
        rows.append((
            "echo", str(r["payload"]), f"{r['datagrams_per_s']:,.0f}", f"{r['round_trips_per_s']:,.0f}",
            f"{r['rtt_p50_ms']:.1f}/{r['rtt_p99_ms']:.1f}", f"{100 * r['loss']:.2f}%",
            f"{r['relay_cpu_pct']:.0f}%", f"{r['relay_us_per_datagram']:.0f}",
            f"{r['relay_datagrams_per_cpu_s']:,.0f}", f"{r['browser_cpu_pct']:.0f}%",
            f"{r['other_load_pct']:.0f}%",
        ))  # fmt: skip
    for r in results.get("upload", []):
        rows.append((
            "upload", str(r["payload"]), f"{r['datagrams_per_s']:,.0f}", "-", "-", f"{100 * r['loss']:.2f}%",
            f"{r['relay_cpu_pct']:.0f}%", f"{r['relay_us_per_datagram']:.0f}",
            f"{r['relay_datagrams_per_cpu_s']:,.0f}", f"{r['browser_cpu_pct']:.0f}%",
            f"{r['other_load_pct']:.0f}%",
        ))  # fmt: skip
    if len(rows) > 1:
        print()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print(
                "  ".join(
                    cell.rjust(w) if i else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    cap = results.get("capacity")
    if cap:
        print(f"\ncapacity: sessions echoing {cap['paced_pps_per_session']} pps of {cap['payload']} bytes")
        for s in cap["steps"]:
            print(
                f"  {s['sessions']:4d} sessions  relay {s['relay_cpu_pct']:5.1f}% cpu"
                f" (idle {s['idle_relay_cpu_pct']:4.1f}%)"
                f"  {s['relayed_datagrams_per_s']:8,.0f} dgrams/s  loss {100 * s['loss']:5.2f}%"
                f"  rtt p50/p99 {s['rtt_p50_ms']}/{s['rtt_p99_ms']} ms  rss {s['relay_rss_mib']:.0f} MiB"
                f"  ~{s['sessions_per_core']:.0f} sessions/core  (chromium {s['browser_cpu_pct']:.0f}%,"
                f" other load {s['other_load_pct']:.0f}%)"
            )
        est = cap["sessions_per_core_estimate"]
        print(f"  estimate: {est:.0f} sessions per relay core" if est else "  estimate: none (no clean step)")
    for r in results.get("echo", []):
        p = r.get("profile")
        if p and "self_pct" in p:
            print(f"\nprofile of echo {r['payload']} ({p['samples']} samples, {p['file']})")
            print("  self time by package:", ", ".join(f"{k} {v}%" for k, v in p["self_by_package_pct"]))
            for name, pct in p["self_pct"]:
                print(f"  {pct:5.1f}%  {name}")


# --- main -------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    RESULTS.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    relay_cpu, other_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 and not args.no_pin else (None, None)
    page_server = PageServer()
    results: dict[str, Any] = {
        "label": args.label,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": len(cpus),
        "pinning": {"relay": relay_cpu, "chromium_and_helpers": other_cpu},
        "args": {k: v for k, v in vars(args).items() if k != "role"},
    }
    try:
        with relay_process(args, page_server.origin, relay_cpu) as relay:
            if other_cpu is not None:
                os.sched_setaffinity(0, {other_cpu})  # Playwright and Chromium inherit it
            results["relay_pid"] = relay.proc.pid
            print(f"relay pid {relay.proc.pid} port {relay.port} (cpu {relay_cpu})", flush=True)
            lifetime = 3600.0
            echo = UdpHelper("echo", lifetime, other_cpu)
            sink = UdpHelper("sink", lifetime, other_cpu)
            ours = {relay.proc.pid, echo.proc.pid, sink.proc.pid}
            meter = Meter(relay.proc.pid, echo.proc.pid, ours)
            try:
                with temp_dir("aero-webrtc-bench-") as profile, sync_playwright() as pw:
                    context = pw.chromium.launch_persistent_context(
                        str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                    )
                    try:
                        page = context.new_page()
                        page.goto(page_server.url("index.html"))
                        page.wait_for_function("() => typeof window.AeroRtc === 'object'")
                        if "connect" in args.scenarios:
                            results["connect"] = bench_connect(page, relay, args)
                            print("connect:", json.dumps(results["connect"]), flush=True)
                        for payload in args.payloads:
                            if "echo" in args.scenarios:
                                r = bench_echo(page, relay, meter, echo, payload, args)
                                results.setdefault("echo", []).append(r)
                                print(
                                    f"echo {payload}: {r['datagrams_per_s']:,.0f} dgrams/s, "
                                    f"{r['relay_us_per_datagram']:.0f} us/dgram",
                                    flush=True,
                                )
                            if "upload" in args.scenarios:
                                meter_sink = Meter(relay.proc.pid, sink.proc.pid, ours)
                                r = bench_upload(page, relay, meter_sink, sink, payload, args)
                                results.setdefault("upload", []).append(r)
                                print(
                                    f"upload {payload}: {r['datagrams_per_s']:,.0f} dgrams/s, "
                                    f"{r['relay_us_per_datagram']:.0f} us/dgram",
                                    flush=True,
                                )
                        if "capacity" in args.scenarios:
                            results["capacity"] = bench_capacity(page, relay, meter, echo, args)
                    finally:
                        context.close()
            finally:
                echo.stop()
                sink.stop()
    finally:
        page_server.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=["bench", "udp"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["echo", "sink"], default="echo", help=argparse.SUPPRESS)
    p.add_argument("--lifetime", type=float, default=3600.0, help=argparse.SUPPRESS)
    p.add_argument("--scenarios", nargs="+", default=["connect", "echo", "upload", "capacity"],
                   choices=["connect", "echo", "upload", "capacity"])  # fmt: skip
    p.add_argument("--payloads", type=int, nargs="+", default=[1000, 1200], help="payload bytes per datagram")
    p.add_argument("--connects", type=int, default=30, help="sequential sessions for the connect time")
    p.add_argument("--window", type=int, default=32, help="echo: frames outstanding")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before each measured interval")
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per scenario / step")
    p.add_argument("--paced-pps", type=int, default=50, help="capacity: echo requests per second per session")
    p.add_argument("--paced-payload", type=int, default=1000, help="capacity: payload bytes")
    p.add_argument("--capacity-steps", type=int, nargs="+", default=[10, 20, 30, 40, 50, 60, 80])
    p.add_argument("--capacity-max-loss", type=float, default=0.01, help="loss above which stepping stops")
    p.add_argument("--relay-log-level", default="info")
    p.add_argument("--relay-env", action="append", default=[], metavar="K=V", help="extra relay environment")
    p.add_argument("--no-pin", action="store_true", help="do not pin the relay and Chromium to CPUs")
    p.add_argument("--profile", action="store_true", help="py-spy the relay during the first echo run")
    p.add_argument("--profile-rate", type=int, default=250)
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--label", default=None, help="results/webrtc-<label>.json (default: a timestamp)")
    p.add_argument("--quick", action="store_true", help="short run: 10 connects, 2 s intervals, 2 steps")
    args = p.parse_args()
    if args.role == "udp":
        run_udp_helper(args.mode, args.lifetime)
        return
    if args.quick:
        args.connects, args.warmup, args.duration = 10, 0.5, 2.0
        args.capacity_steps = args.capacity_steps[:2]
    if args.label is None:
        args.label = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(args)
    out = RESULTS / f"webrtc-{args.label}.json"
    out.write_text(json.dumps(results, indent=2))
    print_report(results)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
