"""Hardening hooks for aiortc 1.16.0 / aioice 0.13.0 (DESIGN "Known aiortc/aioice gaps").

aiortc has no SettingEngine, so the relay's equivalent of pion's (F-099) lives here. Every hook
is per peer: `HardenedPeerConnection(configuration, hardening)` upgrades the objects that *this*
peer connection creates (its aioice `Connection` and its `RTCSctpTransport`) to subclasses below.
Nothing global is patched, so a plain `RTCPeerConnection` in the same process (or another test)
is unaffected.

Mechanism: `HardenedPeerConnection` overrides aiortc's name-mangled factories
`_RTCPeerConnection__createDtlsTransport` / `__createSctpTransport`, calls the originals, then
swaps the class of the fresh aioice `Connection` (`iceGatherer._connection`, before gathering)
and `RTCSctpTransport` (before start) to ours and sets their per-peer state.

Hooks and the private internals they rely on (all checked by `verify()` at import):

a. ICE UDP port range: `HardenedConnection.get_component_candidates` binds host sockets itself
   (random start, linear probe over MIN..MAX, ports in use skipped), then hands them to asyncio
   with `create_datagram_endpoint(sock=...)` and aioice's `StunProtocol`. STUN (srflx) uses
   aioice's `server_reflexive_candidate`; TURN stays aioice's (`super()` with no host
   addresses). Cost: one port per gathered host address per session (one with a listen IP).
   TURN client sockets are not in the range (they only talk to the TURN server).
b. Listen IP: gather only on that address when it is not 0.0.0.0/:: (loopback included,
   which aioice's `get_host_addresses` skips).
c. NAT 1:1: host type rewrites host candidate addresses (socket stays on the local address;
   a host address without a public IP of its family is not gathered, like pion); srflx type
   adds an srflx candidate per host candidate (related address = host) and skips STUN.
d. `a=max-message-size`: `HardenedSctpTransport.getCapabilities` (aiortc advertises a fixed
   `LOCAL_MAX_MESSAGE_SIZE`).
e. Reassembly cap (F-115): `HardenedSctpTransport` advertises a_rwnd = cap and checks every
   DATA chunk before aiortc buffers it (`_receive_data_chunk`, using `_advertised_rwnd`,
   `_inbound_streams[*].reassembly`, `_last_received_tsn`, `_sack_misordered`) and every
   message before delivery (`_receive`). Buffered user bytes never exceed the cap and buffered
   chunks never exceed cap/64 (min 1024). Over either: ABORT, association CLOSED (its channels
   close), reassembly freed, callback (the session layer counts and closes).
f. SO_RCVBUF 4 MiB on our host sockets (aioice sets 256 KiB; bursts collapse SCTP).
g. Consent task leak: `HardenedConnection.connect` stops the consent task that aioice's
   `connect()` starts after `close()` already ran (ICE completing while closing).
h. `rtc_configuration()` always passes an explicit iceServers list; `HardenedPeerConnection`
   refuses `iceServers=None` (aiortc's default is Google STUN).
i. mDNS candidates (`*.local`) are dropped, never resolved (aioice would join multicast); ICE
   then keeps waiting for peer-reflexive candidates instead of failing on an empty check list
   (`_remote_candidates_expected`) and keeps the component at end-of-candidates
   (`_prune_components`, `_components`).
j. (extra) aioice queues every received datagram in an unbounded `asyncio.Queue` (`_queue`,
   via `data_received`); ours drops beyond `ice_queue_max_packets`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.metadata
import inspect
import ipaddress
import logging
import secrets
import socket
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import aioice.ice
import aioice.mdns
import aioice.turn
import attrs
from aioice import Candidate, Connection, TransportPolicy
from aioice.candidate import candidate_foundation, candidate_priority
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSctpTransport
from aiortc import rtcpeerconnection as _aiortc_pc
from aiortc import rtcsctptransport as _aiortc_sctp
from aiortc import utils as _aiortc_utils
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport, parse_stun_turn_uri
from aiortc.utils import uint32_gte

from aero_relay.core.ice import IceServer

if TYPE_CHECKING:
    from aero_relay.config import Config

__all__ = [
    "DEFAULT_SOCKET_RCVBUF",
    "PINNED_VERSIONS",
    "HardenedConnection",
    "HardenedPeerConnection",
    "HardenedSctpTransport",
    "HookError",
    "PeerHardening",
    "ReassemblyOverflow",
    "bind_udp_in_range",
    "problems",
    "rtc_configuration",
    "set_socket_rcvbuf",
    "verify",
]

logger = logging.getLogger(__name__)

PINNED_VERSIONS: dict[str, str] = {"aiortc": "1.16.0", "aioice": "0.13.0"}

DEFAULT_SOCKET_RCVBUF = 4 * 1024 * 1024
# Each buffered chunk also costs a Python object (~250 bytes), so cap the chunk count too.
REASSEMBLY_BYTES_PER_CHUNK = 64
REASSEMBLY_MIN_CHUNKS = 1024

# Linux's SO_RCVBUFFORCE (not exported by Python's socket module).
_SO_RCVBUFFORCE: int | None = 33 if sys.platform.startswith("linux") else None
_CREATE_DTLS = "_RTCPeerConnection__createDtlsTransport"
_CREATE_SCTP = "_RTCPeerConnection__createSctpTransport"


class HookError(RuntimeError):
    """aiortc/aioice are not the versions, or do not have the internals, these hooks rely on."""


# --------------------------------------------------------------------------------------------
# Configuration


def _unspecified(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_unspecified


@attrs.frozen
class PeerHardening:
    """What one peer connection's hooks do (F-099). Build it from config with `from_config`.

    `listen_ip` "0.0.0.0" or "::" means every interface (aioice's default list, no loopback).
    `max_message_size`/`max_receive_buffer` None leave aiortc's SCTP transport as it is (test
    client peers use that).
    """

    port_min: int = 0
    port_max: int = 0
    listen_ip: str = "0.0.0.0"
    nat_1to1_ips: tuple[str, ...] = ()
    nat_candidate_type: Literal["host", "srflx"] = "host"
    max_message_size: int | None = None
    max_receive_buffer: int | None = None
    socket_rcvbuf: int = DEFAULT_SOCKET_RCVBUF
    drop_mdns_candidates: bool = True
    ice_queue_max_packets: int = 4096
    # Bound on STUN/TURN gathering (AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT); None: aioice's 5 s.
    gather_timeout: float | None = None

    def __attrs_post_init__(self) -> None:
        if (self.port_min == 0) != (self.port_max == 0) or not (0 <= self.port_min <= self.port_max <= 65535):
            raise ValueError(f"invalid UDP port range {self.port_min}-{self.port_max}")
        if self.nat_candidate_type not in ("host", "srflx"):
            raise ValueError(f"invalid NAT 1:1 candidate type {self.nat_candidate_type!r}")
        ipaddress.ip_address(self.listen_ip)
        for ip in self.nat_1to1_ips:
            ipaddress.ip_address(ip)

    @classmethod
    def from_config(cls, cfg: Config) -> PeerHardening:
        """From the validated WEBRTC_* config fields."""
        cand = cfg.webrtc_nat_1to1_ip_candidate_type
        return cls(
            port_min=cfg.webrtc_udp_port_min,
            port_max=cfg.webrtc_udp_port_max,
            listen_ip=cfg.webrtc_udp_listen_ip,
            nat_1to1_ips=tuple(cfg.webrtc_nat_1to1_ips),
            nat_candidate_type="srflx" if cand == "srflx" else "host",
            max_message_size=cfg.webrtc_datachannel_max_message_bytes,
            max_receive_buffer=cfg.webrtc_sctp_max_receive_buffer_bytes,
            gather_timeout=cfg.ice_gathering_timeout,
        )

    def host_addresses(self, defaults: Iterable[str]) -> list[str]:
        """The addresses to gather host candidates on: the listen IP, or aioice's defaults."""
        if _unspecified(self.listen_ip):
            return list(defaults)
        return [self.listen_ip]

    def public_ip_for(self, base: str) -> str | None:
        """The NAT 1:1 IP of the same family as `base` (the first one listed), if any."""
        version = ipaddress.ip_address(base).version
        for ip in self.nat_1to1_ips:
            if ipaddress.ip_address(ip).version == version:
                return ip
        return None


def rtc_configuration(servers: Iterable[IceServer]) -> RTCConfiguration:
    """An RTCConfiguration with an explicit iceServers list (never aiortc's Google STUN default).

    URLs aiortc cannot parse (it raises while creating the ICE gatherer, failing the session)
    are left out with a warning. aiortc uses only the first STUN and the first TURN URL.
    """
    out: list[RTCIceServer] = []
    for server in servers:
        urls: list[str] = []
        for url in server.urls:
            try:
                parse_stun_turn_uri(url)
            except ValueError as exc:
                logger.warning("ICE server URL not usable by aiortc, ignored: %s (%s)", url, exc)
                continue
            urls.append(url)
        if urls:
            out.append(
                RTCIceServer(
                    urls=urls, username=server.username or None, credential=server.credential or None
                )
            )
    return RTCConfiguration(iceServers=out)


# --------------------------------------------------------------------------------------------
# Sockets


def bind_udp_in_range(host: str, port_min: int, port_max: int) -> socket.socket:
    """A UDP socket bound to `host` on a free port in [port_min, port_max] (0, 0: any port).

    Like pion, start at a random port of the range and probe upwards, wrapping; ports in use
    (or not permitted) are skipped. Raises OSError(EADDRINUSE) when the range is exhausted.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if port_min == 0:
            sock.bind((host, 0))
            return sock
        size = port_max - port_min + 1
        start = secrets.randbelow(size)
        for i in range(size):
            try:
                sock.bind((host, port_min + (start + i) % size))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            return sock
        raise OSError(errno.EADDRINUSE, f"no free UDP port on {host} in {port_min}-{port_max}")
    except BaseException:
        sock.close()
        raise


def set_socket_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for a `size` receive buffer; returns what the kernel granted (Linux reports 2x).

    SO_RCVBUF is capped by net.core.rmem_max; with CAP_NET_ADMIN, SO_RCVBUFFORCE is not.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    got: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < size and _SO_RCVBUFFORCE is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError:
            pass
    return got


# --------------------------------------------------------------------------------------------
# aioice: the ICE connection of our peers


def _ip_version(host: str) -> int:
    return ipaddress.ip_address(host).version


def _is_mdns(host: str) -> bool:
    return host.rstrip(".").lower().endswith(".local")


class HardenedConnection(Connection):
    """aioice `Connection` with hooks a, b, c, f, g, i, j. Made by `adopt` (class swap)."""

    _aero: PeerHardening
    _aero_mdns_dropped: int
    _aero_mdns_components: set[int]
    _aero_bind_failures: list[str]
    _aero_rcvbuf: list[int]
    _aero_queue_drops: int
    gather_timed_out: bool  # STUN did not answer within the gathering timeout

    @classmethod
    def adopt(cls, conn: Connection, hardening: PeerHardening) -> HardenedConnection:
        """Upgrade a freshly built aioice Connection (before gathering) in place."""
        if conn.local_candidates or conn._local_candidates_start:
            raise HookError("ICE connection adopted after gathering started")
        conn.__class__ = cls
        assert isinstance(conn, HardenedConnection)
        conn._aero = hardening
        conn._aero_mdns_dropped = 0
        conn._aero_mdns_components = set()
        conn._aero_bind_failures = []
        conn._aero_rcvbuf = []
        conn._aero_queue_drops = 0
        conn.gather_timed_out = False
        return conn

    # a, b, c, f
    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        h = self._aero
        if h.gather_timeout is not None:
            timeout = h.gather_timeout  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        wanted = h.host_addresses(addresses) if self._transport_policy == TransportPolicy.ALL else []
        hosts: list[Candidate] = []
        extra: list[Candidate] = []
        protocols: list[aioice.ice.StunProtocol] = []
        for address in wanted:
            public = h.public_ip_for(address) if h.nat_1to1_ips else None
            if h.nat_1to1_ips and h.nat_candidate_type == "host" and public is None:
                logger.warning("NAT 1:1 mapping is enabled but no external IP is found for %s", address)
                continue
            try:
                sock = bind_udp_in_range(address, h.port_min, h.port_max)
            except OSError as exc:
                self._aero_bind_failures.append(f"{address}: {exc}")
                logger.warning("webrtc: could not bind an ICE UDP socket on %s: %s", address, exc)
                continue
            try:
                self._aero_rcvbuf.append(set_socket_rcvbuf(sock, h.socket_rcvbuf))
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(self), sock=sock
                )
            except BaseException:
                sock.close()
                raise
            base_host, base_port = sock.getsockname()[:2]
            advertised = public if (public is not None and h.nat_candidate_type == "host") else base_host
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", base_host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=advertised,
                port=base_port,
                type="host",
            )
            protocols.append(protocol)
            hosts.append(protocol.local_candidate)
            if public is not None and h.nat_candidate_type == "srflx":
                extra.append(
                    Candidate(
                        foundation=candidate_foundation("srflx", "udp", base_host),
                        component=component,
                        transport="udp",
                        priority=candidate_priority(component, "srflx"),
                        host=public,
                        port=base_port,
                        type="srflx",
                        related_address=base_host,
                        related_port=base_port,
                    )
                )
        self._protocols += protocols

        # NAT 1:1 srflx replaces STUN (as in pion); STUN is asked from IPv4 sockets only.
        stun_from: list[aioice.ice.StunProtocol] = []
        if self.stun_server is not None and not extra:
            stun_from = [p for p in protocols if _ip_version(p.transport.get_extra_info("sockname")[0]) == 4]
        srflx, relayed = await asyncio.gather(
            self._aero_stun(stun_from, timeout),
            # aioice itself gathers TURN (it binds no host socket with no addresses).
            super().get_component_candidates(component=component, addresses=[], timeout=timeout),
        )
        return hosts + extra + srflx + relayed

    async def _aero_stun(self, protocols: Sequence[aioice.ice.StunProtocol], timeout: int) -> list[Candidate]:
        if not protocols or self.stun_server is None:
            return []
        server = self.stun_server
        tasks = [asyncio.create_task(aioice.ice.server_reflexive_candidate(p, server)) for p in protocols]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            self.gather_timed_out = True
        return [t.result()[0] for t in done if t.exception() is None]

    # i
    async def add_remote_candidate(self, remote_candidate: Candidate | None) -> None:
        c = remote_candidate
        if c is not None and self._aero.drop_mdns_candidates and _is_mdns(c.host):
            # Never resolved (no multicast); the peer's checks teach us its address (prflx).
            self._aero_mdns_dropped += 1
            self._aero_mdns_components.add(c.component)
            return
        await super().add_remote_candidate(remote_candidate)

    def _prune_components(self) -> None:
        # At end-of-candidates aioice drops components without remote candidates; one whose
        # candidates were all mDNS still gets a peer-reflexive candidate from the peer's checks.
        before = set(self._components)
        super()._prune_components()
        self._components |= before & self._aero_mdns_components

    def _remote_candidates_expected(self) -> bool:
        # With dropped mDNS candidates, an empty check list is not a failure: wait for
        # peer-reflexive candidates (the session's connect timeout bounds the wait).
        waiting_prflx = self._aero_mdns_dropped > 0 and not self._nominated
        return bool(super()._remote_candidates_expected() or waiting_prflx)

    # g
    async def connect(self) -> None:
        try:
            await super().connect()
        finally:
            if self._closing:
                await self._aero_stop_consent()

    async def _aero_stop_consent(self) -> None:
        task = self._query_consent_task
        self._query_consent_task = None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # j
    def data_received(self, data: bytes, component: int) -> None:
        if self._queue.qsize() >= self._aero.ice_queue_max_packets:
            self._aero_queue_drops += 1
            return
        super().data_received(data, component)


# --------------------------------------------------------------------------------------------
# aiortc: SCTP


@attrs.frozen
class ReassemblyOverflow:
    """The peer overran the SCTP reassembly cap (F-115); the association was aborted.

    `reason`: "buffer" (buffered bytes over the cap), "chunks" (too many buffered chunks),
    "message" (a reassembled message larger than the cap), "empty_chunk" (DATA with no data).
    """

    reason: str
    buffered_bytes: int
    limit_bytes: int
    message_bytes: int = 0


class HardenedSctpTransport(RTCSctpTransport):
    """aiortc `RTCSctpTransport` with hooks d and e. Made by `adopt` (class swap)."""

    _aero_max_message_size: int
    _aero_limit: int  # 0: no reassembly cap
    _aero_max_chunks: int
    _aero_chunk_hint: int
    _aero_tripped: ReassemblyOverflow | None
    _aero_on_overflow: Callable[[ReassemblyOverflow], None] | None
    peak_reassembly_bytes: int

    @classmethod
    def adopt(
        cls,
        sctp: RTCSctpTransport,
        *,
        max_message_size: int | None,
        max_receive_buffer: int | None,
        on_overflow: Callable[[ReassemblyOverflow], None] | None,
    ) -> HardenedSctpTransport:
        if sctp.state != "new":
            raise HookError("SCTP transport adopted after it started")
        sctp.__class__ = cls
        assert isinstance(sctp, HardenedSctpTransport)
        sctp._aero_max_message_size = max_message_size or _aiortc_sctp.LOCAL_MAX_MESSAGE_SIZE
        sctp._aero_limit = max_receive_buffer or 0
        sctp._aero_max_chunks = max(REASSEMBLY_MIN_CHUNKS, sctp._aero_limit // REASSEMBLY_BYTES_PER_CHUNK)
        sctp._aero_chunk_hint = 0
        sctp._aero_tripped = None
        sctp._aero_on_overflow = on_overflow
        sctp.peak_reassembly_bytes = 0
        if sctp._aero_limit:
            # Advertise the cap as our receive window (pion: max receive buffer = a_rwnd).
            sctp._advertised_rwnd = sctp._aero_limit
        return sctp

    # d: an instance method on purpose (the value is per peer); aiortc calls it on the instance.
    def getCapabilities(self) -> _aiortc_sctp.RTCSctpCapabilities:  # type: ignore[override]
        return _aiortc_sctp.RTCSctpCapabilities(maxMessageSize=self._aero_max_message_size)

    @property
    def overflow(self) -> ReassemblyOverflow | None:
        """Set once the reassembly cap tripped (the association is then closed)."""
        return self._aero_tripped

    def reassembly_bytes(self) -> int:
        """Bytes buffered for reassembly right now (exact; for tests and debugging)."""
        return sum(len(c.user_data) for s in self._inbound_streams.values() for c in s.reassembly)

    def _aero_exact(self) -> tuple[int, int]:
        # Exact totals; also resyncs the window (aiortc drops reset streams' chunks from the
        # reassembly without giving their bytes back to _advertised_rwnd).
        size = 0
        count = 0
        for stream in self._inbound_streams.values():
            count += len(stream.reassembly)
            for chunk in stream.reassembly:
                size += len(chunk.user_data)
        self._advertised_rwnd = self._aero_limit - size
        self._aero_chunk_hint = count
        return size, count

    async def _handle_data(self, data: bytes) -> None:
        if self._aero_tripped is None:
            await super()._handle_data(data)

    async def _receive_chunk(self, chunk: _aiortc_sctp.Chunk) -> None:
        if self._aero_tripped is None:
            await super()._receive_chunk(chunk)

    def _aero_is_duplicate(self, tsn: int) -> bool:
        # The test aiortc's _mark_received applies: a resent chunk we hold adds no bytes.
        last = self._last_received_tsn
        return (last is not None and uint32_gte(last, tsn)) or tsn in self._sack_misordered

    async def _receive_data_chunk(self, chunk: _aiortc_sctp.DataChunk) -> None:
        # The cap is strict. We advertise a_rwnd = cap - buffered, so a compliant sender never
        # crosses it: new data fits the window it was given, and its only exception, a
        # zero-window probe (RFC 9260 section 6.1 A), is sent with nothing outstanding, i.e. when
        # the buffer is full of one incomplete message that can only grow past the cap.
        limit = self._aero_limit
        if not limit:
            await super()._receive_data_chunk(chunk)
            return
        size = len(chunk.user_data)
        if size == 0:
            await self._aero_trip(ReassemblyOverflow("empty_chunk", self.reassembly_bytes(), limit))
            return
        buffered = limit - self._advertised_rwnd
        if buffered + size > limit or self._aero_chunk_hint >= self._aero_max_chunks:
            buffered, count = self._aero_exact()
            if not self._aero_is_duplicate(chunk.tsn):
                if buffered + size > limit:
                    await self._aero_trip(ReassemblyOverflow("buffer", buffered + size, limit))
                    return
                if count >= self._aero_max_chunks:
                    await self._aero_trip(ReassemblyOverflow("chunks", buffered + size, limit))
                    return
        self._aero_chunk_hint += 1
        if buffered + size > self.peak_reassembly_bytes:
            self.peak_reassembly_bytes = buffered + size
        await super()._receive_data_chunk(chunk)

    async def _receive(self, stream_id: int, pp_id: int, data: bytes) -> None:
        if self._aero_limit and len(data) > self._aero_limit:
            await self._aero_trip(
                ReassemblyOverflow("message", self.reassembly_bytes(), self._aero_limit, len(data))
            )
            return
        if self._aero_tripped is None:
            await super()._receive(stream_id, pp_id, data)

    async def _aero_trip(self, event: ReassemblyOverflow) -> None:
        if self._aero_tripped is not None:
            return
        self._aero_tripped = event
        for stream in self._inbound_streams.values():
            stream.reassembly.clear()
        self._sack_needed = False
        logger.debug("webrtc: SCTP reassembly cap exceeded: %s", event)
        await self._abort()
        self._set_state(self.State.CLOSED)
        if self._aero_on_overflow is not None:
            try:
                self._aero_on_overflow(event)
            except Exception:
                logger.exception("webrtc: reassembly overflow callback failed")


# --------------------------------------------------------------------------------------------
# aiortc: the peer connection


class HardenedPeerConnection(RTCPeerConnection):
    """An RTCPeerConnection whose ICE connections and SCTP transport carry our hooks.

    `on_reassembly_overflow` runs in asyncio context on the bridge loop (keep it non-blocking,
    e.g. a Trio memory channel `send_nowait`).
    """

    def __init__(
        self,
        configuration: RTCConfiguration,
        hardening: PeerHardening,
        *,
        on_reassembly_overflow: Callable[[ReassemblyOverflow], None] | None = None,
    ) -> None:
        if configuration.iceServers is None:
            raise ValueError("RTCConfiguration.iceServers must be an explicit list (None means Google STUN)")
        self._aero_hardening = hardening
        self._aero_on_overflow = on_reassembly_overflow
        self._aero_connections: list[HardenedConnection] = []
        super().__init__(configuration)

    @property
    def hardening(self) -> PeerHardening:
        return self._aero_hardening

    @property
    def ice_connections(self) -> tuple[HardenedConnection, ...]:
        """The aioice connections of this peer (normally one: data channels are bundled)."""
        return tuple(self._aero_connections)

    @property
    def bind_failures(self) -> tuple[str, ...]:
        """Host addresses that could not get a socket (port range exhausted, address missing)."""
        return tuple(f for c in self._aero_connections for f in c._aero_bind_failures)

    def _RTCPeerConnection__createDtlsTransport(self) -> RTCDtlsTransport:
        dtls: RTCDtlsTransport = getattr(super(), _CREATE_DTLS)()
        conn = dtls.transport.iceGatherer._connection
        self._aero_connections.append(HardenedConnection.adopt(conn, self._aero_hardening))
        return dtls

    def _RTCPeerConnection__createSctpTransport(self) -> None:
        getattr(super(), _CREATE_SCTP)()
        h = self._aero_hardening
        sctp = self.sctp
        if sctp is not None and (h.max_message_size is not None or h.max_receive_buffer is not None):
            HardenedSctpTransport.adopt(
                sctp,
                max_message_size=h.max_message_size,
                max_receive_buffer=h.max_receive_buffer,
                on_overflow=self._aero_on_overflow,
            )


# --------------------------------------------------------------------------------------------
# Startup verification


def _installed_version(dist: str) -> str:
    return importlib.metadata.version(dist)


def _names(fn: object) -> set[str]:
    """Global and attribute names a function uses, nested code (comprehensions) included."""
    fn = getattr(fn, "__func__", fn)
    stack = [getattr(fn, "__code__", None)]
    names: set[str] = set()
    while stack:
        code = stack.pop()
        if isinstance(code, types.CodeType):
            names.update(code.co_names)
            stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return names


def _params(fn: object) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []


def _where(owner: object, name: str) -> str:
    if inspect.ismodule(owner):
        return f"{owner.__name__}.{name}"
    return f"{getattr(owner, '__module__', '?')}.{getattr(owner, '__qualname__', owner)}.{name}"


class _Checks:
    """Collects every mismatch, so one failed start lists them all."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def version(self, dist: str, want: str) -> None:
        try:
            got = _installed_version(dist)
        except importlib.metadata.PackageNotFoundError:
            got = "not installed"
        if got != want:
            self.problems.append(f"{dist} {got} is installed, the hooks are written for {dist}=={want}")

    def method(self, owner: object, name: str, params: Sequence[str] | None = None) -> None:
        where = _where(owner, name)
        fn = getattr(owner, name, None)
        if not callable(fn):
            self.problems.append(f"{where} is missing")
        elif params is not None and _params(fn) != list(params):
            self.problems.append(f"{where} has parameters {_params(fn)}, expected {list(params)}")

    def uses(self, owner: object, name: str, needed: Iterable[str]) -> None:
        fn = getattr(owner, name, None)
        missing = sorted(set(needed) - _names(fn))
        if missing:
            self.problems.append(f"{_where(owner, name)} no longer uses {', '.join(missing)}")

    def attr(self, owner: object, name: str) -> None:
        if not hasattr(owner, name):
            self.problems.append(f"{_where(owner, name)} is missing")


def problems() -> list[str]:
    """Every way the installed aiortc/aioice differ from what the hooks rely on (empty: fine)."""
    c = _Checks()
    for dist, want in PINNED_VERSIONS.items():
        c.version(dist, want)
    pc = RTCPeerConnection
    # The factories we wrap, and that they build the objects we upgrade.
    c.method(pc, _CREATE_DTLS, ["self"])
    c.uses(pc, _CREATE_DTLS, ["RTCIceGatherer", "RTCIceTransport", "RTCDtlsTransport"])
    c.method(pc, _CREATE_SCTP, ["self"])
    c.uses(pc, _CREATE_SCTP, ["RTCSctpTransport"])
    c.uses(RTCIceGatherer, "__init__", ["Connection", "_connection", "getDefaultIceServers"])
    c.uses(RTCIceTransport, "__init__", ["_connection"])
    c.uses(_aiortc_pc, "create_media_description_for_sctp", ["getCapabilities", "sctpCapabilities"])
    # aioice Connection internals.
    conn = Connection
    c.uses(
        conn,
        "__init__",
        [
            "_closing",
            "_query_consent_task",
            "_protocols",
            "_transport_policy",
            "_nominated",
            "_queue",
            "_local_candidates_start",
            "stun_server",
        ],
    )
    c.method(conn, "get_component_candidates", ["self", "component", "addresses", "timeout"])
    c.uses(conn, "get_component_candidates", ["create_datagram_endpoint", "turn_server", "_protocols"])
    c.uses(conn, "gather_candidates", ["get_component_candidates", "get_host_addresses"])
    c.method(conn, "add_remote_candidate", ["self", "remote_candidate"])
    c.uses(conn, "add_remote_candidate", ["is_mdns_hostname", "get_or_create_mdns_protocol"])
    c.method(conn, "_remote_candidates_expected", ["self"])
    c.method(conn, "_prune_components", ["self"])
    c.uses(conn, "_prune_components", ["_components", "_remote_candidates"])
    c.uses(conn, "_end_remote_candidates", ["_prune_components"])
    c.uses(conn, "connect", ["_check_periodic", "_query_consent_task", "query_consent"])
    c.uses(conn, "_check_periodic", ["_remote_candidates_expected"])
    c.uses(conn, "close", ["_closing", "_query_consent_task"])
    c.method(conn, "data_received", ["self", "data", "component"])
    c.uses(conn, "data_received", ["_queue", "put_nowait"])
    for name in ("StunProtocol", "server_reflexive_candidate", "get_host_addresses"):
        c.attr(aioice.ice, name)
    c.method(aioice.ice, "server_reflexive_candidate", ["protocol", "stun_server"])
    c.attr(aioice.mdns, "is_mdns_hostname")
    c.attr(aioice.turn, "UDP_SOCKET_BUFFER_SIZE")
    # aiortc SCTP internals.
    sctp = RTCSctpTransport
    c.uses(
        sctp,
        "__init__",
        ["_advertised_rwnd", "_inbound_streams", "_sack_needed", "_last_received_tsn", "_sack_misordered"],
    )
    c.uses(sctp, "_mark_received", ["_last_received_tsn", "_sack_misordered", "uint32_gte"])
    c.method(sctp, "_handle_data", ["self", "data"])
    c.method(sctp, "_receive_chunk", ["self", "chunk"])
    c.method(sctp, "_receive_data_chunk", ["self", "chunk"])
    c.uses(sctp, "_receive_data_chunk", ["_advertised_rwnd", "add_chunk", "pop_messages", "_receive"])
    c.method(sctp, "_receive", ["self", "stream_id", "pp_id", "data"])
    c.uses(sctp, "_init", ["_advertised_rwnd"])
    c.uses(sctp, "_send_sack", ["_advertised_rwnd"])
    c.method(sctp, "_abort", ["self"])
    c.method(sctp, "_set_state", ["self", "state"])
    c.method(sctp, "getCapabilities", [])
    c.uses(_aiortc_sctp.InboundStream, "__init__", ["reassembly"])
    c.attr(_aiortc_sctp, "LOCAL_MAX_MESSAGE_SIZE")
    c.attr(_aiortc_utils, "uint32_gte")
    c.attr(sctp.State, "CLOSED")
    return c.problems


def verify() -> None:
    """Fail loudly (HookError) unless aiortc/aioice are exactly what the hooks were written for."""
    found = problems()
    if found:
        raise HookError(
            "aero_relay.webrtc.hooks cannot harden aiortc/aioice as installed:\n  - " + "\n  - ".join(found)
        )


verify()
