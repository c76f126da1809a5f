"""Destination policy for outbound UDP (spec §16, F-134 .. F-139, F-228, F-230).

The policy is read once from the environment (:func:`parse_destination_policy`) and then asked about
every outbound datagram (:meth:`DestinationPolicy.check`). ``check`` is on the per-datagram hot path:
addresses are handled as one 128-bit integer (IPv4 ``a.b.c.d`` is ``::ffff:a.b.c.d``, which is exactly
Go's 16-byte form), CIDR lists are merged into sorted disjoint intervals probed with one ``bisect``, and
port lists are 64 KiB lookup tables. No ``ipaddress`` object is built per datagram.

Evaluation order (F-137): port 0 -> deny-port list -> allow-port list -> (IPv4-mapped is IPv4) ->
built-in special ranges unless private networks are allowed -> ``DENY_UDP_CIDRS`` -> ``ALLOW_UDP_CIDRS``
(when non-empty, it decides) -> the preset's default. ``check`` returns ``None`` (allowed) or one of the
short reasons below; policy denials are not session violations (F-227).

Decisions
---------
* **IPv6 spellings of IPv4 are judged by the IPv4 address they embed** (an extension; the original
  only unmaps ``::ffff:a.b.c.d``). When private networks are denied, a destination is special if the
  address itself *or any IPv4 address embedded in it* is in the built-in list. Embeddings recognised:
  ``::ffff:0:0/96`` (mapped: unmapped, as in the original), ``::/96`` (deprecated IPv4-compatible;
  some stacks still tunnel it), ``::ffff:0:0:0/96`` (SIIT "IPv4-translated", RFC 6145),
  ``64:ff9b::/96`` (NAT64 well-known prefix, RFC 6052), ``2002::/16`` (6to4: bytes 2..5) and
  ``2001::/32`` (Teredo: **both** the server, bytes 4..7, and the client, the last 4 bytes XOR 0xff,
  are judged; either being special denies). ``64:ff9b:1::/48`` (local-use NAT64, RFC 8215) places the
  IPv4 address according to an operator-chosen prefix length, so it is denied as a whole. Operators
  with a network-specific NAT64 prefix should put it in ``DENY_UDP_CIDRS``.
* **``DENY_UDP_CIDRS`` also matches embedded IPv4 addresses; ``ALLOW_UDP_CIDRS`` matches only the
  literal address.** Denying ``203.0.113.0/24`` therefore also denies ``64:ff9b::203.0.113.7`` and
  ``2002:cb00:7107::1``; allowing ``8.8.8.0/24`` does not open the NAT64 spelling of it (list
  ``64:ff9b::/96`` explicitly for that). A broader deny and a literal allow can only make the policy
  stricter than the original.
* **Extra built-in ranges** (denied only when private networks are denied, like the original list,
  which the original README calls a minimum): everything IANA's special-purpose registries mark as
  not globally reachable that the original misses. IPv4: ``192.0.0.0/24`` except the globally
  reachable anycast ``192.0.0.9`` and ``192.0.0.10``; ``192.0.2.0/24``, ``198.51.100.0/24``,
  ``203.0.113.0/24`` (documentation); ``198.18.0.0/15`` (benchmarking, often internal lab space).
  IPv6: ``100::/64`` (discard), ``2001:2::/48`` (benchmarking), ``2001:10::/28`` (ORCHID),
  ``2001:db8::/32`` and ``3fff::/20`` (documentation), ``5f00::/16`` (SRv6 SIDs), ``fec0::/10``
  (deprecated site-local), ``64:ff9b:1::/48``. The original ranges (F-138) are all kept, including
  ``::/128`` and ``::1/128``. Tests that want a documentation address to be reachable must allow
  private networks (the dev preset does).
* **``ALLOW_PRIVATE_NETWORKS`` present but blank means unset** (the preset decides). The original
  makes it fatal (weakness 10) while every other empty variable means unset; its e2e harness never
  sets this one to empty (F-215 sets it to ``true``), so nothing depends on the fatal path. A blank
  value under the prod preset keeps private networks denied, so the fix cannot open anything that a
  deployment with the variable removed would not.
* Parsing copies Go: ``strings.TrimSpace`` (its exact Unicode space set), ``net.ParseCIDR`` (a bare IP,
  a zone, a leading-zero IPv4 octet or a bad prefix length is an error; an IPv4-mapped IPv6 CIDR
  is an IPv6 CIDR, F-139) and the port-list grammar with its error texts. The unknown-preset error
  quotes the trimmed, lower-cased value, as the original does.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeVar

import attrs

from aero_relay.core.gofmt import GoParseError, atoi, parse_bool, quote

__all__ = [
    "CIDR_DENIED",
    "CIDR_NOT_ALLOWED",
    "DEFAULT_DENY",
    "EXTRA_SPECIAL_V4",
    "EXTRA_SPECIAL_V6",
    "INVALID_IP",
    "ORIGINAL_SPECIAL_V4",
    "ORIGINAL_SPECIAL_V6",
    "PORT_DENIED",
    "PORT_INVALID",
    "PORT_NOT_ALLOWED",
    "PORT_ZERO",
    "PRIVATE",
    "Cidr",
    "DestinationPolicy",
    "PolicyError",
    "PortRange",
    "parse_destination_policy",
]

# Deny reasons returned by DestinationPolicy.check (stable strings: logs and tests use them).
PORT_ZERO: Final = "port_zero"
PORT_INVALID: Final = "port_invalid"  # outside 0..65535; cannot come from a frame
PORT_DENIED: Final = "port_denied"
PORT_NOT_ALLOWED: Final = "port_not_allowed"
INVALID_IP: Final = "invalid_ip"  # neither 4 nor 16 bytes
PRIVATE: Final = "private"
CIDR_DENIED: Final = "cidr_denied"
CIDR_NOT_ALLOWED: Final = "cidr_not_allowed"
DEFAULT_DENY: Final = "default_deny"

_M32: Final = 0xFFFF_FFFF
_M128: Final = (1 << 128) - 1
_V4_MAPPED: Final = 0xFFFF << 32  # ::ffff:0:0, the 16-byte form of every IPv4 address
_V4_MAPPED_HI: Final = 0xFFFF
_V4_TRANSLATED_HI: Final = 0xFFFF_0000  # ::ffff:0:0:0/96 >> 32
_NAT64_HI: Final = 0x0064_FF9B << 64  # 64:ff9b::/96 >> 32
_SIX_TO_FOUR_TOP16: Final = 0x2002
_TEREDO_TOP32: Final = 0x2001_0000

# Go's unicode.IsSpace set, so that trimming matches strings.TrimSpace exactly.
_GO_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    + ("\u2028\u2029\u202f\u205f\u3000")
)

_PRESET_VARS: Final = ("DESTINATION_POLICY_PRESET", "UDP_DESTINATION_POLICY_PRESET", "POLICY_PRESET")


class PolicyError(ValueError):
    """A destination-policy configuration error; the text is the original's (F-134 .. F-136)."""


def _trim(s: str) -> str:
    return s.strip(_GO_SPACE)


@attrs.frozen
class Cidr:
    """One configured CIDR, held in the unified 128-bit space (IPv4 ``/n`` is ``::ffff:a.b.c.d/96+n``).

    This gives F-139 for free: an IPv4 network matches only IPv4 (or mapped) addresses, and an IPv6
    network such as ``::/0`` or ``::ffff:0:0/96`` is matched against the 16-byte form, so it also
    matches IPv4 destinations.
    """

    text: str
    network: int
    prefixlen: int

    @property
    def first(self) -> int:
        return self.network

    @property
    def last(self) -> int:
        return self.network | (_M128 >> self.prefixlen)

    @classmethod
    def parse(cls, text: str) -> Cidr:
        """Go ``net.ParseCIDR``: raises ``ValueError("invalid CIDR address: <text>")``."""
        bad = f"invalid CIDR address: {text}"
        addr_text, slash, mask_text = text.partition("/")
        if not slash or "%" in addr_text:  # a bare IP, or a zone (Go rejects zones in CIDRs)
            raise ValueError(bad)
        try:
            addr = ipaddress.ip_address(addr_text)
        except ValueError:
            raise ValueError(bad) from None
        # Go's dtoi: ASCII digits only (no sign), leading zeros allowed.
        if not mask_text or not mask_text.isascii() or not mask_text.isdigit():
            raise ValueError(bad)
        digits = mask_text.lstrip("0") or "0"
        bits = 32 if addr.version == 4 else 128
        if len(digits) > 3 or int(digits) > bits:
            raise ValueError(bad)
        value = int(addr)
        plen = int(digits)
        if bits == 32:
            value |= _V4_MAPPED
            plen += 96
        mask = _M128 ^ (_M128 >> plen)
        return cls(text=text, network=value & mask, prefixlen=plen)


@attrs.frozen
class PortRange:
    """An inclusive UDP port range, ``start <= end``, both in 1..65535."""

    start: int
    end: int


class _IntervalSet:
    """Sorted disjoint inclusive intervals of 128-bit addresses; membership is one bisect."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, intervals: Iterable[tuple[int, int]]) -> None:
        starts: list[int] = []
        ends: list[int] = []
        for first, last in sorted(intervals):
            if ends and first <= ends[-1] + 1:  # overlapping or adjacent: merge
                if last > ends[-1]:
                    ends[-1] = last
            else:
                starts.append(first)
                ends.append(last)
        self._starts = starts
        self._ends = ends

    @classmethod
    def of_cidrs(cls, cidrs: Iterable[Cidr]) -> _IntervalSet:
        return cls((c.first, c.last) for c in cidrs)

    def contains(self, addr: int) -> bool:
        i = bisect_right(self._starts, addr)
        return i > 0 and addr <= self._ends[i - 1]


def _embedded_v4(addr: int) -> tuple[int, ...]:
    """IPv4 addresses embedded in a non-mapped IPv6 address; see the module docstring."""
    hi = addr >> 32
    if hi == _V4_MAPPED_HI:
        return ()  # plain IPv4: matched as itself
    if hi in (0, _V4_TRANSLATED_HI, _NAT64_HI):
        return (addr & _M32,)
    if addr >> 112 == _SIX_TO_FOUR_TOP16:
        return ((addr >> 80) & _M32,)
    if addr >> 96 == _TEREDO_TOP32:
        return ((addr >> 64) & _M32, (addr & _M32) ^ _M32)  # server, client (obfuscated)
    return ()


def _embedded_in(intervals: _IntervalSet, addr: int) -> bool:
    return any(intervals.contains(_V4_MAPPED | v4) for v4 in _embedded_v4(addr))


# F-138, kept exactly.
ORIGINAL_SPECIAL_V4: Final = (
    "127.0.0.0/8",
    "169.254.0.0/16",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "240.0.0.0/4",
    "255.255.255.255/32",
)
ORIGINAL_SPECIAL_V6: Final = ("::1/128", "fe80::/10", "fc00::/7", "ff00::/8", "::/128")
# Deliberate extension: IANA "not globally reachable" ranges the original misses (module docstring).
EXTRA_SPECIAL_V4: Final = (
    # 192.0.0.0/24 without the globally reachable 192.0.0.9 (PCP anycast) and 192.0.0.10 (TURN anycast)
    "192.0.0.0/29",
    "192.0.0.8/32",
    "192.0.0.11/32",
    "192.0.0.12/30",
    "192.0.0.16/28",
    "192.0.0.32/27",
    "192.0.0.64/26",
    "192.0.0.128/25",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
)
EXTRA_SPECIAL_V6: Final = (
    "64:ff9b:1::/48",
    "100::/64",
    "2001:2::/48",
    "2001:10::/28",
    "2001:db8::/32",
    "3fff::/20",
    "5f00::/16",
    "fec0::/10",
)

_SPECIAL: Final = _IntervalSet.of_cidrs(
    Cidr.parse(c) for c in ORIGINAL_SPECIAL_V4 + ORIGINAL_SPECIAL_V6 + EXTRA_SPECIAL_V4 + EXTRA_SPECIAL_V6
)


def _port_table(ranges: tuple[PortRange, ...]) -> bytes | None:
    if not ranges:
        return None
    table = bytearray(65536)
    for r in ranges:
        table[r.start : r.end + 1] = b"\x01" * (r.end - r.start + 1)
    return bytes(table)


@attrs.frozen
class DestinationPolicy:
    """The egress policy (F-137). Build it with :func:`parse_destination_policy`, :meth:`prod` or
    :meth:`dev` (use ``attrs.evolve`` to adjust)."""

    preset: str
    default_allow: bool
    allow_private_networks: bool
    allow_cidrs: tuple[Cidr, ...] = ()
    deny_cidrs: tuple[Cidr, ...] = ()
    allow_ports: tuple[PortRange, ...] = ()
    deny_ports: tuple[PortRange, ...] = ()
    # Derived lookup structures for the hot path.
    _allow_set: _IntervalSet | None = attrs.field(init=False, repr=False, eq=False)
    _deny_set: _IntervalSet | None = attrs.field(init=False, repr=False, eq=False)
    _allow_port_table: bytes | None = attrs.field(init=False, repr=False, eq=False)
    _deny_port_table: bytes | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        setter = object.__setattr__
        setter(self, "_allow_set", _IntervalSet.of_cidrs(self.allow_cidrs) if self.allow_cidrs else None)
        setter(self, "_deny_set", _IntervalSet.of_cidrs(self.deny_cidrs) if self.deny_cidrs else None)
        setter(self, "_allow_port_table", _port_table(self.allow_ports))
        setter(self, "_deny_port_table", _port_table(self.deny_ports))

    @classmethod
    def prod(cls) -> DestinationPolicy:
        """The ``prod`` preset: deny by default, private networks denied (F-134)."""
        return cls(preset="prod", default_allow=False, allow_private_networks=False)

    @classmethod
    def dev(cls) -> DestinationPolicy:
        """The ``dev`` preset: allow by default, private networks allowed (F-134)."""
        return cls(preset="dev", default_allow=True, allow_private_networks=True)

    def check(self, ip: bytes, port: int) -> str | None:
        """Judge one destination: ``ip`` packed (4 or 16 bytes), ``port`` the remote port.

        Returns ``None`` when allowed, else a deny reason (``PORT_ZERO`` .. ``DEFAULT_DENY``). Never
        raises. Order exactly F-137; port 0 is always denied (F-228).
        """
        if port <= 0 or port > 0xFFFF:
            return PORT_ZERO if port == 0 else PORT_INVALID
        table = self._deny_port_table
        if table is not None and table[port]:
            return PORT_DENIED
        table = self._allow_port_table
        if table is not None and not table[port]:
            return PORT_NOT_ALLOWED
        n = len(ip)
        if n == 4:
            addr = _V4_MAPPED | int.from_bytes(ip, "big")
        elif n == 16:
            addr = int.from_bytes(ip, "big")  # a mapped address is now the same integer as its IPv4
        else:
            return INVALID_IP
        # Embedded IPv4 is looked for only in IPv6 addresses (the common IPv4 case pays one compare).
        v6 = addr >> 32 != _V4_MAPPED_HI
        if not self.allow_private_networks and (
            _SPECIAL.contains(addr) or (v6 and _embedded_in(_SPECIAL, addr))
        ):
            return PRIVATE
        deny = self._deny_set
        if deny is not None and (deny.contains(addr) or (v6 and _embedded_in(deny, addr))):
            return CIDR_DENIED
        allow = self._allow_set
        if allow is not None:
            return None if allow.contains(addr) else CIDR_NOT_ALLOWED
        return None if self.default_allow else DEFAULT_DENY


def _parse_cidr_list(value: str) -> tuple[Cidr, ...]:
    out = []
    for raw in value.split(","):
        entry = _trim(raw)
        if not entry:
            continue
        try:
            out.append(Cidr.parse(entry))
        except ValueError as exc:
            raise ValueError(f"parse CIDR {quote(entry)}: {exc}") from None
    return tuple(out)


def _parse_port(text: str) -> int:
    if text == "":
        raise ValueError("empty port")
    try:
        n = atoi(text)
    except GoParseError:
        raise ValueError(f"invalid port {quote(text)}") from None
    if n < 1 or n > 65535:
        raise ValueError(f"port {n} out of range")
    return n


def _parse_port_list(value: str) -> tuple[PortRange, ...]:
    out = []
    for raw in value.split(","):
        entry = _trim(raw)
        if not entry:
            continue
        start_text, dash, end_text = entry.partition("-")  # Go strings.Cut: "1-2-3" ends with "2-3"
        start = _parse_port(_trim(start_text))
        end = start
        if dash:
            end = _parse_port(_trim(end_text))
            if start > end:
                raise ValueError(f"invalid port range {quote(entry)}: start > end")
        out.append(PortRange(start, end))
    return tuple(out)


_T = TypeVar("_T")


def _parse_env_list(
    env: Mapping[str, str], name: str, parse: Callable[[str], tuple[_T, ...]]
) -> tuple[_T, ...]:
    value = _trim(env.get(name, ""))
    if not value:
        return ()
    try:
        return parse(value)
    except ValueError as exc:
        raise PolicyError(f"destination policy: invalid {name}: {exc}") from None


def parse_destination_policy(env: Mapping[str, str]) -> DestinationPolicy:
    """Build the policy from the environment (F-134 .. F-136); raises :class:`PolicyError`.

    The preset comes from the first *present* variable of ``DESTINATION_POLICY_PRESET``,
    ``UDP_DESTINATION_POLICY_PRESET``, ``POLICY_PRESET`` (present but empty means prod, so an empty
    primary hides the aliases, F-215). ``ALLOW_PRIVATE_NETWORKS`` overrides only that flag; blank means
    unset (a deliberate fix, see the module docstring). List variables that are blank are unset.
    """
    raw_preset = next((env[name] for name in _PRESET_VARS if name in env), "")
    preset = _trim(raw_preset).lower()
    if preset in ("", "prod", "production"):
        policy = DestinationPolicy.prod()
    elif preset in ("dev", "development"):
        policy = DestinationPolicy.dev()
    else:
        raise PolicyError(f"destination policy: unknown DESTINATION_POLICY_PRESET {quote(preset)}")

    allow_private = policy.allow_private_networks
    raw_private = env.get("ALLOW_PRIVATE_NETWORKS")
    if raw_private is not None and _trim(raw_private):
        try:
            allow_private = parse_bool(_trim(raw_private))
        except GoParseError:
            raise PolicyError(
                f"destination policy: invalid ALLOW_PRIVATE_NETWORKS {quote(raw_private)}"
            ) from None

    return attrs.evolve(
        policy,
        allow_private_networks=allow_private,
        # Keyword arguments evaluate in order, so errors are reported in the original's order.
        allow_cidrs=_parse_env_list(env, "ALLOW_UDP_CIDRS", _parse_cidr_list),
        deny_cidrs=_parse_env_list(env, "DENY_UDP_CIDRS", _parse_cidr_list),
        allow_ports=_parse_env_list(env, "ALLOW_UDP_PORTS", _parse_port_list),
        deny_ports=_parse_env_list(env, "DENY_UDP_PORTS", _parse_port_list),
    )
