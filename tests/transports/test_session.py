"""`POST /session` against a real server (F-045, F-046, F-051..F-053, F-140)."""

from __future__ import annotations

import re

import trio

from aero_relay.observability.metrics import Event
from tests.conftest import StartRelay
from tests.helpers import mint_jwt

HEX32 = re.compile(r"^[0-9a-f]{32}$")
NOW = 1_700_000_000


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_reservation_is_raw_hex_201(start_relay: StartRelay) -> None:
    """F-052: raw 32-hex id, no newline, not JSON; the request body is ignored."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.post("/session", content=b"{garbage")
    assert r.status_code == 201
    assert HEX32.match(r.text)
    assert "json" not in r.headers["content-type"]
    assert relay.server.ctx.registry.active_count() == 1


async def test_auth_checked_first(start_relay: StartRelay) -> None:
    """F-051."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with relay.client() as c:
        r = await c.post("/session")
        ok = await c.post("/session", headers={"X-API-Key": "k"})
    assert r.status_code == 401
    assert r.content == b'{"code":"unauthorized","message":"unauthorized"}\n'
    assert relay.metrics.value(Event.AUTH_FAILURE) == 1
    assert ok.status_code == 201


async def test_jwt_sid_lock_is_keyed_by_sid_not_token(start_relay: StartRelay) -> None:
    """F-045/F-046: a freshly minted JWT with the same sid is still refused with 409."""
    relay = await start_relay({"AUTH_MODE": "jwt", "JWT_SECRET": "s"}, unix_now=lambda: NOW)
    t1 = mint_jwt("s", {"sid": "user-1", "iat": NOW, "exp": NOW + 60})
    t2 = mint_jwt("s", {"sid": "user-1", "iat": NOW + 1, "exp": NOW + 120})
    other = mint_jwt("s", {"sid": "user-2", "iat": NOW, "exp": NOW + 60})
    async with relay.client() as c:
        assert (await c.post("/session", headers=bearer(t1))).status_code == 201
        dup = await c.post("/session", headers=bearer(t2))
        ok = await c.post("/session", headers=bearer(other))
    assert dup.status_code == 409
    assert dup.content == b'{"code":"session_already_active","message":"session already active"}\n'
    assert ok.status_code == 201


async def test_max_sessions_503_and_metric(start_relay: StartRelay) -> None:
    """F-140/F-046."""
    relay = await start_relay({"MAX_SESSIONS": "2"})
    async with relay.client() as c:
        codes = [(await c.post("/session")).status_code for _ in range(3)]
        last = await c.post("/session")
    assert codes == [201, 201, 503]
    assert last.content == b'{"code":"too_many_sessions","message":"too many sessions"}\n'
    assert relay.metrics.value(Event.TOO_MANY_SESSIONS) == 2


async def test_sid_conflict_checked_before_capacity(start_relay: StartRelay) -> None:
    """F-045: session_already_active wins over too_many_sessions."""
    relay = await start_relay(
        {"AUTH_MODE": "jwt", "JWT_SECRET": "s", "MAX_SESSIONS": "1"}, unix_now=lambda: NOW
    )
    t = mint_jwt("s", {"sid": "only", "iat": NOW, "exp": NOW + 60})
    async with relay.client() as c:
        assert (await c.post("/session", headers=bearer(t))).status_code == 201
        assert (await c.post("/session", headers=bearer(t))).status_code == 409


async def test_reservation_expires_and_frees_slot(start_relay: StartRelay) -> None:
    """F-053 end to end (the exact timing is pinned with a mock clock in tests/relay/test_manager.py)."""
    relay = await start_relay({"MAX_SESSIONS": "1", "SESSION_PREALLOC_TTL": "50ms"})
    async with relay.client() as c:
        assert (await c.post("/session")).status_code == 201
        assert (await c.post("/session")).status_code == 503
        with trio.fail_after(5):
            while relay.server.ctx.registry.active_count():
                await trio.sleep(0.01)
        assert (await c.post("/session")).status_code == 201
