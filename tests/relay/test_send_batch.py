"""Batched relay->client sends: ``SendQueue.get_batch`` and the pipeline's batch sender (F-096, F-128).

A transport that can write several frames at once (``/udp``: one WebSocket write) passes
``send_batch_to_client``; the rules stay those of one frame at a time: FIFO order, the queue's
byte bound, ``datagrams_out`` per frame handed over, write errors ignored and not counted.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from aero_relay.core.frames import decode
from aero_relay.observability.metrics import UDP_WS, Metrics
from aero_relay.relay.pipeline import DatagramPipeline
from aero_relay.relay.quota import QuotaSession
from aero_relay.relay.sendqueue import SendQueue
from tests.relay.test_pipeline import make_cfg, v1
from tests.relay.udp_servers import V4, start_server

# --- SendQueue.get_batch ----------------------------------------------------------------------------


async def test_get_batch_takes_everything_queued_in_order() -> None:
    q = SendQueue(100)
    for item in (b"a", b"bb", b"ccc"):
        assert q.offer(item)
    assert await q.get_batch(100) == [b"a", b"bb", b"ccc"]
    assert q.queued_bytes == 0
    assert len(q) == 0


async def test_get_batch_stops_at_the_byte_limit() -> None:
    q = SendQueue(100)
    for item in (b"aaaa", b"bbbb", b"cccc"):
        q.offer(item)
    assert await q.get_batch(9) == [b"aaaa", b"bbbb"]
    assert q.queued_bytes == 4
    assert await q.get_batch(9) == [b"cccc"]


async def test_get_batch_takes_one_item_larger_than_the_limit() -> None:
    q = SendQueue(100)
    q.offer(b"x" * 50)
    q.offer(b"y")
    assert await q.get_batch(10) == [b"x" * 50]
    assert await q.get_batch(10) == [b"y"]


async def test_get_batch_waits_for_an_item() -> None:
    q = SendQueue(100)
    got: list[list[bytes]] = []

    async def consumer() -> None:
        got.append(await q.get_batch(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        q.offer(b"late")
    assert got == [[b"late"]]


async def test_get_batch_drains_then_ends_after_close() -> None:
    q = SendQueue(100)
    q.offer(b"last")
    q.close()
    assert await q.get_batch(100) == [b"last"]
    with pytest.raises(trio.EndOfChannel):
        await q.get_batch(100)


async def test_get_batch_is_a_checkpoint() -> None:
    q = SendQueue(100)
    q.offer(b"x")
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await q.get_batch(100)
    assert len(q) == 1  # a cancelled get_batch loses nothing


# --- the pipeline's batch sender ---------------------------------------------------------------------


class BatchHarness:
    def __init__(self, send_batch: object) -> None:
        self.metrics = Metrics()
        cfg = make_cfg()
        self.quota = QuotaSession(cfg, self.metrics, lambda: None)
        self.single: list[bytes] = []
        self.pipeline = DatagramPipeline(
            cfg=cfg,
            metrics=self.metrics,
            transport=UDP_WS,
            quota=self.quota,
            send_to_client=self._single,
            send_batch_to_client=send_batch,  # type: ignore[arg-type]
        )

    async def _single(self, frame: bytes) -> None:
        self.single.append(frame)


async def eventually(cond: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.002)


async def test_replies_go_out_in_batches_and_count_per_frame(nursery: trio.Nursery) -> None:
    """F-096: ``datagrams_out`` counts each frame of a batch the transport took."""
    batches: list[list[bytes]] = []
    gate = trio.Event()

    async def send_batch(frames: list[bytes]) -> None:
        batches.append(list(frames))
        await gate.wait()

    server = await start_server(nursery, V4, "echo")
    h = BatchHarness(send_batch)
    await nursery.start(h.pipeline.run)
    h.pipeline.handle_client_frame(v1(1, server, b"first"))
    await eventually(lambda: len(batches) == 1)  # in flight; the next replies queue up behind it
    for i in range(3):
        h.pipeline.handle_client_frame(v1(1, server, b"n%d" % i))
    await eventually(lambda: len(h.pipeline.send_queue) == 3)
    assert h.metrics.value(UDP_WS.datagrams_out) == 0
    gate.set()
    await eventually(lambda: h.metrics.value(UDP_WS.datagrams_out) == 4)
    assert [[decode(f, max_payload=1200).payload for f in b] for b in batches] == [
        [b"first"],
        [b"n0", b"n1", b"n2"],
    ]
    assert h.single == []  # the one-frame path is not used when a batch path exists


async def test_a_failed_batch_write_is_ignored_and_not_counted(nursery: trio.Nursery) -> None:
    """F-096: write errors are ignored; the sender carries on."""
    attempts: list[int] = []

    async def broken(frames: list[bytes]) -> None:
        attempts.append(len(frames))
        raise trio.BrokenResourceError

    server = await start_server(nursery, V4, "echo")
    h = BatchHarness(broken)
    await nursery.start(h.pipeline.run)
    h.pipeline.handle_client_frame(v1(1, server))
    await eventually(lambda: sum(attempts) == 1)
    h.pipeline.handle_client_frame(v1(1, server))
    await eventually(lambda: sum(attempts) == 2)
    assert h.metrics.value(UDP_WS.datagrams_out) == 0
