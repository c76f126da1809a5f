"""SendQueue: the byte-bounded relay->client queue (F-128)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from aero_relay.relay.sendqueue import SendQueue


def test_items_come_out_in_fifo_order_and_bytes_are_tracked() -> None:
    q = SendQueue(100)
    assert q.offer(b"a" * 10)
    assert q.offer(b"b" * 20)
    assert len(q) == 2
    assert q.queued_bytes == 30
    assert q.get_nowait() == b"a" * 10
    assert q.queued_bytes == 20
    assert q.get_nowait() == b"b" * 20
    assert q.queued_bytes == 0
    assert len(q) == 0


def test_an_item_that_exactly_fills_the_queue_is_accepted() -> None:
    q = SendQueue(30)
    assert q.offer(b"x" * 10)
    assert q.offer(b"y" * 20)
    assert q.queued_bytes == 30


def test_an_item_that_does_not_fit_is_dropped_and_the_queue_is_unchanged() -> None:
    """F-128: a frame that does not fit is dropped; it never blocks."""
    q = SendQueue(30)
    assert q.offer(b"x" * 25)
    assert not q.offer(b"y" * 6)
    assert len(q) == 1
    assert q.queued_bytes == 25
    assert q.offer(b"z" * 5)  # a smaller one still fits


def test_an_item_larger_than_the_bound_is_always_dropped() -> None:
    """F-128: a frame larger than the whole bound is dropped even when the queue is empty."""
    q = SendQueue(30)
    assert not q.offer(b"x" * 31)
    assert len(q) == 0


def test_a_closed_queue_refuses_offers_but_drains_what_it_holds() -> None:
    q = SendQueue(100)
    q.offer(b"kept")
    q.close()
    assert not q.offer(b"late")
    assert q.get_nowait() == b"kept"
    with pytest.raises(trio.EndOfChannel):
        q.get_nowait()


def test_get_nowait_on_an_empty_open_queue_would_block() -> None:
    with pytest.raises(trio.WouldBlock):
        SendQueue(10).get_nowait()


async def test_get_waits_for_an_offer() -> None:
    q = SendQueue(100)
    got: list[bytes] = []

    async def consumer() -> None:
        got.append(await q.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        q.offer(b"hello")
    assert got == [b"hello"]


async def test_get_raises_end_of_channel_once_closed_and_drained() -> None:
    q = SendQueue(100)
    q.offer(b"one")
    results: list[object] = []

    async def consumer() -> None:
        while True:
            try:
                results.append(await q.get())
            except trio.EndOfChannel:
                results.append("end")
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        q.close()
    assert results == [b"one", "end"]


async def test_a_cancelled_get_loses_no_item() -> None:
    q = SendQueue(100)
    with trio.move_on_after(0.01):
        await q.get()
    q.offer(b"still here")
    assert await q.get() == b"still here"


async def test_get_is_a_checkpoint_even_when_an_item_is_ready() -> None:
    q = SendQueue(100)
    q.offer(b"x")
    with trio.CancelScope() as scope:
        scope.cancel()
        await q.get()
    assert scope.cancelled_caught
    assert len(q) == 1  # cancelled before taking it


def test_offer_never_blocks_many_producers_one_bound() -> None:
    """The bound holds under any offer sequence: queued bytes never exceed max_bytes."""
    q = SendQueue(1000)
    accepted = sum(1 for i in range(500) if q.offer(bytes(i % 97 + 8)))
    assert q.queued_bytes <= 1000
    assert len(q) == accepted
