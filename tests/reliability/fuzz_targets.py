"""Fuzz targets for the sans-IO core: one oracle and one input generator per parser.

Shared by the hypothesis tests (``tests/reliability/test_fuzz_*.py``, a fast profile in the normal
run) and by ``benchmarks/fuzz_runner.py`` (10^6 inputs per target, outside the normal run).

Each :class:`Target` has

* ``check(input)``: runs the code under test on one input and asserts what must always hold: only the
  documented exception type, round trips, idempotence, and where one is cheap an independent
  reference (a tiny frame decoder, an ``ipaddress``-based special-range oracle, an HMAC recomputation).
  Any exception escaping ``check`` is a finding.
* ``generate(rnd)``: one input from a ``random.Random``: structure-aware (near-valid inputs that get
  past the first checks) plus byte/character mutations and plain noise.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import random
import struct
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from aero_relay.config import (
    POLICY_ENV_VARS,
    SETTINGS,
    Config,
    ConfigError,
    HelpRequested,
    effective_items,
    load,
)
from aero_relay.core.auth import AuthError, JWTClaims, verify_jwt
from aero_relay.core.frames import FrameError, decode, encode, encode_reply
from aero_relay.core.origin import (
    NormalizedOrigin,
    OriginPolicy,
    derive_client_origin,
    normalize_origin,
    normalize_request_host,
    parse_allowed_origins,
)
from aero_relay.core.policy import (
    CIDR_DENIED,
    CIDR_NOT_ALLOWED,
    DEFAULT_DENY,
    EXTRA_SPECIAL_V4,
    EXTRA_SPECIAL_V6,
    INVALID_IP,
    ORIGINAL_SPECIAL_V4,
    ORIGINAL_SPECIAL_V6,
    PORT_DENIED,
    PORT_INVALID,
    PORT_NOT_ALLOWED,
    PORT_ZERO,
    PRIVATE,
    DestinationPolicy,
    PolicyError,
    parse_destination_policy,
)
from aero_relay.core.signaling import (
    MESSAGE_TYPES,
    OfferBodyError,
    SignalingError,
    parse_offer_request_v1,
    parse_signal_message,
    parse_webrtc_offer_body,
)

__all__ = ["TARGETS", "Target"]


@attrs.frozen
class Target:
    name: str
    check: Callable[[Any], None]
    generate: Callable[[random.Random], Any]


def _bytes(r: random.Random, n: int) -> bytes:
    return r.getrandbits(8 * n).to_bytes(n, "big") if n else b""


_WEIRD_CHARS = (
    "\x00\t\n\r \x7f\x85\xa0\u1680\u2000\u200b\u2028\ufeff\ufffd\U0001f600\ud800\udfff"
    "%,{}`?#\\@/[]<>\"'()*!$&;=+:.-_~|^ſK\u212a"
)


def _mutate_text(r: random.Random, s: str, alphabet: str = _WEIRD_CHARS) -> str:
    """One to three random edits: insert, delete, replace, truncate, duplicate a slice."""
    for _ in range(r.randint(1, 3)):
        op = r.randrange(6)
        i = r.randint(0, len(s))
        if op == 0:
            s = s[:i] + r.choice(alphabet) + s[i:]
        elif op == 1 and s:
            s = s[:i] + s[i + 1 :]
        elif op == 2 and s:
            j = min(i, len(s) - 1)
            s = (
                s[:j]
                + chr(r.randrange(0x20, 0x7F) if r.random() < 0.7 else r.randrange(0x110000))
                + s[j + 1 :]
            )
        elif op == 3:
            s = s[:i]
        elif op == 4:
            j = r.randint(i, len(s))
            s = s[:j] + s[i:j] + s[j:]
        else:
            s = s + r.choice(alphabet)
    return s


def _mutate_bytes(r: random.Random, b: bytes) -> bytes:
    buf = bytearray(b)
    for _ in range(r.randint(1, 3)):
        op = r.randrange(5)
        i = r.randint(0, len(buf))
        if op == 0 and buf:
            buf[min(i, len(buf) - 1)] ^= 1 << r.randrange(8)
        elif op == 1:
            buf.insert(i, r.randrange(256))
        elif op == 2 and buf:
            del buf[min(i, len(buf) - 1)]
        elif op == 3:
            del buf[i:]
        else:
            buf += _bytes(r, r.randint(1, 8))
    return bytes(buf)


# --- 1. frame decoder (F-116 .. F-121) ------------------------------------------------------------

_FRAME_KINDS = frozenset({"too_short", "payload_too_large", "unsupported_type", "unknown_af"})


def _reference_decode(buf: bytes, max_payload: int) -> tuple[Any, ...] | str:
    """An independent, obviously-correct decoder: the fields, or the error kind (F-117, F-118)."""
    if buf[:2] == b"\xa2\x02":
        if len(buf) < 12:
            return "too_short"
        if buf[3] != 0:
            return "unsupported_type"
        if buf[2] == 4:
            header, ip = 12, buf[6:10]
        elif buf[2] == 6:
            if len(buf) < 24:
                return "too_short"
            header, ip = 24, buf[6:22]
        else:
            return "unknown_af"
        if len(buf) - header > max_payload:
            return "payload_too_large"
        guest = int.from_bytes(buf[4:6], "big")
        port = int.from_bytes(buf[header - 2 : header], "big")
        return (2, guest, ip, port, buf[header:])
    if len(buf) < 8:
        return "too_short"
    if len(buf) - 8 > max_payload:
        return "payload_too_large"
    return (1, int.from_bytes(buf[0:2], "big"), buf[2:6], int.from_bytes(buf[6:8], "big"), buf[8:])


def check_frame(inp: tuple[bytes, int]) -> None:
    buf, max_payload = inp
    expected = _reference_decode(buf, max_payload)
    try:
        frame = decode(buf, max_payload=max_payload)
    except FrameError as err:
        assert err.kind in _FRAME_KINDS, err.kind
        assert str(err).startswith("udpproto: "), str(err)
        assert expected == err.kind, (expected, err.kind)
        return
    got = (frame.version, frame.guest_port, frame.remote_ip, frame.remote_port, frame.payload)
    assert got == expected, (got, expected)
    assert type(frame.payload) is bytes
    assert encode(frame) == buf  # F-121: decode then encode is the identity
    # F-120: a reply to this frame decodes back to the same fields (a 4-byte source as v1 or v2).
    use_v2 = len(buf) % 2 == 1
    reply = encode_reply(frame.guest_port, frame.remote_ip, frame.remote_port, frame.payload, use_v2=use_v2)
    if len(frame.remote_ip) == 4 and not use_v2 and frame.guest_port == 0xA202:
        return  # the documented v1/v2 ambiguity of guest port 41474 (core/frames.py docstring)
    back = decode(reply, max_payload=max_payload)
    assert (back.guest_port, back.remote_ip, back.remote_port, back.payload) == got[1:]


def gen_frame(r: random.Random) -> tuple[bytes, int]:
    max_payload = r.choice((0, 1, 7, 100, 1200, 1200, 65535))
    target = r.choice((0, 1, max_payload - 1, max_payload, max_payload + 1, r.randint(0, 64)))
    payload = _bytes(r, max(target, 0)) if target < 4096 else b"p" * target
    roll = r.random()
    if roll < 0.15:
        buf = _bytes(r, r.randint(0, 40))
    elif roll < 0.5:
        guest = r.choice((0, 1, 0xA202, 0xA203, 0xA2FF, 65535, r.randrange(65536)))
        buf = struct.pack("!H4sH", guest, _bytes(r, 4), r.randrange(65536)) + payload
    else:
        af = r.choice((4, 4, 6, 6, 0, 5, 255))
        typ = 0 if r.random() < 0.85 else r.randrange(256)
        ip = _bytes(r, 16 if af == 6 else 4)
        buf = bytes((0xA2, 0x02, af, typ)) + struct.pack("!H", r.randrange(65536)) + ip
        buf += struct.pack("!H", r.randrange(65536)) + payload
        if r.random() < 0.2:
            buf = buf[: r.randint(0, 26)]
    if r.random() < 0.25:
        buf = _mutate_bytes(r, buf)
    return buf, max_payload


# --- 2. signaling message parser (F-070, F-071) ---------------------------------------------------

_SIGNAL_KEYS = (
    "type",
    "apiKey",
    "token",
    "sdp",
    "candidate",
    "sdpMid",
    "sdpMLineIndex",
    "usernameFragment",
    "code",
    "message",
    "version",
    "offer",
    "TYPE",
    "Type",
    "ſdp",
    "apikey",
    "APIKEY",
    "to\u212aen",
    "x",
    "",
)
_SIGNAL_TYPES = ("auth", "offer", "answer", "candidate", "close", "error", "", "AUTH", "ping", "auth ")


def _json_value(r: random.Random, depth: int = 0) -> Any:
    roll = r.random()
    if depth > 3 or roll < 0.45:
        return r.choice(
            (
                None,
                True,
                False,
                0,
                -1,
                1,
                2**31,
                2**63,
                -(2**63) - 1,
                1.5,
                -0.0,
                1e300,
                "",
                "x",
                "offer",
                "auth",
                "\u0000",
                "\ud800",
                "é",
                "a" * r.randint(0, 40),
            )
        )
    if roll < 0.7:
        return [_json_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    return {r.choice(_SIGNAL_KEYS): _json_value(r, depth + 1) for _ in range(r.randint(0, 4))}


def _signal_message(r: random.Random) -> dict[str, Any]:
    """A message of a random type, valid for that type most of the time (F-071), then perturbed."""
    t = r.choice(_SIGNAL_TYPES)
    valid = r.random() < 0.6
    msg: dict[str, Any] = {"type": t}
    if t == "auth" or (not valid and r.random() < 0.3):
        keys = r.choice((("apiKey",), ("token",), ("apiKey", "token")))
        value = r.choice(("k", "k", "", "other", " "))
        for key in keys:
            msg[key] = value if valid or r.random() < 0.5 else r.choice(("k", "", 1, None))
    if t in ("offer", "answer") or (not valid and r.random() < 0.3):
        sdp_type = t if valid else r.choice(("offer", "answer", "x", "", None))
        msg["sdp"] = {"type": sdp_type, "sdp": r.choice(("v=0\r\n", "", "x", None))}
    if t == "candidate" or (not valid and r.random() < 0.3):
        cand: dict[str, Any] = {"candidate": r.choice(("candidate:1 1 udp 1 127.0.0.1 9 typ host", ""))}
        if r.random() < 0.5:
            cand["sdpMid"] = r.choice(("0", None)) if valid else r.choice(("0", None, 0))
        if r.random() < 0.5:
            cand["sdpMLineIndex"] = (
                r.choice((0, 1, 65535, None)) if valid else r.choice((-1, 65536, 1.5, "0"))
            )
        if r.random() < 0.3:
            cand["usernameFragment"] = r.choice(("u", None))
        msg["candidate"] = cand
    if t == "error" or (not valid and r.random() < 0.3):
        msg["code"] = r.choice(("bad_message", "")) if valid else r.choice(("bad_message", "", None, 1))
        msg["message"] = r.choice(("m", "é")) if valid else r.choice(("m", "", None))
    if not valid and r.random() < 0.3:
        msg[r.choice(_SIGNAL_KEYS)] = _json_value(r)
    return msg


def gen_signal(r: random.Random) -> str:
    roll = r.random()
    if roll < 0.05:
        n = r.randint(1, 3000)
        return "[" * n + "]" * (n if r.random() < 0.5 else 0)
    if roll < 0.1:
        return "".join(r.choice('{}[]":,0123456789.eE+-truefalsnl \\u"x') for _ in range(r.randint(0, 30)))
    value = _signal_message(r) if roll < 0.75 else _json_value(r)
    text = json.dumps(value, ensure_ascii=r.random() < 0.5)
    if r.random() < 0.1 and text.startswith("{") and len(text) > 2:
        # Duplicate keys (the last wins in Go) are not expressible with a dict.
        text = '{"type":"close",' + text[1:]
    if r.random() < 0.1:  # Go matches field names case-insensitively, with Unicode folding
        old, new = r.choice(
            (
                ('"type"', '"TYPE"'),
                ('"sdp"', '"\u017fdp"'),
                ('"token"', '"to\u212aen"'),
                ('"apiKey"', '"APIKEY"'),
                ('"candidate"', '"Candidate"'),
            )
        )
        text = text.replace(old, new, 1)
    if r.random() < 0.2:
        text = _mutate_text(r, text, '{}[]",:\\ \t\n0eE-+.NaInfity\x00\ud800é' + _WEIRD_CHARS)
    return text


def _signal_outcome(text: str | bytes) -> Any:
    try:
        return parse_signal_message(text)
    except SignalingError as err:
        assert isinstance(err.message, str) and err.message, err
        return ("error", err.message)


def check_signal(text: str) -> None:
    outcome = _signal_outcome(text)
    if not isinstance(outcome, tuple):
        m = outcome
        assert m.type in MESSAGE_TYPES, m.type
        if m.type == "auth":  # F-071
            assert m.api_key or m.token
            assert not (m.api_key and m.token and m.api_key != m.token)
            assert m.sdp is None and m.candidate is None
        elif m.type in ("offer", "answer"):
            assert m.sdp is not None and m.sdp.type == m.type and m.candidate is None
        elif m.type == "candidate":
            assert m.candidate is not None and m.sdp is None
            idx = m.candidate.sdp_mline_index
            assert idx is None or (type(idx) is int and 0 <= idx <= 65535)
        elif m.type == "close":
            assert (m.sdp, m.candidate, m.api_key, m.token, m.code, m.message) == (None,) * 6
        else:
            assert m.code and m.message
    # The bytes form of the same text (valid UTF-8 only) is judged the same way.
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = None
    if raw is not None:
        assert _signal_outcome(raw) == outcome
        for parse_body in (parse_offer_request_v1, parse_webrtc_offer_body):
            try:
                parse_body(raw)
            except OfferBodyError as err:
                assert isinstance(err.message, str)


# --- 3. JWT verifier (F-038 .. F-043) -------------------------------------------------------------

JWT_SECRET = b"fuzz-jwt-secret"
JWT_NOW = 1_700_000_000
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claim(r: random.Random, now: int, kind: str) -> Any:
    if kind == "time":
        return r.choice(
            (
                now + 60,
                now + 1,
                now,
                now - 1,
                now - 3600,
                2**63 - 1,
                2**63,
                -1,
                0,
                1.0 * now + 60,
                str(now + 60),
                None,
                True,
            )
        )
    return r.choice(("s", "", " ", "alice", "\ud800", "é", 1, None, False, ["s"], {"a": 1}))


def gen_jwt(r: random.Random) -> tuple[str, int]:
    now = JWT_NOW + r.randint(-5, 5)
    roll = r.random()
    if roll < 0.05:
        return "".join(r.choice(_B64_ALPHABET + ".=+/ ") for _ in range(r.randint(0, 200))), now
    header: Any = {"alg": "HS256", "typ": "JWT"}
    if r.random() < 0.2:
        header = r.choice(
            (
                {"alg": "none"},
                {"alg": "hs256"},
                {"alg": "HS512"},
                {"alg": None},
                {"typ": "JWT"},
                {"alg": "HS256", "typ": 1},
                {"alg": "HS256", "typ": None},
                [],
                "HS256",
                None,
                {"alg": "HS256", "x": 1e999},
            )
        )
    claims: dict[str, Any] = {}
    for name, kind in (
        ("sid", "str"),
        ("exp", "time"),
        ("iat", "time"),
        ("nbf", "time"),
        ("origin", "str"),
        ("aud", "str"),
        ("iss", "str"),
    ):
        present = r.random() < (0.9 if name in ("sid", "exp", "iat") else 0.3)
        if present:
            default = now + 60 if name == "exp" else (now - 10 if kind == "time" else "sid-1")
            claims[name] = default if r.random() < 0.7 else _claim(r, now, kind)
    header_raw = json.dumps(header).encode()
    payload_raw = json.dumps(claims, ensure_ascii=r.random() < 0.5).encode("utf-8", "surrogatepass")
    if r.random() < 0.1:
        payload_raw = r.choice(
            (
                payload_raw + b" x",
                payload_raw + b"{}",
                b"\xff" + payload_raw,
                b"[]",
                b"",
                payload_raw.replace(b'"sid"', b'"sid":"dup","sid"', 1),
            )
        )
    h, p = _b64url(header_raw), _b64url(payload_raw)
    secret = JWT_SECRET if r.random() < 0.9 else b"wrong"
    s = _b64url(hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest())
    token = f"{h}.{p}.{s}"
    if r.random() < 0.3:
        token = _mutate_text(r, token, _B64_ALPHABET + ".=+/")
    return token, now


def check_jwt(inp: tuple[str, int]) -> None:
    token, now = inp
    try:
        claims = verify_jwt(token, JWT_SECRET, now)
    except AuthError as err:
        assert err.kind in ("invalid", "unsupported"), err.kind
        return
    assert isinstance(claims, JWTClaims)
    # Accepted: the signature really is ours, over the exact text, and every part is canonical.
    h, p, s = token.split(".")
    for part in (h, p, s):
        assert _b64url(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) == part
    expected = hmac.new(JWT_SECRET, f"{h}.{p}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(expected, base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    assert claims.exp > now and (claims.nbf is None or claims.nbf <= now)  # F-043: no leeway
    assert type(claims.iat) is int and type(claims.sid) is str and claims.sid != ""
    header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    assert header["alg"] == "HS256"


# --- 4. origin normaliser (F-014 .. F-024) --------------------------------------------------------

_ORIGIN_SCHEMES = ("http", "https", "HTTP", "hTtPs", "ftp", "", "http:", "ws", "https:/")
_ORIGIN_HOSTS = (
    "example.com",
    "EXAMPLE.com",
    "localhost",
    "a-b.c_d",
    "a'b.com",
    "x.1",
    "127.0.0.1",
    "127.1",
    "0x7f.1",
    "010.0.0.1",
    "4294967295",
    "4294967296",
    "08",
    "256.1.1.1",
    "[::1]",
    "[2001:DB8::1]",
    "[::ffff:192.0.2.1]",
    "[::ffff:1.2.3]",
    "[fe80::1%25eth0]",
    "[1:2:3:4:5:6:7:8:9]",
    "[example.com]",
    "[127.0.0.1]",
    "",
    "xn--mgbh0fb.xn--kgbechtv",
    "مثال",
    "a..b",
    ".",
    "a^b",
    "a|b",
)
_ORIGIN_PORTS = (
    "",
    "",
    ":80",
    ":443",
    ":8080",
    ":0",
    ":",
    ":65535",
    ":65536",
    ":080",
    ":-1",
    ":a",
    ":99999999999",
)
_ORIGIN_TAILS = ("", "", "/", "/path", "?", "?q=1", "#", "#f", "//", "/?")


def gen_origin(r: random.Random) -> str:
    roll = r.random()
    if roll < 0.05:
        return r.choice(("null", " null ", "NULL", "", "  ", "*"))
    if roll < 0.1:
        return "".join(chr(r.randrange(0x20, 0x7F)) for _ in range(r.randint(0, 30)))
    valid = r.random() < 0.5  # mostly well-formed pieces, so the host and port parsers are reached
    scheme = r.choice(_ORIGIN_SCHEMES[:4] if valid else _ORIGIN_SCHEMES)
    user = "" if valid else r.choice(("", "u@", "@", "u:p@"))
    host = r.choice(_ORIGIN_HOSTS[:17] if valid else _ORIGIN_HOSTS)
    port = r.choice(_ORIGIN_PORTS[:8] if valid else _ORIGIN_PORTS)
    s = f"{scheme}://{user}{host}{port}{r.choice(_ORIGIN_TAILS[:3] if valid else _ORIGIN_TAILS)}"
    if r.random() < 0.2:
        s = r.choice((" ", "\t", "\u3000", "")) + s + r.choice((" ", "\n", "\xa0", ""))
    if r.random() < 0.2:
        s = _mutate_text(r, s)
    return s


def check_origin(raw: str) -> None:
    n = normalize_origin(raw)
    if n is not None:
        assert isinstance(n, NormalizedOrigin)
        assert normalize_origin(n.origin) == n, (raw, n)  # idempotent
        assert n.origin == "null" or n.origin in (f"http://{n.host}", f"https://{n.host}"), n
        assert n.origin.isascii() and n.origin == n.origin.lower(), n
        assert not n.origin.endswith(":80" if n.scheme == "http" else ":443"), n  # default port dropped
    for listed in ((), ("*",), ("https://example.com", "null")):
        decision = OriginPolicy(listed).check([raw], "example.com")
        if decision.allowed and decision.cors_origin is not None:
            assert n is not None and decision.cors_origin == n.origin
        if listed == ("*",) and n is not None and raw.strip():
            assert decision.allowed
    assert not OriginPolicy(("*",)).check([raw, raw], "example.com").allowed  # F-015: two headers
    for scheme in ("http", "https"):
        host = normalize_request_host(raw, scheme)
        assert host is None or isinstance(host, str)
    with contextlib.suppress(ValueError):
        parse_allowed_origins(raw)
    assert isinstance(derive_client_origin([], raw, raw, False), str)


# --- 5. config loader (F-001, F-002, section 20) --------------------------------------------------

_ENV_NAMES = tuple(name for s in SETTINGS for name in s.envs) + POLICY_ENV_VARS
_FLAGS = tuple((flag, s.kind) for s in SETTINGS for flag in s.flags)
_KIND_OF_ENV = {name: s.kind for s in SETTINGS for name in s.envs}
_VALUES: Mapping[str, tuple[str, ...]] = {
    "duration": (
        "1s",
        "100ms",
        "0",
        "0s",
        "-5s",
        "1h2m3s",
        "1.5s",
        ".5s",
        "1e3s",
        "",
        " 2s ",
        "1",
        "5",
        "9999999999h",
        "1us",
        "1µs",
        "+1s",
        "1ss",
        "2562047h47m16.854775807s",
        "2562048h",
    ),
    "int": (
        "0",
        "1",
        "-1",
        "64",
        "65536",
        "9223372036854775807",
        "9223372036854775808",
        "0x10",
        "1_0",
        " 7 ",
        "+5",
        "",
        "1e3",
        "007",
        "-0",
        "99999999999999999999999",
    ),
    "bool": ("true", "1", "T", "yes", "", "FALSE", "f", " true ", "tRuE"),
    "port": ("1", "65535", "0", "65536", "-1", " 80 ", "0x50", "", "10000", "10100"),
    "str": (
        "",
        " ",
        "x",
        "none",
        "api_key",
        "jwt",
        "dev",
        "prod",
        "json",
        "text",
        "debug",
        "127.0.0.1:0",
        "[::1]:0",
        ":0",
        "localhost:65536",
        "ws://127.0.0.1:1/l2",
        "wss://[::1]/x",
        "http://x",
        "ws://",
        "https://a.com, *",
        "https://a.com,https://b.com:444",
        "null",
        "address_and_port",
        "any",
        '[{"urls":["stun:127.0.0.1:3478"]}]',
        '[{"urls":"turn:x","username":"u","credential":"c"}]',
        "[" * 50,
        '{"urls":1}',
        "10.0.0.0/8",
        "::/0,0.0.0.0/0",
        "1-100, 53",
        "100-1",
        "\x00",
        "é\ud800",
    ),
}
_VALUES = {**_VALUES, "int64": _VALUES["int"], "violation_window": _VALUES["int"] + _VALUES["duration"]}


def _config_value(r: random.Random, kind: str) -> str:
    pool = _VALUES.get(kind, _VALUES["str"])
    value = r.choice(pool[:6]) if r.random() < 0.6 else r.choice(pool)
    if r.random() < 0.05:
        value = r.choice(_VALUES["str"])
    if r.random() < 0.05:
        value = _mutate_text(r, value)
    return value


def gen_config(r: random.Random) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {"AUTH_MODE": "none"} if r.random() < 0.7 else {"API_KEY": "k"}
    for _ in range(r.randint(0, 5)):
        name = r.choice(_ENV_NAMES)
        kind = _KIND_OF_ENV.get(name, "str")
        env[name] = _config_value(r, kind)
    argv: list[str] = []
    for _ in range(r.randint(0, 4) if r.random() < 0.5 else 0):
        flag, kind = r.choice(_FLAGS)
        dash = r.choice(("-", "--"))
        value = _config_value(r, kind)
        style = r.randrange(4)
        if style == 0:
            argv.append(f"{dash}{flag}={value}")
        elif style == 1:
            argv += [f"{dash}{flag}", value]
        elif style == 2:
            argv.append(f"{dash}{flag}")
        else:
            argv.append(
                r.choice(("-h", "--help", "--", "-", "---x", "-unknown=1", "positional", "-=x", "-v"))
            )
    return env, argv


def check_config(inp: tuple[dict[str, str], list[str]]) -> None:
    env, argv = inp
    try:
        cfg = load(env, argv)
    except (ConfigError, HelpRequested):
        return
    assert isinstance(cfg, Config)
    assert cfg.auth_mode in ("none", "api_key", "jwt"), cfg.auth_mode
    assert cfg.max_datagram_payload_bytes > 0 and cfg.shutdown_timeout >= 0
    for name, value in effective_items(cfg):
        assert isinstance(name, str) and isinstance(value, str)


# --- 6. destination policy (F-134 .. F-139, F-228) ------------------------------------------------

_REASONS = frozenset(
    {
        PORT_ZERO,
        PORT_INVALID,
        PORT_DENIED,
        PORT_NOT_ALLOWED,
        INVALID_IP,
        PRIVATE,
        CIDR_DENIED,
        CIDR_NOT_ALLOWED,
        DEFAULT_DENY,
    }
)
_SPECIAL_V4 = tuple(ipaddress.IPv4Network(c) for c in ORIGINAL_SPECIAL_V4 + EXTRA_SPECIAL_V4)
_SPECIAL_V6 = tuple(ipaddress.IPv6Network(c) for c in ORIGINAL_SPECIAL_V6 + EXTRA_SPECIAL_V6)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_M32 = 0xFFFF_FFFF


def _v4_special(a: ipaddress.IPv4Address) -> bool:
    return any(a in net for net in _SPECIAL_V4)


def reference_special(ip: bytes) -> bool:
    """The special-range decision from Python's ``ipaddress``, written independently of core/policy:
    the address itself, or any IPv4 address it embeds (mapped, compatible, SIIT, NAT64, 6to4, Teredo)."""
    if len(ip) == 4:
        return _v4_special(ipaddress.IPv4Address(ip))
    a = ipaddress.IPv6Address(ip)
    if a.ipv4_mapped is not None:
        return _v4_special(a.ipv4_mapped)
    if any(a in net for net in _SPECIAL_V6):
        return True
    n = int(a)
    embedded: list[ipaddress.IPv4Address] = []
    if n >> 32 in (0, 0xFFFF_0000) or a in _NAT64:
        embedded.append(ipaddress.IPv4Address(n & _M32))
    if a.sixtofour is not None:
        embedded.append(a.sixtofour)
    if a.teredo is not None:
        embedded.extend(a.teredo)
    return any(_v4_special(v4) for v4 in embedded)


_INTERESTING_V4 = (
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.31.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",
    "240.0.0.1",
    "192.0.0.9",
    "192.0.0.10",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
)


def _random_v4(r: random.Random) -> bytes:
    if r.random() < 0.6:
        return ipaddress.IPv4Address(r.choice(_INTERESTING_V4)).packed
    return _bytes(r, 4)


def gen_policy_address(r: random.Random) -> bytes:
    v4 = _random_v4(r)
    n4 = int.from_bytes(v4, "big")
    form = r.randrange(11)
    if form == 0:
        return v4
    if form == 1:
        return b"\x00" * 10 + b"\xff\xff" + v4  # v4-mapped
    if form == 2:
        return b"\x00" * 12 + v4  # IPv4-compatible
    if form == 3:
        return b"\x00" * 8 + b"\xff\xff\x00\x00" + v4  # SIIT translated
    if form == 4:
        return bytes.fromhex("0064ff9b") + b"\x00" * 8 + v4  # NAT64
    if form == 5:
        return b"\x20\x02" + v4 + _bytes(r, 10)  # 6to4
    if form == 6:  # Teredo: server v4, flags/port, obfuscated client v4
        other = int.from_bytes(_random_v4(r), "big")
        return (
            b"\x20\x01\x00\x00"
            + v4
            + _bytes(r, 4)
            + ((other ^ _M32) if r.random() < 0.5 else n4).to_bytes(4, "big")
        )
    if form == 7:
        return ipaddress.IPv6Address(
            r.choice(
                (
                    "::1",
                    "::",
                    "fe80::1",
                    "fc00::1",
                    "ff02::1",
                    "2001:db8::1",
                    "64:ff9b:1::1",
                    "2606:4700::1111",
                    "100::1",
                    "5f00::1",
                )
            )
        ).packed
    if form == 8:
        return _bytes(r, 16)
    if form == 9:
        return _bytes(r, r.choice((0, 1, 3, 5, 15, 17)))
    return _bytes(r, 4)


_CIDRS = (
    "0.0.0.0/0",
    "::/0",
    "8.8.8.0/24",
    "127.0.0.0/8",
    "64:ff9b::/96",
    "2002::/16",
    "::ffff:0:0/96",
    "10.0.0.0/8",
    "1.2.3.4/32",
    "1.2.3.4",
    "1.2.3.0/33",
    "01.2.3.0/24",
    "fe80::1%eth0/64",
    "x",
    "",
)
_PORTS = ("53", "1-1024", "0", "65536", "100-1", "a", "1-2-3", " 53 , 443 ", "")


def gen_policy(r: random.Random) -> tuple[dict[str, str], list[tuple[bytes, int]]]:
    env: dict[str, str] = {}
    if r.random() < 0.7:
        env[r.choice(("DESTINATION_POLICY_PRESET", "UDP_DESTINATION_POLICY_PRESET", "POLICY_PRESET"))] = (
            r.choice(("prod", "dev", "", " Dev ", "production", "development", "staging"))
        )
    if r.random() < 0.5:
        env["ALLOW_PRIVATE_NETWORKS"] = r.choice(("true", "false", "1", "0", "", " ", "yes", "T"))
    for name, pool in (
        ("ALLOW_UDP_CIDRS", _CIDRS),
        ("DENY_UDP_CIDRS", _CIDRS),
        ("ALLOW_UDP_PORTS", _PORTS),
        ("DENY_UDP_PORTS", _PORTS),
    ):
        if r.random() < 0.3:
            env[name] = ",".join(r.choice(pool) for _ in range(r.randint(1, 3)))
    probes = [
        (gen_policy_address(r), r.choice((0, 1, 53, 443, 65535, r.randrange(65536))))
        for _ in range(r.randint(1, 4))
    ]
    return env, probes


_OPEN_PROD = DestinationPolicy(preset="prod", default_allow=True, allow_private_networks=False)
_ALLOW_ALL = DestinationPolicy.dev()


def check_policy(inp: tuple[dict[str, str], list[tuple[bytes, int]]]) -> None:
    env, probes = inp
    try:
        policy: DestinationPolicy | None = parse_destination_policy(env)
    except PolicyError as err:
        assert str(err).startswith("destination policy: "), str(err)
        policy = None
    for ip, port in probes:
        for p in (policy, _OPEN_PROD, _ALLOW_ALL):
            if p is None:
                continue
            verdict = p.check(ip, port)
            assert verdict is None or verdict in _REASONS, verdict
            if len(ip) == 4:  # F-137: a v4-mapped address is judged as its IPv4 address
                assert p.check(b"\x00" * 10 + b"\xff\xff" + ip, port) == verdict
        valid = len(ip) in (4, 16)
        open_verdict = _OPEN_PROD.check(ip, port)
        if port == 0:
            assert open_verdict == PORT_ZERO  # F-228
        elif not valid:
            assert open_verdict == INVALID_IP
        else:  # the only gate left is the special-range list: it must agree with the oracle
            assert (open_verdict == PRIVATE) == reference_special(ip), (ip.hex(), open_verdict)
            assert open_verdict in (None, PRIVATE)
            assert _ALLOW_ALL.check(ip, port) is None


TARGETS: dict[str, Target] = {
    "frames": Target("frames", check_frame, gen_frame),
    "signaling": Target("signaling", check_signal, gen_signal),
    "jwt": Target("jwt", check_jwt, gen_jwt),
    "origin": Target("origin", check_origin, gen_origin),
    "config": Target("config", check_config, gen_config),
    "policy": Target("policy", check_policy, gen_policy),
}
