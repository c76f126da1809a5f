"""Shared fixtures: a real relay server on a free loopback port, and HTTP clients for it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import httpx
import pytest
import trio

from aero_relay.config import Config, load
from aero_relay.observability.metrics import Metrics
from aero_relay.server import RelayServer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VECTORS = PROJECT_ROOT.parent / "shared" / "vectors"

# A minimal environment that starts: no secrets needed, loopback, free port.
BASE_ENV: dict[str, str] = {
    "AUTH_MODE": "none",
    "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR": "127.0.0.1:0",
}


def make_config(env: Mapping[str, str] | None = None, argv: list[str] | None = None) -> Config:
    merged = dict(BASE_ENV)
    merged.update(env or {})
    return load(merged, argv or [])


class RunningRelay:
    def __init__(self, server: RelayServer, base_url: str) -> None:
        self.server = server
        self.base_url = base_url
        self.host_port = base_url.split("://", 1)[1]

    @property
    def metrics(self) -> Metrics:
        return self.server.metrics

    def client(self, **kw: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=10, **kw)  # type: ignore[arg-type]


StartRelay = Callable[..., Awaitable[RunningRelay]]


@pytest.fixture
async def start_relay(nursery: trio.Nursery) -> AsyncIterator[StartRelay]:
    """Start an in-process relay (real hypercorn on a real socket) with env overrides."""
    servers: list[RelayServer] = []

    async def start(env: Mapping[str, str] | None = None, **kw: object) -> RunningRelay:
        server = RelayServer(make_config(env), **kw)  # type: ignore[arg-type]
        bound = await nursery.start(server.run)
        servers.append(server)
        url = next(b for b in bound if b.startswith("http://"))
        return RunningRelay(server, url)

    yield start
    for s in servers:
        s.request_shutdown()


@pytest.fixture
def vectors_dir() -> Path:
    return VECTORS


def free_env() -> dict[str, str]:
    """The process environment without variables that would change relay config in subprocesses."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AERO_", "AUTH_", "API_KEY", "JWT_"))}
