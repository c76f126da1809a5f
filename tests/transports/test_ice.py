"""`GET /webrtc/ice` against a real server (F-029..F-035, F-209)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from aero_relay.observability.metrics import Event
from tests.conftest import StartRelay
from tests.helpers import mint_jwt

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache", "expires": "0"}
FIXED_NOW = 1_700_000_000


def assert_no_store(headers: object) -> None:
    for k, v in NO_STORE.items():
        assert headers[k] == v  # type: ignore[index]


async def test_empty_list_is_array_not_null(start_relay: StartRelay) -> None:
    """F-032."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/webrtc/ice")
    assert r.status_code == 200
    assert r.content == b'{"iceServers":[]}\n'
    assert_no_store(r.headers)


async def test_servers_from_json_with_empty_fields_omitted(start_relay: StartRelay) -> None:
    """F-032: username/credential omitted when empty."""
    servers = [
        {"urls": "stun:stun.example:3478"},
        {"urls": ["turn:turn.example:3478?transport=udp"], "username": "u", "credential": "p"},
    ]
    relay = await start_relay({"AERO_ICE_SERVERS_JSON": json.dumps(servers)})
    async with relay.client() as c:
        r = await c.get("/webrtc/ice")
    assert r.json() == {
        "iceServers": [
            {"urls": ["stun:stun.example:3478"]},
            {"urls": ["turn:turn.example:3478?transport=udp"], "username": "u", "credential": "p"},
        ]
    }


async def test_convenience_vars(start_relay: StartRelay) -> None:
    relay = await start_relay(
        {
            "AERO_STUN_URLS": "stun:a.example:3478, stun:b.example:3478",
            "AERO_TURN_URLS": "turn:t.example:3478",
            "AERO_TURN_USERNAME": " user ",
            "AERO_TURN_CREDENTIAL": "pass",
        }
    )
    async with relay.client() as c:
        r = await c.get("/webrtc/ice")
    assert r.json()["iceServers"] == [
        {"urls": ["stun:a.example:3478", "stun:b.example:3478"]},
        {"urls": ["turn:t.example:3478"], "username": "user", "credential": "pass"},
    ]


async def test_turn_rest_credentials_injected_coturn_format(start_relay: StartRelay) -> None:
    """F-033/F-034: one credential per request, on every TURN server, coturn --use-auth-secret format."""
    secret = "coturn-shared-secret"
    servers = [
        {"urls": ["stun:s.example:3478"]},
        {"urls": ["turn:t1.example:3478"]},
        {"urls": ["turns:t2.example:5349"], "username": "stale", "credential": "stale"},
    ]
    relay = await start_relay(
        {
            "AERO_ICE_SERVERS_JSON": json.dumps(servers),
            "TURN_REST_SHARED_SECRET": secret,
            "TURN_REST_TTL_SECONDS": "600",
            "TURN_REST_USERNAME_PREFIX": "relay",
        },
        unix_now=lambda: FIXED_NOW + 0.9,
    )
    async with relay.client() as c:
        first = (await c.get("/webrtc/ice")).json()["iceServers"]
        second = (await c.get("/webrtc/ice")).json()["iceServers"]
    assert first[0] == {"urls": ["stun:s.example:3478"]}
    user1, cred1 = first[1]["username"], first[1]["credential"]
    assert first[2]["username"] == user1 and first[2]["credential"] == cred1
    expiry, prefix, rid = user1.split(":")
    assert int(expiry) == FIXED_NOW + 600
    assert prefix == "relay"
    assert len(rid) == 32 and int(rid, 16) >= 0
    expected = base64.b64encode(hmac.new(secret.encode(), user1.encode(), hashlib.sha1).digest()).decode()
    assert cred1 == expected and len(cred1) == 28
    assert second[1]["username"] != user1  # a fresh random id per request


@pytest.mark.parametrize("mode", ["api_key", "jwt"])
async def test_auth_required_when_mode_is_not_none(start_relay: StartRelay, mode: str) -> None:
    """F-030: 401 unauthorized + auth_failure, with no-store headers."""
    env = {"AUTH_MODE": mode, "API_KEY": "k", "JWT_SECRET": "s"}
    relay = await start_relay(env)
    async with relay.client() as c:
        missing = await c.get("/webrtc/ice")
        wrong = await c.get("/webrtc/ice", headers={"Authorization": "Bearer nope"})
    for r in (missing, wrong):
        assert r.status_code == 401
        assert r.content == b'{"code":"unauthorized","message":"unauthorized"}\n'
        assert_no_store(r.headers)
    assert relay.metrics.value(Event.AUTH_FAILURE) == 2


async def test_api_key_by_header_or_query(start_relay: StartRelay) -> None:
    """F-048/F-049."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "sekrit"})
    async with relay.client() as c:
        for kw in (
            {"headers": {"X-API-Key": "sekrit"}},
            {"headers": {"Authorization": "ApiKey sekrit"}},
            {"headers": {"Authorization": "bearer sekrit"}},
            {"params": {"apiKey": "sekrit"}},
            {"params": {"token": "sekrit"}},
        ):
            r = await c.get("/webrtc/ice", **kw)  # type: ignore[arg-type]
            assert r.status_code == 200, kw
        # A present but wrong header is not retried with the query (F-049).
        r = await c.get("/webrtc/ice", headers={"X-API-Key": "bad"}, params={"apiKey": "sekrit"})
        assert r.status_code == 401


async def test_jwt_valid_token_and_no_sid_lock(start_relay: StartRelay) -> None:
    """F-030/F-209: a JWT is verified, but /webrtc/ice takes no sid lock."""
    relay = await start_relay({"AUTH_MODE": "jwt", "JWT_SECRET": "jwt-secret"}, unix_now=lambda: FIXED_NOW)
    token = mint_jwt("jwt-secret", {"sid": "s1", "iat": FIXED_NOW, "exp": FIXED_NOW + 60})
    expired = mint_jwt("jwt-secret", {"sid": "s1", "iat": FIXED_NOW - 60, "exp": FIXED_NOW})
    async with relay.client() as c:
        for _ in range(3):
            r = await c.get("/webrtc/ice", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
        assert (await c.get("/webrtc/ice", params={"token": expired})).status_code == 401
    assert relay.server.ctx.registry.active_count() == 0


async def test_auth_checked_before_ice_config_error(start_relay: StartRelay) -> None:
    """F-030/F-031: 401 first; with valid auth, an invalid ICE config gives 503 {"error"}."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k", "AERO_ICE_SERVERS_JSON": "not json"})
    async with relay.client() as c:
        unauth = await c.get("/webrtc/ice")
        broken = await c.get("/webrtc/ice", headers={"X-API-Key": "k"})
    assert unauth.status_code == 401
    assert broken.status_code == 503
    assert list(broken.json()) == ["error"]
    assert broken.json()["error"].startswith("AERO_ICE_SERVERS_JSON")
    assert_no_store(broken.headers)
