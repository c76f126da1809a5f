"""Leak probes and harnesses shared by the reliability tests.

* :class:`TaskCounter`: a Trio instrument that tracks every live task, so a test can say "no task that
  started after this point is still running".
* :func:`open_fds`: this process's descriptors, from ``/proc/self/fd``.
* :func:`running_relay`: an in-process relay whose ``run()`` the test can wait out (unlike the
  ``start_relay`` fixture), so leak checks can also be made after a full server shutdown.
* :class:`PipelineRecorder`: records every ``/udp`` datagram pipeline the relay builds, so tests can
  see binding counts and socket objects without reaching into the endpoint's locals.
* :func:`relay_subprocess`: ``python -m aero_relay`` on a free loopback port, for the tests that need
  a real process (signals, RSS, exit code).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from aero_relay.relay.binding import Binding
from aero_relay.relay.pipeline import DatagramPipeline
from aero_relay.server import RelayServer
from aero_relay.transports import udp_ws
from tests.conftest import BASE_ENV, RunningRelay, free_env, make_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class TaskCounter(trio.abc.Instrument):
    """Every live Trio task, with spawn and exit totals."""

    def __init__(self) -> None:
        self.live: set[trio.lowlevel.Task] = set()
        self.spawned = 0
        self.exited = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.live.add(task)
        self.spawned += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live.discard(task)
        self.exited += 1

    def snapshot(self) -> frozenset[trio.lowlevel.Task]:
        return frozenset(self.live)

    def since(self, baseline: frozenset[trio.lowlevel.Task]) -> list[str]:
        """Names of live tasks that are not in ``baseline``."""
        return sorted(t.name for t in self.live - baseline)


@asynccontextmanager
async def task_counter() -> AsyncIterator[TaskCounter]:
    counter = TaskCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)


def open_fds() -> dict[int, str]:
    """This process's descriptors and what they point at."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed between listdir and readlink (the listdir fd itself)
            continue
    return out


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
    assert predicate(), f"timed out after {timeout}s waiting for {what or predicate}"


async def fds_back_to(baseline: dict[int, str], timeout: float = 5.0) -> None:
    """Wait until no descriptor beyond ``baseline`` is open (new ones listed on failure)."""

    def extra() -> dict[int, str]:
        return {fd: target for fd, target in open_fds().items() if fd not in baseline}

    with trio.move_on_after(timeout):
        while extra():
            await trio.sleep(0.01)
    assert not extra(), f"descriptors left open: {extra()}"


class PipelineRecorder:
    """Wraps ``udp_ws.DatagramPipeline`` so every pipeline and every binding it opens is kept."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pipelines: list[DatagramPipeline] = []
        self.bindings: list[Binding] = []
        recorder = self

        class Recording(DatagramPipeline):
            def __init__(self, **kw: Any) -> None:
                super().__init__(**kw)
                recorder.pipelines.append(self)

            def _open_binding(self, guest_port: int, now: float) -> Binding | None:
                b = super()._open_binding(guest_port, now)
                if b is not None:
                    recorder.bindings.append(b)
                return b

        monkeypatch.setattr(udp_ws, "DatagramPipeline", Recording)

    def sockets(self) -> list[socket.socket]:
        return [s for b in self.bindings for s in (b.sock4, b.sock6) if s is not None]

    def all_closed(self) -> bool:
        return all(s.fileno() == -1 for s in self.sockets()) and all(p.closed for p in self.pipelines)


@asynccontextmanager
async def running_relay(env: Mapping[str, str] | None = None, **kw: Any) -> AsyncIterator[RunningRelay]:
    """An in-process relay; on exit it is shut down and ``run()`` has returned."""
    server = RelayServer(make_config(env), **kw)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.run)
        url = next(b for b in bound if b.startswith("http://"))
        try:
            yield RunningRelay(server, url)
        finally:
            server.request_shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def relay_subprocess(
    env: Mapping[str, str], *, log: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m aero_relay`` on a free loopback port; yields (process, "127.0.0.1:port") once
    ``/readyz`` answers. The process is killed on exit if it is still running."""
    port = free_port()
    full_env = {**free_env(), **BASE_ENV, "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR": f"127.0.0.1:{port}", **env}
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "aero_relay"],
        env=full_env,
        cwd=PROJECT_ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        host_port = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"relay exited early with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("relay did not become ready")
            time.sleep(0.05)
        yield proc, host_port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if log is not None and not isinstance(out, int):
            out.close()


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def proc_fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
