"""`POST /session`: a short-lived session reservation (F-051..F-053)."""

from __future__ import annotations

from quart import Quart, Response, request

from aero_relay.context import RelayContext
from aero_relay.core.auth import AuthError
from aero_relay.observability.logging import get_logger
from aero_relay.observability.metrics import Event
from aero_relay.relay.manager import (
    SessionAlreadyActiveError,
    SessionRegistryError,
    TooManySessionsError,
)
from aero_relay.transports.auth_http import authorize_request
from aero_relay.transports.http_util import TEXT_CONTENT_TYPE, json_error

__all__ = ["register", "registry_error_response"]

_log = get_logger("aero_relay.session")


def registry_error_response(ctx: RelayContext, err: SessionRegistryError) -> Response:
    """F-046: 409 session_already_active, 503 too_many_sessions, 503 registry_unavailable, else 500."""
    if isinstance(err, SessionAlreadyActiveError):
        return json_error(409, err.code, err.message)
    if isinstance(err, TooManySessionsError):
        ctx.metrics.inc(Event.TOO_MANY_SESSIONS)
        return json_error(503, err.code, err.message)
    if err.code == "registry_unavailable":
        return json_error(503, err.code, err.message)
    return json_error(500, "internal_error", "internal error")


def register(app: Quart, ctx: RelayContext) -> None:
    @app.post("/session", provide_automatic_options=False)
    async def create_session() -> Response:
        try:
            auth = authorize_request(ctx, request)  # F-051: auth before anything else
        except AuthError:
            ctx.metrics.inc(Event.AUTH_FAILURE)
            return json_error(401, "unauthorized", "unauthorized")
        except Exception as err:
            _log.error("session auth error", err=str(err))
            return json_error(500, "internal_error", "internal error")
        try:
            lease = await ctx.registry.reserve(auth.session_key, ctx.config.session_prealloc_ttl)
        except SessionRegistryError as err:
            return registry_error_response(ctx, err)
        # F-052: the raw 32-hex id, no newline, no JSON content type.
        return Response(lease.session_id, status=201, content_type=TEXT_CONTENT_TYPE)
