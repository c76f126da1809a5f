"""ASGI middleware in the original's order (F-008): recover -> no-store for /webrtc/ice ->
request id -> access log -> origin policy -> the Quart app.

It runs for HTTP and WebSocket scopes alike, so the origin policy guards every path (including
unknown ones and WebSocket upgrades) and every request gets exactly one `http_request` record.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from aero_relay.core.origin import OriginPolicy, decode_header_value
from aero_relay.observability.logging import get_logger
from aero_relay.transports.http_util import JSON_CONTENT_TYPE, TEXT_CONTENT_TYPE, go_json

__all__ = ["HttpMiddleware", "request_id_of"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: Quart and hypercorn each declare their own (incompatible) TypedDict ASGI types.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_log = get_logger("aero_relay.http")

NO_STORE_PATH = "/webrtc/ice"
_NO_STORE_HEADERS = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache"), (b"expires", b"0")]
_PREFLIGHT_METHODS = b"GET,POST,PUT,PATCH,DELETE,OPTIONS"
REQUEST_ID_KEY = "aero.request_id"


def request_id_of(scope: Scope) -> str:
    return str(scope.get(REQUEST_ID_KEY, ""))


def _header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in headers if k == name]


def _remote_addr(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return ""
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HttpMiddleware:
    def __init__(self, app: ASGIApp, origin_policy: OriginPolicy) -> None:
        self._app = app
        self._origin = origin_policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        started_at = time.monotonic()
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        path = scope.get("path", "")
        method = scope.get("method", "GET") if kind == "http" else "GET"

        rid_values = _header_values(headers, b"x-request-id")
        request_id = rid_values[0] if rid_values and rid_values[0] != "" else os.urandom(16).hex()
        scope[REQUEST_ID_KEY] = request_id

        extra: list[tuple[bytes, bytes]] = []
        if path == NO_STORE_PATH:
            extra.extend(_NO_STORE_HEADERS)
        extra.append((b"x-request-id", request_id.encode("latin-1")))

        state = {"status": 0, "started": False}
        response_start = "http.response.start" if kind == "http" else "websocket.http.response.start"
        response_body = "http.response.body" if kind == "http" else "websocket.http.response.body"

        async def send_wrapped(message: Message) -> None:
            mtype = message["type"]
            if mtype == response_start:
                state["status"] = int(message["status"])
                state["started"] = True
                message = dict(message)
                message["headers"] = [*extra, *list(message.get("headers") or [])]
            elif mtype == "websocket.accept":
                state["status"] = 101
                state["started"] = True
            elif mtype == "websocket.close" and not state["started"]:
                # Closing before accept makes the server answer 403 itself.
                state["status"] = 403
                state["started"] = True
            elif mtype == "http.response.body" and not message.get("more_body", False):
                # quart-trio cancels its request task as soon as hypercorn reports the disconnect
                # that follows the last body chunk; unshielded, that cancellation can land inside
                # hypercorn's keep-alive bookkeeping and leave the connection neither idle nor
                # closed, holding up graceful shutdown for the whole timeout.
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        async def respond(
            status: int, body: bytes, content_type: str | None, more: list[tuple[bytes, bytes]]
        ) -> None:
            hdrs = list(more)
            if content_type is not None:
                hdrs.append((b"content-type", content_type.encode()))
            if content_type == TEXT_CONTENT_TYPE:
                hdrs.append((b"x-content-type-options", b"nosniff"))
            hdrs.append((b"content-length", str(len(body)).encode()))
            await send_wrapped({"type": response_start, "status": status, "headers": hdrs})
            await send_wrapped({"type": response_body, "body": body, "more_body": False})

        try:
            # The origin rules work on the raw header bytes, like Go (UTF-8, bad bytes kept).
            origins = [decode_header_value(v) for k, v in headers if k == b"origin"]
            hosts = [decode_header_value(v) for k, v in headers if k == b"host"]
            decision = self._origin.check(origins, hosts[0] if hosts else "")
            if not decision.allowed:
                body = go_json({"code": "forbidden", "message": "forbidden"}).encode()
                await respond(403, body, JSON_CONTENT_TYPE, [])
                return
            if decision.cors_origin is not None:
                extra.extend(
                    [
                        (b"access-control-allow-origin", decision.cors_origin.encode("latin-1")),
                        (b"access-control-allow-credentials", b"true"),
                        (b"access-control-expose-headers", b"X-Request-ID"),
                        (b"vary", b"Origin"),
                    ]
                )
                acrm = _header_values(headers, b"access-control-request-method")
                if kind == "http" and method == "OPTIONS" and acrm and acrm[0].strip() != "":
                    pre = [(b"access-control-allow-methods", _PREFLIGHT_METHODS)]
                    acrh = _header_values(headers, b"access-control-request-headers")
                    if acrh and acrh[0].strip():
                        pre.append((b"access-control-allow-headers", acrh[0].strip().encode("latin-1")))
                    pre.append((b"access-control-max-age", b"600"))
                    await respond(204, b"", None, pre)
                    return
            await self._app(scope, receive, send_wrapped)
        except Exception as err:  # F-009: recover, never a traceback to the client
            _log.error("panic in http handler", recover=repr(err), stack=traceback.format_exc())
            if not state["started"]:
                with contextlib.suppress(Exception):  # the client may already be gone
                    await respond(500, b"Internal Server Error\n", TEXT_CONTENT_TYPE, [])
        finally:
            if kind == "http" or state["started"]:
                _log.info(
                    "http_request",
                    method=method,
                    path=path,
                    status=state["status"] or 500,
                    duration_ms=int((time.monotonic() - started_at) * 1000),
                    remote_addr=_remote_addr(scope),
                    request_id=request_id,
                )
