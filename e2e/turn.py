"""A real coturn (`turnserver`) on loopback for the TURN e2e tests (e2e/test_turn_browser.py).

`Coturn.start(...)` launches `turnserver -n` (no config file: every setting is on the command line)
bound to 127.0.0.1 only, UDP only, with a listening port and a relay port range that were free a
moment earlier, `--allow-loopback-peers` (coturn refuses 127.0.0.1 peers otherwise, and the relay's
server-side peer is on 127.0.0.1) and no denied-peer rule. Its log, pid file and SQLite user db stay
in a temporary directory. It counts as started once it answers a STUN Binding request on its
listening port (the port is bound and the server thread serves) and its log says the relay ports
are initialised.

`rest_credential` mints coturn `--use-auth-secret` credentials independently of aero_relay's own
generator, so the tests check the relay against the format coturn expects, not against itself.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from e2e.harness import wait_until

TURNSERVER = "turnserver"
REALM = "aero.test"
STATIC_USER = "aero"
STATIC_PASSWORD = "aero"
LOOPBACK = "127.0.0.1"

# A relay range well below Linux's default ephemeral range (32768-60999 is where port-0 binds land,
# including the relay's own ICE sockets and Chromium's), so a collision is unlikely; each port is
# also checked free before use.
_RELAY_RANGE_FLOOR = 20000
_RELAY_RANGE_CEIL = 30000
_RELAY_PORTS = 16

_STUN_MAGIC = 0x2112A442
_STUN_BINDING_REQUEST = 0x0001
_STUN_BINDING_SUCCESS = 0x0101


def turnserver_unavailable_reason() -> str | None:
    if shutil.which(TURNSERVER) is None:
        return f"{TURNSERVER} not found (apt-get install coturn; ./scripts/test.sh installs it as root)"
    return None


def rest_credential(secret: str, expiry_unix: int, user: str) -> tuple[str, str]:
    """coturn's TURN REST scheme: username `<expiry>:<user>`, credential
    base64(HMAC-SHA1(secret, username))."""
    username = f"{expiry_unix}:{user}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode("ascii")


def free_udp_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _udp_port_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_udp_range(count: int = _RELAY_PORTS, attempts: int = 50) -> tuple[int, int]:
    """`count` consecutive UDP ports on 127.0.0.1 that are free right now: (min, max) inclusive."""
    rng = random.Random()
    for _ in range(attempts):
        low = rng.randrange(_RELAY_RANGE_FLOOR, _RELAY_RANGE_CEIL - count)
        if all(_udp_port_free(p) for p in range(low, low + count)):
            return low, low + count - 1
    raise RuntimeError(f"no {count} consecutive free UDP ports in {_RELAY_RANGE_FLOOR}..{_RELAY_RANGE_CEIL}")


def stun_binding_ok(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a STUN Binding request to host:port gets a Binding success with our transaction id."""
    txid = os.urandom(12)
    request = struct.pack("!HHI", _STUN_BINDING_REQUEST, 0, _STUN_MAGIC) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(request, (host, port))
            data = s.recv(2048)
        except OSError:  # timeout, or ICMP port unreachable (nothing bound yet)
            return False
    if len(data) < 20:
        return False
    msg_type, _length, magic = struct.unpack("!HHI", data[:8])
    return msg_type == _STUN_BINDING_SUCCESS and magic == _STUN_MAGIC and data[8:20] == txid


class CoturnStartError(RuntimeError):
    pass


@attrs.define(slots=True, eq=False)
class Coturn:
    """One running turnserver on 127.0.0.1 (UDP only)."""

    port: int
    min_port: int
    max_port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    @property
    def url(self) -> str:
        """The TURN URL browsers (and the relay's ICE config) use."""
        return f"turn:{LOOPBACK}:{self.port}?transport=udp"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    @classmethod
    def start(cls, auth_args: Sequence[str], *, attempts: int = 3) -> Coturn:
        """Start turnserver with `auth_args` (see `rest_auth_args`, `static_auth_args`).

        Retries with fresh ports when it dies or never answers STUN (a port taken between the
        probe and coturn's bind).
        """
        last = ""
        for _ in range(attempts):
            turn = cls._launch(auth_args)
            ready = wait_until(turn._settled, timeout=10.0)
            if ready and turn.proc.poll() is None:
                return turn
            last = f"turnserver exited with {turn.proc.returncode}" if ready else "no STUN answer in 10 s"
            last += f":\n{turn.log_tail()}"
            turn.stop()
        raise CoturnStartError(last)

    @classmethod
    def _launch(cls, auth_args: Sequence[str]) -> Coturn:
        workdir = Path(tempfile.mkdtemp(prefix="aero-e2e-coturn-"))
        port = free_udp_port()
        min_port, max_port = free_udp_range()
        log_path = workdir / "turnserver.log"
        cmd = [
            TURNSERVER,
            "-n",  # ignore /etc/turnserver.conf
            f"--listening-ip={LOOPBACK}",
            f"--relay-ip={LOOPBACK}",
            f"--listening-port={port}",
            f"--min-port={min_port}",
            f"--max-port={max_port}",
            "--no-tcp",
            "--no-tcp-relay",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-rfc5780",  # one address: no alternate CHANGE_REQUEST port to bind
            "--fingerprint",
            f"--realm={REALM}",
            "--allow-loopback-peers",
            "--verbose",  # per-request results (401s, allocations) in the log, for failing tests
            "--log-file=stdout",  # stdout only: nothing under /var/log
            f"--pidfile={workdir / 'turnserver.pid'}",
            f"--userdb={workdir / 'turndb'}",  # not /var/lib/turn/turndb
            *auth_args,
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
            )
        return cls(
            port=port, min_port=min_port, max_port=max_port, proc=proc, workdir=workdir, log_path=log_path
        )

    def _serving(self) -> bool:
        return "Relay ports initialization done" in self.log_text() and stun_binding_ok(LOOPBACK, self.port)

    def _settled(self) -> bool:
        """Serving, or exited (startup failed)."""
        return self.proc.poll() is not None or self._serving()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.workdir)


def rest_auth_args(secret: str) -> list[str]:
    return ["--use-auth-secret", f"--static-auth-secret={secret}"]


def static_auth_args(user: str = STATIC_USER, password: str = STATIC_PASSWORD) -> list[str]:
    return ["--lt-cred-mech", f"--user={user}:{password}"]


def wait_past(unix_time: int) -> None:
    """Sleep until the wall clock is past `unix_time` (coturn rejects a REST username once
    its expiry is below the current second)."""
    delay = unix_time + 1.05 - time.time()
    if delay > 0:
        time.sleep(delay)
