"""Real UDP servers on loopback for the pipeline tests (never any other address).

Each server is a Trio task on a trio socket bound to ``127.0.0.1`` or ``::1`` with an ephemeral port.
It records what it received (payload and source) and answers according to its kind:

* ``echo``: the same payload back, from the same socket;
* ``other_port``: the same payload back, but from a second socket (a different source port);
* ``late``: holds each datagram until :meth:`UdpServer.release` is called, then echoes them;
* ``oversized``: answers with ``reply_size`` bytes of ``b"x"``;
* ``sink``: never answers.
"""

from __future__ import annotations

import socket
from typing import Literal

import trio

Kind = Literal["echo", "other_port", "late", "oversized", "sink"]

V4 = "127.0.0.1"
V6 = "::1"


def has_ipv6_loopback() -> bool:
    """Whether this host can bind a UDP socket on ``::1``."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((V6, 0))
    except OSError:
        return False
    return True


class UdpServer:
    def __init__(self, host: str, kind: Kind, reply_size: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.kind = kind
        self.reply_size = reply_size
        self.sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        self.other = trio.socket.socket(family, socket.SOCK_DGRAM)
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.pending: list[tuple[bytes, tuple[str, int]]] = []
        self.got = trio.Event()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def other_port(self) -> int:
        return int(self.other.getsockname()[1])

    @property
    def packed(self) -> bytes:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        return socket.inet_pton(family, self.host)

    async def bind(self) -> None:
        await self.sock.bind((self.host, 0))
        await self.other.bind((self.host, 0))

    async def serve(self) -> None:
        try:
            while True:
                data, addr = await self.sock.recvfrom(65536)
                src = (addr[0], addr[1])
                self.received.append((data, src))
                self.got.set()
                self.got = trio.Event()
                await self._answer(data, src)
        finally:
            self.sock.close()
            self.other.close()

    async def _answer(self, data: bytes, src: tuple[str, int]) -> None:
        if self.kind == "echo":
            await self.sock.sendto(data, src)
        elif self.kind == "other_port":
            await self.other.sendto(data, src)
        elif self.kind == "oversized":
            await self.sock.sendto(b"x" * self.reply_size, src)
        elif self.kind == "late":
            self.pending.append((data, src))

    async def release(self) -> None:
        """``late``: send the held answers now."""
        pending, self.pending = self.pending, []
        for data, src in pending:
            await self.sock.sendto(data, src)

    async def send_from(self, data: bytes, dest: tuple[str, int], *, other: bool = False) -> None:
        """Send an unsolicited datagram to ``dest`` (a binding's loopback address)."""
        await (self.other if other else self.sock).sendto(data, dest)

    async def wait_received(self, n: int, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while len(self.received) < n:
                await self.got.wait()


async def start_server(
    nursery: trio.Nursery, host: str = V4, kind: Kind = "echo", reply_size: int = 0
) -> UdpServer:
    server = UdpServer(host, kind, reply_size)
    await server.bind()
    nursery.start_soon(server.serve)
    return server
