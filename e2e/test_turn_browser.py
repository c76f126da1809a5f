"""TURN with a real coturn: Chromium reaches the relay only through a loopback `turnserver`.

Every PeerConnection here uses `iceTransportPolicy: "relay"`, so Chromium gathers only TURN relay
candidates and the only path to the relay's server-side peer is through coturn. The relay hands out
the ICE servers (`GET /webrtc/ice`, F-029..F-035): with TURN_REST_SHARED_SECRET it injects coturn
`--use-auth-secret` credentials (F-033, F-034); otherwise the static ones from AERO_ICE_SERVERS_JSON.
Failures are pinned at gathering: a TURN server that refuses the credential yields no candidate at all
and only `icecandidateerror`s with STUN error 401 for exactly that server's URL; with such a credential
a signaled session never starts ICE and the relay ends it at its connect timeout.

Everything (coturn, its relay ports, the relay, the page, the UDP echo server) is on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from e2e.harness import PageServer, Relay, StartRelay, UdpEcho, wait_until
from e2e.turn import (
    LOOPBACK,
    STATIC_PASSWORD,
    STATIC_USER,
    Coturn,
    rest_auth_args,
    rest_credential,
    static_auth_args,
    turnserver_unavailable_reason,
    wait_past,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

_NO_TURNSERVER = turnserver_unavailable_reason()
# Checked at collection, so a host without coturn does not even start Chromium for this module.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(_NO_TURNSERVER is not None, reason=f"e2e: {_NO_TURNSERVER}"),
]

TURN_SECRET = "e2e-turn-rest-secret"
PREFIX = "aero"  # TURN_REST_USERNAME_PREFIX's default
REST_USERNAME = re.compile(r"^([0-9]+):aero:([0-9a-f]{32})$")
STUN_UNAUTHORIZED = 401
GATHER_TIMEOUT_MS = 8000
CONNECT_TIMEOUT = "2s"
# "candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ..."
AERO_CANDIDATE = re.compile(
    r"^candidate:\S+ \d+ (?P<transport>\S+) \d+ (?P<address>\S+) (?P<port>\d+) typ (?P<type>\S+)"
)


# --- fixtures -------------------------------------------------------------------------------------


def _start_coturn(auth_args: list[str]) -> Iterator[Coturn]:
    turn = Coturn.start(auth_args)
    try:
        yield turn
    finally:
        turn.stop()


@pytest.fixture(scope="module")
def coturn_rest() -> Iterator[Coturn]:
    """coturn with `--use-auth-secret --static-auth-secret=TURN_SECRET`."""
    yield from _start_coturn(rest_auth_args(TURN_SECRET))


@pytest.fixture(scope="module")
def coturn_static() -> Iterator[Coturn]:
    """coturn with `--lt-cred-mech --user=aero:aero`."""
    yield from _start_coturn(static_auth_args())


def rest_relay_env(turn: Coturn, secret: str = TURN_SECRET, **extra: str) -> dict[str, str]:
    # The TURN entry has no username/credential: the relay injects them per request (F-033).
    return {
        "TURN_REST_SHARED_SECRET": secret,
        "AERO_ICE_SERVERS_JSON": json.dumps([{"urls": [turn.url]}]),
        "WEBRTC_UDP_LISTEN_IP": LOOPBACK,
        **extra,
    }


@pytest.fixture
def rest_relay(relay_factory: StartRelay, coturn_rest: Coturn) -> Relay:
    return relay_factory(rest_relay_env(coturn_rest))


@pytest.fixture
def wrong_secret_relay(relay_factory: StartRelay, coturn_rest: Coturn) -> Relay:
    """Mints with another secret than coturn's; gives up on unconnected sessions after 2 s."""
    return relay_factory(
        rest_relay_env(coturn_rest, "not-" + TURN_SECRET, WEBRTC_SESSION_CONNECT_TIMEOUT=CONNECT_TIMEOUT)
    )


@pytest.fixture
def static_relay(relay_factory: StartRelay, coturn_static: Coturn) -> Relay:
    servers = [{"urls": [coturn_static.url], "username": STATIC_USER, "credential": STATIC_PASSWORD}]
    return relay_factory({"AERO_ICE_SERVERS_JSON": json.dumps(servers), "WEBRTC_UDP_LISTEN_IP": LOOPBACK})


@pytest.fixture
def turn_page(page: Page, page_server: PageServer) -> Page:
    """index.html (AeroUdp's frame codec, AeroRtc's signaled session) plus pages/turn_relay.js (AeroTurn)."""
    page.add_script_tag(url=page_server.url("turn_relay.js"))
    page.wait_for_function("() => typeof window.AeroTurn === 'object' && typeof window.AeroRtc === 'object'")
    return page


# --- helpers --------------------------------------------------------------------------------------


def fetch_ice(page: Page, relay: Relay) -> list[dict[str, Any]]:
    """GET /webrtc/ice from the page (a CORS fetch from the allowed origin)."""
    resp = page.evaluate("url => AeroTurn.fetchIce(url)", relay.base_url + "/webrtc/ice")
    assert resp["status"] == 200, resp
    servers: list[dict[str, Any]] = resp["body"]["iceServers"]
    return servers


def relay_only(servers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"iceServers": servers, "iceTransportPolicy": "relay"}


def gather(page: Page, config: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        "([config, timeout]) => AeroTurn.gather(config, timeout)", [config, GATHER_TIMEOUT_MS]
    )
    return result


def v1_frame(guest_port: int, ip: str, port: int, payload: bytes) -> bytes:
    return struct.pack("!H4sH", guest_port, socket.inet_aton(ip), port) + payload


def assert_refused_by_turn(result: dict[str, Any], turn: Coturn) -> None:
    """Gathering ended with no candidate at all, and every icecandidateerror is the TURN server's
    401 (Chromium tries once per local network; one on this host)."""
    assert result["completed"] is True, result
    assert result["candidates"] == [], (result, turn.log_tail())
    refusals = {(e["errorCode"], e["url"]) for e in result["errors"]}
    assert refusals == {(STUN_UNAUTHORIZED, turn.url)}, (result, turn.log_tail())


def relay_session_echo(
    page: Page, relay: Relay, turn: Coturn, servers: list[dict[str, Any]], echo: UdpEcho
) -> None:
    """Open `udp` over /webrtc/signal with relay-only ICE, echo one datagram through the relay, and
    check with getStats() that the selected candidate pair runs through a coturn allocation."""
    sid = page.evaluate(
        "([url, config]) => AeroTurn.signal(url, config)",
        [relay.ws_url("/webrtc/signal"), relay_only(servers)],
    )
    call = "async ([id, arg]) => { const s = AeroTurn.session(id); %s }"
    try:
        opened = page.evaluate(
            call
            % "return await Promise.race([s.opened, new Promise((r) => setTimeout(r, arg, 'timeout'))]);",
            [sid, 10_000],
        )
        summary = page.evaluate(call % "return s.summary();", [sid, None])
        assert opened is True, (opened, summary, relay.log_tail(), turn.log_tail())

        # Relay-only policy: every local candidate Chromium gathered is a coturn allocation.
        gathered = [AERO_CANDIDATE.match(c["candidate"]) for c in summary["candidates"]["gathered"]]
        assert gathered and all(m is not None and m["type"] == "relay" for m in gathered), summary

        sent = v1_frame(47000, LOOPBACK, echo.port, b"through coturn")
        page.evaluate(call % "s.send(AeroUdp.fromHex(arg));", [sid, sent.hex()])
        reply = page.evaluate(call % "return await s.messages.next(arg);", [sid, 5000])
        assert reply["kind"] == "binary" and reply["hex"] == sent.hex(), reply

        pair = page.evaluate(call % "return await AeroTurn.selectedPair(s.pc);", [sid, None])
        assert pair is not None and pair["state"] == "succeeded", pair
        local = pair["local"]
        assert local["candidateType"] == "relay", pair
        assert (local["relayProtocol"], local["url"], local["address"]) == ("udp", turn.url, LOOPBACK), pair
        assert turn.min_port <= local["port"] <= turn.max_port, (pair, turn.min_port, turn.max_port)
        # The other end is the relay's own socket (WEBRTC_UDP_LISTEN_IP), reached through coturn.
        assert pair["remote"]["address"] == LOOPBACK, pair
    finally:
        page.evaluate("id => AeroTurn.drop(id)", sid)


# --- the relayed path -----------------------------------------------------------------------------


def test_rest_credentials_from_webrtc_ice_relay_a_datagram_through_coturn(
    turn_page: Page, rest_relay: Relay, coturn_rest: Coturn, udp_echo: UdpEcho
) -> None:
    """F-033, F-034: /webrtc/ice injects `<expiry>:aero:<32 hex>` and base64(HMAC-SHA1(secret, username))
    into the credential-less TURN entry; coturn accepts them and the `udp` DataChannel's selected pair
    has a local `relay` candidate from coturn's relay range."""
    before = int(time.time())
    servers = fetch_ice(turn_page, rest_relay)
    assert len(servers) == 1 and servers[0]["urls"] == [coturn_rest.url], servers
    username, credential = servers[0]["username"], servers[0]["credential"]
    m = REST_USERNAME.match(username)
    assert m is not None, username
    assert before + 3600 <= int(m.group(1)) <= int(time.time()) + 3600  # TURN_REST_TTL_SECONDS default
    expected = base64.b64encode(hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest())
    assert credential == expected.decode()

    relay_session_echo(turn_page, rest_relay, coturn_rest, servers, udp_echo)
    # coturn's side (its --verbose log): the allocation was authenticated as the relay-minted user.
    allocated = f"user <{username}>: incoming packet ALLOCATE processed, success"
    assert wait_until(lambda: allocated in coturn_rest.log_text()), coturn_rest.log_tail()


def test_static_credentials_relay_a_datagram_through_coturn(
    turn_page: Page, static_relay: Relay, coturn_static: Coturn, udp_echo: UdpEcho
) -> None:
    """F-032: without TURN REST the configured username/credential are served as they are; coturn's
    long-term mechanism accepts them and the selected pair's local candidate is a `relay` one."""
    servers = fetch_ice(turn_page, static_relay)
    assert servers == [{"urls": [coturn_static.url], "username": STATIC_USER, "credential": STATIC_PASSWORD}]

    relay_session_echo(turn_page, static_relay, coturn_static, servers, udp_echo)


# --- refused credentials --------------------------------------------------------------------------


@pytest.mark.parametrize(("expiry_offset", "refused"), [(600, False), (-60, True)], ids=["fresh", "expired"])
def test_rest_username_expiry_decides_whether_coturn_allocates(
    turn_page: Page, coturn_rest: Coturn, expiry_offset: int, refused: bool
) -> None:
    """A credential minted here with the right secret: with a future expiry Chromium gathers coturn
    relay candidates (one per local network; one here) and no error; with a past one coturn answers
    401 and nothing is gathered."""
    username, credential = rest_credential(TURN_SECRET, int(time.time()) + expiry_offset, f"{PREFIX}:e2e")
    servers = [{"urls": [coturn_rest.url], "username": username, "credential": credential}]
    result = gather(turn_page, relay_only(servers))
    if refused:
        assert_refused_by_turn(result, coturn_rest)
        return
    assert result["completed"] is True and result["errors"] == [], (result, coturn_rest.log_tail())
    assert result["candidates"], result
    for candidate in result["candidates"]:
        assert (candidate["type"], candidate["address"], candidate["url"]) == (
            "relay",
            LOOPBACK,
            coturn_rest.url,
        )
        assert coturn_rest.min_port <= candidate["port"] <= coturn_rest.max_port, candidate


def test_credential_from_relay_with_one_second_ttl_is_refused_once_expired(
    turn_page: Page, relay_factory: StartRelay, coturn_rest: Coturn
) -> None:
    """F-034: TURN_REST_TTL_SECONDS=1 puts now+1 in the username; once that second has passed coturn
    refuses the credential."""
    before = int(time.time())
    relay = relay_factory(rest_relay_env(coturn_rest, TURN_REST_TTL_SECONDS="1"))
    servers = fetch_ice(turn_page, relay)
    m = REST_USERNAME.match(servers[0]["username"])
    assert m is not None, servers
    expiry = int(m.group(1))
    assert before + 1 <= expiry <= int(time.time()) + 1
    wait_past(expiry)
    assert_refused_by_turn(gather(turn_page, relay_only(servers)), coturn_rest)


def test_relay_with_another_shared_secret_hands_out_credentials_coturn_refuses(
    turn_page: Page, wrong_secret_relay: Relay, coturn_rest: Coturn
) -> None:
    """A relay whose TURN_REST_SHARED_SECRET differs from coturn's mints a well-formed but wrong
    credential: 401, no relay candidate."""
    servers = fetch_ice(turn_page, wrong_secret_relay)
    assert REST_USERNAME.match(servers[0]["username"]), servers
    assert_refused_by_turn(gather(turn_page, relay_only(servers)), coturn_rest)


def test_refused_credentials_mean_ice_never_starts_and_the_relay_ends_the_session(
    turn_page: Page, wrong_secret_relay: Relay, coturn_rest: Coturn
) -> None:
    """With relay-only ICE and a refused credential Chromium has no local candidate, so ICE never
    leaves `new` and the DataChannel never opens; the relay ends the session at
    WEBRTC_SESSION_CONNECT_TIMEOUT and closes /webrtc/signal with 1000 `session closed` (section 5.4)."""
    servers = fetch_ice(turn_page, wrong_secret_relay)
    started = time.monotonic()
    sid = turn_page.evaluate(
        "([url, config]) => AeroTurn.signal(url, config)",
        [wrong_secret_relay.ws_url("/webrtc/signal"), relay_only(servers)],
    )
    try:
        closed = turn_page.evaluate(
            """async ([id, ms]) => {
                const s = AeroTurn.session(id);
                for (;;) {
                    const e = await s.signals.next(ms);
                    if (e.kind !== "json") return e;
                }
            }""",
            [sid, 10_000],
        )
        elapsed = time.monotonic() - started
        state = turn_page.evaluate(
            """id => { const s = AeroTurn.session(id);
                return {ice: s.pc.iceConnectionState, pcStates: s.states, gathered: s.candidates.gathered,
                        tOpen: s.tOpen, remote: s.candidates.remote.length}; }""",
            sid,
        )
    finally:
        turn_page.evaluate("id => AeroTurn.drop(id)", sid)
    assert (closed["kind"], closed["code"], closed["reason"]) == ("ws-close", 1000, "session closed"), closed
    assert elapsed >= 1.5, elapsed  # the connect timeout, not an early refusal
    assert state["gathered"] == [] and state["tOpen"] is None, state
    assert state["ice"] == "new" and "connected" not in state["pcStates"], state
    assert state["remote"] > 0, state  # the relay did answer with its candidates: only TURN was missing


def test_wrong_static_password_is_refused(turn_page: Page, coturn_static: Coturn) -> None:
    """The long-term mechanism with the right user and a wrong password: 401, no relay candidate."""
    servers = [{"urls": [coturn_static.url], "username": STATIC_USER, "credential": "wrong"}]
    assert_refused_by_turn(gather(turn_page, relay_only(servers)), coturn_static)
