"""`POST /offer` and `POST /webrtc/offer`: a real server, in-process aiortc clients (sections 7, 8)."""

from __future__ import annotations

import json
import re

import pytest
import trio
from aiortc import RTCSessionDescription

from aero_relay.observability.metrics import Event
from aero_relay.webrtc.bridge import close_peer, run_aio
from tests.conftest import StartRelay
from tests.helpers import mint_jwt
from tests.transports.test_signal_ws import WEBRTC, bridge_of, client_offer
from tests.transports.test_udp_ws import wait_for
from tests.webrtc.peers import wait_open

HEX32 = re.compile(r"^[0-9a-f]{32}$")
NOW = 1_700_000_000


async def test_offer_v1_round_trip(start_relay: StartRelay) -> None:
    """F-057: {"version":1,"answer":{...}} with candidates in the SDP; the channel opens."""
    relay = await start_relay(WEBRTC)
    bridge = bridge_of(relay)
    pc, dc = await client_offer(bridge)
    try:
        async with relay.client() as c:
            r = await c.post(
                "/offer",
                json={"version": 1, "offer": {"type": "offer", "sdp": pc.localDescription.sdp}},  # type: ignore[attr-defined]
            )
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body) == ["version", "answer"] and body["version"] == 1
        assert list(body["answer"]) == ["type", "sdp"] and body["answer"]["type"] == "answer"
        assert "a=candidate:" in body["answer"]["sdp"] and " 127.0.0.1 " in body["answer"]["sdp"]
        await run_aio(bridge, pc.setRemoteDescription, RTCSessionDescription(**body["answer"]))  # type: ignore[attr-defined]
        with trio.fail_after(10):
            await wait_open(dc)  # type: ignore[arg-type]
        assert relay.server.ctx.registry.active_count() == 1
    finally:
        await close_peer(bridge, pc, timeout=5)  # type: ignore[arg-type]
    # F-102: the relay notices the peer closing and ends the session.
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0, timeout=20)


async def test_webrtc_offer_both_body_shapes(start_relay: StartRelay) -> None:
    """F-059/F-062: nested and raw shapes; the response carries the relay session id."""
    relay = await start_relay(WEBRTC)
    bridge = bridge_of(relay)
    for shape in ("nested", "raw"):
        pc, _ = await client_offer(bridge)
        try:
            desc = {"type": "offer", "sdp": pc.localDescription.sdp}  # type: ignore[attr-defined]
            payload = {"sdp": desc} if shape == "nested" else desc
            async with relay.client() as c:
                r = await c.post("/webrtc/offer", json=payload)
            assert r.status_code == 200, r.text
            body = r.json()
            assert list(body) == ["sessionId", "sdp"]
            assert HEX32.match(body["sessionId"])
            assert body["sdp"]["type"] == "answer"
        finally:
            await close_peer(bridge, pc, timeout=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "invalid offer"),
        (b'{"version":2,"offer":{"type":"offer","sdp":"v=0"}}', "unsupported protocol version"),
        (b'{"version":1,"offer":{"type":"answer","sdp":"v=0"}}', "invalid offer"),
        (b'{"version":1,"offer":{"type":"offer","sdp":""}}', "invalid offer"),
    ],
)
async def test_offer_v1_bad_bodies_400_before_auth(
    start_relay: StartRelay, body: bytes, message: str
) -> None:
    """F-054/F-193: the body is checked before auth (no credentials here)."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with relay.client() as c:
        r = await c.post("/offer", content=body)
    assert r.status_code == 400
    assert r.json() == {"code": "bad_message", "message": message}


async def test_offer_v1_auth_after_body(start_relay: StartRelay) -> None:
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with relay.client() as c:
        r = await c.post("/offer", json={"version": 1, "offer": {"type": "offer", "sdp": "v=0"}})
    assert r.status_code == 401
    assert relay.metrics.value(Event.AUTH_FAILURE) == 1


async def test_offer_v1_dummy_sdp_with_good_key_is_400(start_relay: StartRelay) -> None:
    """F-054 [T]: a good key with a dummy SDP -> 400; the slot is released."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k", **WEBRTC})
    async with relay.client() as c:
        r = await c.post(
            "/offer",
            json={"version": 1, "offer": {"type": "offer", "sdp": "v=0"}},
            headers={"X-API-Key": "k"},
        )
    assert r.status_code == 400
    assert r.json() == {"code": "bad_message", "message": "failed to set remote description"}
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", 'unsupported sdp type ""'),
        (b'{"sdp":{"type":"answer","sdp":"x"}}', 'sdp.type must be "offer"'),
        (b'{"type":"pranswer","sdp":"x"}', 'unsupported sdp type "pranswer"'),
    ],
)
async def test_webrtc_offer_bad_bodies(start_relay: StartRelay, body: bytes, message: str) -> None:
    """F-060."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.post("/webrtc/offer", content=body)
    assert r.status_code == 400
    assert r.json() == {"code": "bad_message", "message": message}


async def test_webrtc_offer_unknown_fields_rejected(start_relay: StartRelay) -> None:
    """F-059: strict decoding of both shapes."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.post(
            "/webrtc/offer", content=json.dumps({"sdp": {"type": "offer", "sdp": "x"}, "extra": 1})
        )
    assert r.status_code == 400
    assert r.json()["message"].startswith('invalid offer request body (expected {"sdp":{...}} or a raw')


async def test_webrtc_offer_body_too_large(start_relay: StartRelay) -> None:
    """F-058: bodies over 2 MiB."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.post("/webrtc/offer", content=b"x" * ((2 << 20) + 1))
    assert r.status_code == 400
    assert r.json() == {"code": "bad_message", "message": "http: request body too large"}


async def test_webrtc_offer_sid_conflict_409(start_relay: StartRelay) -> None:
    """F-046/F-061: a sid held by a reservation refuses an HTTP offer with 409."""
    relay = await start_relay({"AUTH_MODE": "jwt", "JWT_SECRET": "s", **WEBRTC}, unix_now=lambda: NOW)
    token = mint_jwt("s", {"sid": "busy", "iat": NOW, "exp": NOW + 60})
    headers = {"Authorization": f"Bearer {token}"}
    async with relay.client() as c:
        assert (await c.post("/session", headers=headers)).status_code == 201
        r = await c.post("/webrtc/offer", json={"type": "offer", "sdp": "v=0"}, headers=headers)
    assert r.status_code == 409
    assert r.json() == {"code": "session_already_active", "message": "session already active"}


async def test_http_offer_session_hits_connect_timeout(start_relay: StartRelay) -> None:
    """F-101/F-210: an HTTP-offer session that never connects frees its slot after the timeout."""
    relay = await start_relay({**WEBRTC, "WEBRTC_SESSION_CONNECT_TIMEOUT": "300ms"})
    bridge = bridge_of(relay)
    pc, _ = await client_offer(bridge)
    try:
        async with relay.client() as c:
            r = await c.post("/webrtc/offer", json={"type": "offer", "sdp": pc.localDescription.sdp})  # type: ignore[attr-defined]
        assert r.status_code == 200
        await wait_for(lambda: relay.metrics.value(Event.WEBRTC_SESSION_CONNECT_TIMEOUT) == 1, timeout=10)
        await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)
    finally:
        await close_peer(bridge, pc, timeout=5)  # type: ignore[arg-type]
