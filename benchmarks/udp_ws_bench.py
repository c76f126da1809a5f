#!/usr/bin/env python3
"""Benchmark of the ``/udp`` WebSocket data plane: throughput, latency, loss and relay CPU.

Three processes per scenario, so that the relay's CPU is measured alone:

* the relay (``aero-relay serve``), pinned to CPU 0 when the machine has two or more CPUs;
* a UDP helper (echo server, sink or flooder) and
* a raw WebSocket client (plain sockets, hand-rolled framing: a few microseconds per frame),
  both pinned to CPU 1.

Scenarios (1200-byte payloads, v1 frames):

* ``echo``: the client keeps ``--window`` frames outstanding through relay -> UDP echo -> relay.
* ``upload``: the client streams frames as fast as TCP lets it; a UDP sink counts them.
* ``download``: the client primes a binding with one frame to the flooder, which then floods that
  binding with datagrams (``--flood-pps``, 0 = as fast as it can); delivered vs sent is measured.

Relay CPU is ``utime + stime`` of ``/proc/<relay pid>/stat`` over the measured interval, divided by
the datagrams relayed in it. For echo one round trip relays two datagrams (one per direction):
both "per round trip" and "per datagram" are reported.

Everything is on 127.0.0.1, every loop is bounded by time and count, and the script stops by
itself. The same file also runs the helper and client roles (``--role``). Run with ``--help``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import re
import select
import signal
import socket
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
HDR_V1 = 8
SEQ = struct.Struct("!QQ")  # seq, send time (ns) at the start of every UDP payload
BIG_BUF = 8 << 20


# --- /proc helpers ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_busy_seconds() -> dict[str, float]:
    """Busy (non-idle, non-iowait) seconds of each CPU from /proc/stat: shows other load on the box."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            ticks = [int(v) for v in vals[:8]]
            out[name] = (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return out


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32  # Linux; past net.core.*mem_max when root (CAP_NET_ADMIN)


def bigbuf(sock: socket.socket) -> None:
    """Big socket buffers on the benchmark's own sockets, so the sink and client drop nothing."""
    for forced, opt in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, BIG_BUF)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, BIG_BUF)


# --- UDP helper role -------------------------------------------------------------------------------


def run_udp_helper(args: argparse.Namespace) -> None:
    """Echo, sink or flood on a data socket; answer ``stats`` / ``stop`` on a control socket."""
    data = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bigbuf(data)
    data.bind((HOST, 0))
    ctl.bind((HOST, 0))
    data.setblocking(False)
    ctl.setblocking(False)
    print(f"PORTS {data.getsockname()[1]} {ctl.getsockname()[1]}", flush=True)
    received = sent = 0
    target: tuple[str, int] | None = None
    deadline = time.monotonic() + args.lifetime
    payload = bytearray(args.payload)
    interval = 1.0 / args.flood_pps if args.flood_pps > 0 else 0.0
    next_send = 0.0
    stop = False
    while not stop and time.monotonic() < deadline:
        flooding = args.mode == "flood" and target is not None and sent < args.max_datagrams
        readable, _, _ = select.select([data, ctl], [], [], 0 if flooding else 0.2)
        for sock in readable:
            if sock is ctl:
                with contextlib.suppress(BlockingIOError):
                    msg, peer = ctl.recvfrom(64)
                    if msg == b"stop":
                        stop = True
                    ctl.sendto(json.dumps({"received": received, "sent": sent}).encode(), peer)
                continue
            for _ in range(256):
                try:
                    buf, addr = data.recvfrom(65536)
                except BlockingIOError:
                    break
                received += 1
                if args.mode == "echo":
                    with contextlib.suppress(OSError):
                        data.sendto(buf, addr)
                        sent += 1
                elif args.mode == "flood" and target is None:
                    target = addr  # the relay's binding: flood it from the address it sent to
                    next_send = time.monotonic()
        if flooding and target is not None:
            burst = 64
            if interval:
                now = time.monotonic()
                if now < next_send:
                    time.sleep(min(next_send - now, 0.001))
                    continue
                burst = min(64, int((now - next_send) / interval) + 1)
                next_send += burst * interval
            for _ in range(burst):
                struct.pack_into("!QQ", payload, 0, sent, time.perf_counter_ns())
                try:
                    data.sendto(payload, target)
                except BlockingIOError:
                    break  # our own socket buffer is full: let the kernel drain it
                sent += 1


# --- WebSocket client role -------------------------------------------------------------------------


class WsClient:
    """A minimal RFC 6455 client: blocking socket, masked binary frames, unmasked server frames."""

    def __init__(self, port: int, payload: int, udp_port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bigbuf(self.sock)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /udp HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("relay closed during the handshake")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {head[:200]!r}")
        self.buf = bytearray(rest)
        # One random mask per connection (the relay unmasks every frame whatever the key), applied
        # with a big-int XOR: only the 16 varying bytes (seq, time) are masked per frame.
        mask = os.urandom(4)
        frame_len = HDR_V1 + payload
        v1 = struct.pack("!H4sH", 10000, socket.inet_aton(HOST), udp_port)
        pad = bytes(payload - SEQ.size)
        self._mask16 = int.from_bytes(mask * 4, "big")
        mask_all = int.from_bytes(mask * ((frame_len + 3) // 4), "big") >> (8 * (-frame_len % 4))
        masked = (int.from_bytes(v1 + bytes(SEQ.size) + pad, "big") ^ mask_all).to_bytes(frame_len, "big")
        if frame_len < 126:
            ws_head = bytes([0x82, 0x80 | frame_len])
        else:
            ws_head = bytes([0x82, 0x80 | 126]) + struct.pack("!H", frame_len)
        self._prefix = ws_head + mask + masked[:HDR_V1]
        self._suffix = masked[HDR_V1 + SEQ.size :]
        self.texts: list[str] = []

    def frame(self, seq: int) -> bytes:
        stamp = int.from_bytes(SEQ.pack(seq, time.perf_counter_ns()), "big") ^ self._mask16
        return self._prefix + stamp.to_bytes(16, "big") + self._suffix

    def read_binary(self) -> list[tuple[int, int]]:
        """Read once from the socket; (seq, send_ns) of each complete binary frame that arrived
        (the first 16 payload bytes after the relay's v1 header). Text frames go to ``texts``."""
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("relay closed the connection")
        self.buf += chunk
        return self.parse()

    def parse(self) -> list[tuple[int, int]]:
        buf = self.buf
        out: list[tuple[int, int]] = []
        pos = 0
        n = len(buf)
        unpack = SEQ.unpack_from
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            end = pos + hdr + ln
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode == 2 and ln >= HDR_V1 + SEQ.size:
                out.append(unpack(buf, pos + hdr + HDR_V1))
            elif opcode == 1:
                self.texts.append(buf[pos + hdr : end].decode())
            elif opcode == 8:
                raise ConnectionError(f"relay sent Close: {bytes(buf[pos + hdr : end])!r}")
            pos = end
        del buf[:pos]
        return out

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 5
        self.sock.settimeout(0.2)
        self.parse()  # the ready message may have come with the 101 response
        while not self.texts:
            if time.monotonic() > deadline:
                raise TimeoutError("no ready message")
            with contextlib.suppress(TimeoutError):
                self.read_binary()
        msg = json.loads(self.texts.pop(0))
        if msg.get("type") != "ready":
            raise ConnectionError(f"unexpected first message {msg}")


def ctl_query(port: int, msg: bytes = b"stats") -> dict[str, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(msg, (HOST, port))
        result: dict[str, int] = json.loads(s.recv(4096))
        return result


class Meter:
    """CPU snapshots of the relay, the helper and this client at the interval's ends."""

    def __init__(self, relay_pid: int, helper_pid: int) -> None:
        self.pids = {"relay": relay_pid, "helper": helper_pid, "client": os.getpid()}

    def snap(self) -> dict[str, float]:
        s = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        s.update(cpu_busy_seconds())
        s["wall"] = time.perf_counter()
        return s

    @staticmethod
    def cpus(d: dict[str, float]) -> dict[str, float]:
        """Busy % per CPU, and the % of one CPU used by processes other than ours (noise)."""
        busy = {k: 100 * v / d["wall"] for k, v in d.items() if k.startswith("cpu")}
        ours = 100 * (d["relay"] + d["helper"] + d["client"]) / d["wall"]
        return {
            **{f"{k}_busy_pct": round(v, 1) for k, v in busy.items()},
            "other_load_pct": round(sum(busy.values()) - ours, 1),
        }

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: b[k] - a[k] for k in a}


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i] / 1000.0  # ns -> us


def run_client(args: argparse.Namespace) -> None:
    ws = WsClient(args.relay_port, args.payload, args.udp_port)
    ws.wait_ready()
    meter = Meter(args.relay_pid, args.helper_pid)
    runner = {"echo": client_echo, "upload": client_upload, "download": client_download}[args.scenario]
    result = runner(args, ws, meter)
    result["scenario"] = args.scenario
    print(json.dumps(result), flush=True)


def client_echo(args: argparse.Namespace, ws: WsClient, meter: Meter) -> dict[str, Any]:
    sock = ws.sock
    sock.settimeout(0.05)
    outstanding: dict[int, int] = {}
    seq = 0
    start = time.perf_counter()
    t0 = start + args.warmup
    t_end = t0 + args.duration
    snap0: dict[str, float] | None = None
    snap1: dict[str, float] | None = None
    replies = 0
    lost_timeout = 0
    rtts: list[int] = []
    last_sweep = start
    burst = [ws.frame(seq + i) for i in range(args.window)]
    for i in range(args.window):
        outstanding[seq + i] = time.perf_counter_ns()
    seq += args.window
    sock.sendall(b"".join(burst))
    while True:
        try:
            got = ws.read_binary()
        except TimeoutError:
            got = []
        now_ns = time.perf_counter_ns()
        now = now_ns / 1e9
        measuring = snap0 is not None and snap1 is None
        for rseq, sent_ns in got:
            if outstanding.pop(rseq, None) is None:
                continue  # already counted lost
            if measuring:
                replies += 1
                rtts.append(now_ns - sent_ns)
        if snap0 is None and now >= t0:
            snap0 = meter.snap()
        elif snap0 is not None and snap1 is None and (now >= t_end or replies >= args.max_datagrams):
            snap1 = meter.snap()
        if now - last_sweep > 0.1:  # a lost datagram must not shrink the window forever
            last_sweep = now
            old = [s for s, t in outstanding.items() if now_ns - t > 1_000_000_000]
            for s in old:
                del outstanding[s]
            lost_timeout += len(old)
        if snap1 is not None:
            if not outstanding or now > t_end + 1.0:
                break
            continue
        room = args.window - len(outstanding)
        if room > 0:
            frames = []
            for _ in range(room):
                frames.append(ws.frame(seq))
                outstanding[seq] = now_ns
                seq += 1
            sock.sendall(b"".join(frames))
    assert snap0 is not None and snap1 is not None
    d = Meter.delta(snap0, snap1)
    rtts.sort()
    return {
        "window": args.window,
        "interval_s": d["wall"],
        "round_trips": replies,
        "round_trips_per_s": replies / d["wall"],
        "datagrams_per_s": 2 * replies / d["wall"],
        "rtt_p50_us": percentile(rtts, 0.50),
        "rtt_p99_us": percentile(rtts, 0.99),
        "sent_total": seq,
        "lost": lost_timeout + len(outstanding),
        "loss": (lost_timeout + len(outstanding)) / seq if seq else 0.0,
        "relay_cpu_s": d["relay"],
        "relay_cpu_pct": 100 * d["relay"] / d["wall"],
        "relay_us_per_round_trip": 1e6 * d["relay"] / replies if replies else float("nan"),
        "relay_us_per_datagram": 1e6 * d["relay"] / (2 * replies) if replies else float("nan"),
        "client_cpu_pct": 100 * d["client"] / d["wall"],
        "helper_cpu_pct": 100 * d["helper"] / d["wall"],
        **Meter.cpus(d),
    }


def client_upload(args: argparse.Namespace, ws: WsClient, meter: Meter) -> dict[str, Any]:
    sock = ws.sock
    sock.setblocking(True)
    seq = 0
    batch = 32
    start = time.perf_counter()
    t0 = start + args.warmup
    t_end = t0 + args.duration
    snap0: dict[str, float] | None = None
    sink0 = 0
    sent_at_t0 = 0
    while True:
        sock.sendall(b"".join([ws.frame(seq + i) for i in range(batch)]))
        seq += batch
        now = time.perf_counter()
        if snap0 is None and now >= t0:
            snap0 = meter.snap()
            sink0 = ctl_query(args.ctl_port)["received"]
            sent_at_t0 = seq
        elif snap0 is not None and (now >= t_end or seq - sent_at_t0 >= args.max_datagrams):
            break
    snap1 = meter.snap()
    sink1 = ctl_query(args.ctl_port)["received"]
    assert snap0 is not None
    # Let the relay drain what it has read, then count what never arrived.
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.3 and time.monotonic() - start < t_end - start + 5:
        total = ctl_query(args.ctl_port)["received"]
        if total != last:
            last, stable_since = total, time.monotonic()
        time.sleep(0.05)
    d = Meter.delta(snap0, snap1)
    delivered = sink1 - sink0
    return {
        "interval_s": d["wall"],
        "datagrams": delivered,
        "datagrams_per_s": delivered / d["wall"],
        "sent_total": seq,
        "received_total": last,
        "lost": seq - last,
        "loss": (seq - last) / seq if seq else 0.0,
        "relay_cpu_s": d["relay"],
        "relay_cpu_pct": 100 * d["relay"] / d["wall"],
        "relay_us_per_datagram": 1e6 * d["relay"] / delivered if delivered else float("nan"),
        "client_cpu_pct": 100 * d["client"] / d["wall"],
        "helper_cpu_pct": 100 * d["helper"] / d["wall"],
        **Meter.cpus(d),
    }


def client_download(args: argparse.Namespace, ws: WsClient, meter: Meter) -> dict[str, Any]:
    sock = ws.sock
    sock.settimeout(0.05)
    sock.sendall(ws.frame(0))  # primes the binding and tells the flooder where to send
    start = time.perf_counter()
    t0 = start + args.warmup
    t_end = t0 + args.duration
    snap0: dict[str, float] | None = None
    snap1: dict[str, float] | None = None
    got_total = 0
    got0 = sent0 = 0
    sent1 = got1 = 0
    lat: list[int] = []
    drain_until = float("inf")
    while True:
        try:
            got = ws.read_binary()
        except TimeoutError:
            got = []
        now_ns = time.perf_counter_ns()
        now = now_ns / 1e9
        got_total += len(got)
        if snap0 is not None and snap1 is None:
            lat.extend(now_ns - t for _, t in got)
        if snap0 is None and now >= t0:
            snap0 = meter.snap()
            got0, sent0 = got_total, ctl_query(args.ctl_port)["sent"]
        elif snap0 is not None and snap1 is None and (now >= t_end or got_total - got0 >= args.max_datagrams):
            snap1 = meter.snap()
            sent1 = ctl_query(args.ctl_port, b"stop")["sent"]
            got1 = got_total
            drain_until = now + 0.5
        if snap1 is not None and now >= drain_until:
            break
        if now > t_end + 10:
            raise TimeoutError("download did not finish")
    assert snap0 is not None and snap1 is not None
    d = Meter.delta(snap0, snap1)
    delivered = got1 - got0
    sent = sent1 - sent0
    lat.sort()
    return {
        "interval_s": d["wall"],
        "flood_pps": args.flood_pps,
        "sent": sent,
        "sent_per_s": sent / d["wall"],
        "datagrams": delivered,
        "datagrams_per_s": delivered / d["wall"],
        "delivered_ratio": delivered / sent if sent else float("nan"),
        "loss": 1 - delivered / sent if sent else float("nan"),
        "one_way_p50_us": percentile(lat, 0.50),
        "one_way_p99_us": percentile(lat, 0.99),
        "relay_cpu_s": d["relay"],
        "relay_cpu_pct": 100 * d["relay"] / d["wall"],
        "relay_us_per_datagram": 1e6 * d["relay"] / delivered if delivered else float("nan"),
        "client_cpu_pct": 100 * d["client"] / d["wall"],
        "helper_cpu_pct": 100 * d["helper"] / d["wall"],
        **Meter.cpus(d),
    }


# --- orchestrator ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


def scrape_events(port: int) -> dict[str, int]:
    out = {}
    for m in re.finditer(
        r'^aero_webrtc_udp_relay_events_total\{event="([^"]+)"\} (\d+)$', http_get(port, "/metrics"), re.M
    ):
        out[m.group(1)] = int(m.group(2))
    return out


# Runs the relay like `python -m aero_relay`, after logging which package file is running.
_PRINT_ORIGIN = (
    "import sys, aero_relay, aero_relay.cli as c; "
    "print('aero_relay from', aero_relay.__file__, file=sys.stderr, flush=True); "
    "sys.argv[0] = 'aero-relay'; c.entrypoint()"
)


class Relay:
    def __init__(self, args: argparse.Namespace, port: int) -> None:
        env = dict(os.environ, AUTH_MODE="none", DESTINATION_POLICY_PRESET="dev")
        env.update(kv.split("=", 1) for kv in args.relay_env)
        cmd = [str(ROOT / ".venv" / "bin" / "aero-relay"), "serve", "--listen-addr", f"{HOST}:{port}"]
        if args.relay_src:  # another copy of the package (e.g. an older revision) for comparisons
            env["PYTHONPATH"] = str(Path(args.relay_src).resolve())
            cmd = [str(ROOT / ".venv" / "bin" / "python"), "-c", _PRINT_ORIGIN, *cmd[1:]]
        if args.profile == "cprofile":
            env["AERO_BENCH_CPROFILE_OUT"] = str(RESULTS / f"{args.label}-relay.cprofile")
            cmd = [
                str(ROOT / ".venv" / "bin" / "python"),
                str(ROOT / "benchmarks" / "cprofile_relay.py"),
                *cmd[1:],
            ]
        self.log = open(RESULTS / f"{args.label}-relay.log", "wb")  # noqa: SIM115
        # With --relay-src, run from that directory: `python -m` puts the working directory first.
        cwd = Path(args.relay_src).resolve() if args.relay_src else ROOT
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = port
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}; see {self.log.name}")
            try:
                http_get(port, "/healthz")
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


def start_helper(
    args: argparse.Namespace, mode: str, lifetime: float, cpu: int | None
) -> tuple[subprocess.Popen[str], int, int]:
    cmd = [
        sys.executable, __file__, "--role", "udp", "--mode", mode, "--payload", str(args.payload),
        "--lifetime", str(lifetime), "--flood-pps", str(args.flood_pps),
        "--max-datagrams", str(args.max_datagrams * 4),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    pin(proc.pid, cpu)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "PORTS":
        proc.kill()
        raise RuntimeError("UDP helper did not start")
    return proc, int(line[1]), int(line[2])


def run_scenario(
    args: argparse.Namespace, relay: Relay, scenario: str, cpus: tuple[int | None, int | None]
) -> dict[str, Any]:
    mode = {"echo": "echo", "upload": "sink", "download": "flood"}[scenario]
    lifetime = args.warmup + args.duration + 30
    helper, udp_port, ctl_port = start_helper(args, mode, lifetime, cpus[1])
    profiler = None
    try:
        before = scrape_events(relay.port)
        cmd = [
            sys.executable, __file__, "--role", "client", "--scenario", scenario,
            "--relay-port", str(relay.port), "--relay-pid", str(relay.proc.pid),
            "--helper-pid", str(helper.pid), "--udp-port", str(udp_port), "--ctl-port", str(ctl_port),
            "--payload", str(args.payload), "--window", str(args.window), "--warmup", str(args.warmup),
            "--duration", str(args.duration), "--max-datagrams", str(args.max_datagrams),
            "--flood-pps", str(args.flood_pps),
        ]  # fmt: skip
        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        pin(client.pid, cpus[1])
        if args.profile == "py-spy" and scenario in args.profile_scenarios:
            profiler = start_py_spy(args, relay.proc.pid, scenario)
        try:
            out, _ = client.communicate(timeout=args.warmup + args.duration + 60)
        except subprocess.TimeoutExpired:
            client.kill()
            raise
        if client.returncode != 0:
            raise RuntimeError(f"{scenario} client failed ({client.returncode})")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        time.sleep(0.2)
        after = scrape_events(relay.port)
        result["relay_events"] = {
            k: after.get(k, 0) - before.get(k, 0)
            for k in sorted(after)
            if after.get(k, 0) != before.get(k, 0) and k.startswith("udp_ws_")
        }
        if profiler is not None:
            result["profile"] = finish_py_spy(args, profiler, scenario)
        return result
    finally:
        with contextlib.suppress(OSError):
            ctl_query(ctl_port, b"stop")
        try:
            helper.wait(5)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        if profiler is not None and profiler[0].poll() is None:
            profiler[0].kill()


def start_py_spy(args: argparse.Namespace, pid: int, scenario: str) -> tuple[subprocess.Popen[bytes], Path]:
    path = RESULTS / f"{args.label}-{scenario}.pyspy.txt"
    pyspy = ROOT / ".venv" / "bin" / "py-spy"
    # Sample only the measured interval (after the warm-up), in "raw" (collapsed stacks) format.
    cmd = [
        str(pyspy), "record", "--pid", str(pid), "--format", "raw", "--rate", str(args.profile_rate),
        "--duration", str(max(1, int(args.duration))), "--output", str(path),
    ]  # fmt: skip
    if args.profile_idle:
        cmd.append("--idle")
    time.sleep(args.warmup + 0.3)  # the client connects and warms up meanwhile
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path


def finish_py_spy(
    args: argparse.Namespace, profiler: tuple[subprocess.Popen[bytes], Path], scenario: str
) -> dict[str, Any]:
    proc, path = profiler
    proc.wait(args.duration + 30)
    if not path.exists():
        return {"error": "py-spy wrote no profile (ptrace not permitted?)"}
    return summarize_collapsed(path, args.profile_top)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/module.py:123)"; keep the function and file:line
    # shortened to the package-relative path, so the summary is readable.
    m = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not m:
        return frame
    func, path, _line = m.groups()
    for marker in ("site-packages/", "aero_relay/", "lib/python3.11/"):
        i = path.find(marker)
        if i >= 0:
            path = path[i + (len(marker) if marker != "aero_relay/" else 0) :]
            break
    return f"{func} ({path})"


def summarize_collapsed(path: Path, top: int) -> dict[str, Any]:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + n

    def table(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "file": str(path), "self_pct": table(self_n), "inclusive_pct": table(incl_n)}


def print_table(results: dict[str, dict[str, Any]]) -> None:
    rows = [
        (
            "scenario",
            "dgrams/s",
            "p50 us",
            "p99 us",
            "loss",
            "relay us/dgram",
            "relay cpu",
            "client cpu",
            "helper cpu",
            "other load",
        )
    ]
    for name, r in results.items():
        if name == "echo":
            p50, p99 = r["rtt_p50_us"], r["rtt_p99_us"]
            extra = f" ({r['relay_us_per_round_trip']:.1f}/rt)"
        elif name == "download":
            p50, p99 = r["one_way_p50_us"], r["one_way_p99_us"]
            extra = ""
        else:
            p50 = p99 = float("nan")
            extra = ""
        rows.append((
            name, f"{r['datagrams_per_s']:,.0f}", f"{p50:,.0f}", f"{p99:,.0f}", f"{100 * r['loss']:.2f}%",
            f"{r['relay_us_per_datagram']:.1f}{extra}", f"{r['relay_cpu_pct']:.0f}%",
            f"{r['client_cpu_pct']:.0f}%", f"{r['helper_cpu_pct']:.0f}%", f"{r['other_load_pct']:.0f}%",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for name, r in results.items():
        if "profile" in r and "self_pct" in r["profile"]:
            p = r["profile"]
            print(f"\n{name} profile ({p['samples']} samples, {p['file']}): top self time")
            for func, pct in p["self_pct"][:15]:
                print(f"  {pct:5.1f}%  {func}")
            print(f"{name} profile: top inclusive time")
            for func, pct in p["inclusive_pct"][:25]:
                print(f"  {pct:5.1f}%  {func}")


def orchestrate(args: argparse.Namespace) -> None:
    if args.quick:
        args.warmup, args.duration = 0.5, 1.5
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.label is None:
        args.label = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    cpus = sorted(os.sched_getaffinity(0))
    pinning: tuple[int | None, int | None] = (
        (cpus[0], cpus[1]) if len(cpus) >= 2 and not args.no_pin else (None, None)
    )
    relay = Relay(args, free_port())
    pin(relay.proc.pid, pinning[0])
    print(f"relay pid {relay.proc.pid} on port {relay.port}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for i in range(args.repeat):
            for scenario in args.scenarios:
                runs.setdefault(scenario, []).append(run_scenario(args, relay, scenario, pinning))
                if args.repeat > 1:
                    r = runs[scenario][-1]
                    print(
                        f"run {i + 1}/{args.repeat} {scenario}: {r['relay_us_per_datagram']:.1f} us/dgram, "
                        f"{r['datagrams_per_s']:,.0f} dgrams/s, other load {r['other_load_pct']:.0f}%",
                        flush=True,
                    )
    finally:
        relay.stop()
    for scenario, rs in runs.items():
        # The run with the median relay CPU per datagram stands for the scenario; all are kept.
        ordered = sorted(rs, key=lambda r: float(r["relay_us_per_datagram"]))
        results[scenario] = {**ordered[len(ordered) // 2], "runs": len(rs)}
        if len(rs) > 1:
            results[scenario]["all_relay_us_per_datagram"] = [
                round(r["relay_us_per_datagram"], 2) for r in rs
            ]
            results[scenario]["all_datagrams_per_s"] = [round(r["datagrams_per_s"]) for r in rs]
            results[scenario]["all_other_load_pct"] = [r["other_load_pct"] for r in rs]
    report = {
        "label": args.label,
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "payload_bytes": args.payload,
        "window": args.window,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "cpus": len(cpus),
        "relay_src": args.relay_src or str(ROOT),
        "repeat": args.repeat,
        "pinning": {"relay": pinning[0], "client_and_helper": pinning[1]},
        "python": sys.version.split()[0],
        "results": results,
    }
    out = RESULTS / f"udp_ws-{args.label}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(results)
    print(f"\nwrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="0.5 s warm-up + 1.5 s per scenario (~10 s in all)")
    p.add_argument("--scenarios", type=lambda s: s.split(","), default=["echo", "upload", "download"])
    p.add_argument("--window", type=int, default=32, help="echo: frames outstanding (default 32)")
    p.add_argument("--payload", type=int, default=1200, help="UDP payload bytes (default 1200)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default 2)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    p.add_argument("--max-datagrams", type=int, default=5_000_000, help="per scenario bound (default 5e6)")
    p.add_argument("--flood-pps", type=float, default=0, help="download: flooder rate, 0 = flat out")
    p.add_argument("--label", help="results file label (default: a timestamp)")
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario; the median run is reported")
    p.add_argument("--relay-src", help="run the aero_relay package found in this directory instead")
    p.add_argument("--no-pin", action="store_true", help="do not pin relay / client to separate CPUs")
    p.add_argument("--relay-env", action="append", default=[], metavar="K=V", help="extra relay env")
    p.add_argument("--profile", choices=["none", "py-spy", "cprofile"], default="none")
    p.add_argument("--profile-scenarios", type=lambda s: s.split(","), default=["echo"])
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--profile-top", type=int, default=40)
    p.add_argument("--profile-idle", action="store_true", help="py-spy: include idle (waiting) samples")
    # Internal roles.
    p.add_argument(
        "--role", choices=["orchestrate", "udp", "client"], default="orchestrate", help=argparse.SUPPRESS
    )
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--lifetime", type=float, default=60, help=argparse.SUPPRESS)
    p.add_argument("--scenario", help=argparse.SUPPRESS)
    p.add_argument("--relay-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--relay-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--helper-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--udp-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ctl-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "udp":
        run_udp_helper(args)
    elif args.role == "client":
        run_client(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
