"""`/udp` from a real browser: Chromium's WebSocket, frames built and parsed in the page's JavaScript.

The relay is a real `aero-relay serve` subprocess, the UDP peers are real loopback sockets, and the page
comes from another loopback origin listed in the relay's ALLOWED_ORIGINS (PROTOCOL.md sections 3 and 4).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import struct
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from e2e.browser import BrowserSocket
from e2e.harness import API_KEY, JWT_SECRET, VECTORS_DIR, PageServer, Relay, UdpEcho, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

HEX32 = re.compile(r"^[0-9a-f]{32}$")
LOOPBACK4 = "127.0.0.1"


# --- expected bytes, built independently of the page's encoder ------------------------------------


def v1_bytes(guest_port: int, ip: str, port: int, payload: bytes) -> bytes:
    return struct.pack("!H4sH", guest_port, socket.inet_aton(ip), port) + payload


def v2_bytes(guest_port: int, ip: str, port: int, payload: bytes) -> bytes:
    if ":" in ip:
        af, packed_ip = 0x06, socket.inet_pton(socket.AF_INET6, ip)
    else:
        af, packed_ip = 0x04, socket.inet_aton(ip)
    return (
        bytes([0xA2, 0x02, af, 0x00])
        + struct.pack("!H", guest_port)
        + packed_ip
        + struct.pack("!H", port)
        + payload
    )


def frame_fields(version: int, guest_port: int, ip: str, port: int, payload: bytes) -> dict[str, Any]:
    """What the page's decoder must report for a frame."""
    return {
        "version": version,
        "guestPort": guest_port,
        "remoteIp": ip,
        "remotePort": port,
        "payloadHex": payload.hex(),
    }


def mint_token(sid: str, ttl: int = 300) -> str:
    now = int(time.time())
    return jwt.encode({"sid": sid, "iat": now, "exp": now + ttl}, JWT_SECRET, algorithm="HS256")


def expect_ready(ws: BrowserSocket) -> str:
    """F-092: `{"type":"ready","sessionId":<32 hex>}` once after auth."""
    msg = ws.next_json()
    assert isinstance(msg, dict) and list(msg) == ["type", "sessionId"], msg
    assert msg["type"] == "ready"
    assert HEX32.match(msg["sessionId"]), msg
    return str(msg["sessionId"])


# --- the page's codec -----------------------------------------------------------------------------


def test_page_codec_matches_shared_udp_vectors(page: Page) -> None:
    """F-116..F-118: the page's decoder and encoders agree with udp-relay.json, byte for byte."""
    vectors = json.loads((VECTORS_DIR / "udp-relay.json").read_text())["vectors"]
    cases = [{**v, "frameHex": base64.b64decode(v["frame_b64"]).hex()} for v in vectors]
    results = page.evaluate(
        """cases => cases.map(c => {
            const d = AeroUdp.describe(AeroUdp.fromHex(c.frameHex));
            if (d.error) return {decoded: d};
            const enc = d.version === 1 ? AeroUdp.encodeV1 : AeroUdp.encodeV2;
            const again = enc(d.guestPort, d.remoteIp, d.remotePort, AeroUdp.fromHex(d.payloadHex));
            return {decoded: d, reencodedHex: AeroUdp.toHex(again)};
        })""",
        cases,
    )
    assert len(results) == len(cases) == 9
    for case, result in zip(cases, results, strict=True):
        decoded = result["decoded"]
        if case.get("expectError"):
            assert case["errorContains"] in decoded.get("error", ""), (case["name"], decoded)
            continue
        payload = base64.b64decode(case["payload_b64"])
        expected = frame_fields(
            case["version"], case["guestPort"], case["remoteIp"], case["remotePort"], payload
        )
        assert decoded == expected, case["name"]
        assert result["reencodedHex"] == case["frameHex"], case["name"]


# --- authentication and echo ----------------------------------------------------------------------


def test_api_key_first_message_auth_then_v1_and_v2_echo(
    page: Page, api_key_relay: Relay, udp_echo: UdpEcho
) -> None:
    """F-085, F-092, F-095, F-120: auth by first message, then echoes; with PREFER_V2 the reply
    version follows the client's first v2 frame and stays v2 (sticky)."""
    ws = BrowserSocket(page, api_key_relay.ws_url("/udp"))
    assert ws.wait_open()
    ws.send_json({"type": "auth", "apiKey": API_KEY})
    expect_ready(ws)

    sent = ws.send_v1(40000, LOOPBACK4, udp_echo.port, b"hello v1")
    assert sent == v1_bytes(40000, LOOPBACK4, udp_echo.port, b"hello v1").hex()
    reply = ws.next_frame()
    assert reply["hex"] == v1_bytes(40000, LOOPBACK4, udp_echo.port, b"hello v1").hex()
    assert reply["frame"] == frame_fields(1, 40000, LOOPBACK4, udp_echo.port, b"hello v1")

    payload = bytes(range(256))  # every byte value survives the round trip
    sent = ws.send_v2(40001, LOOPBACK4, udp_echo.port, payload)
    assert sent == v2_bytes(40001, LOOPBACK4, udp_echo.port, payload).hex()
    reply = ws.next_frame()
    assert reply["hex"] == v2_bytes(40001, LOOPBACK4, udp_echo.port, payload).hex()
    assert reply["frame"] == frame_fields(2, 40001, LOOPBACK4, udp_echo.port, payload)

    ws.send_v1(40000, LOOPBACK4, udp_echo.port, b"sticky")
    reply = ws.next_frame()
    assert reply["hex"] == v2_bytes(40000, LOOPBACK4, udp_echo.port, b"sticky").hex()
    assert ws.close()["code"] == 1000


def test_jwt_first_message_auth_then_v1_and_v2_echo(page: Page, jwt_relay: Relay, udp_echo: UdpEcho) -> None:
    """F-085, F-120: JWT by first message; without PREFER_V2 IPv4 replies are always v1."""
    ws = BrowserSocket(page, jwt_relay.ws_url("/udp"))
    assert ws.wait_open()
    ws.send_json({"type": "auth", "token": mint_token(f"e2e-{uuid.uuid4().hex}")})
    expect_ready(ws)

    ws.send_v1(50000, LOOPBACK4, udp_echo.port, b"jwt v1")
    reply = ws.next_frame()
    assert reply["hex"] == v1_bytes(50000, LOOPBACK4, udp_echo.port, b"jwt v1").hex()

    sent = ws.send_v2(50001, LOOPBACK4, udp_echo.port, b"jwt v2")
    assert sent == v2_bytes(50001, LOOPBACK4, udp_echo.port, b"jwt v2").hex()
    reply = ws.next_frame()
    assert reply["hex"] == v1_bytes(50001, LOOPBACK4, udp_echo.port, b"jwt v2").hex()
    assert reply["frame"] == frame_fields(1, 50001, LOOPBACK4, udp_echo.port, b"jwt v2")
    ws.close()


def test_v2_ipv6_echo(page: Page, api_key_relay: Relay, udp_echo6: UdpEcho) -> None:
    """F-118, F-120: a v2 IPv6 frame to ::1 comes back as v2 with af 0x06."""
    ws = BrowserSocket(page, api_key_relay.ws_url("/udp"))
    assert ws.wait_open()
    ws.send_json({"type": "auth", "apiKey": API_KEY})
    expect_ready(ws)
    sent = ws.send_v2(40002, "::1", udp_echo6.port, b"six")
    assert sent == v2_bytes(40002, "::1", udp_echo6.port, b"six").hex()
    reply = ws.next_frame()
    assert reply["hex"] == sent
    assert reply["frame"] == frame_fields(2, 40002, "::1", udp_echo6.port, b"six")
    ws.close()


# --- inbound filter -------------------------------------------------------------------------------


def test_reply_from_unexpected_source_port_is_dropped(
    page: Page, api_key_relay: Relay, udp_echo: UdpEcho, udp_echo_other_port: UdpEcho
) -> None:
    """F-132: with the default address_and_port filter, a reply from a port the guest never sent to is
    dropped and counted as udp_remote_allowlist_overflow_drops_total (read from /metrics, F-214)."""
    metric = "udp_remote_allowlist_overflow_drops_total"
    before = api_key_relay.metric(metric)
    replies_before = udp_echo_other_port.replies
    ws = BrowserSocket(page, api_key_relay.ws_url("/udp"))
    assert ws.wait_open()
    ws.send_json({"type": "auth", "apiKey": API_KEY})
    expect_ready(ws)

    ws.send_v1(41000, LOOPBACK4, udp_echo_other_port.port, b"who answers?")
    assert wait_until(lambda: udp_echo_other_port.replies == replies_before + 1)
    assert wait_until(lambda: api_key_relay.metric(metric) == before + 1), api_key_relay.metrics()

    # The next thing the page receives is the answer to a later, well-behaved echo: nothing came before.
    ws.send_v1(41000, LOOPBACK4, udp_echo.port, b"control")
    reply = ws.next_frame()
    assert reply["hex"] == v1_bytes(41000, LOOPBACK4, udp_echo.port, b"control").hex()
    assert ws.queued() == 0
    ws.close()


# --- the sid lock ---------------------------------------------------------------------------------


def test_second_socket_with_same_sid_gets_session_already_active_1013(page: Page, jwt_relay: Relay) -> None:
    """F-045, F-090, F-216: one live session per sid; the second gets the error then close code 1013.
    After the first closes, the sid is free again."""
    sid = f"e2e-{uuid.uuid4().hex}"
    first = BrowserSocket(page, jwt_relay.ws_url("/udp"))
    assert first.wait_open()
    first.send_json({"type": "auth", "token": mint_token(sid)})
    expect_ready(first)

    second = BrowserSocket(page, jwt_relay.ws_url("/udp"))
    assert second.wait_open()
    second.send_json({"type": "auth", "token": mint_token(sid, ttl=600)})  # another token, same sid
    assert second.next_json() == {
        "type": "error",
        "code": "session_already_active",
        "message": "session already active",
    }
    closed = second.next()
    assert closed["kind"] == "close", closed
    assert closed["code"] == 1013
    assert closed["reason"] in ("session already active", "session_already_active", "")

    assert first.close()["code"] == 1000

    def sid_free_again() -> bool:
        third = BrowserSocket(page, jwt_relay.ws_url("/udp"))
        if not third.wait_open():
            return False
        third.send_json({"type": "auth", "token": mint_token(sid)})
        msg = third.next_json()
        third.close()
        return isinstance(msg, dict) and msg.get("type") == "ready"

    assert wait_until(sid_free_again, timeout=5.0, interval=0.1)


# --- origin ---------------------------------------------------------------------------------------


def udp_refusals(relay: Relay) -> int:
    """`/udp` requests answered 403 so far, from the relay's access log (one record a request, F-011)."""
    return sum(
        1
        for r in relay.log_records()
        if r.get("msg") == "http_request" and r.get("path") == "/udp" and r.get("status") == 403
    )


def test_cross_origin_page_cannot_open_websocket(
    open_page: Callable[[PageServer], Page], foreign_page_server: PageServer, api_key_relay: Relay
) -> None:
    """F-014..F-024: an origin not in ALLOWED_ORIGINS is refused with 403 before the upgrade, so the
    browser never opens the socket (close 1006) and the relay never counts a /udp connection (F-082)."""
    before = api_key_relay.metric("udp_ws_connections")
    refusals_before = udp_refusals(api_key_relay)
    foreign = open_page(foreign_page_server)
    ws = BrowserSocket(foreign, api_key_relay.ws_url("/udp"))
    assert ws.wait_open() is False
    assert ws.errored()
    closed = ws.next()
    assert closed["kind"] == "close" and closed["code"] == 1006, closed

    assert wait_until(lambda: udp_refusals(api_key_relay) == refusals_before + 1), api_key_relay.log_tail()
    assert api_key_relay.metric("udp_ws_connections") == before
