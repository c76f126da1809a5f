"""Plain (non-fixture) building blocks of the browser e2e harness.

Everything here is synchronous and thread-based on purpose: Playwright's sync API drives Chromium from
the test thread (pytest-trio's `trio_mode` leaves plain `def` tests alone), the relay runs as a real
subprocess, and the loopback UDP echo servers and the page server run in daemon threads. No asyncio or
Trio loop is shared with Playwright's own event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

E2E_DIR = Path(__file__).resolve().parent
PAGES_DIR = E2E_DIR / "pages"
PROJECT_ROOT = E2E_DIR.parent
VECTORS_DIR = PROJECT_ROOT.parent / "shared" / "vectors"

# F-214: the original's e2e suite parses /metrics with exactly this regex.
METRIC_LINE = re.compile(r'^aero_webrtc_udp_relay_events_total\{event="([^"]+)"\} ([0-9]+)$')

# Only these variables reach the relay: nothing from the developer's shell may change its config.
_PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")

# Test-only credentials for the relays the fixtures start.
API_KEY = "e2e-api-key"
JWT_SECRET = "e2e-jwt-secret-at-least-32-bytes-long"

RELAY_BASE_ENV: dict[str, str] = {
    "AUTH_MODE": "none",
    "DESTINATION_POLICY_PRESET": "dev",  # the echo servers are on loopback, which prod denies
    "WEBRTC_UDP_LISTEN_IP": "127.0.0.1",
    "AERO_WEBRTC_UDP_RELAY_LOG_FORMAT": "json",  # so tests can read the access log reliably
}


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def parse_event_metrics(body: str) -> dict[str, int]:
    """Event counters from a /metrics body, parsed the way the original's e2e suite does (F-214)."""
    out: dict[str, int] = {}
    for line in body.splitlines():
        m = METRIC_LINE.match(line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


# --- the relay subprocess -------------------------------------------------------------------------


def relay_command() -> list[str]:
    """`.venv/bin/aero-relay` next to the running interpreter, else `python -m aero_relay`."""
    script = Path(sys.executable).with_name("aero-relay")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "aero_relay"]


@attrs.define(slots=True, eq=False)
class Relay:
    """One running `aero-relay serve` subprocess on 127.0.0.1."""

    port: int
    env: Mapping[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    netns: NetNs | None = None  # the relay runs in this namespace (its 127.0.0.1 is that namespace's)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/udp") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """A plain GET without an Origin header (allowed by the origin rules, F-014)."""
        if self.netns is not None:
            return self.netns.run(lambda: self._get(path, timeout))
        return self._get(path, timeout)

    def _get(self, path: str, timeout: float) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    def metrics(self) -> dict[str, int]:
        status, body = self.get("/metrics")
        assert status == 200, (status, body)
        return parse_event_metrics(body.decode())

    def metric(self, event: str) -> int:
        return self.metrics().get(event, 0)

    def log_records(self) -> list[dict[str, Any]]:
        """The relay's JSON log records so far (one JSON object a line)."""
        records: list[dict[str, Any]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    records.append(obj)
        return records

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def is_ready(self) -> bool:
        """F-213: ready means `GET /readyz` is 200 with a JSON body whose `ready` is true."""
        try:
            status, body = self.get("/readyz", timeout=1.0)
        except OSError:
            return False
        if status != 200:
            return False
        try:
            return json.loads(body).get("ready") is True
        except ValueError:
            return False

    def settled(self) -> bool:
        """Ready, or exited (startup failed)."""
        return self.is_ready() or self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the relay shuts down gracefully on SIGTERM
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


StartRelay = Callable[..., Relay]
T = TypeVar("T")


class RelayStartError(RuntimeError):
    pass


class RelayFactory:
    """Starts relays on demand and reuses one per distinct environment for the whole session."""

    def __init__(self, log_dir: Path, base_env: Mapping[str, str], netns: NetNs | None = None) -> None:
        self._log_dir = log_dir
        self._base_env = dict(base_env)
        self._netns = netns
        self._relays: dict[tuple[tuple[str, str], ...], Relay] = {}
        self._count = 0

    def __call__(self, env: Mapping[str, str] | None = None) -> Relay:
        merged = {**self._base_env, **(env or {})}
        key = tuple(sorted(merged.items()))
        relay = self._relays.get(key)
        if relay is not None and relay.proc.poll() is None:
            return relay
        relay = self._start(merged)
        self._relays[key] = relay
        return relay

    def _start(self, relay_env: Mapping[str, str], attempts: int = 3) -> Relay:
        last_error = ""
        for _ in range(attempts):
            relay = self._launch(relay_env)
            if not wait_until(relay.settled, timeout=20.0):
                relay.stop()
                raise RelayStartError(f"relay not ready after 20 s:\n{relay.log_tail()}")
            if relay.proc.poll() is None:
                return relay
            last_error = f"relay exited with {relay.proc.returncode}:\n{relay.log_tail()}"
            if relay.proc.returncode != 1:
                break  # exit 1 is most likely the port taken between probe and bind: try another
        raise RelayStartError(last_error)

    def _launch(self, relay_env: Mapping[str, str]) -> Relay:
        proc_env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
        proc_env.update(relay_env)
        self._count += 1
        port = self._netns.run(free_tcp_port) if self._netns is not None else free_tcp_port()
        log_path = self._log_dir / f"relay-{self._count}-{port}.log"
        with log_path.open("wb") as log:
            prefix = self._netns.exec_prefix() if self._netns is not None else []
            proc = subprocess.Popen(
                [*prefix, *relay_command(), "serve", "--listen-addr", f"127.0.0.1:{port}"],
                env=proc_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )
        return Relay(port=port, env=dict(relay_env), proc=proc, log_path=log_path, netns=self._netns)

    def stop_all(self) -> None:
        for relay in self._relays.values():
            relay.stop()
        self._relays.clear()


# --- loopback UDP echo servers --------------------------------------------------------------------


class UdpEcho:
    """A UDP echo server on loopback in a daemon thread.

    With `reply_from_other_port`, replies leave from a second socket (a different source port), which
    the relay's default inbound filter (address_and_port, F-132) must drop.
    """

    def __init__(self, host: str = "127.0.0.1", *, reply_from_other_port: bool = False) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.1)
        self._reply = self._sock
        if reply_from_other_port:
            self._reply = socket.socket(family, socket.SOCK_DGRAM)
            self._reply.bind((host, 0))
        self.port = int(self._sock.getsockname()[1])
        self.reply_port = int(self._reply.getsockname()[1])
        self._lock = threading.Lock()
        self._replies = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"udp-echo-{self.port}", daemon=True)
        self._thread.start()

    @property
    def replies(self) -> int:
        with self._lock:
            return self._replies

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError):
                self._reply.sendto(data, addr)
            with self._lock:
                self._replies += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        if self._reply is not self._sock:
            self._reply.close()


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- the page server ------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class PageServer:
    """Serves e2e/pages/ on 127.0.0.1; each instance is its own origin (the port differs)."""

    def __init__(self, directory: Path = PAGES_DIR) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"pages-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, page: str = "index.html") -> str:
        return f"{self.origin}/{page}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# --- a throwaway network namespace ---------------------------------------------------------------

_CLONE_NEWNET = 0x40000000


class NetNs:
    """A network namespace for tests that run Chromium with its default WebRTC settings.

    Chromium's default hides host candidates behind mDNS names and announces each name by multicast
    (an A record with the interface address) on the host's real interfaces. Inside this namespace the
    only interfaces are loopback and a veth pair whose both ends stay inside (a private address and a
    default route, so Chromium has a "default local address" to hide), so announcements go nowhere.

    Processes join it through `exec_prefix()` (`ip netns exec`); Python code runs in it through `run()`,
    on a thread that enters the namespace: sockets created there stay in it when used from any thread.
    Creating one needs root and iproute2 (`unavailable_reason()`).
    """

    def __init__(self, name: str, address: str = "10.213.7.1/24") -> None:
        self.name = name
        self.address = address

    @staticmethod
    def unavailable_reason() -> str | None:
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "iproute2 (`ip`) is not installed"
        return None

    def _ip(self, *args: str, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)

    def create(self) -> NetNs:
        self._ip("netns", "del", self.name, check=False)  # a leftover from a killed run
        self._ip("netns", "add", self.name)
        try:
            n = ("-n", self.name)
            self._ip(*n, "link", "set", "lo", "up")
            self._ip(*n, "link", "add", "aero0", "type", "veth", "peer", "name", "aero1")
            self._ip(*n, "addr", "add", self.address, "dev", "aero0")
            self._ip(*n, "link", "set", "aero0", "up")
            self._ip(*n, "link", "set", "aero1", "up")
            self._ip(*n, "route", "add", "default", "dev", "aero0")
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        self._ip("netns", "del", self.name, check=False)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, fn: Callable[[], T]) -> T:
        """Call `fn` on a thread inside the namespace and return its result (or raise its error)."""
        result: list[T] = []
        error: list[BaseException] = []

        def enter_and_call() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if _libc().setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({self.name}): {os.strerror(err)}")
                finally:
                    os.close(fd)
                result.append(fn())
            except BaseException as err:
                error.append(err)

        thread = threading.Thread(target=enter_and_call, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    def chromium_wrapper(self, directory: Path, chromium: str) -> Path:
        """An executable that starts `chromium` inside the namespace (for Playwright's executable_path)."""
        path = directory / "chromium-in-netns"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {chromium} "$@"\n')
        path.chmod(0o755)
        return path


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as d:
        yield Path(d)
