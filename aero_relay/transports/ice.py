"""`GET /webrtc/ice`: the ICE server list for browsers, with TURN REST credentials (F-029..F-035).

The no-store headers are added by the middleware on every response for this path (F-029).
"""

from __future__ import annotations

from quart import Quart, Response, request

from aero_relay.context import RelayContext
from aero_relay.core.auth import AuthError
from aero_relay.core.ice import inject_turn_rest
from aero_relay.core.turnrest import TurnRestError, new_session_id, turn_rest_credential
from aero_relay.observability.logging import get_logger
from aero_relay.observability.metrics import Event
from aero_relay.transports.auth_http import authorize_request
from aero_relay.transports.http_util import json_error, json_response

__all__ = ["register"]

_log = get_logger("aero_relay.ice")


def register(app: Quart, ctx: RelayContext) -> None:
    @app.get("/webrtc/ice", provide_automatic_options=False)
    async def webrtc_ice() -> Response:
        cfg = ctx.config
        if cfg.auth_mode != "none":
            # F-030/F-209: auth first (before the ICE config error); no sid lock is taken here.
            try:
                authorize_request(ctx, request)
            except AuthError:
                ctx.metrics.inc(Event.AUTH_FAILURE)
                return json_error(401, "unauthorized", "unauthorized")
            except Exception as err:
                _log.error("webrtc ice auth error", err=str(err))
                return json_error(500, "internal_error", "internal error")
        if cfg.ice.error:
            return json_response({"error": cfg.ice.error}, 503)  # F-031: no "code" field
        servers = cfg.ice.servers
        if cfg.turn_rest_enabled:
            try:
                cred = turn_rest_credential(
                    secret=cfg.turn_rest_shared_secret,
                    ttl_seconds=cfg.turn_rest_ttl_seconds,
                    prefix=cfg.turn_rest_username_prefix,
                    now_unix=ctx.unix_seconds(),
                    session_id=new_session_id(ctx.rand(16)),
                )
            except TurnRestError as err:
                _log.error("turn rest credential generation failed", err=str(err))
                return json_error(500, "internal_error", "internal error")
            servers = inject_turn_rest(servers, cred.username, cred.credential)
        return json_response({"iceServers": [s.to_json() for s in servers]})
