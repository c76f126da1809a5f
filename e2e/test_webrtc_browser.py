"""WebRTC from a real browser: Chromium's RTCPeerConnection and its `udp` DataChannel against the relay.

The page (pages/webrtc_relay.js) opens the channel the way PROTOCOL.md section 2 asks (unordered,
maxRetransmits 0), negotiates over `GET /webrtc/signal` (trickle), `POST /webrtc/offer` or `POST /offer`
(non-trickle, section 5), and builds and parses the frames of section 3 in JavaScript.

Loopback only (the e2e network rule): the relays gather only a 127.0.0.1 host candidate
(WEBRTC_UDP_LISTEN_IP), and the page never signals a candidate or connection address that names one of
the machine's real interfaces (Chromium has no loopback candidate, so it signals nothing; its checks
toward 127.0.0.1 leave its any-address socket from 127.0.0.1, and the relay learns it as a
peer-reflexive candidate). Each connecting test checks the path from both ends: getStats()'s selected
pair in Chromium and the relay's own ICE log. The session browser runs with Chromium's mDNS hiding off
(no multicast announcements on real interfaces, see conftest.py); the mDNS tests run a second Chromium
with the default, inside a network namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import jwt
import pytest

from e2e.browser import BrowserRtc
from e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from e2e.harness import (
    API_KEY,
    JWT_SECRET,
    RELAY_BASE_ENV,
    NetNs,
    PageServer,
    Relay,
    RelayFactory,
    UdpEcho,
    temp_dir,
    wait_until,
)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

pytestmark = pytest.mark.e2e

LOOPBACK4 = "127.0.0.1"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
# "candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ..."
CANDIDATE = re.compile(r"^(?:a=)?candidate:\S+ \d+ (\S+) \d+ (\S+) (\d+) typ (\S+)")
# aioice's INFO log of a connectivity check: local (address, port) -> remote (address, port).
ICE_CHECK = re.compile(
    r"CandidatePair\(\('([^']*)', (\d+)\) -> \('([^']*)', (\d+)\)\) State\.\w+ -> State\.(\w+)"
)
SESSION_ALREADY_ACTIVE = {
    "type": "error",
    "code": "session_already_active",
    "message": "session already active",
}


# --- expected bytes, built independently of the page's encoder ------------------------------------


def v1_bytes(guest_port: int, ip: str, port: int, payload: bytes) -> bytes:
    return struct.pack("!H4sH", guest_port, socket.inet_aton(ip), port) + payload


def v2_bytes(guest_port: int, ip: str, port: int, payload: bytes) -> bytes:
    if ":" in ip:
        af, packed = 0x06, socket.inet_pton(socket.AF_INET6, ip)
    else:
        af, packed = 0x04, socket.inet_aton(ip)
    return (
        bytes([0xA2, 0x02, af, 0x00])
        + struct.pack("!H", guest_port)
        + packed
        + struct.pack("!H", port)
        + payload
    )


def mint_token(sid: str, ttl: int = 300) -> str:
    now = int(time.time())
    return jwt.encode({"sid": sid, "iat": now, "exp": now + ttl}, JWT_SECRET, algorithm="HS256")


def echo(rtc: BrowserRtc, version: int, guest_port: int, ip: str, port: int, payload: bytes) -> str:
    """Send one frame and return the hex of the next message on the channel."""
    send = rtc.send_v1 if version == 1 else rtc.send_v2
    expected = (v1_bytes if version == 1 else v2_bytes)(guest_port, ip, port, payload)
    assert send(guest_port, ip, port, payload) == expected.hex()
    return str(rtc.next_frame()["hex"])


# --- the loopback-only path -----------------------------------------------------------------------


def host_addresses() -> set[str]:
    """The machine's non-loopback interface addresses (`ip -o addr`); empty without iproute2."""
    if shutil.which("ip") is None:
        return set()
    out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    found = set(re.findall(r"\binet6? ([0-9a-fA-F.:]+)/", out))
    return {a for a in found if not a.startswith("127.") and a != "::1"}


@attrs.frozen
class IcePath:
    relay_port: int
    browser_port: int


def relay_ice_checks(relay: Relay, relay_port: int) -> list[tuple[str, int, str, int, str]]:
    """The relay's logged connectivity checks from its ICE socket `relay_port` (aioice INFO, dev mode)."""
    checks = []
    for record in relay.log_records():
        m = ICE_CHECK.search(str(record.get("msg", "")))
        if m and int(m.group(2)) == relay_port:
            checks.append((m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)))
    return checks


def assert_loopback_path(rtc: BrowserRtc, relay: Relay, *, signal: str = "loopback") -> IcePath:
    """Nothing signaled names a real interface; both ends of the selected pair are 127.0.0.1."""
    summary = rtc.summary()
    cands = summary["candidates"]
    allowed = {"loopback", "mdns"} if signal == "mdns" else {"loopback"}
    for c in cands["signaled"]:
        m = CANDIDATE.match(c)
        assert m, c
        address = m.group(2)
        assert address.startswith("127.") or (signal == "mdns" and address.endswith(".local")), c
    for c in cands["gathered"]:
        if c["cls"] not in allowed:
            assert c["candidate"] not in cands["signaled"], c
    sent = "\n".join(summary["sentTexts"])
    for address in host_addresses():
        assert address not in sent, f"{address} reached the relay: {sent}"

    relay_ports = set()
    for c in cands["remote"]:
        m = CANDIDATE.match(c)
        assert m and m.group(2) == LOOPBACK4 and m.group(1) == "udp", c  # the relay offers only 127.0.0.1
        relay_ports.add(int(m.group(3)))
    assert len(relay_ports) == 1, cands["remote"]
    relay_port = relay_ports.pop()

    pair = rtc.selected_pair()
    # The transport's selected pair; Chromium reports it "in-progress" while a consent check is in flight.
    assert pair is not None and pair["nominated"] and pair["state"] in ("succeeded", "in-progress"), pair
    assert pair["remote"]["address"] == LOOPBACK4 and pair["remote"]["port"] == relay_port, pair
    # Chromium hides a local peer-reflexive address in getStats ("") but not its port; the relay's
    # log says which address it saw that port at.
    assert pair["local"]["candidateType"] in ("prflx", "host"), pair
    assert pair["local"]["address"] in ("", LOOPBACK4), pair
    browser_port = int(pair["local"]["port"])

    def relay_saw_loopback_pair() -> bool:
        return any(
            c[0] == LOOPBACK4 and c[2] == LOOPBACK4 and c[3] == browser_port and c[4] == "SUCCEEDED"
            for c in relay_ice_checks(relay, relay_port)
        )

    # aioice logs its checks at INFO, which the relay passes on only at log level debug (dev's default).
    assert wait_until(relay_saw_loopback_pair, timeout=2.0), relay_ice_checks(relay, relay_port)
    for local, _, remote, _, _ in relay_ice_checks(relay, relay_port):
        assert local == LOOPBACK4 and remote == LOOPBACK4, relay_ice_checks(relay, relay_port)
    return IcePath(relay_port, browser_port)


def connected_signal(page: Page, relay: Relay, **kwargs: Any) -> BrowserRtc:
    rtc = BrowserRtc.signal(page, relay.ws_url("/webrtc/signal"), **kwargs)
    assert rtc.wait_open(), rtc.summary()
    return rtc


# --- /webrtc/signal (trickle) ---------------------------------------------------------------------


def test_signal_trickle_loopback_only_v1_and_v2_echo(
    page: Page, api_key_relay: Relay, udp_echo: UdpEcho
) -> None:
    """F-063, F-072, F-075, F-106, F-107, F-120: auth message, offer, then the relay's answer and its
    candidates; the channel opens over loopback and frames echo byte for byte (PREFER_V2: v2 replies
    once the client sent v2, sticky)."""
    rtc = connected_signal(page, api_key_relay, auth={"apiKey": API_KEY})
    signals = rtc.signals()
    assert signals[0]["kind"] == "json" and list(signals[0]["json"]) == ["type", "sdp"], signals
    assert signals[0]["json"]["type"] == "answer" and list(signals[0]["json"]["sdp"]) == ["type", "sdp"]
    trickled = [e["json"] for e in signals[1:]]
    assert trickled and all(m["type"] == "candidate" for m in trickled), signals
    assert all(list(m["candidate"]) == ["candidate", "sdpMid", "sdpMLineIndex"] for m in trickled), trickled
    assert_loopback_path(rtc, api_key_relay)

    port = udp_echo.port
    assert (
        echo(rtc, 1, 40000, LOOPBACK4, port, b"hello v1")
        == v1_bytes(40000, LOOPBACK4, port, b"hello v1").hex()
    )
    payload = bytes(range(256)) * 4  # every byte value, 1024 bytes
    assert echo(rtc, 2, 40001, LOOPBACK4, port, payload) == v2_bytes(40001, LOOPBACK4, port, payload).hex()
    assert (
        echo(rtc, 1, 40000, LOOPBACK4, port, b"sticky") == v2_bytes(40000, LOOPBACK4, port, b"sticky").hex()
    )
    rtc.close()


def test_signal_v2_ipv6_echo(page: Page, api_key_relay: Relay, udp_echo6: UdpEcho) -> None:
    """F-118, F-120: a v2 IPv6 frame to ::1 over the DataChannel comes back as v2 with af 0x06."""
    rtc = connected_signal(page, api_key_relay, auth={"apiKey": API_KEY})
    expected = v2_bytes(40002, "::1", udp_echo6.port, b"six")
    assert echo(rtc, 2, 40002, "::1", udp_echo6.port, b"six") == expected.hex()
    rtc.close()


def test_signal_jwt_first_message_auth(page: Page, jwt_relay: Relay, udp_echo: UdpEcho) -> None:
    """F-066, F-072, F-120: a JWT in the first message authenticates; no PREFER_V2: IPv4 replies are v1."""
    rtc = connected_signal(page, jwt_relay, auth={"token": mint_token(f"e2e-{uuid.uuid4().hex}")})
    port = udp_echo.port
    assert (
        echo(rtc, 1, 50000, LOOPBACK4, port, b"jwt v1") == v1_bytes(50000, LOOPBACK4, port, b"jwt v1").hex()
    )
    assert (
        echo(rtc, 2, 50001, LOOPBACK4, port, b"jwt v2") == v1_bytes(50001, LOOPBACK4, port, b"jwt v2").hex()
    )
    rtc.close()


def test_signal_bad_jwt_is_refused(page: Page, jwt_relay: Relay) -> None:
    """F-072: an auth message whose token fails verification: error unauthorized, close 1008.

    The page sends its offer right behind the auth message (PROTOCOL.md 5.4 allows it). The relay
    closes the TCP connection right after its Close frame without reading that offer, so the kernel
    answers with a reset, and now and then (about 1 in 40 here) Chromium sees the reset before the Close
    frame and reports 1006: the error message is what a client can rely on.
    """
    before = jwt_relay.metric("auth_failure")
    rtc = BrowserRtc.signal(page, jwt_relay.ws_url("/webrtc/signal"), auth={"token": "not.a.jwt"})
    assert rtc.next_signal()["json"] == {"type": "error", "code": "unauthorized", "message": "unauthorized"}
    closed = rtc.next_signal()
    assert closed["kind"] == "ws-close", closed
    assert (closed["code"], closed["reason"]) in ((1008, "unauthorized"), (1006, "")), closed
    assert rtc.wait_open(timeout=1.0) is False
    assert jwt_relay.metric("auth_failure") == before + 1
    rtc.close()


# --- POST /webrtc/offer and POST /offer (non-trickle) --------------------------------------------


def test_webrtc_offer_non_trickle_echo(page: Page, api_key_relay: Relay, udp_echo: UdpEcho) -> None:
    """F-058, F-061: the offer after gathering, `{"sdp":{...}}`; the answer carries the relay's
    127.0.0.1 candidate and a 32-hex sessionId."""
    headers = {"X-API-Key": API_KEY}
    rtc = BrowserRtc.http(page, api_key_relay.base_url + "/webrtc/offer", "webrtc", headers=headers)
    assert rtc.wait_open(), rtc.summary()
    summary = rtc.summary()
    assert summary["http"]["status"] == 200 and list(summary["http"]["json"]) == ["sessionId", "sdp"]
    assert HEX32.match(summary["sessionId"]), summary["sessionId"]
    assert_loopback_path(rtc, api_key_relay)
    port = udp_echo.port
    assert (
        echo(rtc, 1, 40010, LOOPBACK4, port, b"http v1") == v1_bytes(40010, LOOPBACK4, port, b"http v1").hex()
    )
    assert (
        echo(rtc, 2, 40011, LOOPBACK4, port, b"http v2") == v2_bytes(40011, LOOPBACK4, port, b"http v2").hex()
    )
    rtc.close()


def test_versioned_offer_non_trickle_echo(page: Page, api_key_relay: Relay, udp_echo: UdpEcho) -> None:
    """F-054..F-056: `{"version":1,"offer":{...}}` -> `{"version":1,"answer":{...}}`."""
    headers = {"X-API-Key": API_KEY}
    rtc = BrowserRtc.http(page, api_key_relay.base_url + "/offer", "offer", headers=headers)
    assert rtc.wait_open(), rtc.summary()
    body = rtc.summary()["http"]["json"]
    assert list(body) == ["version", "answer"] and body["version"] == 1 and body["answer"]["type"] == "answer"
    assert_loopback_path(rtc, api_key_relay)
    port = udp_echo.port
    assert (
        echo(rtc, 1, 40020, LOOPBACK4, port, b"offer v1")
        == v1_bytes(40020, LOOPBACK4, port, b"offer v1").hex()
    )
    rtc.close()


# --- the sid lock ---------------------------------------------------------------------------------


def test_second_session_with_same_sid_is_refused_everywhere(page: Page, jwt_relay: Relay) -> None:
    """F-045, F-074, F-055, F-061: one live session per JWT sid. A second /webrtc/signal offer gets
    session_already_active and close 1008; /webrtc/offer and /offer get 409. Freed when the first ends."""
    sid = f"e2e-{uuid.uuid4().hex}"
    first = connected_signal(page, jwt_relay, auth={"token": mint_token(sid)})

    second = BrowserRtc.signal(
        page, jwt_relay.ws_url("/webrtc/signal"), auth={"token": mint_token(sid, ttl=600)}
    )
    assert second.next_signal()["json"] == SESSION_ALREADY_ACTIVE
    closed = second.next_signal()
    assert (closed["kind"], closed["code"], closed["reason"]) == ("ws-close", 1008, "session_already_active")
    second.close()

    for path, kind in (("/webrtc/offer", "webrtc"), ("/offer", "offer")):
        headers = {"Authorization": f"Bearer {mint_token(sid)}"}
        refused = BrowserRtc.http(page, jwt_relay.base_url + path, kind, headers=headers)
        assert refused.started() is False
        http = refused.summary()["http"]
        assert http["status"] == 409 and http["json"] == {
            k: SESSION_ALREADY_ACTIVE[k] for k in ("code", "message")
        }
        refused.close()

    first.close()

    def sid_free_again() -> bool:
        third = BrowserRtc.signal(page, jwt_relay.ws_url("/webrtc/signal"), auth={"token": mint_token(sid)})
        try:
            return third.wait_open(timeout=3.0)
        finally:
            third.close()

    assert wait_until(sid_free_again, timeout=6.0, interval=0.1)


# --- inbound filter -------------------------------------------------------------------------------


def test_reply_from_unexpected_source_port_is_dropped(
    page: Page, api_key_relay: Relay, udp_echo: UdpEcho, udp_echo_other_port: UdpEcho
) -> None:
    """F-132: a reply from a port the guest never sent to is dropped before the DataChannel and counted
    as udp_remote_allowlist_overflow_drops_total."""
    metric = "udp_remote_allowlist_overflow_drops_total"
    before = api_key_relay.metric(metric)
    replies_before = udp_echo_other_port.replies
    rtc = connected_signal(page, api_key_relay, auth={"apiKey": API_KEY})

    rtc.send_v1(41000, LOOPBACK4, udp_echo_other_port.port, b"who answers?")
    assert wait_until(lambda: udp_echo_other_port.replies == replies_before + 1)
    assert wait_until(lambda: api_key_relay.metric(metric) == before + 1), api_key_relay.metrics()

    # The next message on the channel answers a later, well-behaved echo: nothing came before it.
    reply = echo(rtc, 1, 41000, LOOPBACK4, udp_echo.port, b"control")
    assert reply == v1_bytes(41000, LOOPBACK4, udp_echo.port, b"control").hex()
    assert rtc.queued() == 0
    rtc.close()


# --- nothing on the real interfaces ---------------------------------------------------------------


class Sniffer:
    """Every IP packet on every interface while running (AF_PACKET, needs root), as
    (interface, IP protocol, source, source port, destination, destination port)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))  # ETH_P_ALL
        self.sock.settimeout(0.05)
        self.packets: list[tuple[str, int, str, int, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sniffer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            parsed = self._parse(addr[1], data)
            if parsed is not None:
                self.packets.append((addr[0], *parsed))

    @staticmethod
    def _parse(ethertype: int, p: bytes) -> tuple[int, str, int, str, int] | None:
        if ethertype == 0x0800 and len(p) >= 20:
            proto, header = p[9], (p[0] & 0x0F) * 4
            src, dst = socket.inet_ntoa(p[12:16]), socket.inet_ntoa(p[16:20])
        elif ethertype == 0x86DD and len(p) >= 40:
            proto, header = p[6], 40
            src, dst = socket.inet_ntop(socket.AF_INET6, p[8:24]), socket.inet_ntop(socket.AF_INET6, p[24:40])
        else:
            return None
        sport = dport = 0
        if proto == socket.IPPROTO_UDP and len(p) >= header + 4:
            sport, dport = struct.unpack_from("!HH", p, header)
        return proto, src, sport, dst, dport

    def stop(self) -> list[tuple[str, int, str, int, str, int]]:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        return self.packets


def test_webrtc_traffic_stays_on_loopback(page: Page, api_key_relay: Relay, udp_echo: UdpEcho) -> None:
    """The network rule, observed on the wire: the session's ICE, DTLS and SCTP packets are all seen on
    `lo`, none on a real interface, and nothing joins or announces mDNS there."""
    if os.geteuid() != 0:
        pytest.skip("capturing packets needs root")
    sniffer = Sniffer()
    try:
        rtc = connected_signal(page, api_key_relay, auth={"apiKey": API_KEY})
        path = assert_loopback_path(rtc, api_key_relay)
        for i in range(20):
            echo(rtc, 1, 42000, LOOPBACK4, udp_echo.port, b"wire %d" % i)
        rtc.close()
        time.sleep(0.2)
    finally:
        packets = sniffer.stop()
    ice_ports = {path.relay_port, path.browser_port}
    on_lo = [p for p in packets if p[0] == "lo" and {p[3], p[5]} & ice_ports]
    elsewhere = [p for p in packets if p[0] != "lo"]
    assert len(on_lo) >= 20, f"the sniffer saw {len(on_lo)} of the session's packets on lo"
    assert not [p for p in elsewhere if {p[3], p[5]} & ice_ports], elsewhere
    assert not [
        p for p in elsewhere if p[1] == 2 or 5353 in (p[3], p[5]) or p[4] in ("224.0.0.251", "ff02::fb")
    ]


# --- mDNS candidates: Chromium's defaults, in a network namespace ---------------------------------


@attrs.frozen
class MdnsLab:
    relay: Relay
    echo: UdpEcho
    page: Page


@pytest.fixture(scope="module")
def mdns_lab(playwright_driver: Playwright) -> Iterator[MdnsLab]:
    """Chromium with its default mDNS hiding, a relay, a page server and an echo server, all inside a
    throwaway network namespace (NetNs): its announcements cannot reach a real interface there."""
    reason = NetNs.unavailable_reason()
    if reason is not None:
        pytest.skip(f"mDNS test: {reason}")
    netns = NetNs(f"aero-e2e-{os.getpid()}").create()
    with contextlib.ExitStack() as stack:
        stack.callback(netns.delete)
        server = netns.run(PageServer)
        stack.callback(server.close)
        udp_echo = netns.run(lambda: UdpEcho(LOOPBACK4))
        stack.callback(udp_echo.close)
        tmp = stack.enter_context(temp_dir("aero-e2e-netns-"))
        factory = RelayFactory(tmp, {**RELAY_BASE_ENV, "ALLOWED_ORIGINS": server.origin}, netns=netns)
        stack.callback(factory.stop_all)
        relay = factory({})
        (tmp / "profile").mkdir()
        context: BrowserContext = playwright_driver.chromium.launch_persistent_context(
            str(tmp / "profile"),
            executable_path=str(netns.chromium_wrapper(tmp, CHROMIUM)),
            headless=True,
            args=[a for a in CHROMIUM_ARGS if "WebRtcHideLocalIpsWithMdns" not in a],
        )
        stack.callback(context.close)
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(server.url("index.html"))
        page.wait_for_function("() => typeof window.AeroRtc === 'object'")
        yield MdnsLab(relay, udp_echo, page)


def assert_mdns_candidates_sent(rtc: BrowserRtc) -> None:
    cands = rtc.summary()["candidates"]
    addresses = [m.group(2) for m in map(CANDIDATE.match, cands["signaled"]) if m]
    assert any(a.endswith(".local") for a in addresses), (
        f"Chromium gathered no mDNS candidate to send: {cands}"
    )


def test_trickled_mdns_candidates_do_not_break_connectivity(mdns_lab: MdnsLab) -> None:
    """aiortc gap i (webrtc/hooks.py): Chromium's `.local` candidates, trickled, are dropped unresolved;
    the relay learns the browser's address from its checks (peer-reflexive) and the channel works."""
    lab = mdns_lab
    rtc = BrowserRtc.signal(lab.page, lab.relay.ws_url("/webrtc/signal"), signal="mdns")
    assert rtc.wait_open(), rtc.summary()
    assert_mdns_candidates_sent(rtc)
    assert_loopback_path(rtc, lab.relay, signal="mdns")
    port = lab.echo.port
    assert echo(rtc, 1, 43000, LOOPBACK4, port, b"mdns") == v1_bytes(43000, LOOPBACK4, port, b"mdns").hex()
    rtc.close()


def test_mdns_candidates_in_a_non_trickle_offer_do_not_break_connectivity(mdns_lab: MdnsLab) -> None:
    """aiortc gap i (webrtc/hooks.py): the same, the `.local` candidates inside a POST /webrtc/offer SDP."""
    lab = mdns_lab
    rtc = BrowserRtc.http(lab.page, lab.relay.base_url + "/webrtc/offer", "webrtc", signal="mdns")
    assert rtc.wait_open(), rtc.summary()
    assert_mdns_candidates_sent(rtc)
    assert_loopback_path(rtc, lab.relay, signal="mdns")
    port = lab.echo.port
    assert echo(rtc, 2, 43001, LOOPBACK4, port, b"mdns") == v1_bytes(43001, LOOPBACK4, port, b"mdns").hex()
    rtc.close()
