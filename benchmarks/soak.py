#!/usr/bin/env python3
"""Soak test: open and close many sessions against a relay process and watch its RSS and descriptors.

Not part of the normal test run. One relay subprocess (``python -m aero_relay``, loopback only,
``AUTH_MODE=none``, dev destination policy, ICE on 127.0.0.1) serves, in order:

* ``--udp`` ``/udp`` sessions (default 10,000): connect, "ready", one datagram to a loopback UDP echo
  server and its reply, close; ``--concurrency`` at a time;
* ``--webrtc`` WebRTC sessions (default 1,000): a browser-like aiortc client peer (loopback host
  candidates only, no STUN/TURN) offers over ``/webrtc/signal``, the ``udp`` DataChannel opens, one
  datagram goes to the echo server and back, then the peer connection and the WebSocket close.

Every ``--every`` cycles (default 100) the relay's VmRSS and open descriptor count are sampled from
``/proc``. Growth is reported after a warm-up (the first ``--warmup-fraction`` of each phase):
the target is RSS growth < 5 % and a flat descriptor count. Results go to
``benchmarks/results/soak.json``.

``--tracemalloc`` runs the relay under ``tracemalloc`` (10 frames) and takes a snapshot at the end of
warm-up and at the end of each phase (SIGUSR1 makes the relay write one), then prints the top
allocation growth by line: the debug run to find where memory goes if something leaks.

    .venv/bin/python benchmarks/soak.py                       # full run
    .venv/bin/python benchmarks/soak.py --udp 2000 --webrtc 200 --tracemalloc
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"


# --- the relay process -----------------------------------------------------------------------------

_TRACEMALLOC_BOOT = """
import signal, sys, tracemalloc
tracemalloc.start(10)
count = [0]
def dump(signum, frame):
    count[0] += 1
    tracemalloc.take_snapshot().dump(f"{sys.argv[1]}/snap{count[0]}.tracemalloc")
    open(f"{sys.argv[1]}/snap{count[0]}.done", "w").close()
signal.signal(signal.SIGUSR1, dump)
from aero_relay.cli import main
sys.exit(main([]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_relay(port: int, log: Path, snap_dir: Path | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AERO_", "AUTH_", "API_KEY", "JWT_"))}
    env.update(
        {
            "AUTH_MODE": "none",
            "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR": f"{HOST}:{port}",
            "AERO_WEBRTC_UDP_RELAY_LOG_LEVEL": "warn",
            "DESTINATION_POLICY_PRESET": "dev",
            "WEBRTC_UDP_LISTEN_IP": HOST,
        }
    )
    if snap_dir is not None:
        cmd = [sys.executable, "-c", _TRACEMALLOC_BOOT, str(snap_dir)]
    else:
        cmd = [sys.executable, "-m", "aero_relay"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + (300 if snap_dir is not None else 30)  # tracemalloc slows imports
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"relay exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("relay did not become ready")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def snapshot(proc: subprocess.Popen[bytes], snap_dir: Path, n: int) -> Path:
    proc.send_signal(signal.SIGUSR1)
    done = snap_dir / f"snap{n}.done"
    deadline = time.monotonic() + 120
    while not done.exists():
        if time.monotonic() > deadline:
            raise SystemExit("tracemalloc snapshot timed out")
        time.sleep(0.1)
    return snap_dir / f"snap{n}.tracemalloc"


# --- the client side (trio) ---------------------------------------------------------------------------


async def soak(
    args: argparse.Namespace, proc: subprocess.Popen[bytes], port: int, snap_dir: Path | None
) -> dict[str, Any]:
    import trio

    from aero_relay.core.frames import decode, encode_v1
    from tests.relay.udp_servers import start_server
    from tests.wsclient import connect

    host_port = f"{HOST}:{port}"
    samples: list[dict[str, Any]] = []
    snaps: list[Path] = []
    t0 = time.monotonic()

    def sample(phase: str, cycles: int) -> None:
        samples.append(
            {
                "phase": phase,
                "cycles": cycles,
                "t": round(time.monotonic() - t0, 1),
                "rss_kib": rss_kib(proc.pid),
                "fds": fd_count(proc.pid),
            }
        )
        s = samples[-1]
        print(
            f"{phase:7} {cycles:6}  rss {s['rss_kib']:7} KiB  fds {s['fds']:4}  t {s['t']:7.1f}s", flush=True
        )

    async def quiesce() -> None:
        await trio.sleep(0.5)  # let the relay finish closing what the last cycles left

    async with trio.open_nursery() as nursery:
        echo = await start_server(nursery)
        loop4 = socket.inet_aton(HOST)

        async def udp_cycle(i: int) -> None:
            async with connect(host_port, "/udp") as ws:
                msg = await ws.receive_json()
                assert msg["type"] == "ready", msg
                payload = b"soak %d" % i
                await ws.send(encode_v1(40000, loop4, echo.port, payload))
                with trio.fail_after(10):
                    reply = await ws.receive()
                assert isinstance(reply, bytes) and decode(reply, max_payload=1200).payload == payload
                await ws.close()

        async def run_phase(name: str, total: int, cycle: Any, concurrency: int) -> None:
            warm = int(total * args.warmup_fraction)
            sample(name, 0)
            done = 0
            warm_seen = False  # the first sample at or after the warm-up is the baseline
            while done < total:
                batch = min(args.every, total - done)
                limiter = trio.CapacityLimiter(concurrency)

                async def one(i: int, limiter: trio.CapacityLimiter = limiter) -> None:
                    async with limiter:
                        await cycle(i)

                async with trio.open_nursery() as n:
                    for i in range(done, done + batch):
                        n.start_soon(one, i)
                done += batch
                checkpoint = (done >= warm and not warm_seen) or done == total
                warm_seen = warm_seen or done >= warm
                if checkpoint:
                    await quiesce()
                sample(name, done)
                if snap_dir is not None and checkpoint:
                    snaps.append(await trio.to_thread.run_sync(snapshot, proc, snap_dir, len(snaps) + 1))

        if args.udp:
            await run_phase("udp", args.udp, udp_cycle, args.concurrency)
        if args.webrtc:
            webrtc_cycle = await make_webrtc_cycle(nursery, host_port, echo.port)
            await run_phase("webrtc", args.webrtc, webrtc_cycle, args.webrtc_concurrency)
        nursery.cancel_scope.cancel()
    return {
        "samples": samples,
        "snapshots": [str(s) for s in snaps],
        "seconds": round(time.monotonic() - t0, 1),
    }


async def make_webrtc_cycle(nursery: Any, host_port: str, echo_port: int) -> Any:
    """One browser-like WebRTC session per call (a client bridge loop shared by all of them)."""
    import trio
    from aiortc import RTCSessionDescription

    from aero_relay.core.frames import decode, encode_v1
    from aero_relay.webrtc.bridge import close_peer, forward_to_trio, open_bridge, run_aio
    from tests.webrtc.peers import client_peer
    from tests.wsclient import connect

    bridge_ready = trio.Event()
    holder: dict[str, Any] = {}

    async def host_bridge() -> None:
        async with open_bridge() as bridge:
            holder["bridge"] = bridge
            bridge_ready.set()
            await trio.sleep_forever()

    nursery.start_soon(host_bridge)
    await bridge_ready.wait()
    bridge = holder["bridge"]
    loop4 = socket.inet_aton(HOST)

    async def cycle(i: int) -> None:
        bridge.attach()
        pc = client_peer()
        try:
            dc = pc.createDataChannel("udp", ordered=False, maxRetransmits=0)
            send, recv = trio.open_memory_channel[Any](16)
            dc.on("message", forward_to_trio(send))
            opened = trio.Event()
            dc.on("open", opened.set)
            await run_aio(bridge, pc.setLocalDescription)
            async with connect(host_port, "/webrtc/signal") as ws:
                await ws.send_json(
                    {"type": "offer", "sdp": {"type": "offer", "sdp": pc.localDescription.sdp}}
                )
                with trio.fail_after(20):
                    while True:
                        msg = await ws.receive_json()
                        if msg["type"] == "answer":
                            break
                    await run_aio(bridge, pc.setRemoteDescription, RTCSessionDescription(**msg["sdp"]))
                    await opened.wait()
                    payload = b"rtc %d" % i
                    dc.send(encode_v1(40000, loop4, echo_port, payload))
                    reply = await recv.receive()
                assert decode(reply, max_payload=1200).payload == payload
                await close_peer(bridge, pc, timeout=5)
                with trio.move_on_after(5):  # the relay closes the WebSocket once its peer is gone
                    await ws.expect_close()
        finally:
            await close_peer(bridge, pc, timeout=5)

    return cycle


# --- reporting --------------------------------------------------------------------------------------


def growth(samples: list[dict[str, Any]], phase: str, warm_cycles: int) -> dict[str, Any]:
    rows = [s for s in samples if s["phase"] == phase]
    if not rows:
        return {}
    base = next((s for s in rows if s["cycles"] >= warm_cycles), rows[0])
    last = rows[-1]
    after = [s for s in rows if s["cycles"] >= base["cycles"]]
    return {
        "warmup_cycles": base["cycles"],
        "rss_kib_after_warmup": base["rss_kib"],
        "rss_kib_end": last["rss_kib"],
        "rss_kib_max_after_warmup": max(s["rss_kib"] for s in after),
        "rss_growth_percent": round(100.0 * (last["rss_kib"] - base["rss_kib"]) / base["rss_kib"], 2),
        "fds_after_warmup": base["fds"],
        "fds_end": last["fds"],
        "fds_max_after_warmup": max(s["fds"] for s in after),
    }


def tracemalloc_report(snaps: list[str], top: int = 15) -> list[str]:
    import tracemalloc

    lines: list[str] = []
    loaded = [tracemalloc.Snapshot.load(s) for s in snaps]
    for i in range(1, len(loaded)):
        lines.append(f"--- snapshot {i + 1} vs {i}: top {top} growth by line")
        for stat in loaded[i].compare_to(loaded[i - 1], "lineno")[:top]:
            lines.append(str(stat))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--udp", type=int, default=10_000, help="/udp sessions to open and close")
    ap.add_argument("--webrtc", type=int, default=1_000, help="WebRTC sessions to open and close")
    ap.add_argument("--every", type=int, default=100, help="sample RSS and fds every N cycles")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent /udp cycles")
    ap.add_argument("--webrtc-concurrency", type=int, default=4, help="concurrent WebRTC cycles")
    ap.add_argument("--warmup-fraction", type=float, default=0.1)
    ap.add_argument("--tracemalloc", action="store_true", help="debug run: snapshot diffs of the relay")
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = ap.parse_args(argv)

    import trio

    RESULTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    snap_dir = RESULTS / "soak-tracemalloc" if args.tracemalloc else None
    if snap_dir is not None:
        snap_dir.mkdir(exist_ok=True)
        for old in snap_dir.iterdir():
            old.unlink()
    log = RESULTS / "soak-relay.log"
    proc = start_relay(port, log, snap_dir)
    try:
        result = trio.run(soak, args, proc, port, snap_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = None
    samples = result["samples"]
    report = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "udp_sessions": args.udp,
        "webrtc_sessions": args.webrtc,
        "tracemalloc": args.tracemalloc,
        "seconds": result["seconds"],
        "relay_exit_code": exit_code,
        "udp": growth(samples, "udp", int(args.udp * args.warmup_fraction)),
        "webrtc": growth(samples, "webrtc", int(args.webrtc * args.warmup_fraction)),
        "samples": samples,
    }
    if snap_dir is not None:
        report["tracemalloc_top"] = tracemalloc_report(result["snapshots"])
        print("\n".join(report["tracemalloc_top"]))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for phase in ("udp", "webrtc"):
        if report[phase]:
            print(phase, json.dumps(report[phase]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
