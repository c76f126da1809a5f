"""Authentication core: spec §5 (F-036 .. F-050), F-086 .. F-088 (/udp first message), F-233 .. F-235."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aero_relay.core.auth import (
    AUTH_MODES,
    Authenticator,
    AuthError,
    AuthResult,
    JWTClaims,
    UdpAuthMessageError,
    credential_from_request,
    go_trim_space,
    parse_udp_auth_message,
    signal_auth_message_credential,
    udp_auth_message_credential,
    verify_jwt,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
NOW = 1_700_000_000
SECRET = b"test-jwt-secret"
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()


def mint(payload: Any, *, header: Any = None, secret: bytes = SECRET) -> str:
    """A correctly signed token; header/payload are JSON values or raw bytes."""
    if header is None:
        header = {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{_b64url(_json_bytes(header))}.{_b64url(_json_bytes(payload))}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(sig)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iat": NOW, "exp": NOW + 60, "sid": "sid-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def assert_rejected(
    token: str, kind: str = "invalid", *, secret: bytes = SECRET, now: int = NOW
) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify_jwt(token, secret, now)
    assert info.value.kind == kind
    return info.value


def lookup(values: Mapping[str, str]) -> Callable[[str], str]:
    return lambda name: values.get(name, "")


# --- Golden vectors ---------------------------------------------------------------------------------

_JWT_VECTORS = json.loads((VECTORS / "auth-tokens.json").read_text())["jwtTokens"]["vectors"]
_CONFORMANCE = json.loads((VECTORS / "aero-vectors-v1.json").read_text())["aero-udp-relay-jwt-hs256"]


def test_auth_tokens_file_has_all_44_jwt_vectors() -> None:
    assert len(_JWT_VECTORS) == 44


@pytest.mark.parametrize("vector", _JWT_VECTORS, ids=[v["name"] for v in _JWT_VECTORS])
def test_auth_tokens_jwt_vector(vector: dict[str, Any]) -> None:
    """F-038 .. F-043, F-235: every `jwtTokens` vector, with its own secret and clock."""
    secret = vector["secret"].encode()
    if vector.get("expectError"):
        expected_kind = "unsupported" if vector["name"] == "wrongAlg" else "invalid"
        assert_rejected(vector["token"], expected_kind, secret=secret, now=vector["nowSec"])
        return
    got = verify_jwt(vector["token"], secret, vector["nowSec"])
    assert got == JWTClaims(
        sid=vector["sid"],
        exp=vector["exp"],
        iat=vector["iat"],
        nbf=None,
        origin=vector.get("origin"),
        aud=vector.get("aud"),
        iss=vector.get("iss"),
    )


@pytest.mark.parametrize(
    "name", ["invalidBase64urlNonCanonical.header", "invalidBase64urlNonCanonical.payload"]
)
def test_non_canonical_vectors_are_correctly_signed_so_only_the_canonical_check_rejects_them(
    name: str,
) -> None:
    """F-039: these tokens carry a valid HMAC; the trailing-bits rule alone must reject them."""
    (vector,) = [v for v in _JWT_VECTORS if v["name"] == name]
    header_b64, payload_b64, sig_b64 = vector["token"].split(".")
    expected = hmac.new(vector["secret"].encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256)
    assert base64.urlsafe_b64decode(sig_b64 + "=") == expected.digest()
    assert_rejected(vector["token"], now=vector["nowSec"])


def test_conformance_valid_token_gives_exactly_its_claims() -> None:
    tokens = _CONFORMANCE["tokens"]
    got = verify_jwt(tokens["valid"]["token"], _CONFORMANCE["secret"].encode(), _CONFORMANCE["nowUnix"])
    assert attrs_to_claims(got) == tokens["valid"]["claims"]


@pytest.mark.parametrize("name", ["expired", "badSignature"])
def test_conformance_negative_tokens_fail(name: str) -> None:
    token = _CONFORMANCE["tokens"][name]["token"]
    assert_rejected(token, secret=_CONFORMANCE["secret"].encode(), now=_CONFORMANCE["nowUnix"])


def attrs_to_claims(c: JWTClaims) -> dict[str, Any]:
    out = {"iat": c.iat, "exp": c.exp, "sid": c.sid, "origin": c.origin, "aud": c.aud, "iss": c.iss}
    return {k: v for k, v in out.items() if v is not None}


# --- JWT structure (F-038, F-039) -------------------------------------------------------------------


def test_header_b64_at_the_4096_cap_is_accepted_and_one_more_is_rejected() -> None:
    """F-038: header_b64 <= 4096 chars, checked before decoding."""
    # {"alg":"HS256","x":"aaa…"} is 20 + n bytes; 3072 bytes encode to exactly 4096 chars.
    ok = {"alg": "HS256", "x": "a" * (3072 - 20 - 2)}
    token = mint(claims(), header=ok)
    assert len(token.split(".")[0]) == 4096
    assert verify_jwt(token, SECRET, NOW).sid == "sid-1"
    too_big = mint(claims(), header={**ok, "x": ok["x"] + "a"})
    assert len(too_big.split(".")[0]) == 4098
    assert_rejected(too_big)


def test_payload_b64_over_16384_is_rejected_even_when_signed() -> None:
    """F-038"""
    payload = claims(pad="a" * 12_300)
    token = mint(payload)
    assert len(token.split(".")[1]) > 16384
    assert_rejected(token)
    fits = mint(claims(pad="a" * 12_000))
    assert len(fits.split(".")[1]) <= 16384
    assert verify_jwt(fits, SECRET, NOW).sid == "sid-1"


@pytest.mark.parametrize("sig_len", [42, 44])
def test_signature_must_be_exactly_43_chars(sig_len: int) -> None:
    """F-038"""
    header_b64, payload_b64, sig_b64 = mint(claims()).split(".")
    sig = (sig_b64 + "A")[:sig_len]
    assert_rejected(f"{header_b64}.{payload_b64}.{sig}")


@pytest.mark.parametrize(
    "token", ["", ".", "..", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.", "x" * 30_000], ids=repr
)
def test_malformed_shapes_are_invalid(token: str) -> None:
    """F-038: exactly 3 non-empty parts; whole token <= 20525."""
    assert_rejected(token)


@pytest.mark.parametrize("bad", ["+", "/", "=", " ", "\u00e9"])
def test_base64url_rejects_characters_outside_the_alphabet(bad: str) -> None:
    """F-039: only A-Z a-z 0-9 - _ (no standard base64, no padding)."""
    header_b64, payload_b64, sig_b64 = mint(claims()).split(".")
    assert_rejected(f"{header_b64}.{payload_b64[:-1]}{bad}.{sig_b64}")


def test_alg_is_checked_before_the_signature() -> None:
    """F-234: a non-HS256 alg with a wrong signature is "unsupported", not "invalid"."""
    header_b64, payload_b64, _ = mint(claims(), header={"alg": "HS512", "typ": "JWT"}).split(".")
    assert_rejected(f"{header_b64}.{payload_b64}.{'A' * 43}", "unsupported")


def test_alg_none_with_a_signature_shaped_part_is_unsupported() -> None:
    """F-234: an unsigned `alg:none` token gets ErrUnsupportedJWT."""
    header_b64, payload_b64, _ = mint(claims(), header={"alg": "none"}).split(".")
    assert_rejected(f"{header_b64}.{payload_b64}.{'A' * 43}", "unsupported")


def test_alg_none_with_an_empty_signature_fails_the_shape_check_first() -> None:
    """F-038 precedes F-234: the empty third part is rejected before the header is read."""
    header_b64, payload_b64, _ = mint(claims(), header={"alg": "none"}).split(".")
    assert_rejected(f"{header_b64}.{payload_b64}.", "invalid")


@pytest.mark.parametrize(
    "header", [{"typ": "JWT"}, {"alg": 256}, {"alg": None}, {"alg": ["HS256"]}], ids=repr
)
def test_alg_missing_or_not_a_string_is_invalid(header: dict[str, Any]) -> None:
    """F-040"""
    assert_rejected(mint(claims(), header=header))


@pytest.mark.parametrize("alg", ["hs256", "HS256 ", "RS256", ""])
def test_alg_must_be_exactly_hs256(alg: str) -> None:
    """F-040"""
    assert_rejected(mint(claims(), header={"alg": alg}), "unsupported")


def test_typ_null_is_invalid() -> None:
    """F-040: typ present must be a string; null is not."""
    assert_rejected(mint(claims(), header={"alg": "HS256", "typ": None}))


@pytest.mark.parametrize("typ", ["JWT", "", "anything"])
def test_typ_any_string_is_accepted(typ: str) -> None:
    """F-040: the typ value itself is not checked."""
    assert verify_jwt(mint(claims(), header={"alg": "HS256", "typ": typ}), SECRET, NOW).sid == "sid-1"


def test_typ_may_be_absent() -> None:
    assert verify_jwt(mint(claims(), header={"alg": "HS256"}), SECRET, NOW).sid == "sid-1"


def test_header_number_overflowing_float64_is_invalid() -> None:
    """Go decodes header numbers as float64; 1e400 is an error there (Python would give inf)."""
    assert_rejected(mint(claims(), header=b'{"alg":"HS256","x":1e400}'))
    assert verify_jwt(mint(claims(), header=b'{"alg":"HS256","x":1e300}'), SECRET, NOW).sid == "sid-1"


def test_deeply_nested_header_is_invalid_not_a_crash() -> None:
    """Unauthenticated input: nesting past the recursion limit must still be a plain AuthError."""
    depth = 3000
    header_b64 = _b64url(b"[" * depth + b"]" * depth)[:4096]
    assert_rejected(f"{header_b64}.{mint(claims()).split('.', 1)[1]}")
    assert_rejected(mint(claims(), header=b'{"alg":"HS256","x":' + b"[" * 1500 + b"]" * 1500 + b"}"))


# --- Signature (F-041) ------------------------------------------------------------------------------


def test_signature_is_checked_before_the_payload_is_decoded() -> None:
    """F-041: a garbage payload under a wrong signature reports the signature."""
    header_b64 = mint(claims()).split(".")[0]
    err = assert_rejected(f"{header_b64}.{_b64url(b'not json')}.{'A' * 43}")
    assert err.message == "bad signature"


def test_wrong_secret_is_invalid() -> None:
    assert_rejected(mint(claims(), secret=b"other-secret"))


@pytest.mark.parametrize(
    "secret",
    [b"", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", b'{"kty":"oct","k":"x"}'],
    ids=["empty", "pem-shaped", "jwk-shaped"],
)
def test_any_secret_bytes_work_even_those_pyjwt_prepare_key_refuses(secret: bytes) -> None:
    """JWT_SECRET is arbitrary bytes in Go; PyJWT's key vetting must not get in the way."""
    assert verify_jwt(mint(claims(), secret=secret), secret, NOW).sid == "sid-1"


def test_tokens_minted_by_pyjwt_verify() -> None:
    key = b"k" * 32
    token = pyjwt.encode(claims(origin="https://a.example"), key, algorithm="HS256")
    assert verify_jwt(token, key, NOW) == JWTClaims(
        sid="sid-1", exp=NOW + 60, iat=NOW, nbf=None, origin="https://a.example", aud=None, iss=None
    )


# --- Payload and claims (F-042, F-043, F-235) ---------------------------------------------------------


def test_exp_equal_to_now_is_expired() -> None:
    """F-235"""
    err = assert_rejected(mint(claims(exp=NOW)))
    assert err.message == "token expired"


def test_exp_one_second_after_now_is_valid() -> None:
    """F-043: no leeway either way."""
    assert verify_jwt(mint(claims(exp=NOW + 1)), SECRET, NOW).exp == NOW + 1


def test_nbf_equal_to_now_is_valid() -> None:
    """F-235"""
    assert verify_jwt(mint(claims(nbf=NOW)), SECRET, NOW).nbf == NOW


def test_nbf_one_second_after_now_is_rejected() -> None:
    """F-043: rejected when now < nbf, no leeway."""
    assert_rejected(mint(claims(nbf=NOW + 1)))


def test_iat_has_no_time_check() -> None:
    """F-043: iat is required but may be in the future."""
    assert verify_jwt(mint(claims(iat=NOW + 10_000)), SECRET, NOW).iat == NOW + 10_000


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "literal",
    [
        b"1.5",
        b"1e9",
        b"1E9",
        b"1700000100.0",
        b'"1700000100"',
        b"true",
        b"null",
        b"9223372036854775808",
        b"[1]",
    ],
    ids=lambda b: b.decode(),
)
def test_time_claims_must_be_int64_literals(name: str, literal: bytes) -> None:
    """F-042: numbers parse as int64 (json.Number.Int64); strings, floats, bools and null do not."""
    base = {"iat": b"1700000000", "exp": b"1700000060", "sid": b'"s"', "nbf": b"1699999999"}
    base[name] = literal
    payload = b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in base.items()) + b"}"
    assert_rejected(mint(payload))


def test_int64_bounds_are_accepted() -> None:
    got = verify_jwt(mint(claims(exp=INT64_MAX, iat=INT64_MIN, nbf=INT64_MIN)), SECRET, NOW)
    assert (got.exp, got.iat, got.nbf) == (INT64_MAX, INT64_MIN, INT64_MIN)


def test_negative_zero_is_an_int64() -> None:
    assert verify_jwt(mint(b'{"iat":-0,"exp":1700000060,"sid":"s"}'), SECRET, NOW).iat == 0


@pytest.mark.parametrize("name", ["exp", "iat"])
def test_exp_and_iat_are_required(name: str) -> None:
    assert_rejected(mint(claims(**{name: _DROP})))


@pytest.mark.parametrize("sid", [_DROP, "", None, 123, ["s"]], ids=repr)
def test_sid_must_be_a_non_empty_string(sid: Any) -> None:
    """F-043"""
    assert_rejected(mint(claims(sid=sid)))


@pytest.mark.parametrize("sid", [" ", " padded\t", "\u00e9t\u00e9"])
def test_sid_is_not_trimmed(sid: str) -> None:
    """F-043, F-236: whitespace in the sid is significant."""
    assert verify_jwt(mint(claims(sid=sid)), SECRET, NOW).sid == sid


@pytest.mark.parametrize("name", ["origin", "aud", "iss"])
@pytest.mark.parametrize("value", [5, None, ["a"], {"a": 1}, True], ids=repr)
def test_optional_string_claims_must_be_strings_when_present(name: str, value: Any) -> None:
    """F-043 (note: a JWT-standard aud array is rejected too, as in Go)."""
    assert_rejected(mint(claims(**{name: value})))


def test_optional_string_claim_values_are_not_checked() -> None:
    got = verify_jwt(mint(claims(origin="not an origin", aud="", iss="anyone")), SECRET, NOW)
    assert (got.origin, got.aud, got.iss) == ("not an origin", "", "anyone")


@pytest.mark.parametrize(
    "payload",
    [
        b"null",
        b"[]",
        b'"s"',
        b"1",
        b"  ",
        b'{"iat":1700000000,"exp":1700000060,"sid":"s"} x',
        b"\xef\xbb\xbf{}",
    ],
    ids=repr,
)
def test_payload_must_be_exactly_one_json_object(payload: bytes) -> None:
    """F-042 (a UTF-8 BOM is not JSON whitespace, as in Go)."""
    assert_rejected(mint(payload))


def test_payload_surrounding_whitespace_is_allowed() -> None:
    payload = b' \n{"iat":1700000000,"exp":1700000060,"sid":"s"}\r\n\t'
    assert verify_jwt(mint(payload), SECRET, NOW).sid == "s"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_number_literals_are_invalid(literal: bytes) -> None:
    assert_rejected(mint(b'{"iat":1700000000,"exp":1700000060,"sid":"s","x":' + literal + b"}"))


def test_unknown_claims_may_hold_any_json() -> None:
    """Only exp/iat/nbf must be int64; other numbers are never converted (Go's UseNumber)."""
    big = b"1" + b"0" * 5000
    payload = b'{"iat":1700000000,"exp":1700000060,"sid":"s","x":1e999,"y":' + big + b',"z":[{"a":null}]}'
    assert verify_jwt(mint(payload), SECRET, NOW).sid == "s"


def test_duplicate_claims_last_one_wins() -> None:
    payload = b'{"iat":1700000000,"exp":1700000060,"sid":"first","sid":"second"}'
    assert verify_jwt(mint(payload), SECRET, NOW).sid == "second"


def test_invalid_utf8_in_a_claim_becomes_one_replacement_char_per_byte() -> None:
    """Go's JSON decoder replaces each invalid byte with U+FFFD."""
    payload = b'{"iat":1700000000,"exp":1700000060,"sid":"a\xe2\x82b\xffc"}'
    assert verify_jwt(mint(payload), SECRET, NOW).sid == "a\ufffd\ufffdb\ufffdc"


def test_lone_surrogate_escape_becomes_a_replacement_char() -> None:
    payload = b'{"iat":1700000000,"exp":1700000060,"sid":"x\\ud800y","iss":"\\ud83d\\ude00"}'
    got = verify_jwt(mint(payload), SECRET, NOW)
    assert (got.sid, got.iss) == ("x\ufffdy", "\U0001f600")


# --- Extraction (F-048, F-049, F-233) -----------------------------------------------------------------


def extract(
    mode: str, headers: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None
) -> str:
    return credential_from_request(mode, lookup(headers or {}), lookup(query or {}))


def test_mode_none_extracts_nothing() -> None:
    assert (
        extract("none", {"X-API-Key": "k", "Authorization": "Bearer t"}, {"apiKey": "a", "token": "t"}) == ""
    )


def test_api_key_mode_prefers_x_api_key_over_authorization() -> None:
    """F-048"""
    assert extract("api_key", {"X-API-Key": "header-key", "Authorization": "ApiKey auth-key"}) == "header-key"


def test_jwt_mode_prefers_authorization_over_x_api_key() -> None:
    """F-048"""
    assert extract("jwt", {"X-API-Key": "header-key", "Authorization": "Bearer auth-token"}) == "auth-token"


@pytest.mark.parametrize("mode", ["api_key", "jwt"])
@pytest.mark.parametrize(
    "scheme", ["Bearer", "bearer", "BEARER", "ApiKey", "apikey", "APIKEY", "Api\u212aey"]
)
def test_authorization_scheme_is_bearer_or_apikey_case_insensitively(mode: str, scheme: str) -> None:
    """F-048 (Go's EqualFold also folds KELVIN SIGN onto k)."""
    assert extract(mode, {"Authorization": f"{scheme} cred"}) == "cred"


@pytest.mark.parametrize("mode", ["api_key", "jwt"])
@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "Token cred", "Bearer", "Bearer ", "Bearer\tcred", "  "]
)
def test_unusable_authorization_falls_back_to_x_api_key(mode: str, value: str) -> None:
    """F-048, F-233: other schemes and values without a space are ignored."""
    assert extract(mode, {"Authorization": value, "X-API-Key": "fallback"}) == "fallback"


@pytest.mark.parametrize("mode", ["api_key", "jwt"])
def test_bare_bearer_falls_back_to_the_query(mode: str) -> None:
    """F-233"""
    assert extract(mode, {"Authorization": "Bearer"}, {"apiKey": "q", "token": "q"}) == "q"


def test_authorization_is_split_at_the_first_space_and_both_parts_trimmed() -> None:
    """F-048"""
    assert extract("jwt", {"Authorization": "  Bearer   a b\t "}) == "a b"
    assert extract("jwt", {"Authorization": "Bearer \t tok"}) == "tok"


@pytest.mark.parametrize("mode", ["api_key", "jwt"])
def test_header_credentials_are_trimmed(mode: str) -> None:
    """F-048"""
    assert extract(mode, {"X-API-Key": " \t key \u3000"}) == "key"


def test_blank_x_api_key_counts_as_absent() -> None:
    assert extract("api_key", {"X-API-Key": "   ", "Authorization": "ApiKey k"}) == "k"
    assert extract("api_key", {"X-API-Key": "   "}, {"apiKey": "q"}) == "q"


def test_trimming_follows_go_unicode_is_space() -> None:
    """Python's strip() would also drop U+001C..U+001F; Go's TrimSpace keeps them."""
    assert go_trim_space("\x1ckey\x1f") == "\x1ckey\x1f"
    assert go_trim_space("\x85\xa0\u2000key\u200a\u2028\u3000") == "key"
    assert extract("api_key", {"X-API-Key": "\x1ckey"}) == "\x1ckey"


def test_api_key_mode_query_order_is_api_key_then_token() -> None:
    """F-049"""
    assert extract("api_key", query={"apiKey": "a", "token": "t"}) == "a"
    assert extract("api_key", query={"token": "t"}) == "t"


def test_jwt_mode_query_order_is_token_then_api_key() -> None:
    """F-049"""
    assert extract("jwt", query={"apiKey": "a", "token": "t"}) == "t"
    assert extract("jwt", query={"apiKey": "a"}) == "a"


@pytest.mark.parametrize("mode", ["api_key", "jwt"])
def test_query_is_ignored_when_a_header_credential_is_present(mode: str) -> None:
    """F-049"""
    assert extract(mode, {"X-API-Key": "header"}, {"apiKey": "q", "token": "q"}) == "header"


def test_query_values_are_not_trimmed() -> None:
    """As in Go's CredentialFromQuery (only header and signalling-message credentials are trimmed)."""
    assert extract("api_key", query={"apiKey": " a "}) == " a "


@pytest.mark.parametrize("mode", ["api_key", "jwt"])
def test_no_credential_anywhere_is_empty(mode: str) -> None:
    assert extract(mode, {"Authorization": "Basic x"}, {"other": "x"}) == ""


def test_unknown_mode_is_a_configuration_error_not_an_auth_error() -> None:
    with pytest.raises(ValueError):
        extract("basic", {"X-API-Key": "k"})


# --- WebSocket first-message credentials (F-050, F-086 .. F-088) ----------------------------------


def test_signal_auth_message_prefers_api_key() -> None:
    """F-050"""
    assert signal_auth_message_credential("key", "tok") == "key"
    assert signal_auth_message_credential("", "tok") == "tok"
    assert signal_auth_message_credential("", "") == ""


def test_signal_auth_message_credential_is_trimmed_and_a_blank_api_key_does_not_fall_back_to_token() -> None:
    """F-050 with Go's credentialFromHelloAndRequest: TrimSpace(apiKey-or-token); "" → use the request."""
    assert signal_auth_message_credential(" key ", "tok") == "key"
    assert signal_auth_message_credential("  ", "tok") == ""


@pytest.mark.parametrize(
    ("mode", "api_key", "token", "expected"),
    [
        ("api_key", "a", "t", "a"),
        ("api_key", "", "t", "t"),
        ("jwt", "a", "t", "t"),
        ("jwt", "a", "", "a"),
        ("jwt", "", "", ""),
        ("none", "a", "t", ""),
    ],
)
def test_udp_auth_message_field_preference_per_mode(
    mode: str, api_key: str, token: str, expected: str
) -> None:
    """F-088"""
    assert udp_auth_message_credential(mode, api_key, token) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"auth","apiKey":"k"}', "k"),
        ('{"type":"auth","token":"t"}', "t"),
        ('{"type":"auth","apiKey":"same","token":"same"}', "same"),
        ('{"type":"auth","apiKey":" k "}', " k "),
        ('{"type":"auth","apiKey":"k","extra":{"x":[1,2.5,1e999]}}', "k"),
        ('{"TYPE":"auth","APIKEY":"k"}', "k"),
        ('{"type":"auth","apiKey":"k","apiKey":null}', "k"),
        ('{"type":"auth","apiKey":"","token":"t"}', "t"),
    ],
    ids=repr,
)
def test_udp_auth_message_accepted(text: str, expected: str) -> None:
    """F-087/F-088: lenient parse (unknown fields, Go's case-insensitive field names, null = unset)."""
    assert parse_udp_auth_message("api_key", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '"auth"',
        "null",
        "{}",
        '{"type":"Auth"}',
        '{"type":5,"apiKey":"k"}',
        '{"type":"auth"} x',
    ],
    ids=repr,
)
def test_udp_auth_message_not_an_auth_envelope_is_authentication_required(text: str) -> None:
    """F-086"""
    with pytest.raises(UdpAuthMessageError) as info:
        parse_udp_auth_message("api_key", text)
    assert (info.value.code, info.value.message, info.value.close_code) == (
        "unauthorized",
        "authentication required",
        1008,
    )


@pytest.mark.parametrize("field", ["apiKey", "token"])
@pytest.mark.parametrize("value", ["5", "true", "[]", "{}"])
def test_udp_auth_message_non_string_credential_is_bad_message_1003(field: str, value: str) -> None:
    """F-087"""
    with pytest.raises(UdpAuthMessageError) as info:
        parse_udp_auth_message("jwt", f'{{"type":"auth","{field}":{value}}}')
    assert (info.value.code, info.value.message, info.value.close_code) == (
        "bad_message",
        "invalid auth message",
        1003,
    )


def test_udp_auth_message_with_two_different_credentials_is_bad_message_1008() -> None:
    """F-087"""
    with pytest.raises(UdpAuthMessageError) as info:
        parse_udp_auth_message("jwt", '{"type":"auth","apiKey":"a","token":"b"}')
    assert (info.value.code, info.value.message, info.value.close_code) == (
        "bad_message",
        "invalid auth message",
        1008,
    )


@pytest.mark.parametrize("text", ['{"type":"auth"}', '{"type":"auth","apiKey":"","token":null}'])
def test_udp_auth_message_without_a_credential_is_missing_credentials(text: str) -> None:
    """F-088"""
    with pytest.raises(UdpAuthMessageError) as info:
        parse_udp_auth_message("api_key", text)
    assert (info.value.code, info.value.message, info.value.close_code) == (
        "unauthorized",
        "missing credentials",
        1008,
    )


def test_udp_auth_message_accepts_bytes() -> None:
    assert parse_udp_auth_message("jwt", b'{"type":"auth","token":"t"}') == "t"


# --- Authenticator (F-036, F-037, F-044, F-045, F-047) ------------------------------------------------


def test_auth_modes() -> None:
    """F-036"""
    assert AUTH_MODES == ("none", "api_key", "jwt")


def test_unknown_mode_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError):
        Authenticator(mode="apikey", api_key="k", jwt_secret=b"")


def test_mode_none_authorizes_everything_with_an_empty_result() -> None:
    a = Authenticator(mode="none", api_key="", jwt_secret=b"")
    assert a.verify("anything", NOW) == AuthResult("", "")
    assert a.authorize(lookup({}), lookup({}), NOW) == AuthResult("", "")


def test_api_key_match_keeps_the_credential_and_has_no_session_key() -> None:
    """F-037, F-045 (api_key uses an empty session key), F-047."""
    a = Authenticator(mode="api_key", api_key="secret-key", jwt_secret=b"")
    assert a.verify("secret-key", NOW) == AuthResult("secret-key", "")


def test_api_key_mismatch_is_invalid() -> None:
    a = Authenticator(mode="api_key", api_key="secret-key", jwt_secret=b"")
    with pytest.raises(AuthError) as info:
        a.verify("secret-kex", NOW)
    assert info.value.kind == "invalid"


def test_api_key_empty_credential_is_missing() -> None:
    a = Authenticator(mode="api_key", api_key="secret-key", jwt_secret=b"")
    with pytest.raises(AuthError) as info:
        a.verify("", NOW)
    assert info.value.kind == "missing"


def test_api_key_with_an_empty_configured_key_accepts_nothing() -> None:
    """F-037: the configured key must be non-empty too."""
    a = Authenticator(mode="api_key", api_key="", jwt_secret=b"")
    with pytest.raises(AuthError) as info:
        a.verify("x", NOW)
    assert info.value.kind == "invalid"


def test_configured_api_key_is_not_trimmed_but_header_credentials_are() -> None:
    """F-037: a padded API_KEY can never match a (trimmed) header credential."""
    a = Authenticator(mode="api_key", api_key=" key ", jwt_secret=b"")
    with pytest.raises(AuthError):
        a.authorize(lookup({"X-API-Key": " key "}), lookup({}), NOW)
    assert a.verify(" key ", NOW).credential == " key "


def test_api_key_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """F-037: the comparison goes through hmac.compare_digest, on bytes."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # auth.py looks it up per call
    a = Authenticator(mode="api_key", api_key="k\u00e9y", jwt_secret=b"")
    assert a.verify("k\u00e9y", NOW).credential == "k\u00e9y"
    with pytest.raises(AuthError):
        a.verify("wrong", NOW)
    assert calls == [("k\u00e9y".encode(), "k\u00e9y".encode()), (b"wrong", "k\u00e9y".encode())]


def test_jwt_session_key_is_the_sid_and_the_credential_is_the_token() -> None:
    """F-045, F-047"""
    token = mint(claims(sid="  spaced sid "))
    a = Authenticator(mode="jwt", api_key="", jwt_secret=SECRET)
    assert a.verify(token, NOW) == AuthResult(token, "  spaced sid ")


def test_jwt_unsupported_alg_keeps_its_kind() -> None:
    """F-044"""
    a = Authenticator(mode="jwt", api_key="", jwt_secret=SECRET)
    with pytest.raises(AuthError) as info:
        a.verify(mint(claims(), header={"alg": "HS384"}), NOW)
    assert info.value.kind == "unsupported"


@pytest.mark.parametrize("mode", ["api_key", "jwt"])
def test_authorize_without_any_credential_is_missing(mode: str) -> None:
    a = Authenticator(mode=mode, api_key="k", jwt_secret=SECRET)
    with pytest.raises(AuthError) as info:
        a.authorize(lookup({"Authorization": "Bearer"}), lookup({}), NOW)
    assert info.value.kind == "missing"


def test_authorize_jwt_from_bearer_header() -> None:
    token = mint(claims())
    a = Authenticator(mode="jwt", api_key="", jwt_secret=SECRET)
    assert a.authorize(lookup({"Authorization": f"Bearer {token}"}), lookup({}), NOW) == AuthResult(
        token, "sid-1"
    )


def test_authorize_does_not_retry_the_query_after_a_wrong_header() -> None:
    """F-049: a present but wrong header credential is not retried with the query."""
    a = Authenticator(mode="api_key", api_key="right", jwt_secret=b"")
    with pytest.raises(AuthError) as info:
        a.authorize(lookup({"X-API-Key": "wrong"}), lookup({"apiKey": "right"}), NOW)
    assert info.value.kind == "invalid"


# --- Properties ---------------------------------------------------------------------------------------

_B64URL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _verify_or_auth_error(token: str, secret: bytes = SECRET) -> None:
    with contextlib.suppress(AuthError):
        verify_jwt(token, secret, NOW)


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_arbitrary_text_only_ever_raises_auth_error(token: str) -> None:
    _verify_or_auth_error(token)


@settings(max_examples=200)
@given(st.lists(st.text(alphabet=_B64URL_CHARS + "=+/.", max_size=80), min_size=3, max_size=3))
def test_arbitrary_three_part_tokens_only_ever_raise_auth_error(parts: list[str]) -> None:
    _verify_or_auth_error(".".join(parts))


@settings(max_examples=200)
@given(header=st.binary(max_size=60), payload=st.binary(max_size=120))
def test_correctly_signed_arbitrary_bytes_only_ever_raise_auth_error(header: bytes, payload: bytes) -> None:
    """Reaches the header and payload JSON paths with any bytes (signature valid)."""
    if header and payload:
        _verify_or_auth_error(mint(payload, header=header))


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200)
@given(header=st.dictionaries(st.sampled_from(["alg", "typ", "x"]), _json), payload=_json)
def test_correctly_signed_arbitrary_json_only_ever_raises_auth_error(
    header: dict[str, Any], payload: Any
) -> None:
    header_bytes = json.dumps(header).encode()
    payload_bytes = json.dumps(payload).encode()
    _verify_or_auth_error(mint(payload_bytes, header=header_bytes))


_int64 = st.integers(INT64_MIN, INT64_MAX)
_opt_text = st.none() | st.text(max_size=30)


@settings(max_examples=200)
@given(
    secret=st.binary(max_size=64),
    now=st.integers(0, 1 << 40),
    ttl=st.integers(1, 1 << 40),
    iat=_int64,
    nbf_before=st.none() | st.integers(0, 1 << 40),
    sid=st.text(min_size=1, max_size=40),
    origin=_opt_text,
    aud=_opt_text,
    iss=_opt_text,
    typ=st.none() | st.text(max_size=5),
)
def test_minted_tokens_with_valid_claims_round_trip(
    secret: bytes,
    now: int,
    ttl: int,
    iat: int,
    nbf_before: int | None,
    sid: str,
    origin: str | None,
    aud: str | None,
    iss: str | None,
    typ: str | None,
) -> None:
    expected = JWTClaims(
        sid=sid,
        exp=now + ttl,
        iat=iat,
        nbf=None if nbf_before is None else now - nbf_before,
        origin=origin,
        aud=aud,
        iss=iss,
    )
    payload = {k: v for k, v in attrs_asdict(expected).items() if v is not None}
    header = {"alg": "HS256"} if typ is None else {"alg": "HS256", "typ": typ}
    assert verify_jwt(mint(payload, header=header, secret=secret), secret, now) == expected


def attrs_asdict(c: JWTClaims) -> dict[str, Any]:
    return {
        "sid": c.sid,
        "exp": c.exp,
        "iat": c.iat,
        "nbf": c.nbf,
        "origin": c.origin,
        "aud": c.aud,
        "iss": c.iss,
    }


@settings(max_examples=200)
@given(st.text(max_size=120) | st.binary(max_size=120), st.sampled_from(AUTH_MODES))
def test_udp_auth_message_parse_only_ever_raises_its_own_error(text: str | bytes, mode: str) -> None:
    with contextlib.suppress(UdpAuthMessageError):
        parse_udp_auth_message(mode, text)


@settings(max_examples=200)
@given(
    st.sampled_from(["api_key", "jwt"]),
    st.dictionaries(st.sampled_from(["X-API-Key", "Authorization"]), st.text(max_size=20)),
    st.dictionaries(st.sampled_from(["apiKey", "token"]), st.text(max_size=20)),
)
def test_extracted_header_credentials_are_trimmed_and_query_is_only_a_fallback(
    mode: str, headers: dict[str, str], query: dict[str, str]
) -> None:
    cred = extract(mode, headers, query)
    header_cred = extract(mode, headers, {})
    assert header_cred == go_trim_space(header_cred)
    if header_cred:
        assert cred == header_cred
    else:
        assert cred in (query.get("apiKey", ""), query.get("token", ""))
