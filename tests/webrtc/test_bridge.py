"""The trio-asyncio bridge: run asyncio coroutines from Trio, callbacks back to Trio, sync calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import trio

from aero_relay.webrtc.bridge import Bridge, close_peer, forward_to_trio, open_bridge, run_aio
from tests.webrtc.peers import client_peer, connected_pair, relay_config


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    async with open_bridge() as b:
        yield b


async def test_run_aio_returns_the_coroutine_result_from_the_bridge_loop(bridge: Bridge) -> None:
    async def add(a: int, b: int) -> tuple[int, asyncio.AbstractEventLoop]:
        await asyncio.sleep(0)
        return a + b, asyncio.get_running_loop()

    total, loop = await run_aio(bridge, add, 2, 3)
    assert total == 5
    assert loop is bridge.loop


async def test_run_aio_raises_the_coroutine_exception(bridge: Bridge) -> None:
    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("from asyncio")

    with pytest.raises(ValueError, match="from asyncio"):
        await run_aio(bridge, boom)


async def test_trio_cancellation_cancels_the_asyncio_task_and_waits_for_it(bridge: Bridge) -> None:
    events: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0)  # cleanup may await; run_aio waits for it
            events.append("cleaned up")

    with trio.move_on_after(0.05) as scope:
        await run_aio(bridge, slow)
    assert scope.cancelled_caught
    assert events == ["cancelled", "cleaned up"]
    assert bridge.tasks() == set()


async def test_forward_to_trio_hands_events_over_and_drops_when_full(bridge: Bridge) -> None:
    send, recv = trio.open_memory_channel[int](2)
    dropped: list[int] = []
    handler = forward_to_trio(send, on_drop=dropped.append)

    def emit_from_asyncio() -> None:
        for i in range(4):
            handler(i)

    async def in_asyncio() -> None:
        emit_from_asyncio()

    await run_aio(bridge, in_asyncio)
    assert [recv.receive_nowait(), recv.receive_nowait()] == [0, 1]
    assert dropped == [2, 3]
    await send.aclose()
    handler(9)
    assert dropped == [2, 3, 9]


async def test_task_started_outside_the_bridge_must_attach() -> None:
    async with trio.open_nursery() as nursery:
        ready = trio.Event()
        seen: list[bool] = []
        holder: list[Bridge] = []

        async def outside() -> None:
            await ready.wait()
            seen.append(holder[0].attached())
            holder[0].attach()
            seen.append(holder[0].attached())

        nursery.start_soon(outside)
        async with open_bridge() as b:
            holder.append(b)
            assert b.attached()
            ready.set()
            await trio.sleep(0.01)
    assert seen == [False, True]


async def test_close_peer_runs_shielded_from_a_cancelled_scope(bridge: Bridge) -> None:
    pc = client_peer()
    pc.createDataChannel("udp", ordered=False, maxRetransmits=0)
    await run_aio(bridge, pc.setLocalDescription)
    with trio.CancelScope() as scope:
        scope.cancel()
        assert await close_peer(bridge, pc, timeout=5)
    assert pc.connectionState == "closed"
    await trio.sleep(0.01)
    assert bridge.tasks() == set()


async def test_open_bridge_exit_cancels_leftover_asyncio_tasks() -> None:
    cancelled = trio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with open_bridge() as b:
        started: list[asyncio.Future[None]] = []

        async def start() -> None:
            started.append(asyncio.ensure_future(forever()))

        await run_aio(b, start)
        await trio.sleep(0)
    assert cancelled.is_set()


async def test_udp_datachannel_round_trip_with_sync_send_from_trio(bridge: Bridge) -> None:
    """F-107 shape (unordered, maxRetransmits=0). `send` and `bufferedAmount` are called from a
    Trio task directly; messages come back to Trio through `forward_to_trio`."""
    async with connected_pair(bridge, relay_config()) as pair:
        assert pair.server_channel.label == "udp"
        assert pair.server_channel.ordered is False
        assert pair.server_channel.maxRetransmits == 0
        server = pair.server_channel
        server.on("message", lambda m: server.send(m))  # echo, on the asyncio side
        send, recv = trio.open_memory_channel[bytes | str](64)
        pair.client_channel.on("message", forward_to_trio(send))

        messages = [bytes([i]) * (100 + i) for i in range(5)]
        for m in messages:
            pair.client_channel.send(m)
        assert pair.client_channel.bufferedAmount >= 0
        with trio.fail_after(5):
            echoed = [await recv.receive() for _ in messages]
        assert sorted(echoed, key=len) == messages
    await trio.sleep(0.01)
    assert bridge.tasks() == set()
