#!/usr/bin/env python3
"""Benchmark of the L2 tunnel bridge: round trips/s, MB/s and relay CPU per message.

Three processes, so that the relay's CPU is measured alone:

* the relay (``aero-relay serve``, L2_BACKEND_WS_URL set), pinned to CPU 0 when there are two CPUs;
* an echo backend (trio-websocket, subprotocol ``aero-l2-tunnel-v1``), pinned to CPU 1;
* this process: an aiortc client peer (trio-asyncio, as in the tests) with a reliable ``l2``
  channel, signalled over ``POST /webrtc/offer``, also pinned to CPU 1.

Each message is ``--size`` bytes (default 1500): an ``aero-l2-tunnel-v1`` FRAME header, a
sequence number and a send timestamp, padding. The client keeps ``--window`` messages
outstanding on ``l2`` (1 = strict ping-pong, the latency case); every message crosses the bridge
twice (client -> backend, backend -> client). Scenarios are windows, e.g. ``--windows 1,16,64``.

``--bridge-only`` measures the bridge's own share: `L2Bridge` runs in this process against the
same backend, fed by a stand-in channel object (no aiortc, no SCTP/DTLS, no relay process), and
this process's CPU time per bridged message is reported. The difference to the full run is what
the WebRTC transport (aiortc over trio-asyncio) costs.

Relay CPU is ``utime + stime`` of ``/proc/<relay pid>/stat`` over the measured interval (all its
threads: there is one), divided by the bridge messages in it (2 per round trip). It includes
everything the relay does for a message: SCTP, DTLS, the bridge and the backend WebSocket. The
client and backend share the other CPU, so throughput is bounded by whichever side saturates
first; the CPU columns show which.

Everything is on 127.0.0.1, every loop is bounded by time, and the script stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HEADER = struct.Struct("!4sQQ")  # FRAME header, seq, send time (ns)
FRAME = bytes((0xA2, 0x03, 0x00, 0x00))
SUBPROTOCOL = "aero-l2-tunnel-v1"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- backend role --------------------------------------------------------------------------------


def run_backend(args: argparse.Namespace) -> None:
    """Echo every binary message; print the port; exit after --lifetime seconds."""
    import trio
    from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        chosen = SUBPROTOCOL if SUBPROTOCOL in request.proposed_subprotocols else None
        ws = await request.accept(subprotocol=chosen)
        with contextlib.suppress(ConnectionClosed):
            while True:
                msg = await ws.get_message()
                if isinstance(msg, bytes):
                    await ws.send_message(msg)

    async def main() -> None:
        with trio.move_on_after(args.lifetime):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_websocket, handler, HOST, 0, None)
                print(f"PORT {server.port}", flush=True)

    trio.run(main)


# --- the relay -----------------------------------------------------------------------------------


class Relay:
    def __init__(self, port: int, backend_port: int, log_path: Path, extra_env: list[str]) -> None:
        env = dict(
            os.environ,
            AUTH_MODE="none",
            WEBRTC_UDP_LISTEN_IP=HOST,
            L2_BACKEND_WS_URL=f"ws://{HOST}:{backend_port}/l2",
            AERO_WEBRTC_UDP_RELAY_LOG_LEVEL="info",
        )
        for kv in extra_env:
            key, _, value = kv.partition("=")
            env[key] = value
        cmd = [str(ROOT / ".venv" / "bin" / "aero-relay"), "serve", "--listen-addr", f"{HOST}:{port}"]
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = port
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def post_offer(port: int, sdp: str) -> dict[str, Any]:
    body = json.dumps({"type": "offer", "sdp": sdp}).encode()
    req = urllib.request.Request(
        f"http://{HOST}:{port}/webrtc/offer", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        out: dict[str, Any] = json.loads(resp.read())
        return out


# --- the client (this process) ---------------------------------------------------------------------


async def measure(args: argparse.Namespace, relay: Relay, backend_pid: int) -> list[dict[str, Any]]:
    import trio
    from aiortc import RTCSessionDescription

    from aero_relay.webrtc.bridge import close_peer, forward_to_trio, open_bridge, run_aio
    from aero_relay.webrtc.hooks import HardenedPeerConnection, PeerHardening, rtc_configuration

    results = []
    async with open_bridge() as bridge:
        pc = HardenedPeerConnection(rtc_configuration(()), PeerHardening(listen_ip=HOST))
        try:
            dc = pc.createDataChannel("l2")
            send, replies = trio.open_memory_channel[bytes](100_000)
            dc.on("message", forward_to_trio(send))
            await run_aio(bridge, pc.setLocalDescription)
            answer = await trio.to_thread.run_sync(post_offer, relay.port, pc.localDescription.sdp)
            await run_aio(bridge, pc.setRemoteDescription, RTCSessionDescription(**answer["sdp"]))
            with trio.fail_after(15):
                while dc.readyState != "open":
                    await trio.sleep(0.005)
            pad = bytes(args.size - HEADER.size)
            seq = 0

            def send_one() -> None:
                nonlocal seq
                seq += 1
                dc.send(HEADER.pack(FRAME, seq, time.perf_counter_ns()) + pad)

            # First message after the dial: proves the bridge is up.
            send_one()
            with trio.fail_after(15):
                await replies.receive()
            for window in args.windows:
                for _ in range(window):
                    send_one()
                rtts: list[int] = []
                done = 0
                started = time.monotonic()
                warm_end = started + args.warmup
                end = warm_end + args.duration
                snap: tuple[float, float, float, float, int] | None = None
                while True:
                    with trio.fail_after(15):
                        msg = await replies.receive()
                    now_ns = time.perf_counter_ns()
                    now = time.monotonic()
                    if snap is not None:
                        done += 1
                        rtts.append(now_ns - HEADER.unpack_from(msg)[2])
                    elif now >= warm_end:
                        snap = (
                            now,
                            cpu_seconds(relay.proc.pid),
                            cpu_seconds(backend_pid),
                            self_cpu_seconds(),
                            done,
                        )
                    if now >= end:
                        break
                    send_one()
                # Drain the window so the next scenario starts clean.
                with trio.move_on_after(5):
                    for _ in range(window - 1):
                        await replies.receive()
                assert snap is not None
                t0, relay0, backend0, self0, _ = snap
                secs = time.monotonic() - t0
                relay_cpu = cpu_seconds(relay.proc.pid) - relay0
                msgs = 2 * done
                rtts.sort()
                results.append(
                    {
                        "window": window,
                        "size": args.size,
                        "seconds": round(secs, 3),
                        "round_trips": done,
                        "round_trips_per_s": round(done / secs, 1),
                        "mb_per_s_each_way": round(done * args.size / secs / 1e6, 3),
                        "rtt_ms_p50": round(rtts[len(rtts) // 2] / 1e6, 3) if rtts else None,
                        "rtt_ms_p99": round(rtts[int(len(rtts) * 0.99)] / 1e6, 3) if rtts else None,
                        "relay_cpu_pct": round(100 * relay_cpu / secs, 1),
                        "relay_cpu_us_per_message": round(1e6 * relay_cpu / msgs, 1) if msgs else None,
                        "relay_cpu_us_per_round_trip": round(1e6 * relay_cpu / done, 1) if done else None,
                        "backend_cpu_pct": round(100 * (cpu_seconds(backend_pid) - backend0) / secs, 1),
                        "client_cpu_pct": round(100 * (self_cpu_seconds() - self0) / secs, 1),
                    }
                )
                print(json.dumps(results[-1]), flush=True)
        finally:
            await close_peer(bridge, pc, timeout=5)
    return results


class _BenchChannel:
    """What L2Bridge uses of an RTCDataChannel; `send` hands messages straight to the bench."""

    label = "l2"
    readyState = "open"
    bufferedAmount = 0
    bufferedAmountLowThreshold = 0

    def __init__(self, deliver: Any) -> None:
        self.deliver = deliver
        self.listeners: dict[str, list[Any]] = {}

    def on(self, event: str, fn: Any) -> Any:
        self.listeners.setdefault(event, []).append(fn)
        return fn

    def remove_all_listeners(self, event: str) -> None:
        self.listeners.pop(event, None)

    def send(self, data: bytes) -> None:
        self.deliver(data)

    def close(self) -> None:
        self.readyState = "closed"


async def measure_bridge_only(
    args: argparse.Namespace, backend_port: int, backend_pid: int
) -> list[dict[str, Any]]:
    """The bridge alone, in this process: a stand-in channel (no aiortc) and the real backend."""
    import trio

    from aero_relay.config import load
    from aero_relay.observability.metrics import Metrics
    from aero_relay.relay.quota import QuotaSession
    from aero_relay.webrtc.l2bridge import L2Bridge
    from aero_relay.webrtc.peer import PeerInfo

    cfg = load({"AUTH_MODE": "none", "L2_BACKEND_WS_URL": f"ws://{HOST}:{backend_port}/l2"}, [])
    metrics = Metrics()
    send, replies = trio.open_memory_channel[bytes](100_000)
    channel = _BenchChannel(send.send_nowait)
    bridge = L2Bridge(
        channel,  # type: ignore[arg-type]
        cfg=cfg,
        metrics=metrics,
        quota=QuotaSession(cfg, metrics, on_hard_close=lambda: None),
        session_id="bench",
        info=PeerInfo(),
        close_session=lambda reason: None,
    )
    on_message = channel.listeners["message"][0]
    results = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        pad = bytes(args.size - HEADER.size)
        for window in args.windows:
            seq = 0

            def send_one() -> None:
                nonlocal seq
                seq += 1
                on_message(HEADER.pack(FRAME, seq, time.perf_counter_ns()) + pad)

            for _ in range(window):
                send_one()
            done = 0
            t0 = time.monotonic()
            end = t0 + args.warmup + args.duration
            snap: tuple[float, float, float, int] | None = None
            while True:
                with trio.fail_after(15):
                    await replies.receive()
                now = time.monotonic()
                done += 1
                if snap is None and now >= t0 + args.warmup:
                    snap = (now, self_cpu_seconds(), cpu_seconds(backend_pid), done)
                if now >= end:
                    break
                send_one()
            with trio.move_on_after(5):
                for _ in range(window - 1):
                    await replies.receive()
            assert snap is not None
            secs = time.monotonic() - snap[0]
            rts = done - snap[3]
            cpu = self_cpu_seconds() - snap[1]
            results.append(
                {
                    "mode": "bridge-only",
                    "window": window,
                    "size": args.size,
                    "round_trips_per_s": round(rts / secs, 1),
                    "mb_per_s_each_way": round(rts * args.size / secs / 1e6, 3),
                    "bridge_cpu_pct": round(100 * cpu / secs, 1),
                    "bridge_cpu_us_per_message": round(1e6 * cpu / (2 * rts), 1),
                    "backend_cpu_pct": round(100 * (cpu_seconds(backend_pid) - snap[2]) / secs, 1),
                }
            )
            print(json.dumps(results[-1]), flush=True)
        channel.readyState = "closed"
        for fn in channel.listeners.get("close", []):
            fn()
    return results


def scrape_l2_events(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith('aero_webrtc_udp_relay_events_total{event="l2_'):
            name = line.split('"')[1]
            out[name] = int(line.rsplit(" ", 1)[1])
    return out


def orchestrate(args: argparse.Namespace) -> None:
    import trio

    RESULTS.mkdir(parents=True, exist_ok=True)
    label = args.label or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    two_cpus = (os.cpu_count() or 1) >= 2 and not args.no_pin
    relay_cpu, other_cpu = (0, 1) if two_cpus else (None, None)
    backend = subprocess.Popen(
        [sys.executable, __file__, "--role", "backend", "--lifetime", str(args.lifetime)],
        stdout=subprocess.PIPE,
        text=True,
    )
    relay: Relay | None = None
    try:
        assert backend.stdout is not None
        line = backend.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"backend did not start: {line!r}")
        backend_port = int(line.split()[1])
        pin(backend.pid, other_cpu)
        pin(os.getpid(), other_cpu)
        if args.bridge_only:
            pin(os.getpid(), relay_cpu)  # the bridge alone, where the relay would run
            bridge_runs = [
                trio.run(measure_bridge_only, args, backend_port, backend.pid) for _ in range(args.repeat)
            ]
            summary = []
            for i in range(len(args.windows)):
                ranked = sorted((r[i] for r in bridge_runs), key=lambda r: r["round_trips_per_s"])
                summary.append(ranked[len(ranked) // 2])
            path = RESULTS / f"l2-{label}.json"
            path.write_text(
                json.dumps({"label": label, "results": summary, "runs": bridge_runs}, indent=2) + "\n"
            )
            print(f"\n{'window':>6} {'rt/s':>8} {'MB/s':>7} {'bridge%':>7} {'us/msg':>7} {'backend%':>8}")
            for r in summary:
                print(
                    f"{r['window']:>6} {r['round_trips_per_s']:>8} {r['mb_per_s_each_way']:>7} "
                    f"{r['bridge_cpu_pct']:>7} {r['bridge_cpu_us_per_message']:>7} {r['backend_cpu_pct']:>8}"
                )
            print(f"\nwrote {path}; median of {args.repeat} run(s)")
            return
        relay = Relay(free_port(), backend_port, RESULTS / f"l2-{label}-relay.log", args.relay_env)
        pin(relay.proc.pid, relay_cpu)
        runs = [trio.run(measure, args, relay, backend.pid) for _ in range(args.repeat)]
        # The median run (by round trips/s) per window.
        summary = []
        for i in range(len(args.windows)):
            by_window = sorted((r[i] for r in runs), key=lambda r: r["round_trips_per_s"])
            summary.append(by_window[len(by_window) // 2])
        doc = {
            "label": label,
            "cpus": os.cpu_count(),
            "pinned": two_cpus,
            "python": sys.version.split()[0],
            "results": summary,
            "relay_l2_events": scrape_l2_events(relay.port),
            "runs": runs,
        }
        path = RESULTS / f"l2-{label}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print()
        print(f"{'window':>6} {'rt/s':>8} {'MB/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'relay%':>6} {'us/msg':>7} {'backend%':>8} {'client%':>7}")  # fmt: skip
        for r in summary:
            print(
                f"{r['window']:>6} {r['round_trips_per_s']:>8} {r['mb_per_s_each_way']:>7} "
                f"{r['rtt_ms_p50']:>7} {r['rtt_ms_p99']:>7} {r['relay_cpu_pct']:>6} "
                f"{r['relay_cpu_us_per_message']:>7} {r['backend_cpu_pct']:>8} {r['client_cpu_pct']:>7}"
            )
        print(f"\nwrote {path}; median of {args.repeat} run(s); relay l2 events: {doc['relay_l2_events']}")
        stdev = [statistics.pstdev(r[i]["round_trips_per_s"] for r in runs) for i in range(len(args.windows))]
        if args.repeat > 1:
            print("round trips/s stdev per window:", [round(s, 1) for s in stdev])
    finally:
        if relay is not None:
            relay.stop()
        backend.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            backend.wait(5)
        if backend.poll() is None:
            backend.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    p.add_argument("--size", type=int, default=1500, help="message bytes (default 1500, max 4096)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (default 1)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per window (default 5)")
    p.add_argument("--quick", action="store_true", help="0.5 s warm-up + 2 s per window")
    p.add_argument("--repeat", type=int, default=1, help="runs; the median run per window is reported")
    p.add_argument("--label", help="results file label (default: a timestamp)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the relay and the rest to separate CPUs")
    p.add_argument("--relay-env", action="append", default=[], metavar="K=V", help="extra relay env")
    p.add_argument(
        "--bridge-only",
        action="store_true",
        help="measure L2Bridge alone in this process (a stand-in channel, no aiortc, no relay process)",
    )
    p.add_argument(
        "--role", choices=["orchestrate", "backend"], default="orchestrate", help=argparse.SUPPRESS
    )
    p.add_argument("--lifetime", type=float, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.warmup, args.duration = 0.5, 2.0
    if not HEADER.size <= args.size <= 4096:
        p.error(f"--size must be {HEADER.size}..4096")
    if args.lifetime <= 0:  # the backend outlives every scenario, then stops by itself
        args.lifetime = 60 + args.repeat * len(args.windows) * (args.warmup + args.duration + 10)
    if args.role == "backend":
        run_backend(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
