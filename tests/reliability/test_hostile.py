"""Hostile peers: floods over every quota, destination and guest-port sprays, a client that stops
reading, signalling floods, a thousand connections that never authenticate, and SSRF through every
special IPv6 spelling of a loopback address (spec sections 9, 10, 14, 16, 17).

Every address used is loopback (127.0.0.0/8 or ::1). The SSRF test checks each destination against
the relay's own policy *before* sending it, so a policy bug fails the test without sending anything
off the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from wsproto.events import BytesMessage, CloseConnection
from wsproto.utilities import LocalProtocolError

from aero_relay.core.frames import decode, encode_v1, encode_v2
from aero_relay.observability.metrics import Event
from tests.conftest import RunningRelay, StartRelay
from tests.helpers import raw_http
from tests.relay.udp_servers import UdpServer, has_ipv6_loopback, start_server
from tests.reliability.support import PipelineRecorder, fds_back_to, open_fds, relay_subprocess, wait_until
from tests.wsclient import Closed, WSClient, connect

DEV = {"DESTINATION_POLICY_PRESET": "dev"}
LOOPBACK4 = socket.inet_aton("127.0.0.1")
SEND_ERRORS = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.BusyResourceError,
    OSError,
    LocalProtocolError,
)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def send_many(ws: WSClient, frames: Iterable[bytes], batch: int = 500) -> None:
    """Send binary messages in large writes (the client must not be the bottleneck of a flood)."""
    chunk: list[bytes] = []
    for frame in frames:
        chunk.append(ws.conn.send(BytesMessage(data=frame)))
        if len(chunk) >= batch:
            await ws.stream.send_all(b"".join(chunk))
            chunk.clear()
    if chunk:
        await ws.stream.send_all(b"".join(chunk))


@asynccontextmanager
async def udp_session(relay: RunningRelay, path: str = "/udp", **kw: Any) -> AsyncIterator[WSClient]:
    async with connect(relay.host_port, path, **kw) as ws:
        msg = await ws.receive_json()
        assert msg["type"] == "ready", msg
        yield ws


async def echo(
    ws: WSClient, port: int, payload: bytes, guest_port: int = 50000, timeout: float = 5.0
) -> None:
    """One round trip through the relay to a UDP echo server (other frames are skipped)."""
    await ws.send(encode_v1(guest_port, LOOPBACK4, port, payload))
    with trio.fail_after(timeout):
        while True:
            reply = await ws.receive()
            if isinstance(reply, bytes) and decode(reply, max_payload=65535).payload == payload:
                return


# --- 1. floods over every quota -------------------------------------------------------------------

QUOTAS = {
    "pps_per_session": {"MAX_UDP_PPS_PER_SESSION": "20"},
    "bps_per_session": {"MAX_UDP_BPS_PER_SESSION": "4000"},
    "unique_destinations": {"MAX_UNIQUE_DESTINATIONS_PER_SESSION": "4"},
    "pps_per_destination": {"MAX_UDP_PPS_PER_DEST": "10"},
    "relay_to_client_bps": {"MAX_DC_BPS_PER_SESSION": "8000"},
}
DROP_EVENT = {
    "pps_per_session": Event.UDP_WS_DROPPED_RATE_LIMITED,
    "bps_per_session": Event.UDP_WS_DROPPED_RATE_LIMITED,
    "unique_destinations": Event.UDP_WS_DROPPED_QUOTA_EXCEEDED,
    "pps_per_destination": Event.UDP_WS_DROPPED_RATE_LIMITED,
    "relay_to_client_bps": Event.UDP_WS_DROPPED_RATE_LIMITED,
}


async def flood_udp(server: UdpServer, dest: tuple[str, int], count: int, size: int) -> None:
    """A UDP peer sending ``count`` datagrams to a binding as fast as it can (bounded)."""
    payload = b"f" * size
    for i in range(count):
        with contextlib.suppress(OSError):
            await server.sock.sendto(payload, dest)
        if i % 50 == 49:
            await trio.sleep(0)


@pytest.mark.parametrize("quota", list(QUOTAS))
async def test_flood_over_a_quota_hard_closes_only_the_flooder(
    quota: str, start_relay: StartRelay, nursery: trio.Nursery
) -> None:
    """F-141..F-146, F-097: the flooding session ends with 1008 "session closed"; a well-behaved
    session on the same relay keeps relaying before, during and after."""
    relay = await start_relay({**DEV, **QUOTAS[quota], "HARD_CLOSE_AFTER_VIOLATIONS": "5"})
    echo_server = await start_server(nursery)
    sink = await start_server(nursery, kind="sink")
    async with udp_session(relay) as good, udp_session(relay) as bad:
        await echo(good, echo_server.port, b"before")
        with contextlib.suppress(*SEND_ERRORS):
            if quota == "relay_to_client_bps":
                # Prime a binding at the sink, then the sink floods it with 1000-byte datagrams.
                await bad.send(encode_v1(40000, LOOPBACK4, sink.port, b"prime"))
                await sink.wait_received(1)
                nursery.start_soon(flood_udp, sink, sink.received[0][1], 500, 1000)
            elif quota == "unique_destinations":
                await send_many(bad, (encode_v1(40000, LOOPBACK4, 20000 + i, b"d") for i in range(200)))
            elif quota == "bps_per_session":
                await send_many(
                    bad, (encode_v1(40000, LOOPBACK4, sink.port, b"b" * 1000) for _ in range(200))
                )
            else:
                await send_many(bad, (encode_v1(40000, LOOPBACK4, sink.port, b"p") for _ in range(300)))
        await echo(good, echo_server.port, b"during")
        closed = await bad.expect_close(timeout=5)
        assert (closed.code, closed.reason) == (1008, "session closed")
        await echo(good, echo_server.port, b"after")
    m = relay.metrics
    assert m.value(Event.SESSION_HARD_CLOSED) == 1
    assert m.value(DROP_EVENT[quota]) >= 5
    await wait_until(lambda: relay.server.ctx.registry.active_count() == 0)


# --- 2. spraying destinations and guest ports -----------------------------------------------------


async def test_spray_of_destinations_and_guest_ports_stays_within_the_caps(
    start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F-122, F-124, F-131: 100,000 loopback destinations from one guest port, then all 65,536
    guest ports, from one /udp session: bindings never exceed MAX_UDP_BINDINGS_PER_SESSION,
    descriptors stay within two sockets per binding, and memory growth is bounded."""
    cap = 128
    recorder = PipelineRecorder(monkeypatch)
    relay = await start_relay({**DEV, "MAX_UDP_BINDINGS_PER_SESSION": str(cap)})
    fd_base = open_fds()
    rss_base = rss_kib()
    peak = {"bindings": 0, "fds": 0, "rss": 0}

    async def sample() -> None:
        while True:
            if recorder.pipelines:
                peak["bindings"] = max(peak["bindings"], recorder.pipelines[0].binding_count)
            peak["fds"] = max(peak["fds"], len(os.listdir("/proc/self/fd")))
            peak["rss"] = max(peak["rss"], rss_kib())
            await trio.sleep(0.005)

    # 1,000 loopback addresses x 100 ports = 100,000 distinct destinations, all on 127.0.0.0/8.
    addresses = [ipaddress.IPv4Address(0x7F000001 + i).packed for i in range(1000)]
    destinations = (encode_v1(40000, ip, port, b"s") for port in range(30000, 30100) for ip in addresses)
    guest_ports = (encode_v1(gp, LOOPBACK4, 9, b"g") for gp in range(65536))
    async with trio.open_nursery() as n, udp_session(relay) as ws:
        n.start_soon(sample)
        await send_many(ws, destinations)
        await send_many(ws, guest_ports)
        total = 100_000 + 65_536
        await wait_until(lambda: relay.metrics.value(Event.UDP_WS_DATAGRAMS_IN) == total, timeout=60)
        n.cancel_scope.cancel()
    assert 0 < peak["bindings"] <= cap
    assert peak["fds"] - len(fd_base) <= 2 * cap + 16, peak  # v4 + v6 socket per binding, plus the WS
    assert peak["rss"] - rss_base < 64 * 1024, (peak, rss_base)  # KiB
    # Every frame was valid and allowed, except guest port 0xA202 (41474): its v1 frames start with
    # the v2 prefix and are malformed as v2 (the protocol's documented ambiguity, core/frames.py).
    assert (
        relay.metrics.value(Event.UDP_WS_DROPPED) == relay.metrics.value(Event.UDP_WS_DROPPED_MALFORMED) == 1
    )
    await wait_until(lambda: relay.server.ctx.registry.active_count() == 0)
    await wait_until(recorder.all_closed)
    await fds_back_to(fd_base)


# --- 3. a client that stops reading ----------------------------------------------------------------


async def test_slow_reader_bounds_the_send_queue_and_counts_backpressure(
    start_relay: StartRelay, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F-128, F-096: the client stops reading while a UDP peer floods replies; the send queue never
    holds more than DATACHANNEL_SEND_QUEUE_BYTES, the excess is counted as backpressure drops, and
    the session works again once the client reads."""
    limit = 64 * 1024
    recorder = PipelineRecorder(monkeypatch)
    relay = await start_relay({**DEV, "DATACHANNEL_SEND_QUEUE_BYTES": str(limit)})
    flooder = await start_server(nursery, kind="sink")
    echo_server = await start_server(nursery)
    rss_base = rss_kib()
    async with udp_session(relay) as ws:
        await ws.send(encode_v1(40000, LOOPBACK4, flooder.port, b"prime"))
        await flooder.wait_received(1)
        pipeline = recorder.pipelines[0]
        peak = 0

        async def watch_queue() -> None:
            nonlocal peak
            while True:
                peak = max(peak, pipeline.send_queue.queued_bytes)
                await trio.sleep(0.001)

        async with trio.open_nursery() as n:
            n.start_soon(watch_queue)
            await flood_udp(flooder, flooder.received[0][1], 20_000, 1000)  # 20 MB at a non-reader
            await wait_until(lambda: relay.metrics.value(Event.UDP_WS_DROPPED_BACKPRESSURE) > 1000)
            n.cancel_scope.cancel()
        assert 0 < peak <= limit
        assert rss_kib() - rss_base < 64 * 1024
        # Reading again drains the backlog (at most the queue plus TCP buffers); then a round trip works.
        drained = 0
        with trio.fail_after(10):
            while True:
                with trio.move_on_after(0.3) as idle:
                    await ws.receive()
                    drained += 1
                if idle.cancelled_caught:
                    break
        assert drained * 1008 <= limit + 16 * 1024 * 1024  # queue + loopback TCP buffers
        await echo(ws, echo_server.port, b"alive again", guest_port=40001)
    assert relay.metrics.value(Event.UDP_WS_DROPPED_BACKPRESSURE) == relay.metrics.value(Event.UDP_WS_DROPPED)


async def test_a_client_that_reads_nothing_and_sends_nothing_is_still_timed_out(
    start_relay: StartRelay, nursery: trio.Nursery
) -> None:
    """F-089, F-096: a client whose TCP window is full (it stopped reading) and that sends nothing is
    idle; the relay must end the session within about UDP_WS_IDLE_TIMEOUT (the original's 1 s write
    deadline fails the ping, "ping failed")."""
    relay = await start_relay(
        {
            **DEV,
            "DATACHANNEL_SEND_QUEUE_BYTES": "65536",
            "UDP_WS_IDLE_TIMEOUT": "1s",
            "UDP_WS_PING_INTERVAL": "500ms",
        }
    )
    flooder = await start_server(nursery, kind="sink")
    async with udp_session(relay, answer_pings=False) as ws:
        await ws.send(encode_v1(40000, LOOPBACK4, flooder.port, b"prime"))
        await flooder.wait_received(1)
        await flood_udp(flooder, flooder.received[0][1], 20_000, 1000)
        # Idle timeout 1 s, plus a ping interval and a write deadline of slack.
        await wait_until(lambda: relay.server.ctx.registry.active_count() == 0, timeout=4, what="session end")


# --- 4. signalling floods -------------------------------------------------------------------------


async def test_signaling_flood_is_closed_by_the_rate_limit(start_relay: StartRelay) -> None:
    """F-068: over MAX_SIGNALING_MESSAGES_PER_SECOND -> rate_limited error + Close(1008); another
    signalling connection on the same relay is not affected."""
    relay = await start_relay({"MAX_SIGNALING_MESSAGES_PER_SECOND": "20"})
    auth = '{"type":"auth","apiKey":"x"}'  # ignored after auth in mode none (F-073), but counted
    async with (
        connect(relay.host_port, "/webrtc/signal") as calm,
        connect(relay.host_port, "/webrtc/signal") as flood,
    ):
        with contextlib.suppress(*SEND_ERRORS):
            for _ in range(200):
                await flood.send(auth)
        msg = await flood.receive_json()
        assert msg == {"type": "error", "code": "rate_limited", "message": "rate limit exceeded"}
        closed = await flood.expect_close()
        assert (closed.code, closed.reason) == (1008, "rate limit exceeded")
        for _ in range(5):
            await calm.send(auth)
        with trio.move_on_after(0.3):  # the calm connection gets no error and no close
            got = await calm.receive()
            pytest.fail(f"calm connection got {got!r}")
    assert relay.metrics.value(Event.RATE_LIMITED) == 1


async def test_oversized_signaling_message_closes_1009(start_relay: StartRelay) -> None:
    """F-065: a message over MAX_SIGNALING_MESSAGE_BYTES ends the connection with 1009, no JSON."""
    relay = await start_relay({"MAX_SIGNALING_MESSAGE_BYTES": "1024"})
    async with connect(relay.host_port, "/webrtc/signal") as ws:
        with contextlib.suppress(*SEND_ERRORS):
            await ws.send("x" * 5000)
        closed = await ws.expect_close()
    assert closed.code == 1009


# --- 5. a thousand connections that never authenticate --------------------------------------------


async def test_a_thousand_unauthenticated_connections_are_all_closed_after_the_auth_timeout(
    start_relay: StartRelay,
) -> None:
    """F-067, F-085: 500 /udp and 500 /webrtc/signal connections that never send credentials all
    end with Close(1008, "authentication timeout") after SIGNALING_AUTH_TIMEOUT (not before, and not
    much after), each counted once as auth_failure; afterwards the relay holds no extra descriptor."""
    timeout = 1.0
    relay = await start_relay({"AUTH_MODE": "api_key", "API_KEY": "k", "SIGNALING_AUTH_TIMEOUT": "1s"})
    fd_base = open_fds()
    outcomes: list[tuple[str, int | None, str, float, float]] = []
    connecting = trio.Semaphore(50)  # keep the listen backlog from overflowing (SYN retries are 1 s)

    async def one(path: str) -> None:
        async with connecting:
            requested = trio.current_time()  # the server's timer starts after this...
            cm = connect(relay.host_port, path)
            ws = await cm.__aenter__()
        connected = trio.current_time()  # ...and before this (the client may be scheduled late)
        try:
            closed = await ws.expect_close(timeout=timeout + 5)
            now = trio.current_time()
            outcomes.append((path, closed.code, closed.reason, now - requested, now - connected))
        finally:
            await cm.__aexit__(None, None, None)

    async with trio.open_nursery() as n:
        for i in range(1000):
            n.start_soon(one, "/udp" if i % 2 else "/webrtc/signal")
    assert len(outcomes) == 1000
    assert {(code, reason) for _, code, reason, _, _ in outcomes} == {(1008, "authentication timeout")}
    assert min(o[3] for o in outcomes) >= timeout  # never before the timeout
    assert max(o[4] for o in outcomes) < timeout + 3.0  # and not long after it
    assert relay.metrics.value(Event.AUTH_FAILURE) == 1000
    await fds_back_to(fd_base, timeout=10)
    async with relay.client() as c:
        assert (await c.get("/healthz")).status_code == 200


# --- 6. SSRF through special address spellings ----------------------------------------------------

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
# Frames carry packed bytes, so textual tricks (octal 0177.0.0.1, 2130706433, 127.1) do not exist on
# the wire: every spelling below is a distinct 4- or 16-byte address that means "this host".
SSRF_SPELLINGS: list[tuple[str, bytes]] = [
    ("loopback", V4("127.0.0.1").packed),
    ("other loopback", V4("127.1.2.3").packed),
    ("this host", V4("0.0.0.0").packed),
    ("link-local metadata", V4("169.254.169.254").packed),
    ("ipv6 loopback", V6("::1").packed),
    ("ipv6 unspecified", V6("::").packed),
    ("v4-mapped", V6("::ffff:127.0.0.1").packed),
    ("ipv4-compatible", V6("::127.0.0.1").packed),
    ("siit translated", V6("::ffff:0:127.0.0.1").packed),
    ("nat64", V6("64:ff9b::127.0.0.1").packed),
    ("nat64 local-use", V6("64:ff9b:1::7f00:1").packed),
    ("6to4", V6("2002:7f00:1::1").packed),
    ("teredo server", V6("2001:0:7f00:1::1").packed),
    ("teredo client", V6("2001:0:808:808::80ff:fffe").packed),  # client = ~0x80fffffe = 127.0.0.1
    ("ipv6 link-local", V6("fe80::1").packed),
    ("ipv6 unique-local", V6("fc00::1").packed),
    ("ipv6 multicast", V6("ff02::1").packed),
]
POLICIES = {
    # The default: prod preset, nothing allowed.
    "prod_default": {"ALLOW_PRIVATE_NETWORKS": "false"},
    # The realistic deployment: prod with the whole Internet opened, private networks still denied.
    "prod_allow_all_public": {"ALLOW_PRIVATE_NETWORKS": "false", "ALLOW_UDP_CIDRS": "0.0.0.0/0,::/0"},
}


@pytest.mark.parametrize("policy", list(POLICIES))
async def test_ssrf_spellings_of_this_host_are_all_denied_and_nothing_is_sent(
    policy: str, start_relay: StartRelay, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F-137, F-138, F-227: every special spelling is refused as denied_by_policy (not a violation),
    no binding is opened, and loopback listeners receive nothing."""
    recorder = PipelineRecorder(monkeypatch)
    relay = await start_relay({**POLICIES[policy], "HARD_CLOSE_AFTER_VIOLATIONS": "1"})
    listener4 = await start_server(nursery, kind="sink")
    listener6 = await start_server(nursery, host="::1", kind="sink") if has_ipv6_loopback() else None
    port = listener4.port
    frames = []
    for name, ip in SSRF_SPELLINGS:
        p = listener6.port if listener6 is not None and ip == V6("::1").packed else port
        # Guard: never hand the relay a destination its policy would let out.
        assert relay.server.config.policy.check(ip, p) is not None, name
        if len(ip) == 4:
            frames += [encode_v1(40000, ip, p, name.encode()), encode_v2(40000, ip, p, name.encode())]
        else:
            frames.append(encode_v2(40000, ip, p, name.encode()))
    async with udp_session(relay) as ws:
        await send_many(ws, frames)
        await wait_until(lambda: relay.metrics.value(Event.UDP_WS_DATAGRAMS_IN) == len(frames))
        await trio.sleep(0.2)  # anything sent would have arrived on loopback by now
        with trio.move_on_after(0.1):  # the session is still up: no hard close for policy denials
            closed: Closed | None = None
            try:
                await ws.receive()
            except Closed as c:
                closed = c
            assert closed is None
    m = relay.metrics
    assert m.value(Event.UDP_WS_DROPPED_DENIED_BY_POLICY) == len(frames)
    assert m.value(Event.UDP_WS_DROPPED) == len(frames)
    assert m.value(Event.SESSION_HARD_CLOSED) == 0
    assert recorder.bindings == []
    assert listener4.received == []
    assert listener6 is None or listener6.received == []


def test_ssrf_spellings_cover_every_embedding_the_policy_knows() -> None:
    """The list above exercises each embedded-IPv4 form named in core/policy.py's docstring."""
    names = {name for name, _ in SSRF_SPELLINGS}
    assert {
        "v4-mapped",
        "ipv4-compatible",
        "siit translated",
        "nat64",
        "6to4",
        "teredo server",
        "teredo client",
    } <= names


# --- 7. a close race that crashes the process -----------------------------------------------------


async def test_close_race_does_not_crash_the_relay(tmp_path: Path) -> None:
    """An unauthenticated client that sends a binary first message (F-086: the relay answers with an
    error and Close 1008) and then its own Close frame, 200 times: the relay must stay up."""
    with relay_subprocess({"AUTH_MODE": "api_key", "API_KEY": "k"}, log=tmp_path / "relay.log") as (proc, hp):
        for _ in range(200):
            if proc.poll() is not None:
                break
            with contextlib.suppress(OSError, trio.BrokenResourceError, Closed, *SEND_ERRORS):
                async with connect(hp, "/udp") as ws:
                    await ws.send(b"\x00" * 10)
                    await ws.send("x")
                    await ws._flush(CloseConnection(code=1000))
                    with trio.move_on_after(1):
                        await ws.expect_close()
        await trio.sleep(0.5)  # a dying relay may take a moment to exit
        alive = proc.poll() is None
        with contextlib.suppress(OSError):
            alive = alive and (await raw_http(hp, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 200"
            )
    assert alive, (tmp_path / "relay.log").read_text()[-500:]
