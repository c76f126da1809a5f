"""`/healthz`, `/readyz`, `/version`, `/metrics` (F-025..F-028)."""

from __future__ import annotations

from quart import Quart, Response

from aero_relay.context import RelayContext
from aero_relay.observability.metrics import CONTENT_TYPE, render_all
from aero_relay.transports.http_util import json_response

__all__ = ["register"]


def register(app: Quart, ctx: RelayContext) -> None:
    @app.get("/healthz", provide_automatic_options=False)
    async def healthz() -> Response:
        return json_response({"ok": True})

    @app.get("/readyz", provide_automatic_options=False)
    async def readyz() -> Response:
        # Go encodes a map here, so keys are sorted: {"error":...,"ready":false} (F-013, F-026).
        if ctx.config.ice.error:
            return json_response({"error": ctx.config.ice.error, "ready": False}, 503)
        if not ctx.ready or ctx.shutting_down:
            return json_response({"ready": False}, 503)
        return json_response({"ready": True})

    @app.get("/version", provide_automatic_options=False)
    async def version() -> Response:
        return json_response({"commit": ctx.build.commit, "buildTime": ctx.build.build_time})

    @app.get("/metrics", provide_automatic_options=False)
    async def metrics() -> Response:
        # F-203: unauthenticated, like the original; the origin middleware still applies.
        return Response(render_all(ctx.metrics_view or ctx.metrics), status=200, content_type=CONTENT_TYPE)
