"""aiortc hosted in Trio: one trio-asyncio loop, in the Trio thread, for the server's lifetime.

The interface is deliberately narrow (open the loop, run a coroutine, close a peer, forward a
callback) so that an alternative (an asyncio loop in a worker thread behind an anyio
BlockingPortal) can be swapped in and benchmarked against it.

Rules for the rest of `aero_relay/webrtc/`:

- Open the bridge once, around everything that touches aiortc (`async with open_bridge() as
  bridge:` in the server's root task). Trio tasks started (directly or not) from inside that
  block inherit the loop in their context; a task started from a nursery opened *before* it
  must call `bridge.attach()` first.
- Async aiortc APIs (`setRemoteDescription`, `createAnswer`, `close`, ...) run with
  `await run_aio(bridge, pc.setRemoteDescription, offer)`. Cancelling the Trio caller cancels
  the asyncio task and waits for it to finish unwinding, then raises `trio.Cancelled`.
- Sync aiortc APIs (`RTCDataChannel.send`, `.bufferedAmount`, `.readyState`, `.close()`) are
  called directly from Trio tasks: it is one thread and one loop (`send` schedules its flush
  on the bridge loop through the task's context). Measured: no thread hop, no copy.
- aiortc callbacks -> Trio: register a *sync* handler that does `send_nowait` on a bounded
  Trio memory channel (`forward_to_trio`); aiortc runs handlers on the loop, which is a Trio
  task, so `send_nowait` is legal there. Never `await` Trio from an aiortc handler, and never
  register `async def` handlers (pyee would run them as unsupervised asyncio tasks)::

      send, recv = trio.open_memory_channel[bytes](256)
      channel.on("message", forward_to_trio(send, on_drop=lambda m: metrics.inc(...)))
      async for message in recv: ...

- Closing a peer in cleanup: `await close_peer(bridge, pc, timeout=...)` (shielded, bounded).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar, TypeVarTuple, Unpack

import attrs
import trio
import trio_asyncio

from aero_relay.observability.logging import get_logger

__all__ = ["Bridge", "close_peer", "forward_to_trio", "open_bridge", "run_aio"]

_log = get_logger("aero_relay.webrtc")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@attrs.define(slots=True, eq=False)
class Bridge:
    """The asyncio loop aiortc runs on (a trio-asyncio loop in the caller's Trio run)."""

    loop: asyncio.AbstractEventLoop

    def attach(self) -> None:
        """Make sync aiortc calls work in the current Trio task (and tasks it starts later).

        Only needed in tasks whose ancestry started outside `open_bridge()`.
        """
        trio_asyncio.current_loop.set(self.loop)

    def attached(self) -> bool:
        """Whether the current Trio task sees this loop as its asyncio loop."""
        return trio_asyncio.current_loop.get() is self.loop

    def tasks(self) -> set[asyncio.Task[Any]]:
        """Live asyncio tasks on the loop (leak checks in tests)."""
        return {t for t in asyncio.all_tasks(self.loop) if not t.done()}


def _contain_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log an unretrieved asyncio error instead of re-raising it.

    trio-asyncio's default handler re-raises into `open_bridge()`, so one aiortc background task
    failing for one peer (e.g. `_data_channel_flush` after the client's ICE consent expired:
    "Cannot send data, not connected") would end the whole server. The session concerned notices
    the dead transport through its own state events.
    """
    exc = context.get("exception")
    _log.warn(
        "webrtc background task error",
        detail=str(context.get("message", "")),
        err=repr(exc) if exc is not None else "",
    )


@asynccontextmanager
async def open_bridge() -> AsyncIterator[Bridge]:
    """Open the loop for the lifetime of the block; on exit, asyncio tasks are cancelled."""
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_contain_loop_error)
        yield Bridge(loop)


async def _call(coro_fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
    # Build the awaitable inside the asyncio task, so code that looks up the running loop at
    # call time (not only when awaited) finds it.
    return await coro_fn(*args)


async def run_aio(bridge: Bridge, coro_fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
    """Run `await coro_fn(*args)` as an asyncio task on the bridge loop and return its result.

    Trio cancellation cancels the asyncio task (one `asyncio.CancelledError` thrown into it),
    waits for it to finish, and then raises `trio.Cancelled`.
    """
    result: T = await bridge.loop.run_aio_coroutine(_call(coro_fn, *args))  # type: ignore[attr-defined]
    return result


def forward_to_trio(
    send: trio.MemorySendChannel[T], *, on_drop: Callable[[T], None] | None = None
) -> Callable[[T], None]:
    """A sync aiortc event handler that hands each event to Trio without blocking.

    When the channel is full (the Trio consumer is behind) or closed, the event is dropped and
    `on_drop(event)` is called: aiortc handlers must never block the loop.
    """

    def handler(event: T) -> None:
        try:
            send.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            if on_drop is not None:
                on_drop(event)

    return handler


class _Closable(Protocol):
    async def close(self) -> None: ...


async def close_peer(bridge: Bridge, pc: _Closable, *, timeout: float) -> bool:
    """Close an RTCPeerConnection from cleanup code: shielded, at most `timeout` seconds.

    Returns False when the close did not finish in time (its asyncio task was cancelled).
    """
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + timeout if math.isfinite(timeout) else math.inf
        await run_aio(bridge, pc.close)
    return not scope.cancelled_caught
