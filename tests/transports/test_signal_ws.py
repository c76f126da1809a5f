"""`GET /webrtc/signal` end to end: real server, real WebSocket, in-process aiortc client peers (section 9).

WebRTC here uses only 127.0.0.1 (WEBRTC_UDP_LISTEN_IP on the relay, a loopback-only client peer).
"""

from __future__ import annotations

import socket

import pytest
import trio
from aiortc import RTCSessionDescription

from aero_relay.core.frames import decode, encode_v1
from aero_relay.observability.metrics import Event
from aero_relay.webrtc.bridge import Bridge, close_peer, run_aio
from tests.conftest import RunningRelay, StartRelay
from tests.helpers import mint_jwt
from tests.transports.test_udp_ws import udp_echo, wait_for
from tests.webrtc.peers import client_peer, wait_open
from tests.wsclient import WSClient, connect

NOW = 1_700_000_000
WEBRTC = {"WEBRTC_UDP_LISTEN_IP": "127.0.0.1", "DESTINATION_POLICY_PRESET": "dev"}
LOOPBACK4 = socket.inet_aton("127.0.0.1")


def bridge_of(relay: RunningRelay) -> Bridge:
    bridge = relay.server.ctx.bridge
    assert bridge is not None
    bridge.attach()
    return bridge


async def client_offer(bridge: Bridge, *, channel: str | None = "udp") -> tuple[object, object]:
    pc = client_peer()
    dc = None
    if channel == "udp":
        dc = pc.createDataChannel("udp", ordered=False, maxRetransmits=0)
    elif channel is not None:
        dc = pc.createDataChannel(channel)
    await run_aio(bridge, pc.setLocalDescription)
    return pc, dc


async def expect_error(ws: WSClient, code: str, close_code: int) -> dict[str, object]:
    err = await ws.receive_json()
    assert err["type"] == "error" and err["code"] == code, err
    assert list(err) == ["type", "code", "message"]
    closed = await ws.expect_close()
    assert closed.code == close_code
    return err  # type: ignore[no-any-return]


async def test_plain_get_is_400_upgrade_required(start_relay: StartRelay) -> None:
    """F-063."""
    relay = await start_relay()
    async with relay.client() as c:
        r = await c.get("/webrtc/signal")
    assert r.status_code == 400
    assert r.content == b'{"code":"bad_message","message":"websocket upgrade required"}\n'


async def test_trickle_session_relays_udp(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    """F-075: answer then candidates (exact keys); the udp channel relays a datagram end to end."""
    relay = await start_relay(WEBRTC)
    bridge = bridge_of(relay)
    port = await udp_echo(nursery)
    pc, dc = await client_offer(bridge)
    try:
        async with connect(relay.host_port, "/webrtc/signal") as ws:
            await ws.send_json({"type": "offer", "sdp": {"type": "offer", "sdp": pc.localDescription.sdp}})  # type: ignore[attr-defined]
            answer = await ws.receive_json()
            assert list(answer) == ["type", "sdp"] and answer["type"] == "answer"
            assert list(answer["sdp"]) == ["type", "sdp"] and answer["sdp"]["type"] == "answer"
            cand = await ws.receive_json()
            assert cand["type"] == "candidate"
            assert set(cand["candidate"]) <= {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}
            assert cand["candidate"]["candidate"].startswith("candidate:")
            assert " 127.0.0.1 " in cand["candidate"]["candidate"]
            await run_aio(bridge, pc.setRemoteDescription, RTCSessionDescription(**answer["sdp"]))  # type: ignore[attr-defined]
            with trio.fail_after(10):
                await wait_open(dc)  # type: ignore[arg-type]
            replies: trio.MemorySendChannel[bytes]
            replies, got = trio.open_memory_channel[bytes](8)
            dc.on("message", lambda m: replies.send_nowait(m))  # type: ignore[attr-defined]
            dc.send(encode_v1(40000, LOOPBACK4, port, b"over webrtc"))  # type: ignore[attr-defined]
            with trio.fail_after(10):
                reply = await got.receive()
            frame = decode(reply, max_payload=1200)
            assert (frame.guest_port, frame.remote_port, frame.payload) == (40000, port, b"over webrtc")
            assert relay.metrics.value(Event.WEBRTC_UDP_DATAGRAMS_IN) == 1
            await wait_for(lambda: relay.metrics.value(Event.WEBRTC_UDP_DATAGRAMS_OUT) == 1)
            assert relay.server.ctx.registry.active_count() == 1
    finally:
        await close_peer(bridge, pc, timeout=5)  # type: ignore[arg-type]
    # F-078: closing the signaling WebSocket ends the session and frees its slot.
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


async def test_auth_timeout_closes_1008_without_json(start_relay: StartRelay) -> None:
    """F-067."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k", "SIGNALING_AUTH_TIMEOUT": "150ms"})
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        closed = await ws.expect_close()
    assert (closed.code, closed.reason) == (1008, "authentication timeout")
    assert relay.metrics.value(Event.AUTH_FAILURE) == 1


async def test_message_before_auth_is_refused(start_relay: StartRelay) -> None:
    """F-072."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        await ws.send_json({"type": "offer", "sdp": {"type": "offer", "sdp": "v=0"}})
        err = await expect_error(ws, "unauthorized", 1008)
    assert err["message"] == "authentication required"


async def test_bad_auth_message_credential(start_relay: StartRelay) -> None:
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        await ws.send_json({"type": "auth", "apiKey": "nope"})
        err = await expect_error(ws, "unauthorized", 1008)
    assert err["message"] == "unauthorized"


async def test_invalid_header_credential(start_relay: StartRelay) -> None:
    """F-066."""
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k"})
    async with connect(relay.host_port, "/webrtc/signal", headers=[("X-API-Key", "bad")]) as ws:
        await expect_error(ws, "unauthorized", 1008)


async def test_binary_frame_is_1003(start_relay: StartRelay) -> None:
    """F-069."""
    relay = await start_relay()
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        await ws.send(b"\x01\x02")
        err = await expect_error(ws, "bad_message", 1003)
    assert err["message"] == "expected text message"


async def test_bad_json_is_bad_message(start_relay: StartRelay) -> None:
    """F-070."""
    relay = await start_relay()
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        await ws.send('{"type":"offer","extra":1}')
        await expect_error(ws, "bad_message", 1008)


async def test_candidate_before_offer(start_relay: StartRelay) -> None:
    """F-076."""
    relay = await start_relay()
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        await ws.send_json(
            {"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}}
        )
        err = await expect_error(ws, "unexpected_message", 1008)
    assert err["message"] == "candidate received before offer"


async def test_rate_limit(start_relay: StartRelay) -> None:
    """F-068."""
    relay = await start_relay({"MAX_SIGNALING_MESSAGES_PER_SECOND": "2"})
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        for _ in range(3):
            await ws.send_json({"type": "auth", "token": "x"})
        err = await expect_error(ws, "rate_limited", 1008)
    assert err["message"] == "rate limit exceeded"
    assert relay.metrics.value(Event.RATE_LIMITED) == 1


async def test_oversized_message_is_1009(start_relay: StartRelay) -> None:
    """F-065."""
    relay = await start_relay({"MAX_SIGNALING_MESSAGE_BYTES": "100"})
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        await ws.send("x" * 200)
        closed = await ws.expect_close()
    assert closed.code == 1009


async def test_sid_lock_and_quota_taken_before_sdp_is_parsed(start_relay: StartRelay) -> None:
    """F-074: the e2e suite relies on a garbage SDP still taking the sid; the second gets 1008."""
    relay = await start_relay({"AUTH_MODE": "jwt", "JWT_SECRET": "s", **WEBRTC}, unix_now=lambda: NOW)
    token = mint_jwt("s", {"sid": "same", "iat": NOW, "exp": NOW + 60})
    async with connect(relay.host_port, f"/webrtc/signal?token={token}") as first:
        await first.send_json({"type": "offer", "sdp": {"type": "offer", "sdp": "v=0"}})
        err = await expect_error(first, "bad_message", 1008)
        assert err["message"]
    # the failed session released its sid
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)
    async with relay.client() as c:
        assert (await c.post("/session", headers={"Authorization": f"Bearer {token}"})).status_code == 201
    async with connect(relay.host_port, f"/webrtc/signal?token={token}") as second:
        await second.send_json({"type": "offer", "sdp": {"type": "offer", "sdp": "v=0"}})
        err = await expect_error(second, "session_already_active", 1008)


async def test_second_offer_refused(start_relay: StartRelay) -> None:
    relay = await start_relay(WEBRTC)
    bridge = bridge_of(relay)
    pc, _ = await client_offer(bridge)
    try:
        async with connect(relay.host_port, "/webrtc/signal") as ws:
            offer = {"type": "offer", "sdp": {"type": "offer", "sdp": pc.localDescription.sdp}}  # type: ignore[attr-defined]
            await ws.send_json(offer)
            assert (await ws.receive_json())["type"] == "answer"
            await ws.send_json(offer)
            while True:
                msg = await ws.receive_json()
                if msg["type"] == "error":
                    break
            assert msg["code"] == "unexpected_message" and msg["message"] == "offer already received"
            closed = await ws.expect_close()
            assert closed.code == 1008
    finally:
        await close_peer(bridge, pc, timeout=5)  # type: ignore[arg-type]
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


async def test_connect_timeout_closes_session_and_socket(start_relay: StartRelay) -> None:
    """F-101/F-078: a session that never connects is closed; the WebSocket closes with it."""
    relay = await start_relay({**WEBRTC, "WEBRTC_SESSION_CONNECT_TIMEOUT": "300ms"})
    bridge = bridge_of(relay)
    pc, _ = await client_offer(bridge)
    try:
        async with connect(relay.host_port, "/webrtc/signal") as ws:
            await ws.send_json({"type": "offer", "sdp": {"type": "offer", "sdp": pc.localDescription.sdp}})  # type: ignore[attr-defined]
            closed = await ws.expect_close(timeout=10)
        assert closed.code == 1000
    finally:
        await close_peer(bridge, pc, timeout=5)  # type: ignore[arg-type]
    assert relay.metrics.value(Event.WEBRTC_SESSION_CONNECT_TIMEOUT) == 1
    await wait_for(lambda: relay.server.ctx.registry.active_count() == 0)


@pytest.mark.parametrize("label", ["chat", "l2"])
async def test_unknown_label_rejected(start_relay: StartRelay, label: str) -> None:
    """F-110 (and F-109: l2 is closed silently while no L2 backend is configured)."""
    relay = await start_relay(WEBRTC)
    bridge = bridge_of(relay)
    pc, dc = await client_offer(bridge, channel=label)
    try:
        async with connect(relay.host_port, "/webrtc/signal") as ws:
            await ws.send_json({"type": "offer", "sdp": {"type": "offer", "sdp": pc.localDescription.sdp}})  # type: ignore[attr-defined]
            answer = await ws.receive_json()
            await run_aio(bridge, pc.setRemoteDescription, RTCSessionDescription(**answer["sdp"]))  # type: ignore[attr-defined]
            with trio.fail_after(10):
                while dc.readyState != "closed":  # type: ignore[attr-defined]
                    await trio.sleep(0.01)
    finally:
        await close_peer(bridge, pc, timeout=5)  # type: ignore[arg-type]
    expected = 1 if label == "chat" else 0
    assert relay.metrics.value(Event.WEBRTC_DATACHANNEL_REJECTED_UNKNOWN_LABEL) == expected
