"""UDP relay frame codec, v1 and v2 (spec §13, F-116 .. F-121).

Wire layouts (all integers big-endian)::

    v1: guest_port u16 | ipv4[4] | remote_port u16 | payload                       (8-byte header)
    v2: 0xA2 | 0x02 | af u8 | type u8 | guest_port u16 | ip[4|16] | remote_port u16 | payload
        af 0x04 -> 4-byte IPv4 (12-byte header), af 0x06 -> 16-byte IPv6 (24-byte header), type 0x00 only

``guest_port`` is always the guest-side port; ``remote_ip``/``remote_port`` are the destination of an
outbound frame and the source of an inbound (reply) frame.

This is the per-datagram hot path, so decode and encode use pre-compiled :class:`struct.Struct`
objects, one slice for the payload, no regexes and no exceptions on the success path.

Decisions
---------
* **``A2 03`` and other ``A2 xx`` prefixes decode as v1** (F-116, kept on purpose; the original's
  "weakness 10" is not treated as a bug here). A v1 frame begins with the guest's source port, and
  guests pick ephemeral ports in 32768-60999 (Linux) or 49152-65535 (IANA/Windows/macOS), so ports
  0xA203..0xA2FF (41475..41727) are ordinary Linux source ports whose v1 frames start with ``A2 03`` ..
  ``A2 FF``. Rejecting those prefixes as "unknown version" would drop real v1 traffic, and it would also
  diverge from the Go relay. A future v3 would need a negotiated signal, not a prefix.
* **Guest port 0xA202 (41474) is inherently ambiguous**: its v1 frames start with the v2 prefix and are
  decoded as v2 (the second IP octet becomes the type byte, the first the af), so they are usually
  dropped as malformed and occasionally misparsed. This is a property of the protocol, identical in Go;
  clients using that port must send v2. Encoders do not second-guess it either: :func:`encode_reply`
  follows F-120 exactly, even for that port.
* **``Frame.payload`` is ``bytes``**, a copy made by one slice. A ``memoryview`` would avoid the copy but
  costs two object allocations (the view and its slice), which measured slower than copying a
  1200-byte payload; it would also pin the whole input buffer and make ``Frame`` equality/hashing depend
  on the buffer type. ``bytes`` go straight to ``socket.sendto``.
* **``Frame`` is built without running the attrs ``__init__``** (``_make``): a frozen slotted attrs
  ``__init__`` pays ``object.__setattr__`` per field; setting the slots through their descriptors saves
  ~160 ns, a sixth of a decode. ``Frame(...)`` remains the public constructor and compares equal.
* **No validation in ``Frame``**: decode only produces valid frames, and the encoders check what the
  wire needs (IP length 4/16, ports in 0..65535) and raise ``ValueError``. Encoders do not enforce
  ``max_payload``; the caller bounds what it reads (``MAX_FRAME_OVERHEAD_BYTES``, F-121).
* **IPv4-mapped sources** (``::ffff:a.b.c.d``, 16 bytes): :func:`encode_reply` encodes any 16-byte address
  as v2/af 6, exactly as F-120 says, and never unmaps. In our shell they do not occur: the IPv6 socket is
  v6-only and frames to a v4-mapped destination are sent on the IPv4 socket, so their replies arrive with
  a plain 4-byte IPv4 source and are encoded as IPv4 (v1, or v2/af 4 when ``use_v2``). A shell that wants
  the reply to carry the exact address the client used must re-map it itself (``V4_MAPPED_PREFIX + ip4``).
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import Final, Literal

import attrs

__all__ = [
    "AF_INET",
    "AF_INET6",
    "MAX_FRAME_OVERHEAD_BYTES",
    "V1_HEADER_BYTES",
    "V2_MAGIC",
    "V2_TYPE_DATAGRAM",
    "V2_VERSION",
    "V4_MAPPED_PREFIX",
    "Frame",
    "FrameError",
    "FrameErrorKind",
    "decode",
    "encode",
    "encode_reply",
    "encode_v1",
    "encode_v2",
    "ip_to_text",
]

MAX_FRAME_OVERHEAD_BYTES: Final = 24
"""F-121: the largest header (v2 + IPv6); every "payload + overhead" bound uses it."""

V1_HEADER_BYTES: Final = 8
V2_MAGIC: Final = 0xA2
V2_VERSION: Final = 0x02
V2_TYPE_DATAGRAM: Final = 0x00
# Wire address-family codes (not the socket module's constants of the same name).
AF_INET: Final = 0x04
AF_INET6: Final = 0x06
V4_MAPPED_PREFIX: Final = b"\x00" * 10 + b"\xff\xff"

FrameErrorKind = Literal["too_short", "payload_too_large", "unsupported_type", "unknown_af"]

_MSG_TOO_SHORT: Final = "udpproto: datagram frame too short"


class FrameError(ValueError):
    """A frame that cannot be decoded; the message is the Go relay's, byte for byte.

    F-119: callers count ``kind == "payload_too_large"`` as ``*_dropped_oversized`` and every other kind
    as ``*_dropped_malformed``; nobody parses the message.
    """

    kind: FrameErrorKind

    def __init__(self, kind: FrameErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _too_short() -> FrameError:
    return FrameError("too_short", _MSG_TOO_SHORT)


def _too_large(size: int, max_payload: int) -> FrameError:
    return FrameError("payload_too_large", f"udpproto: payload too large: {size} > {max_payload}")


@functools.lru_cache(maxsize=4096)
def ip_to_text(ip: bytes) -> str:
    """Textual form of a packed 4- or 16-byte IP (``inet_ntop``: IPv6 compressed, lower case; a
    v4-mapped address prints as ``::ffff:a.b.c.d``). Cached: a relay talks to few distinct remotes,
    and the text is needed for every ``sendto``. ``inet_ntop`` is a pure function, no I/O."""
    if len(ip) == 4:
        return socket.inet_ntop(socket.AF_INET, ip)
    if len(ip) == 16:
        return socket.inet_ntop(socket.AF_INET6, ip)
    raise ValueError(f"udpproto: invalid remote ip length {len(ip)}")


@attrs.frozen(slots=True)
class Frame:
    """One decoded relay frame. ``remote_ip`` is packed: 4 bytes (IPv4) or 16 bytes (IPv6); a v1 frame
    always has 4. ``payload`` is ``bytes`` (see the module docstring)."""

    version: int
    guest_port: int
    remote_ip: bytes
    remote_port: int
    payload: bytes

    @property
    def remote_ip_text(self) -> str:
        """``remote_ip`` as text, via the cached :func:`ip_to_text`."""
        return ip_to_text(self.remote_ip)


_new = object.__new__
_set_version = Frame.__dict__["version"].__set__
_set_guest_port = Frame.__dict__["guest_port"].__set__
_set_remote_ip = Frame.__dict__["remote_ip"].__set__
_set_remote_port = Frame.__dict__["remote_port"].__set__
_set_payload = Frame.__dict__["payload"].__set__


def _make(version: int, guest_port: int, remote_ip: bytes, remote_port: int, payload: bytes) -> Frame:
    """Equivalent to ``Frame(...)``, without the frozen-attrs ``object.__setattr__`` per field."""
    f: Frame = _new(Frame)
    _set_version(f, version)
    _set_guest_port(f, guest_port)
    _set_remote_ip(f, remote_ip)
    _set_remote_port(f, remote_port)
    _set_payload(f, payload)
    return f


# guest_port, ip, remote_port. v1 reads it at offset 0, v2/af 4 at offset 4 (same layout).
_unpack_port_ip4_port = struct.Struct("!H4sH").unpack_from
_unpack_port_ip6_port = struct.Struct("!H16sH").unpack_from
_pack_v1 = struct.Struct("!H4sH").pack
# v2 headers lead with magic|version|af|type packed as one u32.
_pack_v2_ip4 = struct.Struct("!IH4sH").pack
_pack_v2_ip6 = struct.Struct("!IH16sH").pack
_V2_LEAD_IP4: Final = (V2_MAGIC << 24) | (V2_VERSION << 16) | (AF_INET << 8) | V2_TYPE_DATAGRAM
_V2_LEAD_IP6: Final = (V2_MAGIC << 24) | (V2_VERSION << 16) | (AF_INET6 << 8) | V2_TYPE_DATAGRAM


def decode(buf: bytes, *, max_payload: int) -> Frame:
    """Decode one frame. ``buf`` must be ``bytes`` (what both transports deliver) so that the payload
    slice is ``bytes`` too.

    F-116: ``A2 02`` selects v2, anything else is v1 (including ``A2 03``..; see the module docstring).
    F-117: v1 shorter than 8 bytes -> too_short; payload over ``max_payload`` -> payload_too_large.
    F-118: v2 checks in this order: len < 12 -> too_short; type != 0 -> unsupported_type; af 4 (needs 12
    bytes, already checked) or af 6 (needs 24) else too_short; other af -> unknown_af; payload over
    ``max_payload`` -> payload_too_large. ``len(payload) == max_payload`` is accepted.
    """
    n = len(buf)
    if n >= 2 and buf[0] == V2_MAGIC and buf[1] == V2_VERSION:
        if n < 12:
            raise _too_short()
        if buf[3] != V2_TYPE_DATAGRAM:
            raise FrameError("unsupported_type", f"udpproto: v2 unsupported message type: 0x{buf[3]:02x}")
        af = buf[2]
        if af == AF_INET:
            offset = 12
            guest_port, ip, remote_port = _unpack_port_ip4_port(buf, 4)
        elif af == AF_INET6:
            if n < 24:
                raise _too_short()
            offset = 24
            guest_port, ip, remote_port = _unpack_port_ip6_port(buf, 4)
        else:
            raise FrameError("unknown_af", f"udpproto: v2 unknown address family: 0x{af:02x}")
        if n - offset > max_payload:
            raise _too_large(n - offset, max_payload)
        return _make(2, guest_port, ip, remote_port, buf[offset:])
    if n < 8:
        raise _too_short()
    if n - 8 > max_payload:
        raise _too_large(n - 8, max_payload)
    guest_port, ip, remote_port = _unpack_port_ip4_port(buf)
    return _make(1, guest_port, ip, remote_port, buf[8:])


def _bad_ports(exc: struct.error) -> ValueError:
    return ValueError(f"udpproto: port out of range 0..65535 ({exc})")


def encode_v1(guest_port: int, remote_ip4: bytes, remote_port: int, payload: bytes) -> bytes:
    """F-117 v1 frame. ``remote_ip4`` must be 4 packed bytes; ports 0..65535 (else ``ValueError``)."""
    if len(remote_ip4) != 4:
        raise ValueError("udpproto: v1 only supports IPv4")
    try:
        return _pack_v1(guest_port, remote_ip4, remote_port) + payload
    except struct.error as exc:
        raise _bad_ports(exc) from None


def encode_v2(guest_port: int, remote_ip: bytes, remote_port: int, payload: bytes) -> bytes:
    """F-118 v2 datagram frame; af 4 for a 4-byte ``remote_ip``, af 6 for 16 bytes (else ``ValueError``)."""
    n = len(remote_ip)
    try:
        if n == 4:
            return _pack_v2_ip4(_V2_LEAD_IP4, guest_port, remote_ip, remote_port) + payload
        if n == 16:
            return _pack_v2_ip6(_V2_LEAD_IP6, guest_port, remote_ip, remote_port) + payload
    except struct.error as exc:
        raise _bad_ports(exc) from None
    raise ValueError(f"udpproto: invalid remote ip length {n}")


def encode(frame: Frame) -> bytes:
    """Encode ``frame`` in its own ``version`` (1 or 2); v1 with a 16-byte IP is a ``ValueError``."""
    if frame.version == 1:
        return encode_v1(frame.guest_port, frame.remote_ip, frame.remote_port, frame.payload)
    if frame.version == 2:
        return encode_v2(frame.guest_port, frame.remote_ip, frame.remote_port, frame.payload)
    raise ValueError(f"udpproto: unsupported frame version {frame.version}")


def encode_reply(guest_port: int, src_ip: bytes, src_port: int, payload: bytes, *, use_v2: bool) -> bytes:
    """Encode a remote->client datagram (F-120).

    A 16-byte source (IPv6, including v4-mapped) is always v2/af 6. A 4-byte source is v2/af 4 when
    ``use_v2``, else v1. The caller computes ``use_v2 = PREFER_V2 and <client has sent a v2 frame>``
    (sticky per relay instance).
    """
    n = len(src_ip)
    try:
        if n == 4:
            if use_v2:
                return _pack_v2_ip4(_V2_LEAD_IP4, guest_port, src_ip, src_port) + payload
            return _pack_v1(guest_port, src_ip, src_port) + payload
        if n == 16:
            return _pack_v2_ip6(_V2_LEAD_IP6, guest_port, src_ip, src_port) + payload
    except struct.error as exc:
        raise _bad_ports(exc) from None
    raise ValueError(f"udpproto: invalid remote ip length {n}")
