"""The process-wide state handlers share: config, metrics, registry, auth, origin, readiness."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from aero_relay.buildinfo import BuildInfo
from aero_relay.config import Config
from aero_relay.core.auth import Authenticator
from aero_relay.core.origin import OriginPolicy
from aero_relay.observability.metrics import CounterSource, Metrics
from aero_relay.relay.manager import SessionRegistry

if TYPE_CHECKING:
    from aero_relay.webrtc.bridge import Bridge

__all__ = ["RelayContext"]


@attrs.define(eq=False)
class RelayContext:
    config: Config
    metrics: Metrics
    registry: SessionRegistry
    build: BuildInfo
    authenticator: Authenticator = attrs.field(init=False)
    origin_policy: OriginPolicy = attrs.field(init=False)
    # Wall clock in Unix seconds (JWT exp/nbf, TURN REST expiry); injectable for tests.
    unix_now: Callable[[], float] = time.time
    rand: Callable[[int], bytes] = os.urandom
    ready: bool = False
    shutting_down: bool = False
    # Cancel scopes of live sessions (WebSocket and WebRTC), so shutdown can cancel them all.
    sessions: set[trio.CancelScope] = attrs.field(factory=set)
    # Set by the server: the aiortc bridge, and the nursery that holds sessions created by
    # plain HTTP requests (POST /offer, /webrtc/offer), which outlive their request.
    bridge: Bridge | None = None
    session_nursery: trio.Nursery | None = None
    # Multi-worker mode (`--workers N`): what /metrics renders (the sum over workers; None =
    # `metrics`), and the value of the dev-only `X-Aero-Relay-Worker` response header (None = none).
    metrics_view: CounterSource | None = None
    worker_header: str | None = None

    def __attrs_post_init__(self) -> None:
        cfg = self.config
        self.authenticator = Authenticator(
            mode=cfg.auth_mode,
            api_key=cfg.api_key,
            jwt_secret=cfg.jwt_secret.encode("utf-8", "surrogateescape"),
        )
        self.origin_policy = OriginPolicy(cfg.allowed_origins)

    def unix_seconds(self) -> int:
        return int(self.unix_now())

    def open_session_scope(self) -> trio.CancelScope:
        """A cancel scope for a new session, registered so shutdown can cancel it.

        Registered before the session is announced to its client, and cancelled at once when
        shutdown has already begun. The caller must `close_session_scope` it in a finally block.
        """
        scope = trio.CancelScope()
        self.sessions.add(scope)
        if self.shutting_down:
            scope.cancel()
        return scope

    def close_session_scope(self, scope: trio.CancelScope) -> None:
        self.sessions.discard(scope)

    def cancel_all_sessions(self) -> None:
        for scope in list(self.sessions):
            scope.cancel()
