"""The shared datagram pipeline, driven directly against real UDP servers on loopback (spec §13 .. §17).

``send_to_client`` is a test function that collects frames; every UDP datagram goes to 127.0.0.1
or ::1 only.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from aero_relay.config import Config, load
from aero_relay.core.frames import V4_MAPPED_PREFIX, Frame, decode, encode_v1, encode_v2
from aero_relay.observability.metrics import UDP_WS, WEBRTC_UDP, Event, Metrics, TransportEvents
from aero_relay.relay import binding as binding_module
from aero_relay.relay.binding import Binding
from aero_relay.relay.pipeline import DatagramPipeline
from aero_relay.relay.quota import QuotaSession
from tests.relay.udp_servers import V4, V6, UdpServer, has_ipv6_loopback, start_server

needs_v6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this host")
both_transports = pytest.mark.parametrize("transport", [UDP_WS, WEBRTC_UDP], ids=lambda t: t.name)

LOOP4 = socket.inet_pton(socket.AF_INET, V4)


def make_cfg(**env: str) -> Config:
    return load({"AUTH_MODE": "none", "DESTINATION_POLICY_PRESET": "dev", **env})


class FakeClock:
    """A clock for the limiters and allow-lists that only moves when told (trio's clock is real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(
        self,
        cfg: Config,
        transport: TransportEvents = UDP_WS,
        clock: Callable[[], float] | None = None,
        send: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.transport = transport
        self.metrics = Metrics()
        self.hard_closes = 0
        clock = clock or trio.current_time
        self.quota = QuotaSession(cfg, self.metrics, self._on_hard_close, clock=clock)
        self._tx, self._rx = trio.open_memory_channel[bytes](math.inf)
        self.pipeline = DatagramPipeline(
            cfg=cfg,
            metrics=self.metrics,
            transport=transport,
            quota=self.quota,
            send_to_client=send or self._send,
            clock=clock,
        )

    def _on_hard_close(self) -> None:
        self.hard_closes += 1

    async def _send(self, frame: bytes) -> None:
        self._tx.send_nowait(frame)

    def push(self, frame: bytes) -> None:
        self.pipeline.handle_client_frame(frame)

    async def next_frame(self) -> Frame:
        with trio.fail_after(5):
            data = await self._rx.receive()
        return decode(data, max_payload=65535)

    def pending_frames(self) -> int:
        return self._rx.statistics().current_buffer_used

    def count(self, event: Event) -> int:
        return self.metrics.value(event)

    def events(self) -> dict[str, int]:
        return self.metrics.snapshot()

    def binding(self, guest_port: int) -> Binding:
        b = self.pipeline.binding(guest_port)
        assert b is not None
        return b

    def local_port(self, guest_port: int) -> int:
        return int(self.binding(guest_port).sock4.getsockname()[1])


async def start(nursery: trio.Nursery, cfg: Config | None = None, **kw: object) -> Harness:
    h = Harness(cfg or make_cfg(), **kw)  # type: ignore[arg-type]
    await nursery.start(h.pipeline.run)
    return h


async def eventually(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.002)


def v1(guest_port: int, server: UdpServer, payload: bytes = b"ping") -> bytes:
    return encode_v1(guest_port, server.packed, server.port, payload)


def v2(guest_port: int, server: UdpServer, payload: bytes = b"ping") -> bytes:
    return encode_v2(guest_port, server.packed, server.port, payload)


def task_tree() -> set[trio.lowlevel.Task]:
    tasks: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        tasks.add(task)
        for child_nursery in task.child_nurseries:
            stack.extend(child_nursery.child_tasks)
    return tasks


# --- round trips (F-116 .. F-122) ------------------------------------------------------------------


@both_transports
async def test_v1_round_trip_through_an_ipv4_echo_server(
    nursery: trio.Nursery, transport: TransportEvents
) -> None:
    """F-117, F-123, F-127: a v1 frame goes out; the echo comes back as a v1 frame from the server."""
    server = await start_server(nursery, V4, "echo")
    h = await start(nursery, transport=transport)
    h.push(v1(4242, server, b"hello"))
    reply = await h.next_frame()
    assert reply == Frame(1, 4242, LOOP4, server.port, b"hello")
    assert server.received[0][0] == b"hello"
    assert server.received[0][1][1] == h.local_port(4242)
    await eventually(lambda: h.count(transport.datagrams_out) == 1)
    assert h.events() == {transport.datagrams_in.value: 1, transport.datagrams_out.value: 1}


async def test_v2_ipv4_round_trip_replies_v2_when_prefer_v2(nursery: trio.Nursery) -> None:
    """F-118, F-120: PREFER_V2 and a v2 client -> v2/af 4 replies."""
    server = await start_server(nursery, V4, "echo")
    h = await start(nursery, make_cfg(PREFER_V2="true"))
    h.push(v2(5000, server, b"v2!"))
    assert await h.next_frame() == Frame(2, 5000, LOOP4, server.port, b"v2!")


async def test_v2_ipv4_frame_gets_v1_replies_without_prefer_v2(nursery: trio.Nursery) -> None:
    """F-120: an IPv4 source is v1 unless PREFER_V2 is on."""
    server = await start_server(nursery, V4, "echo")
    h = await start(nursery)
    h.push(v2(5000, server))
    assert (await h.next_frame()).version == 1


@needs_v6
async def test_v2_ipv6_round_trip_through_an_ipv6_echo_server(nursery: trio.Nursery) -> None:
    """F-120, F-122: an IPv6 destination goes out the v6 socket; its reply is always v2/af 6."""
    server = await start_server(nursery, V6, "echo")
    h = await start(nursery)
    h.push(v2(6000, server, b"six"))
    assert await h.next_frame() == Frame(2, 6000, server.packed, server.port, b"six")
    b = h.binding(6000)
    assert b.sock6 is not None
    assert server.received[0][1][1] == b.sock6.getsockname()[1]


async def test_prefer_v2_is_sticky_once_the_client_sent_v2(nursery: trio.Nursery) -> None:
    """F-120: v1 replies until the first v2 frame, then v2 for good, even for later v1 frames."""
    server = await start_server(nursery, V4, "echo")
    h = await start(nursery, make_cfg(PREFER_V2="true"))
    h.push(v1(1, server))
    assert (await h.next_frame()).version == 1
    h.push(v2(1, server))
    assert (await h.next_frame()).version == 2
    h.push(v1(1, server))
    assert (await h.next_frame()).version == 2
    assert h.pipeline.client_sent_v2


async def test_the_v2_flag_is_set_by_a_frame_that_policy_then_denies(nursery: trio.Nursery) -> None:
    """F-120, F-198: the flag is set right after decoding, before policy (one path for both transports)."""
    server = await start_server(nursery, V4, "echo")
    h = await start(nursery, make_cfg(PREFER_V2="true"))
    h.push(encode_v2(1, LOOP4, 0, b"denied"))  # remote port 0 is always denied (F-228)
    assert h.count(UDP_WS.dropped_denied_by_policy) == 1
    h.push(v1(1, server))
    assert (await h.next_frame()).version == 2


async def test_a_v4_mapped_destination_gets_its_reply(nursery: trio.Nursery) -> None:
    """F-197 fixed: ::ffff:127.0.0.1 goes out the IPv4 socket, is admitted as IPv4, and the reply comes
    back re-mapped to the address the client used (v2/af 6)."""
    server = await start_server(nursery, V4, "echo")
    h = await start(nursery)
    mapped = V4_MAPPED_PREFIX + LOOP4
    h.push(encode_v2(7, mapped, server.port, b"mapped"))
    assert await h.next_frame() == Frame(2, 7, mapped, server.port, b"mapped")
    assert server.received[0][1] == (V4, h.local_port(7))
    assert h.count(Event.UDP_REMOTE_ALLOWLIST_OVERFLOW_DROPS_TOTAL) == 0
    # Addressing the same remote as plain IPv4 switches its replies back to IPv4.
    h.push(v1(7, server, b"plain"))
    assert await h.next_frame() == Frame(1, 7, LOOP4, server.port, b"plain")


async def test_mapped_and_plain_forms_are_one_unique_destination(nursery: trio.Nursery) -> None:
    """F-142: the unique-destination quota counts ::ffff:a.b.c.d and a.b.c.d as one destination."""
    server = await start_server(nursery, V4, "sink")
    h = await start(nursery, make_cfg(MAX_UNIQUE_DESTINATIONS_PER_SESSION="1"))
    h.push(v1(1, server))
    h.push(encode_v2(1, V4_MAPPED_PREFIX + LOOP4, server.port, b"same"))
    await server.wait_received(2)
    assert h.count(UDP_WS.dropped) == 0


async def test_one_guest_port_uses_one_source_port_for_every_destination(nursery: trio.Nursery) -> None:
    """F-122: endpoint-independent mapping; another guest port gets another binding."""
    a = await start_server(nursery, V4, "sink")
    b = await start_server(nursery, V4, "sink")
    h = await start(nursery)
    h.push(v1(100, a))
    h.push(v1(100, b))
    h.push(v1(200, a))
    await a.wait_received(2)
    await b.wait_received(1)
    assert a.received[0][1][1] == b.received[0][1][1] == h.local_port(100)
    assert a.received[1][1][1] == h.local_port(200) != h.local_port(100)
    assert h.pipeline.binding_count == 2


async def test_guest_port_zero_gets_a_binding(nursery: trio.Nursery) -> None:
    """F-229."""
    server = await start_server(nursery, V4, "echo")
    h = await start(nursery)
    h.push(v1(0, server))
    assert (await h.next_frame()).guest_port == 0


# --- outbound drops (F-095, F-119, F-123, F-144, F-227) ------------------------------------------


@both_transports
async def test_a_malformed_frame_is_dropped_as_malformed(
    nursery: trio.Nursery, transport: TransportEvents
) -> None:
    """F-119: any decode error but payload-too-large counts dropped + dropped_malformed."""
    h = await start(nursery, transport=transport)
    h.push(b"\x00\x01\x02")  # too short
    h.push(b"\xa2\x02\x04\x01" + bytes(8))  # v2 unsupported type
    assert h.events() == {
        transport.datagrams_in.value: 2,
        transport.dropped.value: 2,
        transport.dropped_malformed.value: 2,
    }


@both_transports
async def test_an_oversized_payload_is_dropped_as_oversized(
    nursery: trio.Nursery, transport: TransportEvents
) -> None:
    """F-117, F-119: payload over MAX_DATAGRAM_PAYLOAD_BYTES -> dropped + dropped_oversized."""
    h = await start(nursery, make_cfg(MAX_DATAGRAM_PAYLOAD_BYTES="100"), transport=transport)
    h.push(encode_v1(1, LOOP4, 9, bytes(101)))
    assert h.events() == {
        transport.datagrams_in.value: 1,
        transport.dropped.value: 1,
        transport.dropped_oversized.value: 1,
    }
    assert h.pipeline.binding_count == 0


@both_transports
async def test_a_policy_denied_frame_is_dropped_and_is_not_a_violation(
    nursery: trio.Nursery, transport: TransportEvents
) -> None:
    """F-137, F-227: prod denies loopback; a denial is no violation (HARD_CLOSE_AFTER_VIOLATIONS=1)."""
    server = await start_server(nursery, V4, "sink")
    h = await start(
        nursery,
        make_cfg(DESTINATION_POLICY_PRESET="prod", HARD_CLOSE_AFTER_VIOLATIONS="1"),
        transport=transport,
    )
    for _ in range(3):
        h.push(v1(1, server))
    assert h.events() == {
        transport.datagrams_in.value: 3,
        transport.dropped.value: 3,
        transport.dropped_denied_by_policy.value: 3,
    }
    assert not h.quota.closed
    assert h.pipeline.binding_count == 0


async def test_remote_port_zero_is_denied_by_policy(nursery: trio.Nursery) -> None:
    """F-228, even under the dev preset."""
    h = await start(nursery)
    h.push(encode_v1(1, LOOP4, 0, b"x"))
    assert h.count(UDP_WS.dropped_denied_by_policy) == 1


@both_transports
async def test_session_pps_limit_drops_as_rate_limited(
    nursery: trio.Nursery, transport: TransportEvents
) -> None:
    """F-142, F-144: over MAX_UDP_PPS_PER_SESSION -> dropped + dropped_rate_limited + rate_limited."""
    server = await start_server(nursery, V4, "sink")
    h = await start(nursery, make_cfg(MAX_UDP_PPS_PER_SESSION="2"), transport=transport, clock=FakeClock())
    for _ in range(3):
        h.push(v1(1, server))
    await server.wait_received(2)
    assert h.count(transport.dropped) == 1
    assert h.count(transport.dropped_rate_limited) == 1
    assert h.count(Event.RATE_LIMITED) == 1
    assert h.count(UDP_WS.datagrams_in if transport is UDP_WS else WEBRTC_UDP.datagrams_in) == 3


async def test_session_bps_limit_drops_as_rate_limited(nursery: trio.Nursery) -> None:
    """F-141, F-142: payload bytes against MAX_UDP_BPS_PER_SESSION."""
    server = await start_server(nursery, V4, "sink")
    h = await start(nursery, make_cfg(MAX_UDP_BPS_PER_SESSION="10"), clock=FakeClock())
    h.push(v1(1, server, bytes(8)))
    h.push(v1(1, server, bytes(8)))
    h.push(v1(1, server, bytes(2)))
    await server.wait_received(2)
    assert [len(d) for d, _ in server.received] == [8, 2]
    assert h.count(UDP_WS.dropped_rate_limited) == 1


@both_transports
async def test_unique_destination_quota_drops_as_quota_exceeded(
    nursery: trio.Nursery, transport: TransportEvents
) -> None:
    """F-142, F-144: a new destination over the quota -> quota_exceeded and too_many_destinations;
    refused before any binding is created."""
    a = await start_server(nursery, V4, "sink")
    b = await start_server(nursery, V4, "sink")
    h = await start(nursery, make_cfg(MAX_UNIQUE_DESTINATIONS_PER_SESSION="1"), transport=transport)
    h.push(v1(1, a))
    h.push(v1(2, b))
    h.push(v1(1, a))
    await a.wait_received(2)
    assert h.count(transport.dropped) == 1
    assert h.count(transport.dropped_quota_exceeded) == 1
    assert h.count(Event.QUOTA_EXCEEDED) == 1
    assert h.count(Event.TOO_MANY_DESTINATIONS) == 1
    assert h.count(Event.RATE_LIMITED) == 0
    assert h.pipeline.binding(2) is None


async def test_per_destination_pps_limits_each_destination(nursery: trio.Nursery) -> None:
    """F-142: MAX_UDP_PPS_PER_DEST is per destination."""
    a = await start_server(nursery, V4, "sink")
    b = await start_server(nursery, V4, "sink")
    h = await start(nursery, make_cfg(MAX_UDP_PPS_PER_DEST="1"), clock=FakeClock())
    h.push(v1(1, a))
    h.push(v1(1, a))
    h.push(v1(1, b))
    await a.wait_received(1)
    await b.wait_received(1)
    assert h.count(UDP_WS.dropped_rate_limited) == 1


async def test_per_destination_bucket_eviction_is_counted(nursery: trio.Nursery) -> None:
    """F-143: a new destination at MAX_UDP_DEST_BUCKETS_PER_SESSION evicts the LRU bucket."""
    a = await start_server(nursery, V4, "sink")
    b = await start_server(nursery, V4, "sink")
    h = await start(nursery, make_cfg(MAX_UDP_PPS_PER_DEST="5", MAX_UDP_DEST_BUCKETS_PER_SESSION="1"))
    h.push(v1(1, a))
    h.push(v1(1, b))
    h.push(v1(1, a))
    await a.wait_received(2)
    assert h.count(Event.UDP_PER_DEST_BUCKET_EVICTIONS) == 2
    assert h.count(UDP_WS.dropped) == 0


async def test_write_errors_are_ignored(nursery: trio.Nursery) -> None:
    """F-123: a failing sendto (e.g. a full socket buffer) is not an error and not a metric."""
    server = await start_server(nursery, V4, "sink")
    h = await start(nursery)
    h.push(v1(1, server))
    b = h.binding(1)
    real = b.sock4

    class Failing:
        def sendto(self, data: bytes, addr: object) -> int:
            raise BlockingIOError

    b.sock4 = Failing()  # type: ignore[assignment]
    try:
        h.push(v1(1, server))
    finally:
        b.sock4 = real
    assert h.count(UDP_WS.dropped) == 0


async def test_ipv6_without_a_v6_socket_fails_silently(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F-122: no IPv6 on the host -> the binding has only its IPv4 socket; IPv6 sends do nothing."""
    real_open = binding_module.open_socket

    def v4_only(family: socket.AddressFamily) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError("no IPv6 here")
        return real_open(family)

    monkeypatch.setattr(binding_module, "open_socket", v4_only)
    h = await start(nursery)
    h.push(encode_v2(1, socket.inet_pton(socket.AF_INET6, V6), 9, b"v6"))
    assert h.binding(1).sock6 is None
    assert h.count(UDP_WS.dropped) == 0


async def test_a_binding_socket_error_counts_dropped_only(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F-123: a binding that cannot be created drops the frame with `dropped` only."""

    def no_sockets(family: socket.AddressFamily) -> socket.socket:
        raise OSError("out of descriptors")

    monkeypatch.setattr(binding_module, "open_socket", no_sockets)
    h = await start(nursery)
    h.push(encode_v1(1, LOOP4, 9, b"x"))
    assert h.events() == {UDP_WS.datagrams_in.value: 1, UDP_WS.dropped.value: 1}
    assert h.pipeline.binding_count == 0


# --- inbound filter (F-126, F-129 .. F-133) ---------------------------------------------------------


async def test_a_reply_from_another_port_is_dropped_in_address_and_port_mode(nursery: trio.Nursery) -> None:
    """F-130, F-132: not admitted -> udp_remote_allowlist_overflow_drops_total only, no *_dropped."""
    server = await start_server(nursery, V4, "other_port")
    h = await start(nursery)
    h.push(v1(1, server))
    await eventually(lambda: h.count(Event.UDP_REMOTE_ALLOWLIST_OVERFLOW_DROPS_TOTAL) == 1)
    assert h.count(UDP_WS.dropped) == 0
    assert h.pending_frames() == 0


async def test_a_reply_from_another_port_is_forwarded_in_any_mode(nursery: trio.Nursery) -> None:
    """F-129: no allow-list at all."""
    server = await start_server(nursery, V4, "other_port")
    h = await start(nursery, make_cfg(UDP_INBOUND_FILTER_MODE="any"))
    h.push(v1(1, server, b"any"))
    assert await h.next_frame() == Frame(1, 1, LOOP4, server.other_port, b"any")
    assert h.binding(1).allowlist is None


async def test_a_late_reply_within_the_allowlist_ttl_is_forwarded(nursery: trio.Nursery) -> None:
    """F-132: expired only when now - last > UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT."""
    clock = FakeClock()
    server = await start_server(nursery, V4, "late")
    h = await start(nursery, make_cfg(UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT="5s"), clock=clock)
    h.push(v1(1, server, b"slow"))
    await server.wait_received(1)
    clock.now += 5
    await server.release()
    assert (await h.next_frame()).payload == b"slow"


async def test_a_late_reply_after_the_allowlist_ttl_is_dropped(nursery: trio.Nursery) -> None:
    """F-132: an expired entry is forgotten and the datagram dropped (overflow metric only)."""
    clock = FakeClock()
    server = await start_server(nursery, V4, "late")
    h = await start(nursery, make_cfg(UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT="5s"), clock=clock)
    h.push(v1(1, server, b"too slow"))
    await server.wait_received(1)
    clock.now += 5.001
    await server.release()
    await eventually(lambda: h.count(Event.UDP_REMOTE_ALLOWLIST_OVERFLOW_DROPS_TOTAL) == 1)
    assert h.pending_frames() == 0
    assert h.count(UDP_WS.dropped) == 0


async def test_allowlist_cap_evicts_the_oldest_remote(nursery: trio.Nursery) -> None:
    """F-131: at MAX_ALLOWED_REMOTES_PER_BINDING the oldest remote is evicted (metric) and its
    replies are then dropped."""
    a = await start_server(nursery, V4, "late")
    b = await start_server(nursery, V4, "late")
    h = await start(nursery, make_cfg(MAX_ALLOWED_REMOTES_PER_BINDING="1"))
    h.push(v1(1, a, b"to a"))
    h.push(v1(1, b, b"to b"))
    assert h.count(Event.UDP_REMOTE_ALLOWLIST_EVICTIONS_TOTAL) == 1
    await a.wait_received(1)
    await b.wait_received(1)
    await a.release()
    await eventually(lambda: h.count(Event.UDP_REMOTE_ALLOWLIST_OVERFLOW_DROPS_TOTAL) == 1)
    await b.release()
    assert (await h.next_frame()).payload == b"to b"


async def test_the_allowlist_cap_is_per_binding(nursery: trio.Nursery) -> None:
    """F-133: one remote each on two guest ports with a cap of 1 -> both replies arrive."""
    a = await start_server(nursery, V4, "echo")
    b = await start_server(nursery, V4, "echo")
    h = await start(nursery, make_cfg(MAX_ALLOWED_REMOTES_PER_BINDING="1"))
    h.push(v1(1, a, b"a"))
    h.push(v1(2, b, b"b"))
    got = {(await h.next_frame()).payload, (await h.next_frame()).payload}
    assert got == {b"a", b"b"}
    assert h.count(Event.UDP_REMOTE_ALLOWLIST_EVICTIONS_TOTAL) == 0


@both_transports
async def test_an_oversized_reply_is_dropped_not_truncated(
    nursery: trio.Nursery, transport: TransportEvents
) -> None:
    """F-126: a datagram over MAX_DATAGRAM_PAYLOAD_BYTES is dropped with dropped + dropped_oversized
    on both transports (a deliberate unification)."""
    server = await start_server(nursery, V4, "oversized", reply_size=101)
    h = await start(nursery, make_cfg(MAX_DATAGRAM_PAYLOAD_BYTES="100"), transport=transport)
    h.push(v1(1, server))
    await eventually(lambda: h.count(transport.dropped_oversized) == 1)
    assert h.count(transport.dropped) == 1
    assert h.pending_frames() == 0


async def test_a_reply_of_exactly_the_maximum_is_forwarded(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, V4, "oversized", reply_size=100)
    h = await start(nursery, make_cfg(MAX_DATAGRAM_PAYLOAD_BYTES="100"))
    h.push(v1(1, server))
    assert (await h.next_frame()).payload == b"x" * 100


# --- relay -> client budget, send queue, sender (F-096, F-127, F-128, F-145, F-199) ---------------


@both_transports
async def test_relay_to_client_bps_drops_as_rate_limited_with_a_violation(
    nursery: trio.Nursery, transport: TransportEvents
) -> None:
    """F-145: MAX_DC_BPS_PER_SESSION counts frame bytes (header included); a refusal is a violation."""
    server = await start_server(nursery, V4, "echo")
    h = await start(
        nursery,
        make_cfg(MAX_DC_BPS_PER_SESSION="20", HARD_CLOSE_AFTER_VIOLATIONS="1"),
        transport=transport,
        clock=FakeClock(),
    )
    h.push(v1(1, server, b"abcd"))  # reply frame: 8 + 4 = 12 bytes
    await h.next_frame()
    h.push(v1(1, server, b"abcd"))  # 12 more would exceed 20
    await eventually(lambda: h.count(transport.dropped_rate_limited) == 1)
    assert h.count(transport.dropped) == 1
    assert h.count(Event.RATE_LIMITED) == 1
    assert h.hard_closes == 1
    assert h.count(Event.SESSION_HARD_CLOSED) == 1


async def test_backpressure_drops_and_refunds_the_client_budget(nursery: trio.Nursery) -> None:
    """F-127, F-128, F-199 fixed: a full queue drops (dropped + dropped_backpressure) and gives the
    relay->client budget back; datagrams_out counts only frames the transport accepted."""
    clock = FakeClock()
    gate = trio.Event()
    sending = trio.Event()
    delivered: list[bytes] = []

    async def slow_send(frame: bytes) -> None:
        sending.set()
        await gate.wait()
        delivered.append(frame)

    server = await start_server(nursery, V4, "echo")
    cfg = make_cfg(DATACHANNEL_SEND_QUEUE_BYTES="30", MAX_DC_BPS_PER_SESSION="60")
    h = await start(nursery, cfg, clock=clock, send=slow_send)
    h.push(v1(1, server, b"abcd"))  # 12-byte reply frames
    await sending.wait()  # the first one is in flight, the queue is empty
    for _ in range(4):
        h.push(v1(1, server, b"abcd"))
    await eventually(lambda: h.count(UDP_WS.dropped_backpressure) == 2)
    assert len(h.pipeline.send_queue) == 2
    assert h.count(UDP_WS.datagrams_out) == 0
    gate.set()
    await eventually(lambda: len(delivered) == 3)
    assert h.count(UDP_WS.datagrams_out) == 3
    # Budget used: 3 delivered frames = 36 of 60; the 2 dropped ones were refunded, so 2 more fit.
    h.push(v1(1, server, b"abcd"))
    h.push(v1(1, server, b"abcd"))
    await eventually(lambda: len(delivered) == 5)
    assert h.count(UDP_WS.dropped_rate_limited) == 0


async def test_a_failed_client_write_is_ignored_and_not_counted(nursery: trio.Nursery) -> None:
    """F-096: write errors are ignored; the sender carries on."""
    attempts: list[bytes] = []

    async def broken_send(frame: bytes) -> None:
        attempts.append(frame)
        raise trio.ClosedResourceError

    server = await start_server(nursery, V4, "echo")
    h = await start(nursery, send=broken_send)
    h.push(v1(1, server))
    h.push(v1(1, server))
    await eventually(lambda: len(attempts) == 2)
    assert h.count(UDP_WS.datagrams_out) == 0


# --- hard close and closed sessions (F-146, F-147) ---------------------------------------------------


async def test_repeated_violations_hard_close_once_and_then_everything_is_refused(
    nursery: trio.Nursery,
) -> None:
    """F-146, F-147: N violations -> session_hard_closed and on_hard_close exactly once; a closed
    session refuses further frames silently."""
    server = await start_server(nursery, V4, "sink")
    h = await start(
        nursery, make_cfg(MAX_UDP_PPS_PER_SESSION="1", HARD_CLOSE_AFTER_VIOLATIONS="2"), clock=FakeClock()
    )
    for _ in range(3):
        h.push(v1(1, server))
    assert h.quota.closed
    assert h.hard_closes == 1
    assert h.count(Event.SESSION_HARD_CLOSED) == 1
    before = h.events()
    for _ in range(5):
        h.push(v1(1, server))
    assert h.events() == before
    assert h.hard_closes == 1


async def test_a_closed_quota_session_refuses_inbound_datagrams(nursery: trio.Nursery) -> None:
    """F-147: replies arriving after the session closed are discarded."""
    server = await start_server(nursery, V4, "late")
    h = await start(nursery)
    h.push(v1(1, server))
    await server.wait_received(1)
    h.quota.closed = True
    before = h.events()
    await server.release()
    await trio.sleep(0.05)
    assert h.pending_frames() == 0
    assert h.events() == before


async def test_frames_before_run_are_ignored() -> None:
    h = Harness(make_cfg())
    h.push(encode_v1(1, LOOP4, 9, b"x"))
    assert h.events() == {}
    assert h.pipeline.binding_count == 0


# --- bindings: LRU cap, expiry, teardown (F-124, F-125) -----------------------------------------------


async def test_a_new_guest_port_at_the_cap_evicts_the_lru_binding_and_closes_it(
    nursery: trio.Nursery,
) -> None:
    """F-124: MAX_UDP_BINDINGS_PER_SESSION is an LRU cap; the evicted binding's sockets are closed."""
    server = await start_server(nursery, V4, "sink")
    h = await start(nursery, make_cfg(MAX_UDP_BINDINGS_PER_SESSION="2"))
    h.push(v1(1, server))
    h.push(v1(2, server))
    h.push(v1(1, server))  # 1 is now the most recently used
    evicted = h.binding(2)
    h.push(v1(3, server))
    assert h.pipeline.binding_count == 2
    assert h.pipeline.binding(2) is None
    assert h.pipeline.binding(1) is not None and h.pipeline.binding(3) is not None
    assert evicted.closed
    assert evicted.sock4.fileno() == -1
    assert evicted.sock6 is None or evicted.sock6.fileno() == -1
    await server.wait_received(4)


async def test_an_idle_binding_expires_and_its_sockets_close(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """F-125: no guest traffic for UDP_BINDING_IDLE_TIMEOUT -> the binding is closed."""
    server = await start_server(nursery, V4, "sink")
    h = await start(nursery)
    baseline = task_tree()
    h.push(v1(1, server))
    b = h.binding(1)
    await trio.testing.wait_all_tasks_blocked()
    assert len(task_tree()) > len(baseline)  # its reader tasks
    mock_clock.jump(59.9)
    await trio.testing.wait_all_tasks_blocked()
    assert h.pipeline.binding_count == 1
    mock_clock.jump(0.1)
    await trio.testing.wait_all_tasks_blocked()
    assert h.pipeline.binding_count == 0
    assert b.closed and b.sock4.fileno() == -1
    assert task_tree() == baseline  # the readers are gone


async def test_guest_traffic_keeps_a_binding_alive(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """F-125: each outbound frame restarts the idle timer; bindings expire in last-use order."""
    server = await start_server(nursery, V4, "sink")
    h = await start(nursery)
    h.push(v1(1, server))
    mock_clock.jump(10)
    h.push(v1(2, server))
    mock_clock.jump(30)
    h.push(v1(1, server))  # 1 refreshed at t=40, 2 last used at t=10
    mock_clock.jump(30)  # t=70
    await trio.testing.wait_all_tasks_blocked()
    assert h.pipeline.binding(2) is None
    assert h.pipeline.binding(1) is not None
    mock_clock.jump(29.9)  # t=99.9
    await trio.testing.wait_all_tasks_blocked()
    assert h.pipeline.binding(1) is not None
    mock_clock.jump(0.1)
    await trio.testing.wait_all_tasks_blocked()
    assert h.pipeline.binding_count == 0


async def test_inbound_traffic_does_not_keep_a_binding_alive(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """Weakness 7 / F-196 fixed: only guest traffic refreshes the idle timer, so a remote that keeps
    sending (even an admitted one) cannot hold the binding open."""
    server = await start_server(nursery, V4, "echo")
    h = await start(nursery)
    h.push(v1(1, server, b"hi"))
    await h.next_frame()  # real network I/O; the mock clock does not move meanwhile
    mock_clock.jump(59)
    await server.send_from(b"keepalive?", (V4, h.local_port(1)))
    assert (await h.next_frame()).payload == b"keepalive?"
    mock_clock.jump(1)
    await trio.testing.wait_all_tasks_blocked()
    assert h.pipeline.binding_count == 0


async def test_cancelling_run_closes_every_socket_and_leaves_no_task(nursery: trio.Nursery) -> None:
    """DESIGN principle 2: cancellation is the only teardown; every socket is closed in finally."""
    server = await start_server(nursery, V4, "sink")
    await trio.testing.wait_all_tasks_blocked()
    baseline = task_tree()
    h = Harness(make_cfg())
    socks: list[socket.socket] = []
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            await inner.start(h.pipeline.run)
            for guest_port in range(5):
                h.push(v1(guest_port, server))
                b = h.binding(guest_port)
                socks += [s for s in (b.sock4, b.sock6) if s is not None]
            await trio.testing.wait_all_tasks_blocked()
            assert len(task_tree()) >= len(baseline) + 2 + 5  # sender, expiry, >= one reader each
            scope.cancel()
    assert len(socks) >= 5
    assert all(s.fileno() == -1 for s in socks)
    assert h.pipeline.binding_count == 0
    assert task_tree() == baseline
    h.push(v1(9, server))  # a closed pipeline ignores frames
    assert h.pipeline.binding_count == 0


async def test_close_ends_run_and_closes_every_socket(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, V4, "sink")
    h = Harness(make_cfg())
    done = trio.Event()

    async def run() -> None:
        await h.pipeline.run()
        done.set()

    nursery.start_soon(run)
    await trio.testing.wait_all_tasks_blocked()
    h.push(v1(1, server))
    sock = h.binding(1).sock4
    h.pipeline.close()
    with trio.fail_after(5):
        await done.wait()
    assert sock.fileno() == -1
    assert h.pipeline.closed
    h.push(v1(1, server))
    assert h.count(UDP_WS.datagrams_in) == 1
