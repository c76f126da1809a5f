"""Middleware against a real server: request id, origin/CORS, preflight, errors (F-008..F-016)."""

from __future__ import annotations

import re

import httpx
import pytest
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from aero_relay.core.origin import OriginPolicy
from aero_relay.middleware import HttpMiddleware, Receive, Scope, Send
from tests.conftest import StartRelay
from tests.helpers import raw_http

HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def test_request_id_generated_as_32_hex(start_relay: StartRelay) -> None:
    """F-010."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/healthz")
    assert HEX32.match(r.headers["x-request-id"])


async def test_request_id_kept_as_is(start_relay: StartRelay) -> None:
    """F-010: a non-empty X-Request-ID is kept without checks."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/nope", headers={"X-Request-ID": "my id/1"})
    assert r.headers["x-request-id"] == "my id/1"


async def test_unknown_path_is_go_text_404(start_relay: StartRelay) -> None:
    """F-012."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/does/not/exist")
    assert r.status_code == 404
    assert r.content == b"404 page not found\n"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


async def test_wrong_method_is_405_with_allow(start_relay: StartRelay) -> None:
    """F-012."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.post("/healthz")
        s = await c.get("/session")
    assert r.status_code == 405
    assert r.content == b"Method Not Allowed\n"
    assert r.headers["allow"] == "GET, HEAD"
    assert s.status_code == 405
    assert s.headers["allow"] == "POST"


async def test_no_origin_means_no_cors_headers(start_relay: StartRelay) -> None:
    """F-014."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/healthz")
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    blank = await raw_http(
        relay.host_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin:   \r\nConnection: close\r\n\r\n"
    )
    assert blank.startswith(b"HTTP/1.1 200")
    assert b"access-control-allow-origin" not in blank.lower()


async def test_same_host_origin_allowed_with_cors_headers(start_relay: StartRelay) -> None:
    """F-015, F-024: default policy = same host:port; scheme not compared."""
    relay = await start_relay()
    origin = "https://" + relay.host_port.upper().replace("127.0.0.1", "127.0.0.1")
    async with relay.client() as c:
        r = await c.get("/healthz", headers={"Origin": origin})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://" + relay.host_port
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-expose-headers"] == "X-Request-ID"
    assert "Origin" in r.headers.get_list("vary")


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/udp", "/no/such/path", "/webrtc/ice"])
async def test_cross_origin_forbidden_on_every_path(start_relay: StartRelay, path: str) -> None:
    """F-008/F-015: the origin policy applies to every path."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get(path, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert r.content == b'{"code":"forbidden","message":"forbidden"}\n'
    assert r.headers["content-type"] == "application/json"


async def test_multiple_origin_headers_forbidden(start_relay: StartRelay) -> None:
    """F-014."""
    relay = await start_relay({"ALLOWED_ORIGINS": "*"})
    async with relay.client() as c:
        r = await c.get(
            "/healthz", headers=[("Origin", "https://a.example"), ("Origin", "https://a.example")]
        )
    assert r.status_code == 403


async def test_invalid_origin_forbidden_even_with_wildcard(start_relay: StartRelay) -> None:
    """F-015/F-023: `*` still needs a valid origin."""
    relay = await start_relay({"ALLOWED_ORIGINS": "*"})
    async with relay.client() as c:
        bad = await c.get("/healthz", headers={"Origin": "https://a.example/path"})
        good = await c.get("/healthz", headers={"Origin": "HTTPS://A.Example:443"})
    assert bad.status_code == 403
    assert good.status_code == 200
    assert good.headers["access-control-allow-origin"] == "https://a.example"


async def test_null_origin_only_when_listed(start_relay: StartRelay) -> None:
    """F-015/F-023/F-024."""
    default = await start_relay()
    listed = await start_relay({"ALLOWED_ORIGINS": "null,https://x.example"})
    async with default.client() as c:
        assert (await c.get("/healthz", headers={"Origin": "null"})).status_code == 403
    async with listed.client() as c:
        r = await c.get("/healthz", headers={"Origin": "null"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "null"


async def test_preflight_on_any_path(start_relay: StartRelay) -> None:
    """F-016: 204, methods, echoed trimmed headers, max-age; the route is not called."""
    relay = await start_relay({"ALLOWED_ORIGINS": "https://app.example"})
    async with relay.client() as c:
        r = await c.options(
            "/anything/at/all",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert r.status_code == 204
    assert r.headers["access-control-allow-methods"] == "GET,POST,PUT,PATCH,DELETE,OPTIONS"
    assert r.headers["access-control-allow-headers"] == "authorization, content-type"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_options_without_request_method_falls_through_to_405(start_relay: StartRelay) -> None:
    """F-016."""
    relay = await start_relay({"ALLOWED_ORIGINS": "https://app.example"})
    async with relay.client() as c:
        r = await c.options("/healthz", headers={"Origin": "https://app.example"})
    assert r.status_code == 405


async def _serve_app(nursery: trio.Nursery, app: object) -> str:
    hc = HyperConfig()
    hc.bind = ["127.0.0.1:0"]
    hc.accesslog = None
    bound = await nursery.start(lambda task_status: serve(app, hc, task_status=task_status))  # type: ignore[arg-type]
    return str(bound[0])


async def test_panic_is_recovered_as_plain_500(nursery: trio.Nursery) -> None:
    """F-009: a handler exception becomes `Internal Server Error` text, never a traceback."""

    async def boom(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("secret internals")

    url = await _serve_app(nursery, HttpMiddleware(boom, OriginPolicy(())))
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/webrtc/ice")
        again = await c.get("/healthz")
    assert r.status_code == 500
    assert r.content == b"Internal Server Error\n"
    assert r.headers["cache-control"] == "no-store"  # F-029: no-store survives a panic
    assert "secret" not in r.text
    assert again.status_code == 500  # the server keeps serving


async def test_route_exception_is_recovered(start_relay: StartRelay) -> None:
    """F-009 through the real Quart app: a failing route gives the plain 500 and the server lives on."""
    relay = await start_relay({"TURN_REST_SHARED_SECRET": "s3cret", "AERO_TURN_URLS": "turn:t.example:3478"})

    def broken_clock() -> float:
        raise RuntimeError("clock exploded")

    relay.server.ctx.unix_now = broken_clock
    async with relay.client() as c:
        r = await c.get("/webrtc/ice")
        ok = await c.get("/healthz")
    assert r.status_code == 500
    assert r.content == b"Internal Server Error\n"
    assert r.headers["pragma"] == "no-cache"
    assert "exploded" not in r.text
    assert ok.status_code == 200
