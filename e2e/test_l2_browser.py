"""The L2 tunnel from a real browser: Chromium's `l2` DataChannel bridged to a real backend WebSocket.

One RTCPeerConnection carries both channels of PROTOCOL.md section 2: `udp` (unordered, maxRetransmits
0) and `l2` (reliable, ordered). The relay (a subprocess with L2_BACKEND_WS_URL) dials the test backend
of tests/webrtc/l2_backend.py (admission as aero-l2-proxy does it: Origin, token, `aero_session` cookie;
an `aero-l2-tunnel-v1` PING gets its PONG), which runs under `trio.run` on a daemon thread here: the
test thread belongs to Playwright's sync API, and a thread keeps what the backend saw readable in place.

The page side is pages/l2.js (`window.AeroL2`), loaded next to webrtc_relay.js: it opens `l2` on an
AeroRtc session's PeerConnection and sends the test's bytes on both channels interleaved, so the
bridge's traffic and the datagrams are in flight at the same time. Loopback only, as in
test_webrtc_browser.py (whose path check is reused).
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from e2e.browser import BrowserRtc
from e2e.harness import API_KEY, VECTORS_DIR, PageServer, Relay, StartRelay, UdpEcho, wait_until
from e2e.test_webrtc_browser import LOOPBACK4, assert_loopback_path, connected_signal, v1_bytes
from tests.webrtc.l2_backend import SUBPROTOCOL, TOKEN_PREFIX, L2Backend, SeenRequest, start_backend

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

PINGS = 50  # per round, in flight together with as many datagrams
# Round gaps: a burst (sent in one page task, so all 100 are out before the first answer is read),
# then one PING and one datagram every 4 ms while earlier ones are still being answered.
ROUND_GAPS_MS = (0, 4)


# --- aero-l2-tunnel-v1 bytes, from the shared vectors ---------------------------------------------


def _l2_vector(name: str) -> bytes:
    doc = json.loads((VECTORS_DIR / "l2-tunnel-v1.json").read_text())
    for v in doc["vectors"]:
        if v["name"] == name:
            return base64.b64decode(v["wire_b64"])
    raise KeyError(name)


VECTOR_PING = _l2_vector("ping.u64be_timestamp_ms")  # a2 03 01 00 | u64 BE timestamp (ms)
VECTOR_PONG = _l2_vector("pong.echo_u64be_timestamp_ms")  # a2 03 02 00 | the same timestamp
PING_HEADER, PONG_HEADER = VECTOR_PING[:4], VECTOR_PONG[:4]


def pings_and_pongs(count: int, first_ts: int) -> tuple[list[bytes], list[bytes]]:
    """`count` PINGs with consecutive u64 timestamps from `first_ts`, and their PONGs, built here."""
    payloads = [struct.pack("!Q", first_ts + i) for i in range(count)]
    return [PING_HEADER + p for p in payloads], [PONG_HEADER + p for p in payloads]


def echo_frames(count: int, guest_port: int, port: int, tag: str) -> list[bytes]:
    """v1 frames to the echo server with distinct payloads of varied length (the echo returns each
    unchanged, the relay as a v1 frame from (127.0.0.1, port) to `guest_port`: the same bytes)."""
    return [
        v1_bytes(guest_port, LOOPBACK4, port, f"{tag}-{i:03d}-".encode() + bytes(range(i % 7 * 37)))
        for i in range(count)
    ]


# --- the backend on its own thread ----------------------------------------------------------------


@attrs.frozen
class BackendView:
    """A copy of what the backend saw, taken on its own thread."""

    requests: tuple[SeenRequest, ...]
    received: tuple[bytes, ...]
    closes: tuple[tuple[int, str | None], ...]


class BackendThread:
    """An `L2Backend` served by `trio.run` on a daemon thread, on 127.0.0.1 (a free port)."""

    def __init__(self, **behaviour: object) -> None:
        self._behaviour = behaviour
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._backend: L2Backend | None = None
        self._thread = threading.Thread(target=self._run, name="l2-backend", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._backend is None:
            raise RuntimeError("the L2 backend did not start") from self._error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as err:  # reported by __init__ (startup) or seen as a dead backend
            self._error = err
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._backend = await start_backend(nursery, **self._behaviour)
            self._token = trio.lowlevel.current_trio_token()
            self._scope = nursery.cancel_scope
            self._ready.set()

    @property
    def url(self) -> str:
        assert self._backend is not None
        return self._backend.url

    def view(self) -> BackendView:
        backend = self._backend
        assert backend is not None

        def copy() -> BackendView:
            return BackendView(tuple(backend.requests), tuple(backend.received), tuple(backend.closes))

        try:
            result: BackendView = trio.from_thread.run_sync(copy, trio_token=self._token)
        except trio.RunFinishedError:
            raise RuntimeError("the L2 backend is gone") from self._error
        return result

    def close(self) -> None:
        if self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):  # it died already (view() says why)
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(timeout=5)


@pytest.fixture
def start_l2_backend() -> Iterator[Callable[..., BackendThread]]:
    """`start_l2_backend(**behaviour)` -> a running backend (L2Backend's fields), stopped after the test."""
    started: list[BackendThread] = []

    def start(**behaviour: object) -> BackendThread:
        backend = BackendThread(**behaviour)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.close()


# --- the page side --------------------------------------------------------------------------------


@pytest.fixture
def l2_page(page: Page, page_server: PageServer) -> Page:
    """The allowed-origin page with pages/l2.js (`window.AeroL2`) loaded."""
    page.add_script_tag(url=page_server.url("l2.js"))
    page.wait_for_function("() => typeof window.AeroL2 === 'object'")
    return page


@pytest.fixture
def aero_session_cookie(l2_page: Page) -> Iterator[str]:
    """An `aero_session` cookie on 127.0.0.1 (cookies ignore the port, so the relay's signaling request
    carries it); removed afterwards, since the browser profile is shared by the whole session."""
    value = f"e2e-session-{uuid.uuid4().hex}"
    l2_page.evaluate("v => { document.cookie = `aero_session=${v}; path=/; SameSite=Lax`; }", value)
    yield value
    l2_page.evaluate("() => { document.cookie = 'aero_session=; path=/; max-age=0'; }")


class BrowserL2:
    """One `l2` DataChannel on the PeerConnection of a `BrowserRtc` (pages/l2.js)."""

    def __init__(self, rtc: BrowserRtc, channel: dict[str, Any] | None = None) -> None:
        self.rtc = rtc
        self.page = rtc.page
        self.id = int(self.page.evaluate("([s, o]) => AeroL2.open(s, o)", [rtc.id, {"channel": channel}]))

    def wait_open(self, timeout: float = 10.0) -> bool:
        return bool(self.page.evaluate("([c, ms]) => AeroL2.waitOpen(c, ms)", [self.id, int(timeout * 1000)]))

    def wait_closed(self, timeout: float = 10.0) -> bool:
        return bool(
            self.page.evaluate("([c, ms]) => AeroL2.waitClosed(c, ms)", [self.id, int(timeout * 1000)])
        )

    def close(self) -> None:
        """Close `l2` from the page; the PeerConnection and `udp` stay up."""
        self.page.evaluate("c => AeroL2.close(c)", self.id)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.page.evaluate("c => AeroL2.state(c)", self.id)
        return state


def exchange(
    rtc: BrowserRtc,
    l2: BrowserL2 | None,
    messages: list[bytes],
    datagrams: list[bytes],
    *,
    gap_ms: int = 0,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Send messages[i] on `l2` and datagrams[i] on `udp` alternately; wait for every answer and echo.
    Returns {complete, answers, echoes (hex, arrival order), errors, sentMs, elapsedMs, l2State, ...}."""
    result: dict[str, Any] = rtc.page.evaluate(
        "([s, c, m, d, o]) => AeroL2.exchange(s, c, m, d, o)",
        [
            rtc.id,
            None if l2 is None else l2.id,
            [m.hex() for m in messages],
            [d.hex() for d in datagrams],
            {"gapMs": gap_ms, "timeoutMs": int(timeout * 1000)},
        ],
    )
    return result


def pc_state(rtc: BrowserRtc) -> str:
    return str(rtc.summary()["pcState"])


def l2_log_records(relay: Relay, session_start: int = 0) -> list[dict[str, Any]]:
    return [
        r
        for r in relay.log_records()[session_start:]
        if str(r.get("msg", "")).startswith(("l2_bridge", "rejecting l2"))
    ]


# --- the bridge under mixed load ------------------------------------------------------------------


def test_l2_ping_pong_through_the_bridge_while_udp_echoes(
    l2_page: Page,
    aero_session_cookie: str,
    page_server: PageServer,
    relay_factory: StartRelay,
    udp_echo: UdpEcho,
    start_l2_backend: Callable[..., BackendThread],
) -> None:
    """F-106, F-109, F-150, F-151, F-152, F-153, F-154, F-156, F-157, F-158, F-159, F-160: `udp` and `l2`
    on one PeerConnection. Rounds of 50 PINGs on `l2` and 50 echo datagrams on `udp`, all in flight
    together: every PONG comes back in order and byte for byte, every datagram once. The backend saw one
    dial with the page's Origin, the API key as `aero-l2-token.<key>` (mode subprotocol, no query
    credential) and exactly the `aero_session` cookie; the relay counts it all in /metrics (F-214)."""
    backend = start_l2_backend(
        require_origin=page_server.origin, require_token=API_KEY, require_cookie=aero_session_cookie
    )
    relay = relay_factory(
        {
            "AUTH_MODE": "api_key",
            "API_KEY": API_KEY,
            "L2_BACKEND_WS_URL": backend.url,
            "L2_BACKEND_AUTH_FORWARD_MODE": "subprotocol",
            "L2_BACKEND_FORWARD_AERO_SESSION": "true",
        }
    )
    before = relay.metrics()
    log_start = len(relay.log_records())

    rtc = connected_signal(l2_page, relay, auth={"apiKey": API_KEY})
    l2 = BrowserL2(rtc)
    assert l2.wait_open(), l2.state()
    state = l2.state()
    assert (state["label"], state["ordered"], state["maxRetransmits"], state["maxPacketLifeTime"]) == (
        "l2",
        True,
        None,
        None,
    ), state
    assert_loopback_path(rtc, relay)

    # The first PING is the vector's own bytes; the bare 4-byte PING (no payload) closes the list.
    ts0 = struct.unpack("!Q", VECTOR_PING[4:])[0]
    sent_messages: list[bytes] = []
    sent_datagrams: list[bytes] = []
    assert PING_HEADER.hex() == "a2030100" and PONG_HEADER.hex() == "a2030200"
    for n, gap_ms in enumerate(ROUND_GAPS_MS):
        pings, pongs = pings_and_pongs(PINGS, ts0 + n * PINGS)
        if n == len(ROUND_GAPS_MS) - 1:
            pings[-1], pongs[-1] = PING_HEADER, PONG_HEADER
        if n == 0:
            assert (pings[0], pongs[0]) == (VECTOR_PING, VECTOR_PONG)
        frames = echo_frames(PINGS, 40300 + n, udp_echo.port, f"round{n}")
        result = exchange(rtc, l2, pings, frames, gap_ms=gap_ms)
        assert result["complete"] and not result["errors"], result
        assert result["answers"] == [p.hex() for p in pongs]  # ordered and reliable: exactly these
        assert Counter(result["echoes"]) == Counter(f.hex() for f in frames)  # unordered: each once
        assert (result["l2State"], result["udpState"]) == ("open", "open"), result
        sent_messages += pings
        sent_datagrams += frames
    assert pc_state(rtc) == "connected"

    # What the backend saw: one dial, admitted (its checks are Origin, token and cookie), the PINGs.
    view = backend.view()
    assert len(view.requests) == 1, view.requests
    seen = view.requests[0]
    assert (seen.status, seen.path) == (101, "/l2"), seen
    assert seen.header("origin") == [page_server.origin]  # F-153: the signaling request's Origin
    assert seen.subprotocols == (SUBPROTOCOL, TOKEN_PREFIX + API_KEY)  # F-151, F-152
    assert "token" not in seen.query and "apiKey" not in seen.query, seen.query
    assert seen.header("cookie") == [f"aero_session={aero_session_cookie}"]  # F-154: only that cookie
    assert list(view.received) == sent_messages  # one WebSocket message per DataChannel message

    n_msgs, n_dgrams = len(sent_messages), len(sent_datagrams)
    l2_bytes = sum(map(len, sent_messages))
    expected = {
        "l2_bridge_dials_total": 1,
        "l2_bridge_dial_errors_total": 0,
        "l2_bridge_messages_from_client_total": n_msgs,
        "l2_bridge_messages_to_client_total": n_msgs,
        "l2_bridge_bytes_from_client_total": l2_bytes,
        "l2_bridge_bytes_to_client_total": l2_bytes,  # a PONG is as long as its PING
        "webrtc_udp_datagrams_in": n_dgrams,
        "webrtc_udp_datagrams_out": n_dgrams,
        "webrtc_udp_dropped": 0,
    }

    def deltas() -> dict[str, int]:
        after = relay.metrics()
        return {k: after.get(k, 0) - before.get(k, 0) for k in expected}

    assert wait_until(lambda: deltas() == expected, timeout=3.0), deltas()

    # F-159: the client closes `l2` only -> one shutdown (datachannel_closed), a 1000 close frame with
    # the reason to the backend; `udp` goes on. (Closing the whole PeerConnection ends the session,
    # and then the relay just closes the backend's TCP connection.)
    l2.close()
    assert l2.wait_closed(), l2.state()
    assert wait_until(lambda: backend.view().closes != ()), backend.view()
    assert backend.view().closes == ((1000, "datachannel_closed"),)
    frames = echo_frames(10, 40310, udp_echo.port, "after-l2")
    result = exchange(rtc, None, [], frames)
    assert result["complete"] and Counter(result["echoes"]) == Counter(f.hex() for f in frames), result
    assert pc_state(rtc) == "connected"
    records = l2_log_records(relay, log_start)
    assert [r["msg"] for r in records] == ["l2_bridge_backend_dial_succeeded", "l2_bridge_shutdown"], records
    assert records[1]["reason"] == "datachannel_closed", records
    assert records[0]["backend_ws_url"] == backend.url, records
    for secret in (API_KEY, aero_session_cookie):  # F-160
        assert secret not in json.dumps(records), records
    rtc.close()


# --- failures cost the l2 channel only ------------------------------------------------------------


@attrs.frozen
class DialFailure:
    behaviour: dict[str, object]  # the backend's (L2Backend fields)
    seen_status: int  # the status the backend answered the upgrade with
    status_code: int | None  # the WARN record's status_code (absent: None)
    err: str  # the WARN record's err


DIAL_FAILURES = {
    # The backend completes the upgrade without selecting aero-l2-tunnel-v1 (F-151: strict).
    "subprotocol_refused": DialFailure(
        {"refuse_subprotocol": True},
        101,
        None,
        'l2 backend did not negotiate required subprotocol "aero-l2-tunnel-v1" (got "")',
    ),
    # The backend refuses the upgrade with an HTTP status (here: an Origin it does not allow).
    "rejected_403": DialFailure(
        {"require_origin": "https://elsewhere.example"}, 403, 403, "websocket: bad handshake"
    ),
}


@pytest.mark.parametrize("failure", sorted(DIAL_FAILURES))
def test_failed_dial_closes_l2_while_udp_keeps_echoing(
    failure: str,
    l2_page: Page,
    relay_factory: StartRelay,
    udp_echo: UdpEcho,
    start_l2_backend: Callable[..., BackendThread],
) -> None:
    """F-150, F-151, F-156, F-221, PROTOCOL.md 9.1: a failed dial closes `l2` (WARN
    l2_bridge_backend_dial_failed, l2_bridge_dial_errors_total); the PeerConnection and `udp` stay up
    and echo, also while `l2` fails; a reopened `l2` dials again."""
    case = DIAL_FAILURES[failure]
    backend = start_l2_backend(**case.behaviour)
    relay = relay_factory({"L2_BACKEND_WS_URL": backend.url})
    before = relay.metrics()
    log_start = len(relay.log_records())
    rtc = connected_signal(l2_page, relay)

    for attempt in (1, 2):
        l2 = BrowserL2(rtc)
        frames = echo_frames(20, 40400 + attempt, udp_echo.port, f"{failure}{attempt}")
        result = exchange(rtc, None, [], frames)  # datagrams in flight while the dial fails
        assert result["complete"] and Counter(result["echoes"]) == Counter(f.hex() for f in frames), result
        assert l2.wait_closed(), l2.state()
        assert l2.state()["received"] == []
        after_close = echo_frames(10, 40410 + attempt, udp_echo.port, f"after{attempt}")
        result = exchange(rtc, None, [], after_close)
        assert result["complete"] and Counter(result["echoes"]) == Counter(f.hex() for f in after_close)
        assert result["udpState"] == "open" and pc_state(rtc) == "connected", result

        def dial_errors(n: int = attempt) -> bool:
            return (
                relay.metric("l2_bridge_dial_errors_total") - before.get("l2_bridge_dial_errors_total", 0)
                == n
            )

        assert wait_until(dial_errors), relay.metrics()

    after = relay.metrics()
    assert after.get("l2_bridge_dials_total", 0) - before.get("l2_bridge_dials_total", 0) == 2
    assert after.get("webrtc_udp_dropped", 0) == before.get("webrtc_udp_dropped", 0)
    view = backend.view()
    assert [r.status for r in view.requests] == [case.seen_status] * 2, view.requests
    assert all(r.subprotocols == (SUBPROTOCOL,) for r in view.requests)  # AUTH_MODE none: no credential
    assert view.received == ()
    failed = [r for r in l2_log_records(relay, log_start) if r["msg"] == "l2_bridge_backend_dial_failed"]
    assert len(failed) == 2, l2_log_records(relay, log_start)
    for record in failed:
        assert record["level"] == "WARN", record
        assert record["err"] == case.err and record.get("status_code") == case.status_code, record
    assert not any(r["msg"] == "l2_bridge_shutdown" for r in l2_log_records(relay, log_start))
    rtc.close()


def test_unordered_l2_channel_is_rejected_without_a_dial(
    l2_page: Page,
    relay_factory: StartRelay,
    udp_echo: UdpEcho,
    start_l2_backend: Callable[..., BackendThread],
) -> None:
    """F-109: an unordered `l2` is closed by the relay (WARN "rejecting l2 datachannel", reason
    unordered) before any dial; `udp` keeps echoing."""
    backend = start_l2_backend()
    relay = relay_factory({"L2_BACKEND_WS_URL": backend.url})
    before = relay.metrics()
    log_start = len(relay.log_records())
    rtc = connected_signal(l2_page, relay)
    l2 = BrowserL2(rtc, channel={"ordered": False})
    assert l2.wait_closed(), l2.state()
    frames = echo_frames(10, 40500, udp_echo.port, "unordered-l2")
    result = exchange(rtc, None, [], frames)
    assert result["complete"] and Counter(result["echoes"]) == Counter(f.hex() for f in frames), result
    assert pc_state(rtc) == "connected"
    records = l2_log_records(relay, log_start)
    assert [(r["msg"], r["reason"]) for r in records] == [("rejecting l2 datachannel", "unordered")], records
    assert relay.metric("l2_bridge_dials_total") == before.get("l2_bridge_dials_total", 0)
    assert backend.view().requests == ()
    rtc.close()
