"""The quart-trio application: routes, error pages, and the middleware around it."""

from __future__ import annotations

import traceback
from typing import Any

from quart import Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from aero_relay.context import RelayContext
from aero_relay.middleware import ASGIApp, HttpMiddleware
from aero_relay.observability.logging import get_logger
from aero_relay.transports import health, hypercorn_fixes, ice, offer, session, ws_hooks
from aero_relay.transports.http_util import json_response, text_response
from aero_relay.transports.signal_ws import SignalWebSocketEndpoint
from aero_relay.transports.udp_ws import UdpWebSocketEndpoint

__all__ = ["create_app"]

_log = get_logger("aero_relay.http")

# Request bodies are small JSON documents; F-054/F-058 cap offers at 2 MiB.
MAX_BODY_BYTES = 2 << 20


def create_quart_app(ctx: RelayContext) -> QuartTrio:
    app = QuartTrio("aero_relay")
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False  # F-016: OPTIONS without preflight -> 405
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["JSON_SORT_KEYS"] = False

    if ctx.worker_header is not None:
        worker = ctx.worker_header

        @app.after_request
        async def tag_worker(resp: Response) -> Response:
            # Dev-only debugging aid for `--workers N`: which worker process answered.
            resp.headers["X-Aero-Relay-Worker"] = worker
            return resp

    @app.errorhandler(NotFound)
    async def not_found(_err: NotFound) -> Response:
        return text_response("404 page not found\n", 404)  # F-012: Go's stdlib text

    @app.errorhandler(MethodNotAllowed)
    async def method_not_allowed(err: MethodNotAllowed) -> Response:
        resp = text_response("Method Not Allowed\n", 405)
        methods = sorted(set(err.valid_methods or ()))
        if methods:
            resp.headers["Allow"] = ", ".join(methods)
        return resp

    @app.errorhandler(Exception)
    async def panic(err: Exception) -> Response:
        if isinstance(err, HTTPException):
            code = err.code or 500
            return text_response(f"{err.description or err.name}\n", code)
        # F-009: log and answer a plain 500; never a traceback to the client.
        _log.error("panic in http handler", recover=repr(err), stack=traceback.format_exc())
        return text_response("Internal Server Error\n", 500)

    @app.get("/udp", provide_automatic_options=False)
    async def udp_not_upgrade() -> Response:
        # F-081: a plain GET on the WebSocket endpoint.
        body = {"type": "error", "code": "bad_message", "message": "websocket upgrade required"}
        return json_response(body, 400)

    @app.get("/webrtc/signal", provide_automatic_options=False)
    async def signal_not_upgrade() -> Response:
        # F-063: a plain GET on the signaling WebSocket.
        return json_response({"code": "bad_message", "message": "websocket upgrade required"}, 400)

    health.register(app, ctx)
    ice.register(app, ctx)
    session.register(app, ctx)
    offer.register(app, ctx)
    return app


class _WebSocketRouter:
    """Sends WebSocket requests for our raw endpoints past Quart; everything else goes to Quart."""

    def __init__(self, app: ASGIApp, routes: dict[str, ASGIApp]) -> None:
        self._app = app
        self._routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            handler = self._routes.get(scope.get("path", ""))
            if handler is not None:
                await handler(scope, receive, send)
                return
        await self._app(scope, receive, send)


def create_app(ctx: RelayContext) -> ASGIApp:
    """The ASGI callable hypercorn serves: middleware (F-008) around the WebSocket router and Quart."""
    ws_hooks.install()
    hypercorn_fixes.install()
    quart_app = create_quart_app(ctx)
    router = _WebSocketRouter(
        quart_app, {"/udp": UdpWebSocketEndpoint(ctx), "/webrtc/signal": SignalWebSocketEndpoint(ctx)}
    )
    return HttpMiddleware(router, ctx.origin_policy)
