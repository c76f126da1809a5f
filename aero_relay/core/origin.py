"""Origin policy: header normalisation and the allow rules (F-014, F-015, F-018..F-024, F-153, F-211).

`normalize_origin` reproduces the original's `NormalizeHeader` result for every input, including
its dependence on Go's `net/url.Parse` host validation:

* Go-quirk decision (F-019): host bytes ``' ( ) * ! $ & ; = + "`` pass Go's host check and are only
  lowercased, so ``https://a'b.com`` normalises to ``https://a'b.com``. We **copy** this for drop-in
  compatibility (the original's own test suites run against us and no vector says otherwise).
  ``^`` and ``|`` fail Go's host check and are rejected.
* IPv6 is parsed with Go `netip.ParseAddr` rules (no zones, an embedded IPv4 tail must be strict
  dotted decimal) and always serialised as eight hex groups in RFC 5952 form, so v4-mapped
  addresses come out as ``::ffff:c000:201`` on every Python version (3.13's `ipaddress` writes
  ``::ffff:192.0.2.1``, hence our own parser and serialiser).
* A host that ends in a number must be a WHATWG IPv4 address (octal, hex, shorthand, 32-bit).

Text, not bytes: every function takes header values as `str`. Go trims with `strings.TrimSpace`
(Unicode White_Space, *not* Python's `str.strip`, which also strips U+001C..U+001F). A value that
Go sees as invalid UTF-8 must reach us as non-ASCII, non-space text; `decode_header_value` gives
exactly that for raw header bytes.

X-Forwarded-Proto never affects the policy (F-211): `OriginPolicy.check` does not take it, and only
`derive_client_origin` (the backend Origin, F-153) reads it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from aero_relay.core.gofmt import quote

__all__ = [
    "NormalizedOrigin",
    "OriginDecision",
    "OriginPolicy",
    "decode_header_value",
    "derive_client_origin",
    "go_trim_space",
    "normalize_origin",
    "normalize_request_host",
    "parse_allowed_origins",
]


@attrs.frozen
class NormalizedOrigin:
    """A canonical browser origin (F-019)."""

    origin: str  # "scheme://host[:port]" or "null"
    host: str  # "host[:port]" ("" for null), as compared by the same-host rule (F-024)

    @property
    def scheme(self) -> str:
        """The lowercase scheme: `http`, `https`, or empty for the opaque `null` origin."""
        if self.origin.startswith("https://"):
            return "https"
        if self.origin.startswith("http://"):
            return "http"
        return ""


_NULL_ORIGIN = NormalizedOrigin(origin="null", host="")

# Go unicode.IsSpace: ASCII \t \n \v \f \r and space, plus NEL, NBSP and the White_Space property.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)


def go_trim_space(s: str) -> str:
    """Go `strings.TrimSpace`."""
    return s.strip(_GO_SPACE)


def decode_header_value(raw: bytes) -> str:
    """Header bytes as the text these functions expect: UTF-8, undecodable bytes kept as surrogates.

    Go works on the raw bytes; a lone 0xA0 byte is then invalid UTF-8 (not a space, not ASCII),
    while the UTF-8 NBSP C2 A0 is trimmed. surrogateescape preserves both distinctions.
    """
    return raw.decode("utf-8", "surrogateescape")


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_HEX_VALUE = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}
_DEC_DIGITS = frozenset("0123456789")
_IPV4_LIMIT = 1 << 32
_DEFAULT_PORT = {"http": 80, "https": 443}

# F-019 steps 3-9 in one match: the scheme prefix (ASCII case-insensitive), then an authority of
# bytes that survive both the original's pre-checks (no controls, spaces, non-ASCII, `%`, `,`, `{`,
# `}`, backtick, `?`, `#`, `\`) and Go's url.Parse host check (alnum, `-_.~`, `!$&'()*+;=:[]<>"`;
# `@` would be user info), then an optional "/" path. An empty authority (`http:///`) fails `+`.
_ORIGIN_RE = re.compile(r"[Hh][Tt][Tt][Pp]([Ss]?)://([A-Za-z0-9\-_.~!$&'()*+;=:\[\]<>\"]+)/?")
# F-022 pre-checks: printable ASCII without `%`, `,`, `\`, `@`, `/`, `?` or `#`.
_REQUEST_HOST_RE = re.compile(r"[!-~]+")
_REQUEST_HOST_FORBIDDEN = frozenset("%,\\@/?#")


def normalize_origin(raw: str) -> NormalizedOrigin | None:
    """Go `origin.NormalizeHeader` (F-019..F-021); None when the value is rejected."""
    trimmed = go_trim_space(raw)
    if trimmed == "null":
        return _NULL_ORIGIN
    m = _ORIGIN_RE.fullmatch(trimmed)
    if m is None:
        return None
    scheme = "https" if m.group(1) else "http"
    authority = m.group(2)
    if not _go_url_port_ok(authority):
        return None
    host = _normalize_authority(authority, scheme)
    if host is None:
        return None
    return NormalizedOrigin(origin=f"{scheme}://{host}", host=host)


def normalize_request_host(raw_host: str, scheme: str) -> str | None:
    """Normalise an HTTP Host header for the same-host rule (F-022).

    The default port is dropped according to `scheme`, the ORIGIN's scheme ("http" or "https"),
    so `example.com:443` equals the host of `https://example.com` but not of `http://example.com`.
    """
    trimmed = go_trim_space(raw_host)
    if _REQUEST_HOST_RE.fullmatch(trimmed) is None or not _REQUEST_HOST_FORBIDDEN.isdisjoint(trimmed):
        return None
    return _normalize_authority(trimmed, scheme)


def _go_url_port_ok(authority: str) -> bool:
    """The port syntax that Go's url.Parse demands before the original's own checks run."""
    if authority.startswith("["):
        end = authority.rfind("]")
        if end < 0:
            return False
        tail = authority[end + 1 :]
        return tail == "" or (tail[0] == ":" and _DEC_DIGITS.issuperset(tail[1:]))
    colon = authority.rfind(":")
    return colon < 0 or _DEC_DIGITS.issuperset(authority[colon + 1 :])


def _normalize_authority(authority: str, scheme: str) -> str | None:
    """Split, canonicalise and re-join "host[:port]" (F-019 steps 10-14, F-020, F-021)."""
    split = _split_host_port(authority)
    if split is None:
        return None
    raw_hostname, raw_port = split
    hostname = _canonicalize_hostname(raw_hostname)
    if hostname is None:
        return None
    port = 0
    if raw_port:
        parsed = _parse_port(raw_port)
        if parsed is None:
            return None
        port = parsed
    if port == _DEFAULT_PORT.get(scheme):
        port = 0
    host = f"[{hostname}]" if ":" in hostname else hostname
    return f"{host}:{port}" if port else host


def _split_host_port(authority: str) -> tuple[str, str] | None:
    """F-020: "host[:port]" → (hostname without brackets, port text); None when malformed."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        hostname = authority[1:end]
        if _parse_ipv6(hostname) is None:  # a domain or IPv4 inside brackets
            return None
        rest = authority[end + 1 :]
        if not rest:
            return hostname, ""
        if rest[0] != ":" or len(rest) == 1:
            return None
        return hostname, rest[1:]
    colons = authority.count(":")
    if colons == 0:
        return (authority, "") if authority else None
    if colons > 1:  # an unbracketed IPv6 literal is not a valid authority
        return None
    hostname, _, port = authority.partition(":")
    if not hostname or not port:
        return None
    return hostname, port


def _parse_port(text: str) -> int | None:
    """Go strconv.ParseUint(text, 10, 16), then 0 rejected: leading zeros are fine (`080` → 80)."""
    if not _DEC_DIGITS.issuperset(text):
        return None
    digits = text.lstrip("0")
    if len(digits) > 5:
        return None
    value = int(digits) if digits else 0
    return value if 0 < value <= 0xFFFF else None


def _canonicalize_hostname(hostname: str) -> str | None:
    """F-021: IPv6 in RFC 5952 form, WHATWG IPv4 as dotted decimal, anything else ASCII-lowercased."""
    if not hostname or "[" in hostname or "]" in hostname or "<" in hostname or ">" in hostname:
        return None
    if ":" in hostname:
        if "%" in hostname:  # browsers never send IPv6 zone identifiers
            return None
        groups = _parse_ipv6(hostname)
        return None if groups is None else _format_ipv6(groups)
    if _ends_in_ipv4_number(hostname):
        value = _parse_whatwg_ipv4(hostname)
        if value is None:
            return None
        return f"{value >> 24}.{(value >> 16) & 0xFF}.{(value >> 8) & 0xFF}.{value & 0xFF}"
    return hostname.translate(_ASCII_LOWER)


# --- IPv6 (Go netip.ParseAddr restricted to Is6, no zones) -------------------------------------


def _parse_ipv6(s: str) -> list[int] | None:
    """Eight 16-bit groups, or None. Mirrors netip: the first of `.`/`:`/`%` picks the family."""
    for ch in s:
        if ch == ":":
            break
        if ch in ".%":  # IPv4 (not Is6) or a zone with no address
            return None
    else:
        return None
    groups: list[int] = []
    ellipsis = -1
    i, n = 0, len(s)
    if s.startswith("::"):
        ellipsis, i = 0, 2
        if i == n:
            return [0] * 8
    while len(groups) < 8:
        j = i
        while j < n and s[j] in _HEX_VALUE:
            j += 1
            if j - i > 4:
                return None
        if j == i:
            return None
        if j < n and s[j] == ".":
            # An embedded IPv4 tail fills the last two groups; it must be strict dotted decimal.
            if (ellipsis < 0 and len(groups) != 6) or len(groups) > 6:
                return None
            v4 = _parse_strict_ipv4(s[i:])
            if v4 is None:
                return None
            groups += (v4 >> 16, v4 & 0xFFFF)
            i = n
            break
        groups.append(int(s[i:j], 16))
        i = j
        if i == n:
            break
        if s[i] != ":" or i + 1 == n:
            return None
        i += 1
        if s[i] == ":":
            if ellipsis >= 0:
                return None
            ellipsis = len(groups)
            i += 1
            if i == n:
                break
    if i != n:
        return None
    if len(groups) < 8:
        if ellipsis < 0:
            return None
        groups[ellipsis:ellipsis] = [0] * (8 - len(groups))
    elif ellipsis >= 0:  # "::" must stand for at least one zero group
        return None
    return groups


def _parse_strict_ipv4(s: str) -> int | None:
    """Four decimal fields 0-255, no leading zeros (Go netip's embedded IPv4)."""
    parts = s.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if (
            not part
            or not _DEC_DIGITS.issuperset(part)
            or len(part) > 3
            or (len(part) > 1 and part[0] == "0")
        ):
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = (value << 8) | octet
    return value


def _format_ipv6(groups: list[int]) -> str:
    """RFC 5952: lowercase hex, the first longest run of two or more zero groups becomes `::`."""
    best_start, best_len = -1, 1
    run_start, run_len = -1, 0
    for idx, g in enumerate(groups):
        if g == 0:
            if run_len == 0:
                run_start = idx
            run_len += 1
            if run_len > best_len:
                best_start, best_len = run_start, run_len
        else:
            run_len = 0
    if best_start < 0:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len :])
    return f"{head}::{tail}"


# --- WHATWG IPv4 -------------------------------------------------------------------------------


def _is_ipv4_number_candidate(part: str) -> bool:
    if len(part) >= 2 and part[0] == "0" and part[1] in "xX":
        return all(c in _HEX_VALUE for c in part[2:])  # "0x" alone counts (it means 0)
    return part != "" and _DEC_DIGITS.issuperset(part)


def _ends_in_ipv4_number(hostname: str) -> bool:
    """WHATWG "ends in a number": the last label, after dropping one trailing dot, is numeric."""
    parts = hostname.split(".")
    if parts[-1] == "":
        parts.pop()
    return bool(parts) and _is_ipv4_number_candidate(parts[-1])


def _parse_ipv4_number(part: str) -> int | None:
    """One WHATWG IPv4 part (0x hex, leading-0 octal, else decimal), saturating at 2**32."""
    base = 10
    digits = part
    if len(part) >= 2 and part[0] == "0" and part[1] in "xX":
        base, digits = 16, part[2:]
    elif len(part) > 1 and part[0] == "0":
        base, digits = 8, part[1:]
    value = 0
    for c in digits:
        d = _HEX_VALUE.get(c)
        if d is None or d >= base:
            return None
        if value < _IPV4_LIMIT:
            value = min(value * base + d, _IPV4_LIMIT)
    return value


def _parse_whatwg_ipv4(hostname: str) -> int | None:
    parts = hostname.split(".")
    if parts[-1] == "":
        parts.pop()
    if not parts or len(parts) > 4:
        return None
    nums: list[int] = []
    for part in parts:
        if not part:
            return None
        num = _parse_ipv4_number(part)
        if num is None:
            return None
        nums.append(num)
    *head, last = nums
    if any(num > 255 for num in head):
        return None
    if last >= 1 << (8 * (5 - len(nums))):  # the last part fills the remaining bytes ("127.1")
        return None
    value = last
    for idx, num in enumerate(head):
        value += num << (8 * (3 - idx))
    return value if value < _IPV4_LIMIT else None


# --- configuration and policy ------------------------------------------------------------------


def parse_allowed_origins(value: str) -> tuple[str, ...]:
    """ALLOWED_ORIGINS (F-018): comma-separated, trimmed, empties skipped, `*` kept, the rest normalised.

    Raises ValueError with the original's text; the config layer adds the
    `ALLOWED_ORIGINS/--allowed-origins: ` prefix.
    """
    out: list[str] = []
    for piece in value.split(","):
        entry = go_trim_space(piece)
        if not entry:
            continue
        if entry == "*":
            out.append(entry)
            continue
        normalized = normalize_origin(entry)
        if normalized is None:
            raise ValueError(f"invalid origin {quote(entry)} (expected full origin like https://example.com)")
        out.append(normalized.origin)
    return tuple(out)


@attrs.frozen
class OriginDecision:
    """The outcome of the Origin check (F-014, F-015).

    `cors_origin` is the Access-Control-Allow-Origin value; None means set no CORS headers
    (no or blank Origin header, or forbidden).
    """

    allowed: bool
    cors_origin: str | None


_NO_ORIGIN = OriginDecision(allowed=True, cors_origin=None)
_FORBIDDEN = OriginDecision(allowed=False, cors_origin=None)


@attrs.frozen
class OriginPolicy:
    """The single Origin check used by the middleware, the signalling routes and `/udp` (F-017).

    `allowed_origins` is the parsed ALLOWED_ORIGINS (`parse_allowed_origins`); empty means the
    default same-host rule.
    """

    allowed_origins: tuple[str, ...] = ()

    def check(self, origin_headers: Sequence[str], request_host: str) -> OriginDecision:
        """Decide a request (F-014, F-015, F-023, F-024).

        `origin_headers` holds one string per Origin header field line, as received.
        `request_host` is the request's Host (`r.Host`). X-Forwarded-Proto plays no part (F-211).
        """
        if not origin_headers:
            return _NO_ORIGIN
        if len(origin_headers) > 1:
            return _FORBIDDEN
        trimmed = go_trim_space(origin_headers[0])
        if not trimmed:
            return _NO_ORIGIN
        normalized = normalize_origin(trimmed)
        if normalized is None or not self.is_allowed(normalized, request_host):
            return _FORBIDDEN
        return OriginDecision(allowed=True, cors_origin=normalized.origin)

    def is_allowed(self, origin: NormalizedOrigin, request_host: str) -> bool:
        """Go `origin.IsAllowed` (F-023, F-024).

        With a list: `*` or an exact match (`null` only when listed). Without: same host:port as
        the request, the default port judged by the origin's scheme; the scheme itself is not
        compared (TLS-terminating proxies), and `null` never matches.
        """
        if self.allowed_origins:
            return "*" in self.allowed_origins or origin.origin in self.allowed_origins
        scheme = origin.scheme
        if not scheme:
            return False
        return normalize_request_host(request_host, scheme) == origin.host


def derive_client_origin(origin_headers: Sequence[str], host: str, forwarded_proto: str, tls: bool) -> str:
    """The client origin of a signalling request, sent to the L2 backend when forwarding (F-153).

    * Several Origin headers → "".
    * A non-blank Origin → its normalised form, or the trimmed raw value if it does not normalise.
    * Otherwise `<scheme>://<Host, ASCII-lowercased>`, normalised, or that candidate unchanged if
      it does not normalise (as the original does); "" when the Host is blank.

    `forwarded_proto` is the first X-Forwarded-Proto header line ("" if none). Its first
    comma-separated item picks the scheme when it is http or https, compared case-insensitively
    (Go `strings.EqualFold`, so even `httpſ` counts as https); else https when `tls`, else http.
    """
    if len(origin_headers) > 1:
        return ""
    raw_origin = go_trim_space(origin_headers[0]) if origin_headers else ""
    if raw_origin:
        normalized = normalize_origin(raw_origin)
        return normalized.origin if normalized is not None else raw_origin

    trimmed_host = go_trim_space(host)
    if not trimmed_host:
        return ""
    proto = go_trim_space(go_trim_space(forwarded_proto).partition(",")[0]).casefold()
    scheme = proto if proto in ("http", "https") else ("https" if tls else "http")
    candidate = f"{scheme}://{trimmed_host.translate(_ASCII_LOWER)}"
    normalized = normalize_origin(candidate)
    return normalized.origin if normalized is not None else candidate
