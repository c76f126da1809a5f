"""Fixes for hypercorn 0.18's per-connection TCP server that a public relay cannot live without.

1. A close race: `TCPServer._close` calls `send_eof()` without the connection's send lock while
   another task may be inside `send_all` under it (a client that sends a Close frame right after a
   message the relay answers with a close). Trio then raises `BusyResourceError` in the sender,
   which hypercorn does not catch; it escapes the listener's nursery and ends the whole server.
   We take the send lock in `_close` (unless the closing task already holds it).
2. One connection must never end the server: any exception escaping a connection handler is
   logged and contained.
3. A write that never completes (a peer that stopped reading, its TCP window full) blocks
   forever: hypercorn shields socket writes from cancellation, so neither the original's 1 s
   write deadline (F-079, F-096) nor shutdown could end such a connection. `abort_connection()`
   closes the socket synchronously, which wakes the blocked write with `ClosedResourceError`
   (hypercorn handles that as a closed connection). The current connection's TCP server is found
   through a context variable set when its task starts, inherited by the application tasks.

`install()` is idempotent and checks the private shapes it relies on (hypercorn is pinned).
"""

from __future__ import annotations

import contextvars
import traceback
from typing import Any

import trio

from aero_relay.observability.logging import get_logger

__all__ = ["abort_connection", "current_connection", "install"]

_log = get_logger("aero_relay.http")
_CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("aero_tcp_server", default=None)
_installed = False


def current_connection() -> Any:
    """The hypercorn TCPServer of the connection the calling task serves (None outside one)."""
    return _CURRENT.get()


def abort_connection(tcp_server: Any) -> None:
    """Close the connection's socket now, waking any task blocked writing to it."""
    stream = getattr(tcp_server, "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is None or sock.fileno() == -1:
        return
    trio.lowlevel.notify_closing(sock)
    sock.close()


def install() -> None:
    global _installed
    if _installed:
        return
    from hypercorn.trio import tcp_server

    cls = tcp_server.TCPServer
    for name in ("run", "_close", "protocol_send"):
        if not hasattr(cls, name):
            raise RuntimeError(f"hypercorn TCPServer lacks {name}; the connection fixes cannot be installed")
    orig_run = cls.run
    orig_close = cls._close

    async def run(self: Any) -> None:
        _CURRENT.set(self)
        try:
            await orig_run(self)
        except Exception as err:  # contain it: one connection never ends the server
            _log.error("connection handler failed", err=repr(err), stack=traceback.format_exc())

    async def close(self: Any) -> None:
        lock = getattr(self, "send_lock", None)
        if lock is None or lock.statistics().owner is trio.lowlevel.current_task():
            await orig_close(self)
            return
        async with lock:
            await orig_close(self)

    cls.run = run  # type: ignore[method-assign]
    cls._close = close  # type: ignore[method-assign]
    _installed = True
