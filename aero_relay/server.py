"""The root nursery: hypercorn serving the app, the session registry, and graceful shutdown.

Shutdown order (F-005, fixing F-207): on SIGINT/SIGTERM (or `request_shutdown()`), `/readyz`
turns 503 at once, every live session's cancel scope is cancelled (each session's `finally`
sends its own close frame), reservations are dropped, then hypercorn stops listening and waits
up to AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT for connections to finish.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

if TYPE_CHECKING:
    from hypercorn.config import Sockets

from aero_relay.app import create_app
from aero_relay.buildinfo import BuildInfo, load_build_info
from aero_relay.config import Config, split_listen_addr
from aero_relay.context import RelayContext
from aero_relay.observability.logging import GoDuration, get_logger
from aero_relay.observability.metrics import Metrics
from aero_relay.relay.manager import SessionRegistry
from aero_relay.relay.redis_registry import registry_from_config
from aero_relay.startup_warnings import startup_warnings
from aero_relay.webrtc.bridge import open_bridge
from aero_relay.workers import AggregatedCounters, WorkerInfo

__all__ = ["ListenError", "RelayServer", "bind_listener"]

_log = get_logger("aero_relay")


class ListenError(Exception):
    """The HTTP listener could not be opened (exit code 1, F-002)."""


def _hypercorn_config(cfg: Config) -> HyperConfig:
    hc = HyperConfig()
    host, port = split_listen_addr(cfg.listen_addr)
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = None  # one `http_request` record per request comes from our middleware (F-011)
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = cfg.shutdown_timeout
    hc.include_server_header = False
    hc.include_date_header = True
    # The original uses ReadHeaderTimeout 5s and no other read timeout.
    hc.keep_alive_timeout = 5
    hc.h11_max_incomplete_size = 1 << 20
    return hc


def bind_listener(cfg: Config) -> Sockets:
    """Bind and listen on LISTEN_ADDR; a failure is logged and raised as `ListenError` (exit 1, F-002)."""
    hc = _hypercorn_config(cfg)
    try:
        sockets = hc.create_sockets()
        for sock in sockets.insecure_sockets:
            sock.listen(hc.backlog)
    except OSError as err:
        _log.error("failed to listen", err=str(err), addr=cfg.listen_addr)
        raise ListenError(str(err)) from err
    return sockets


class RelayServer:
    """One relay process. `run()` serves until shutdown is requested, then returns."""

    def __init__(
        self,
        cfg: Config,
        *,
        metrics: Metrics | None = None,
        registry: SessionRegistry | None = None,
        build: BuildInfo | None = None,
        unix_now: Callable[[], float] = time.time,
        handle_signals: bool = False,
        worker: WorkerInfo | None = None,
        sockets: Sockets | None = None,
    ) -> None:
        self.config = cfg
        self.metrics = metrics or Metrics()
        self.ctx = RelayContext(
            config=cfg,
            metrics=self.metrics,
            # Scale-out: in-memory unless SESSION_REGISTRY_URL names a shared Redis registry.
            registry=registry or registry_from_config(cfg, self.metrics),
            build=build or load_build_info(),
            unix_now=unix_now,
        )
        self._handle_signals = handle_signals
        self._sockets = sockets  # pre-bound by the `--workers` parent, shared by every worker
        self._aggregate: AggregatedCounters | None = None
        if worker is not None:
            self._aggregate = AggregatedCounters(self.metrics, worker.metrics_dir, os.getpid())
            self.ctx.metrics_view = self._aggregate
            if cfg.mode == "dev":
                self.ctx.worker_header = f"{worker.index} pid={os.getpid()}"
        self._shutdown = trio.Event()
        self.bound: list[str] = []

    def request_shutdown(self) -> None:
        """Begin graceful shutdown (what SIGINT/SIGTERM do)."""
        if self.ctx.shutting_down:
            return
        self.ctx.shutting_down = True  # /readyz -> 503 before anything closes
        self.ctx.cancel_all_sessions()
        self._shutdown.set()

    def _log_startup(self) -> None:
        cfg = self.config
        _log.info(
            "starting aero-webrtc-udp-relay",
            listen_addr=cfg.listen_addr,
            public_base_url=cfg.public_base_url,
            mode=cfg.mode,
            max_datagram_payload_bytes=cfg.max_datagram_payload_bytes,
            l2_max_message_bytes=cfg.l2_max_message_bytes,
            webrtc_datachannel_max_message_bytes=cfg.webrtc_datachannel_max_message_bytes,
            webrtc_sctp_max_receive_buffer_bytes=cfg.webrtc_sctp_max_receive_buffer_bytes,
            webrtc_session_connect_timeout=GoDuration(round(cfg.webrtc_session_connect_timeout * 1e9)),
            udp_inbound_filter_mode=cfg.udp_inbound_filter_mode,
            max_sessions=cfg.max_sessions,
            prefer_v2=cfg.prefer_v2,
            l2_backend_ws_url_set=cfg.l2_enabled,
            l2_backend_ws_host=cfg.l2_backend_ws_host,
        )
        for w in startup_warnings(cfg):
            _log.warn(w.message, warning_code=w.code, **dict(w.fields), mode=cfg.mode)
        if cfg.ice.error:
            _log.error("invalid ICE server configuration (readyz reports 503)", err=cfg.ice.error)

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            # A `--workers` child starts with both blocked (aero_relay.workers); no-op otherwise.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            async for _ in signals:
                _log.info("shutdown signal received")
                self.request_shutdown()

    async def run(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        self._log_startup()
        app = create_app(self.ctx)
        hc = _hypercorn_config(self.config)

        async def shutdown_trigger() -> None:
            await self._shutdown.wait()
            await self.ctx.registry.release_all_reservations()

        hypercorn_done = trio.Event()
        # Bind before serving so a listen failure is a plain OSError here (exit 1, F-002).
        sockets = self._sockets if self._sockets is not None else bind_listener(self.config)

        async def run_hypercorn(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await worker_serve(
                    wrap_app(app, hc.wsgi_max_body_size, "asgi"),
                    hc,
                    sockets=sockets,
                    shutdown_trigger=shutdown_trigger,
                    task_status=task_status,
                )
            finally:
                hypercorn_done.set()

        async with open_bridge() as bridge, trio.open_nursery() as nursery:
            # Everything that may touch aiortc starts inside the bridge (tasks inherit its loop).
            self.ctx.bridge = bridge
            self.ctx.session_nursery = nursery
            if self._handle_signals:
                nursery.start_soon(self._watch_signals)
            await nursery.start(self.ctx.registry.run)
            if self._aggregate is not None:
                nursery.start_soon(self._aggregate.run_flusher)
            self.bound = await nursery.start(run_hypercorn)
            self.ctx.ready = True
            _log.info("http server serving", addr=", ".join(self.bound))
            task_status.started(self.bound)
            await self._shutdown.wait()
            # hypercorn returns once connections finish or its graceful timeout has passed.
            with trio.move_on_after(self.config.shutdown_timeout + 1.0):
                await hypercorn_done.wait()
            if not hypercorn_done.is_set():
                _log.error("http server shutdown failed", err="shutdown timeout exceeded")
            nursery.cancel_scope.cancel()
        self.ctx.bridge = None
        self.ctx.session_nursery = None
        _log.info("http server exited after shutdown")
