"""Origin policy (spec section 3: F-014..F-024, plus F-153 and F-211)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aero_relay.core.origin import (
    NormalizedOrigin,
    OriginDecision,
    OriginPolicy,
    _format_ipv6,
    _parse_ipv6,
    decode_header_value,
    derive_client_origin,
    go_trim_space,
    normalize_origin,
    normalize_request_host,
    parse_allowed_origins,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
_ORIGIN_VECTORS: dict[str, Any] = json.loads((VECTORS / "origin.json").read_text(encoding="utf-8"))
NORMALIZE_CASES: list[dict[str, Any]] = _ORIGIN_VECTORS["normalize"]
ALLOW_CASES: list[dict[str, Any]] = _ORIGIN_VECTORS["allow"]

FORBIDDEN = OriginDecision(allowed=False, cors_origin=None)
NO_CORS = OriginDecision(allowed=True, cors_origin=None)


def _origin(raw: str) -> str | None:
    result = normalize_origin(raw)
    return None if result is None else result.origin


# --- golden vectors ----------------------------------------------------------------------------


def test_vector_counts() -> None:
    assert len(NORMALIZE_CASES) == 58
    assert len(ALLOW_CASES) == 30


@pytest.mark.parametrize("case", NORMALIZE_CASES, ids=[c["name"] for c in NORMALIZE_CASES])
def test_normalize_vector(case: dict[str, Any]) -> None:
    """F-019..F-021 `[T]` (vectors)."""
    expected = None if case.get("expectError") else case["normalizedOrigin"]
    assert _origin(case["rawOriginHeader"]) == expected


@pytest.mark.parametrize("case", ALLOW_CASES, ids=[c["name"] for c in ALLOW_CASES])
def test_allow_vector(case: dict[str, Any]) -> None:
    """F-015, F-023, F-024 `[T]` (vectors): the list is used as given, like the Go test."""
    policy = OriginPolicy(tuple(case["allowedOrigins"]))
    decision = policy.check([case["rawOriginHeader"]], case["requestHost"])
    assert decision.allowed is case["expectAllowed"]
    if decision.allowed:
        assert decision.cors_origin == _origin(case["rawOriginHeader"])
    else:
        assert decision.cors_origin is None


# --- F-019: NormalizeHeader --------------------------------------------------------------------


def test_normalized_origin_carries_host_with_port() -> None:
    assert normalize_origin("HTTP://Example.COM:8080/") == NormalizedOrigin(
        origin="http://example.com:8080", host="example.com:8080"
    )


def test_null_has_empty_host_and_is_case_sensitive() -> None:
    assert normalize_origin(" null\t") == NormalizedOrigin(origin="null", host="")
    assert normalize_origin("NULL") is None
    assert normalize_origin("null/") is None


def test_trim_is_go_trimspace_not_python_strip() -> None:
    """Go trims Unicode White_Space (e.g. U+3000, NBSP) but not U+001C..U+001F."""
    assert _origin("\u3000https://example.com\xa0\n") == "https://example.com"
    assert _origin("\x1chttps://example.com") is None
    assert normalize_origin("\x1fnull") is None
    assert go_trim_space("\x1c a \u2028") == "\x1c a"


def test_utf8_nbsp_bytes_are_trimmed_but_a_lone_a0_byte_is_not() -> None:
    assert _origin(decode_header_value(b"https://example.com\xc2\xa0")) == "https://example.com"
    assert _origin(decode_header_value(b"https://example.com\xa0")) is None


def test_scheme_prefix_is_ascii_case_insensitive_only() -> None:
    assert _origin("hTtPs://example.com") == "https://example.com"
    assert _origin("httpſ://example.com") is None  # U+017F folds to "s" in Unicode, not here


@pytest.mark.parametrize(
    "raw",
    [
        "http:///example.com",  # step 7: "/" right after the scheme prefix
        "https://",
        "https:///",
        "https://example.com//",
        "https://a@",
        "https://example.com/@",
        "https://ex\\ample.com",
        "https://a,b.com",
        "https://exa^mple.com",  # Go's url.Parse host check
        "https://exa|mple.com",
        "https://example.com:8o",  # a port with non-digits fails in url.Parse
        "https://example.com:-1",
        "https://example.com:+80",
        "https://example.com:65536",
        "https://example.com:00000",
        "https://[::1]x",
        "https://[::1",
        "https://::1",  # unbracketed IPv6
        "https://a:1:2",
        "https://:443",
        "https://[fe80::1%25eth0]",  # zones (and any %)
        "ws://example.com",
    ],
)
def test_rejected(raw: str) -> None:
    assert normalize_origin(raw) is None


@pytest.mark.parametrize("char", list("'()*!$&;=+\"_~-"))
def test_go_quirk_host_bytes_are_kept_and_only_lowercased(char: str) -> None:
    """F-019 Go quirk, copied for drop-in compatibility (see the module docstring)."""
    assert _origin(f"https://A{char}B.com") == f"https://a{char}b.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://a:080", "http://a"),  # leading zeros allowed, then the default port drops
        ("https://a:080", "https://a:80"),
        ("https://a:0000000000443", "https://a"),
        ("https://a:65535", "https://a:65535"),
        ("http://a:1", "http://a:1"),
        ("http://a:443", "http://a:443"),
        ("https://a:80", "https://a:80"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
    ],
)
def test_port_handling(raw: str, expected: str) -> None:
    assert _origin(raw) == expected


# --- F-020: host/port split --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_host", ["[::1]:", "[::1]x", "[::1]]", "[::1]:80]", "a:", ":80", "a:b:c", "[a.b]", "[1.2.3.4]"]
)
def test_malformed_host_port_split_is_rejected(raw_host: str) -> None:
    assert normalize_origin(f"http://{raw_host}") is None
    assert normalize_request_host(raw_host, "http") is None


# --- F-021: hostname canonicalisation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("[::]", "[::]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[1::]", "[1::]"),
        ("[1:0:0:2:0:0:0:3]", "[1:0:0:2::3]"),  # the longest run wins
        ("[1:0:0:2:0:0:3:4]", "[1::2:0:0:3:4]"),  # the first of equal runs wins
        ("[1:0:2:3:4:5:6:7]", "[1:0:2:3:4:5:6:7]"),  # a single zero group is not shortened
        ("[ABCD:EF01::0DB8]", "[abcd:ef01::db8]"),
        ("[::ffff:192.0.2.1]", "[::ffff:c000:201]"),
        ("[::FFFF:C000:201]", "[::ffff:c000:201]"),
        ("[::1.2.3.4]", "[::102:304]"),
        ("[1:2:3:4:5:6:1.2.3.4]", "[1:2:3:4:5:6:102:304]"),
        ("[1:2:3:4:5:6:7::]", "[1:2:3:4:5:6:7:0]"),
    ],
)
def test_ipv6_is_serialised_in_rfc5952_form(host: str, expected: str) -> None:
    assert _origin(f"http://{host}") == f"http://{expected}"


@pytest.mark.parametrize(
    "host",
    [
        "[::01.2.3.4]",  # strict dotted decimal inside IPv6
        "[::1.2.3]",
        "[1:2:3:4:5:6:7:1.2.3.4]",
        "[1:2:3:4:5:6:7:8:9]",
        "[1:2:3:4:5:6:7:8::]",
        "[1:2:3:4::5:6:7:8]",  # "::" must stand for at least one group
        "[12345::]",
        "[1:::2]",
        "[:1::2]",
        "[1::2::3]",
        "[1:2:3:4:5:6:7]",
        "[]",
    ],
)
def test_invalid_ipv6_is_rejected(host: str) -> None:
    assert normalize_origin(f"http://{host}") is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0x", "0.0.0.0"),  # "0x" alone means 0
        ("0X7F.1", "127.0.0.1"),
        ("0xffffffff", "255.255.255.255"),
        ("037777777777", "255.255.255.255"),
        ("1.0xffffff", "1.255.255.255"),
        ("1.2.65535", "1.2.255.255"),
        ("0", "0.0.0.0"),
        ("1.2.3.4.", "1.2.3.4"),  # one trailing dot is dropped
        ("1.2.3.4..", "1.2.3.4.."),  # two are not: the last label is empty, so it is a domain
        ("EXAMPLE.COM.", "example.com."),
        ("0xg", "0xg"),  # not numeric, so a domain
        ("1e3", "1e3"),
        ("1.2.3.x", "1.2.3.x"),
    ],
)
def test_whatwg_ipv4_and_domains(host: str, expected: str) -> None:
    assert _origin(f"http://{host}") == f"http://{expected}"


@pytest.mark.parametrize(
    "host",
    [
        "09",
        "0x100000000",
        "1.0x1000000",
        "1.2.65536",
        "256.1",
        "1.2.3.4.5",
        "1..2",
        "example.0x",
        "example.1.",
        "9" * 5000,  # saturates instead of building a huge integer
    ],
)
def test_invalid_whatwg_ipv4_is_rejected(host: str) -> None:
    assert normalize_origin(f"http://{host}") is None


# --- F-022: request host -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_host", "scheme", "expected"),
    [
        ("Example.COM:443", "https", "example.com"),
        ("Example.COM:443", "http", "example.com:443"),
        ("example.com:80", "http", "example.com"),
        (" example.com ", "https", "example.com"),
        ("[::1]:80", "http", "[::1]"),
        ("010.0.0.1:0443", "https", "8.0.0.1"),
        ("exa^mple.com", "http", "exa^mple.com"),  # no url.Parse host check on this path
    ],
)
def test_request_host_is_normalised_with_the_origin_scheme(raw_host: str, scheme: str, expected: str) -> None:
    assert normalize_request_host(raw_host, scheme) == expected


@pytest.mark.parametrize(
    "raw_host", ["", "  ", "a b", "a@b", "a,b", "a%62", "a\\b", "a/b", "a?", "a#", "é.com", "a:0"]
)
def test_request_host_rejections(raw_host: str) -> None:
    assert normalize_request_host(raw_host, "https") is None


# --- F-018: ALLOWED_ORIGINS --------------------------------------------------------------------


def test_allowed_origins_are_split_trimmed_and_normalised() -> None:
    assert parse_allowed_origins(" HTTPS://Example.COM:443/ ,, * ,null,\thttp://[::1]:80 ") == (
        "https://example.com",
        "*",
        "null",
        "http://[::1]",
    )


@pytest.mark.parametrize("value", ["", " ", ",", " , ,"])
def test_empty_allowed_origins_means_same_host(value: str) -> None:
    assert parse_allowed_origins(value) == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "https://ok.com, https://a.com/path ",
            'invalid origin "https://a.com/path" (expected full origin like https://example.com)',
        ),
        ('https://a"b/x', 'invalid origin "https://a\\"b/x" (expected full origin like https://example.com)'),
        ("example.com", 'invalid origin "example.com" (expected full origin like https://example.com)'),
    ],
)
def test_invalid_allowed_origin_message(value: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_allowed_origins(value)
    assert str(excinfo.value) == message


# --- F-014, F-015, F-023, F-024: the check -----------------------------------------------------


def test_no_origin_header_is_allowed_without_cors() -> None:
    assert OriginPolicy().check([], "example.com") == NO_CORS


@pytest.mark.parametrize("blank", ["", "  ", "\t", "\u3000"])
def test_blank_origin_header_is_allowed_without_cors(blank: str) -> None:
    assert OriginPolicy(("https://a.com",)).check([blank], "example.com") == NO_CORS


@pytest.mark.parametrize("headers", [["https://example.com", "https://example.com"], ["", ""], ["*", ""]])
def test_several_origin_headers_are_forbidden(headers: list[str]) -> None:
    assert OriginPolicy(("*",)).check(headers, "example.com") == FORBIDDEN


def test_invalid_origin_is_forbidden_even_with_star() -> None:
    assert OriginPolicy(("*",)).check(["https://example.com/path"], "example.com") == FORBIDDEN


def test_cors_origin_is_the_normalised_origin_never_star() -> None:
    decision = OriginPolicy(("*",)).check([" HTTPS://Evil.COM:443/ "], "relay.example.com")
    assert decision == OriginDecision(allowed=True, cors_origin="https://evil.com")


def test_null_gets_null_cors_origin_when_listed() -> None:
    assert OriginPolicy(("null",)).check(["null"], "x") == OriginDecision(allowed=True, cors_origin="null")
    assert OriginPolicy(("*",)).check(["null"], "x") == OriginDecision(allowed=True, cors_origin="null")
    assert OriginPolicy(("https://a.com",)).check(["null"], "x") == FORBIDDEN


def test_allow_list_match_is_exact_on_the_normalised_form() -> None:
    policy = OriginPolicy(("https://example.com",))
    assert policy.check(["https://example.com:8443"], "example.com:8443") == FORBIDDEN
    assert policy.check(["http://example.com"], "example.com") == FORBIDDEN


def test_same_host_rule_ignores_the_scheme() -> None:
    """F-024: a TLS-terminating proxy makes the relay see http while the page is https."""
    policy = OriginPolicy()
    assert policy.check(["https://relay.example"], "relay.example").allowed
    assert policy.check(["http://relay.example"], "relay.example").allowed
    assert policy.check(["http://relay.example:443"], "relay.example:443").allowed
    assert not policy.check(["https://relay.example"], "relay.example:8443").allowed


def test_same_host_rule_rejects_a_blank_request_host() -> None:
    assert not OriginPolicy().check(["https://example.com"], "").allowed


def test_is_allowed_never_allows_null_by_default() -> None:
    null = normalize_origin("null")
    assert null is not None
    assert not OriginPolicy().is_allowed(null, "null")
    assert not OriginPolicy().is_allowed(null, "")


# --- F-153: the client origin for the L2 backend -----------------------------------------------


@pytest.mark.parametrize(
    ("origins", "host", "proto", "tls", "expected"),
    [
        (["HTTPS://Page.Example:443/"], "relay", "", False, "https://page.example"),
        ([" not a url "], "relay", "", False, "not a url"),  # trimmed raw value
        (["https://a.com", "https://b.com"], "relay", "", False, ""),
        ([], "Relay.Example:80", "", False, "http://relay.example"),
        ([], "relay.example", "", True, "https://relay.example"),
        (["  "], "relay.example", "", True, "https://relay.example"),
        ([], "relay.example:443", "https", False, "https://relay.example"),
        ([], "relay.example", " HTTPS , http", False, "https://relay.example"),
        ([], "relay.example", "http", True, "http://relay.example"),
        ([], "relay.example", "wss", True, "https://relay.example"),
        ([], "relay.example", "ftp, https", False, "http://relay.example"),
        ([], "relay.example", "httpſ", False, "https://relay.example"),  # Go strings.EqualFold
        ([], "", "https", True, ""),
        ([], "  ", "", False, ""),
        ([], "Bad Host", "", False, "http://bad host"),  # the candidate when it does not normalise
    ],
)
def test_derive_client_origin(origins: list[str], host: str, proto: str, tls: bool, expected: str) -> None:
    assert derive_client_origin(origins, host, proto, tls) == expected


# --- properties --------------------------------------------------------------------------------

_HOST_CHARS = "abcXYZ019-_.~!$&'()*+;=\"[]<>:^|@%,{}`\\/?# "


@st.composite
def _ipv4_forms(draw: st.DrawFn) -> tuple[str, str]:
    """A 32-bit address written in a random WHATWG form, and its dotted-decimal serialisation."""
    value = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 4))
    octets = value.to_bytes(4, "big")
    parts = [*octets[: n - 1], int.from_bytes(octets[n - 1 :], "big")]
    rendered = []
    for part in parts:
        radix = draw(st.sampled_from(["dec", "oct", "hex"]))
        if radix == "dec":
            rendered.append(str(part))
        elif radix == "oct":
            rendered.append(f"0{part:o}")
        else:
            rendered.append(
                draw(st.sampled_from(["0x", "0X"])) + draw(st.sampled_from([f"{part:x}", f"{part:X}"]))
            )
    text = ".".join(rendered) + draw(st.sampled_from(["", "."]))
    return text, str(ipaddress.IPv4Address(value))


_ipv6_text = st.ip_addresses(v=6).flatmap(
    lambda a: st.sampled_from([a.compressed, a.exploded, a.exploded.upper(), a.compressed.upper()])
)

_hosts = st.one_of(
    st.text(_HOST_CHARS, min_size=1, max_size=20),
    st.from_regex(r"[A-Za-z0-9-]{1,10}(\.[A-Za-z0-9-]{1,10}){0,3}\.?", fullmatch=True),
    _ipv4_forms().map(lambda t: t[0]),
    _ipv6_text.map(lambda s: f"[{s}]"),
    st.ip_addresses(v=4).map(lambda a: f"[::ffff:{a}]"),
)


@st.composite
def _origin_like(draw: st.DrawFn) -> str:
    scheme = "".join(
        draw(st.sampled_from([c, c.upper()])) for c in draw(st.sampled_from(["http", "https", "ftp"]))
    )
    port = draw(st.one_of(st.just(""), st.text("0123456789", max_size=7).map(lambda p: ":" + p)))
    pad = st.sampled_from(["", " ", "\t", "\u3000", "\x1c"])
    return (
        draw(pad)
        + f"{scheme}://{draw(_hosts)}{port}"
        + draw(st.sampled_from(["", "/", "//", "/x"]))
        + draw(pad)
    )


@given(st.text())
def test_normalize_never_raises_on_arbitrary_text(raw: str) -> None:
    normalize_origin(raw)
    normalize_request_host(raw, "https")
    derive_client_origin([raw], raw, raw, False)


@given(_origin_like())
def test_normalize_is_idempotent_and_lowercase(raw: str) -> None:
    result = normalize_origin(raw)
    if result is None:
        return
    assert normalize_origin(result.origin) == result
    assert result.origin == f"{result.scheme}://{result.host}"
    assert not any("A" <= c <= "Z" for c in result.origin)


@given(_origin_like())
def test_an_origin_is_same_host_with_its_own_host(raw: str) -> None:
    result = normalize_origin(raw)
    if result is None:
        return
    assert normalize_request_host(result.host, result.scheme) == result.host
    assert OriginPolicy().check([raw], result.host) == OriginDecision(allowed=True, cors_origin=result.origin)


@given(_ipv4_forms())
def test_every_whatwg_ipv4_form_normalises_to_dotted_decimal(form: tuple[str, str]) -> None:
    text, dotted = form
    assert _origin(f"http://{text}") == f"http://{dotted}"


@given(st.one_of(_ipv6_text, st.text("0123456789abcdefABCDEF:.", max_size=45)))
def test_ipv6_parser_agrees_with_ipaddress(text: str) -> None:
    """Go netip and Python ipaddress accept the same zone-less IPv6 text."""
    try:
        expected: int | None = int(ipaddress.IPv6Address(text))
    except ValueError:
        expected = None
    groups = _parse_ipv6(text)
    got = None if groups is None else int("".join(f"{g:04x}" for g in groups), 16)
    assert got == expected


@given(st.ip_addresses(v=6))
def test_ipv6_serialisation_is_rfc5952(addr: ipaddress.IPv6Address) -> None:
    groups = [int(addr.exploded[i : i + 4], 16) for i in range(0, 39, 5)]
    text = _format_ipv6(groups)
    assert ipaddress.IPv6Address(text) == addr
    if addr.ipv4_mapped is None:  # Python 3.13+ writes mapped addresses in dotted form
        assert text == addr.compressed
