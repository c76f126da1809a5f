"""Byte-bounded relay->client send queue (spec §14, F-128; DESIGN principle 5).

Producers (the binding readers) run synchronously on the per-datagram path and must never block,
so :meth:`SendQueue.offer` either takes the item or says no; the caller counts the drop. One
consumer (the pipeline's sender task) awaits :meth:`SendQueue.get`.

Decisions
---------
* **Bounded by payload bytes only**, as the original: ``queued_bytes`` is the sum of ``len(item)``.
  Per-item overhead (a deque slot, the bytes header) is not counted; the item count is bounded
  anyway because frames are at least 8 bytes long.
* **Closing keeps what is queued**: ``get`` drains the remaining items and then raises
  ``trio.EndOfChannel``, like a closed Trio memory channel; ``offer`` refuses from then on.
* ``get`` follows Trio's checkpoint rules exactly like ``MemoryReceiveChannel.receive``: a cancel
  point first; then either a shielded schedule point after taking a ready item, or, when it had
  to wait, the wait itself as the schedule point (no second one after waking: at low rates every
  extra scheduler pass is a measurable share of the per-datagram cost). So a busy queue cannot
  starve the scheduler and a cancelled ``get`` never loses an item.
"""

from __future__ import annotations

from collections import deque

import trio

__all__ = ["SendQueue"]


class SendQueue:
    """FIFO of ``bytes`` bounded by total size; :meth:`offer` never blocks (F-128)."""

    __slots__ = ("_bytes", "_closed", "_items", "_lot", "_max")

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._bytes = 0
        self._items: deque[bytes] = deque()
        self._closed = False
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def max_bytes(self) -> int:
        return self._max

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: bytes) -> bool:
        """Queue ``item``; False (dropped) when closed or when it does not fit, including any item
        larger than ``max_bytes`` (F-128)."""
        size = len(item)
        if self._closed or self._bytes + size > self._max:
            return False
        self._items.append(item)
        self._bytes += size
        if self._lot:
            self._lot.unpark()
        return True

    def get_nowait(self) -> bytes:
        """The oldest item; ``trio.WouldBlock`` when empty, ``trio.EndOfChannel`` once closed and empty."""
        items = self._items
        if items:
            item = items.popleft()
            self._bytes -= len(item)
            return item
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def get(self) -> bytes:
        """Wait for the oldest item; raises ``trio.EndOfChannel`` once closed and drained."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._items and await self._wait():
            return self.get_nowait()  # parking was the schedule point
        item = self.get_nowait()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    async def get_batch(self, max_bytes: int) -> list[bytes]:
        """Like :meth:`get`, but also take the items queued behind the first one while their total
        stays within ``max_bytes`` (at least one item, whatever its size), oldest first. Lets the
        consumer write a burst with one call instead of one per item."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._items and await self._wait():
            return self._take_batch(max_bytes)  # parking was the schedule point
        batch = self._take_batch(max_bytes)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return batch

    async def _wait(self) -> bool:
        """Park until there is an item (True) or the queue is closed and empty (EndOfChannel)."""
        items = self._items
        while not items:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        return True

    def _take_batch(self, max_bytes: int) -> list[bytes]:
        items = self._items
        first = items.popleft()
        batch = [first]
        size = len(first)
        while items and size + len(items[0]) <= max_bytes:
            item = items.popleft()
            size += len(item)
            batch.append(item)
        self._bytes -= size
        return batch

    def close(self) -> None:
        """Refuse further offers and wake the consumer; queued items can still be taken. Idempotent."""
        self._closed = True
        self._lot.unpark_all()
