"""`aero-relay serve --workers N`: N worker processes on one machine sharing the HTTP port.

Design (issue "Scale-out", part 2):

* The parent binds the listen socket once, then `os.fork`s each worker before any Trio loop or
  aiortc thread exists; workers inherit the listening fd and all accept from it. One bind means
  `127.0.0.1:0` works, a listen error is reported once (exit 1), and a restarted worker picks up
  the same socket with no window where connections are refused (SO_REUSEPORT would drop the
  connections queued on a dying worker's own socket).
* Sessions stay in the worker that created them: a WebSocket (signaling or /udp) lives on one
  connection, and non-trickle HTTP offers are self-contained. Sids, quotas and reservations are
  shared through SESSION_REGISTRY_URL, which config validation requires when N > 1 (exit 2).
* Each worker gets its own contiguous slice of WEBRTC_UDP_PORT_MIN..MAX (sizes differ by at most
  one port; config validation refuses slices under 100 ports).
* The parent forwards SIGTERM/SIGINT to every worker and waits up to
  SHUTDOWN_TIMEOUT + `SHUTDOWN_SLACK_S` (a worker itself gives hypercorn SHUTDOWN_TIMEOUT + 1 s),
  then SIGKILLs stragglers. Exit 0 when every worker exited 0, else 1.
* A worker that exits on its own (crash, or a fatal error) is logged and restarted, at most
  `MAX_RESTARTS` times per `RESTART_WINDOW_S`; beyond that the parent stops the others and exits 1.
  A crashed worker's sessions are gone; their registry leases expire within SESSION_LEASE_TTL.
* `/metrics`: every worker writes its event counters to `<dir>/<pid>.json` every
  `FLUSH_INTERVAL_S` (atomic rename); any worker's `/metrics` renders its own live counters plus the
  other files, so the event family is the sum over workers (a dead worker's last snapshot keeps
  counting, so the sum never goes down). Other workers' counts may lag by up to
  `FLUSH_INTERVAL_S`. The process and Python metrics after the family describe the answering worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from aero_relay.config import Config
from aero_relay.observability.logging import StructLogger, get_logger
from aero_relay.observability.metrics import CounterSource

if TYPE_CHECKING:
    from hypercorn.config import Sockets

__all__ = [
    "FLUSH_INTERVAL_S",
    "MAX_RESTARTS",
    "RESTART_WINDOW_S",
    "AggregatedCounters",
    "WorkerInfo",
    "port_slice",
    "run_workers",
]

FLUSH_INTERVAL_S = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
SHUTDOWN_SLACK_S = 5.0

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


@attrs.frozen
class WorkerInfo:
    """What a worker process knows about its place in the group."""

    index: int
    count: int
    metrics_dir: Path


def port_slice(pmin: int, pmax: int, index: int, count: int) -> tuple[int, int]:
    """Worker `index`'s part of the ICE UDP range [pmin, pmax] ((0, 0) stays unset)."""
    if pmin == 0:
        return 0, 0
    size = pmax - pmin + 1
    base, extra = divmod(size, count)
    start = pmin + index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0) - 1


class AggregatedCounters:
    """A `CounterSource` summing this worker's live counters and the other workers' snapshots."""

    def __init__(self, own: CounterSource, directory: Path, own_pid: int) -> None:
        self._own = own
        self._dir = directory
        self._own_name = f"{own_pid}.json"

    def flush(self) -> None:
        tmp = self._dir / f".{self._own_name}.tmp"
        tmp.write_text(json.dumps(dict(self._own.snapshot())), encoding="utf-8")
        os.replace(tmp, self._dir / self._own_name)

    def snapshot(self) -> Mapping[str, int]:
        total = dict(self._own.snapshot())
        try:
            names = [p for p in self._dir.glob("*.json") if p.name != self._own_name]
        except OSError:
            names = []
        for path in names:
            try:
                counts = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # removed or replaced under us: the next scrape sees it
            for name, count in counts.items():
                if isinstance(count, int):
                    total[name] = total.get(name, 0) + count
        return total

    async def run_flusher(self) -> None:
        try:
            while True:
                self.flush()
                await trio.sleep(FLUSH_INTERVAL_S)
        finally:
            self.flush()  # the final counts of a worker that is shutting down


def _worker_config(cfg: Config, index: int) -> Config:
    pmin, pmax = port_slice(cfg.webrtc_udp_port_min, cfg.webrtc_udp_port_max, index, cfg.workers)
    return attrs.evolve(cfg, webrtc_udp_port_min=pmin, webrtc_udp_port_max=pmax)


def _run_child(cfg: Config, info: WorkerInfo, sockets: Sockets, log: StructLogger) -> int:
    from aero_relay.cli import exit_code_for
    from aero_relay.server import RelayServer

    # Undo the parent's signal setup. SIGINT/SIGTERM stay blocked (pending, not lost) until the
    # server's signal receiver is open: a SIGTERM forwarded early must still be a graceful stop.
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    wcfg = _worker_config(cfg, info.index)
    log.info(
        "worker started",
        worker=info.index,
        pid=os.getpid(),
        webrtc_udp_port_min=wcfg.webrtc_udp_port_min,
        webrtc_udp_port_max=wcfg.webrtc_udp_port_max,
    )
    server = RelayServer(wcfg, handle_signals=True, worker=info, sockets=sockets)
    try:
        trio.run(server.run)
    except BaseException as exc:
        return exit_code_for(exc, log)
    return 0


def _fork_worker(cfg: Config, info: WorkerInfo, sockets: Sockets, log: StructLogger) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _run_child(cfg, info, sockets, log)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_workers(cfg: Config, sockets: Sockets, bound: str) -> int:
    """Fork `cfg.workers` workers serving the pre-bound `sockets`; supervise them until shutdown."""
    log = get_logger("aero_relay")
    metrics_dir = Path(tempfile.mkdtemp(prefix="aero-relay-metrics-"))
    # Block the signals we wait for so none is lost between checks; children unblock them.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    children: dict[int, int] = {}  # pid -> worker index
    restarts: list[float] = []
    stopping = False
    failed = False
    deadline = 0.0

    def spawn(index: int) -> None:
        pid = _fork_worker(cfg, WorkerInfo(index, cfg.workers, metrics_dir), sockets, log)
        children[pid] = index

    def stop_all(sig: int) -> None:
        nonlocal stopping, deadline
        if not stopping:
            stopping = True
            deadline = time.monotonic() + cfg.shutdown_timeout + SHUTDOWN_SLACK_S
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    log.info("starting workers", workers=cfg.workers, pid=os.getpid(), addr=bound)
    try:
        for index in range(cfg.workers):
            spawn(index)
        while children:
            timeout = max(0.0, deadline - time.monotonic()) if stopping else 1.0
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                if not stopping:
                    log.info("shutdown signal received, stopping workers", workers=len(children))
                stop_all(info.si_signo)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                index = children.pop(pid, -1)
                code = _status_code(status)
                if stopping:
                    if code != 0:
                        failed = True
                        log.error("worker failed during shutdown", worker=index, pid=pid, code=code)
                    continue
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW_S]
                log.error("worker exited unexpectedly", worker=index, pid=pid, code=code)
                if len(restarts) >= MAX_RESTARTS:
                    log.error(
                        "workers restarting too often, stopping",
                        restarts=len(restarts),
                        window_s=RESTART_WINDOW_S,
                    )
                    failed = True
                    stop_all(signal.SIGTERM)
                    continue
                restarts.append(now)
                spawn(index)
            if stopping and children and time.monotonic() >= deadline:
                log.error("workers did not stop within the shutdown timeout", workers=len(children))
                failed = True
                stop_all(signal.SIGKILL)
                deadline = time.monotonic() + SHUTDOWN_SLACK_S
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("workers exited", failed=failed)
    return 1 if failed else 0
