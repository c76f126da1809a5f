"""Per-guest-port UDP bindings: the relay's NAT mappings (spec §14, F-122 .. F-126).

A :class:`Binding` is one guest port of one relay instance: a non-blocking IPv4 UDP socket on
``0.0.0.0:0`` plus, where the host has IPv6, a v6-only socket on ``[::]:0``. Every destination the
guest port talks to uses the same source ports (endpoint-independent mapping, F-122). The pipeline
(:mod:`aero_relay.relay.pipeline`) owns the bindings, sends through them synchronously and runs one
:func:`read_loop` task per socket.

Decisions
---------
* **Remote keys are ``(ip_text, port)`` tuples**, exactly what ``recvfrom`` returns on the IPv4
  socket and the first two fields of what it returns on the IPv6 one; the pipeline builds the same
  tuple for ``sendto``. One tuple serves as the ``sendto`` address, the allow-list key and the
  limiter's destination key, and an inbound lookup allocates nothing on IPv4.
* **IPv4-mapped destinations are IPv4 (fixes F-197, weakness 10).** A frame to ``::ffff:a.b.c.d``
  is sent on the IPv4 socket and admitted under the plain IPv4 key, so the reply, which arrives on
  the IPv4 socket from ``a.b.c.d``, passes the filter. The binding also remembers (bounded, LRU)
  which remotes the guest last addressed in mapped form, and such replies are re-mapped to
  ``::ffff:a.b.c.d`` (v2, af 6): the client gets its reply from the address it sent to. A later send
  to the plain IPv4 form switches that remote back to IPv4 replies.
* **Stopping a reader needs no cancel scope**: :meth:`Binding.close` calls
  ``trio.lowlevel.notify_closing`` before closing each socket, which ends a reader waiting on it
  with ``ClosedResourceError``; a reader that is runnable or not yet started sees ``closed`` at its
  next check. Closing is synchronous, so it works from the hot path (LRU eviction) and from
  ``finally`` blocks without shielding.
* Oversize detection (F-126) relies on the read buffer being at least ``max_payload + 1`` bytes
  (the caller passes ``max(UDP_READ_BUFFER_BYTES, max + 1)``): a longer datagram is seen as longer
  and dropped by the pipeline, never truncated.
"""

from __future__ import annotations

import functools
import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import trio

from aero_relay.core.allowlist import RemoteAllowlist

__all__ = [
    "READ_BATCH",
    "Binding",
    "Deliver",
    "RemoteKey",
    "open_socket",
    "pack_ipv4",
    "pack_ipv6",
    "read_loop",
]

RemoteKey = tuple[str, int]
"""A remote endpoint as ``(ip_text, port)``; IPv4-mapped remotes use the plain IPv4 text."""

# (binding, data, remote, from_v6): called synchronously for every datagram a reader receives.
Deliver = Callable[["Binding", bytes, RemoteKey, bool], None]

READ_BATCH: Final = 64
"""Datagrams a reader drains per readiness before yielding, so one flooded socket cannot starve
the other tasks (going back to ``wait_readable`` is a scheduling point)."""


def open_socket(family: socket.AddressFamily) -> socket.socket:
    """A non-blocking UDP socket bound to the wildcard address and an ephemeral port; IPv6 sockets
    are v6-only (F-122). Raises ``OSError`` (e.g. no IPv6 on this host, or out of descriptors)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::", 0))
        else:
            sock.bind(("0.0.0.0", 0))
    except BaseException:
        sock.close()
        raise
    return sock


@functools.lru_cache(maxsize=4096)
def pack_ipv4(text: str) -> bytes:
    """Packed form of an IPv4 text as ``recvfrom`` gives it (cached: few distinct remotes)."""
    return socket.inet_pton(socket.AF_INET, text)


@functools.lru_cache(maxsize=4096)
def pack_ipv6(text: str) -> bytes:
    """Packed form of an IPv6 text as ``recvfrom`` gives it, without any ``%zone`` suffix."""
    return socket.inet_pton(socket.AF_INET6, text.partition("%")[0])


class Binding:
    """One guest port's sockets, inbound allow-list and liveness (F-122 .. F-126, F-130 .. F-133).

    ``allowlist`` is None in ``UDP_INBOUND_FILTER_MODE=any`` (F-129). ``last_used`` is the clock
    time of the last outbound datagram (the pipeline's idle timer). ``sock6`` is None where the
    host has no IPv6: IPv6 sends then fail silently (F-122).
    """

    __slots__ = ("allowlist", "closed", "guest_port", "last_used", "mapped_remotes", "sock4", "sock6")

    def __init__(
        self,
        guest_port: int,
        sock4: socket.socket,
        sock6: socket.socket | None,
        allowlist: RemoteAllowlist | None,
        now: float,
    ) -> None:
        self.guest_port = guest_port
        self.sock4 = sock4
        self.sock6 = sock6
        self.allowlist = allowlist
        self.last_used = now
        self.closed = False
        # Remotes last addressed as ::ffff:a.b.c.d (created on first use; bounded by note_mapped).
        self.mapped_remotes: OrderedDict[RemoteKey, None] | None = None

    @classmethod
    def open(cls, guest_port: int, allowlist: RemoteAllowlist | None, now: float) -> Binding:
        """Create the sockets. The IPv4 socket is required (``OSError`` propagates); the IPv6 one is
        skipped silently when it cannot be created."""
        sock4 = open_socket(socket.AF_INET)
        try:
            sock6: socket.socket | None = open_socket(socket.AF_INET6)
        except OSError:
            sock6 = None
        return cls(guest_port, sock4, sock6, allowlist, now)

    def note_mapped(self, remote: RemoteKey, cap: int) -> None:
        """Remember that the guest addressed ``remote`` as IPv4-mapped IPv6 (at most ``cap`` remotes,
        least recently addressed evicted)."""
        mapped = self.mapped_remotes
        if mapped is None:
            mapped = self.mapped_remotes = OrderedDict()
        if remote in mapped:
            mapped.move_to_end(remote)
            return
        while len(mapped) >= max(cap, 1):
            mapped.popitem(last=False)
        mapped[remote] = None

    def close(self) -> None:
        """Close both sockets, waking any reader blocked on them. Idempotent; no await."""
        if self.closed:
            return
        self.closed = True
        for sock in (self.sock4, self.sock6):
            if sock is not None and sock.fileno() != -1:
                trio.lowlevel.notify_closing(sock)
                sock.close()


async def read_loop(
    binding: Binding, sock: socket.socket, from_v6: bool, deliver: Deliver, bufsize: int
) -> None:
    """Read ``sock`` until the binding closes: wait for readiness, then drain up to
    :data:`READ_BATCH` datagrams with ``recvfrom`` (F-126). Transient read errors are retried on the
    next readiness; a closed socket ends the loop."""
    recvfrom = sock.recvfrom
    wait_readable = trio.lowlevel.wait_readable
    try:
        while not binding.closed:
            await wait_readable(sock)
            for _ in range(READ_BATCH):
                if binding.closed:
                    return
                try:
                    data, addr = recvfrom(bufsize)
                except BlockingIOError:
                    break
                except OSError:
                    if sock.fileno() == -1:
                        return
                    break
                deliver(binding, data, addr if not from_v6 else (addr[0], addr[1]), from_v6)
    except trio.ClosedResourceError:
        return
