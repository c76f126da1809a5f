"""Authentication core: credential extraction, the API key check and the strict HS256 JWT verifier.

Spec section 5 (F-036 .. F-050) plus F-087/F-088 (/udp first message) and F-233 .. F-235.
Sans-IO: the clock is an argument (`now` is whole Unix seconds, wall clock, as Go's
`time.Now().Unix()`), and request data arrives through small accessor callables.

The verifier copies the Go relay's strictness, including details of Go's `encoding/json` that
Python's `json` does differently (invalid UTF-8 and lone surrogates become U+FFFD, NaN and
overflowing header numbers are errors, numbers are validated only where a claim needs them).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Callable
from typing import Any, Literal

import attrs
from jwt.algorithms import HMACAlgorithm

__all__ = [
    "AUTH_MODES",
    "AuthError",
    "AuthErrorKind",
    "AuthResult",
    "Authenticator",
    "JWTClaims",
    "UdpAuthMessageError",
    "credential_from_request",
    "go_trim_space",
    "parse_udp_auth_message",
    "signal_auth_message_credential",
    "udp_auth_message_credential",
    "verify_jwt",
]

AUTH_MODES = ("none", "api_key", "jwt")

AuthErrorKind = Literal["missing", "invalid", "unsupported"]


class AuthError(Exception):
    """A credential problem; every kind is "unauthorized" (HTTP 401 / `auth_failure`), F-044.

    `kind` is "missing" (ErrMissingCredentials), "invalid" (ErrInvalidCredentials) or
    "unsupported" (ErrUnsupportedJWT, a non-HS256 `alg`). Configuration faults are not
    AuthErrors (they raise ValueError and map to 500 / WS 1011).
    """

    kind: AuthErrorKind
    message: str

    def __init__(self, kind: AuthErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"AuthError({self.kind!r}, {self.message!r})"


# --- Go string helpers -------------------------------------------------------------------------

# unicode.IsSpace (Go's strings.TrimSpace). Python's str.strip() also strips U+001C..U+001F.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def go_trim_space(s: str) -> str:
    """Go's `strings.TrimSpace`."""
    return s.strip(_GO_SPACE)


def _go_fold(s: str) -> str:
    """A key for Go's case-insensitive matching against an ASCII word (strings.EqualFold, json fields).

    Under Unicode simple folding only KELVIN SIGN (k) and LONG S (s) fold onto ASCII letters; any
    other non-ASCII text can never equal an ASCII word, so it is returned unchanged.
    """
    if not s.isascii():
        s = s.replace("\u212a", "k").replace("\u017f", "s")
        if not s.isascii():
            return s
    return s.lower()


def _go_string(s: str) -> str:
    # Go's JSON decoder turns invalid UTF-8 (kept here as surrogateescape code points) and lone
    # \uD8xx escapes into U+FFFD; do the same so a claim is always encodable text.
    if s.isascii():
        return s
    return _SURROGATE_RE.sub("\ufffd", s)


def _utf8_text(data: bytes) -> str:
    # One surrogate per invalid byte, the same granularity as Go's per-byte U+FFFD.
    return data.decode("utf-8", "surrogateescape")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON literal {name}")  # NaN/Infinity are not JSON (Go rejects them)


# --- HS256 JWT -----------------------------------------------------------------------------------

_MAX_HEADER_B64 = 4 * 1024
_MAX_PAYLOAD_B64 = 16 * 1024
_SIG_B64_LEN = 43  # 32-byte HMAC-SHA256, base64url without padding
_MAX_TOKEN_LEN = _MAX_HEADER_B64 + 1 + _MAX_PAYLOAD_B64 + 1 + _SIG_B64_LEN  # 20525
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_B64URL_VALUE = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}

# PyJWT's HMAC primitive (HMAC-SHA256 + hmac.compare_digest). Its prepare_key() is skipped on
# purpose: it refuses empty, PEM-, SSH-, DER- and JWK-shaped secrets, while JWT_SECRET is any bytes.
_HS256 = HMACAlgorithm(HMACAlgorithm.SHA256)


class _NotInt64:
    """Stands for a payload number that is not an int64 literal (`1.5`, `1e9`, out of range)."""


_NOT_INT64 = _NotInt64()


def _payload_int(s: str) -> int | _NotInt64:
    # json.Number.Int64() semantics; the length guard also keeps int() off huge digit strings.
    if len(s) > 20:
        return _NOT_INT64
    v = int(s)
    return v if _INT64_MIN <= v <= _INT64_MAX else _NOT_INT64


def _payload_float(_s: str) -> _NotInt64:
    return _NOT_INT64


def _header_number(s: str) -> float:
    # Go decodes header numbers as float64 and fails on overflow (1e400); Python would give inf.
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise ValueError("number out of float64 range")
    return v


_HEADER_DECODER = json.JSONDecoder(
    parse_float=_header_number, parse_int=_header_number, parse_constant=_reject_constant
)
_PAYLOAD_DECODER = json.JSONDecoder(
    parse_float=_payload_float, parse_int=_payload_int, parse_constant=_reject_constant
)


@attrs.frozen
class JWTClaims:
    """The verified claims. Strings are as sent (not trimmed), F-043."""

    sid: str
    exp: int
    iat: int
    nbf: int | None
    origin: str | None
    aud: str | None
    iss: str | None


def _invalid(message: str) -> AuthError:
    return AuthError("invalid", message)


def _is_canonical_b64url(part: str) -> bool:
    """F-039: alphabet only, no padding, len%4 != 1, and zero unused bits in the last char."""
    rem = len(part) % 4
    if rem == 1 or not _B64URL_RE.fullmatch(part):
        return False
    if rem == 2:
        return _B64URL_VALUE[part[-1]] & 0x0F == 0
    if rem == 3:
        return _B64URL_VALUE[part[-1]] & 0x03 == 0
    return True


def _b64url_decode(part: str) -> bytes:
    # Only called on parts that passed _is_canonical_b64url.
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _decode_json(decoder: json.JSONDecoder, data: bytes) -> Any:
    """Exactly one JSON value (surrounding whitespace allowed); None when it is not valid JSON."""
    try:
        return decoder.decode(_utf8_text(data))
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the interpreter allows (Go's limit is 10000).
        return None


def _int_claim(claims: dict[str, Any], name: str) -> int:
    v = claims.get(name)
    if type(v) is not int:  # rejects absence, null, bools, strings, floats and non-int64 numbers
        raise _invalid(f"claim {name} missing or not an int64")
    return v


def _opt_str_claim(claims: dict[str, Any], name: str) -> str | None:
    if name not in claims:
        return None
    v = claims[name]
    if type(v) is not str:
        raise _invalid(f"claim {name} is not a string")
    return _go_string(v)


def verify_jwt(token: str, secret: bytes, now: int) -> JWTClaims:
    """Verify an HS256 JWT exactly as the Go relay does (F-038 .. F-043, F-234, F-235).

    `now` is whole Unix seconds; there is no leeway. Raises AuthError("unsupported") for a
    non-HS256 `alg` and AuthError("invalid") for everything else.
    """
    # F-038: size and shape, before any decoding.
    if not token or len(token) > _MAX_TOKEN_LEN:
        raise _invalid("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise _invalid("malformed token")
    header_b64, payload_b64, sig_b64 = parts
    if not header_b64 or not payload_b64 or not sig_b64:
        raise _invalid("malformed token")
    if len(header_b64) > _MAX_HEADER_B64 or len(payload_b64) > _MAX_PAYLOAD_B64:
        raise _invalid("token too large")
    if len(sig_b64) != _SIG_B64_LEN:
        raise _invalid("malformed signature")
    # F-039
    if not (
        _is_canonical_b64url(header_b64)
        and _is_canonical_b64url(payload_b64)
        and _is_canonical_b64url(sig_b64)
    ):
        raise _invalid("invalid base64url")

    # F-040 / F-234: the alg check precedes the typ check and the signature.
    header = _decode_json(_HEADER_DECODER, _b64url_decode(header_b64))
    if not isinstance(header, dict):
        raise _invalid("header is not a JSON object")
    alg = header.get("alg")
    if type(alg) is not str:
        raise _invalid("header alg missing or not a string")
    if alg != "HS256":
        raise AuthError("unsupported", "unsupported jwt alg")
    if "typ" in header and type(header["typ"]) is not str:
        raise _invalid("header typ is not a string")

    # F-041: constant-time signature check before the payload is decoded.
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    if not _HS256.verify(signing_input, secret, _b64url_decode(sig_b64)):
        raise _invalid("bad signature")

    # F-042
    claims = _decode_json(_PAYLOAD_DECODER, _b64url_decode(payload_b64))
    if not isinstance(claims, dict):
        raise _invalid("payload is not a single JSON object")

    # F-043 / F-235, in the Go order: exp (with its time check), iat, nbf, sid, origin, aud, iss.
    exp = _int_claim(claims, "exp")
    if now >= exp:
        raise _invalid("token expired")
    iat = _int_claim(claims, "iat")
    nbf = _int_claim(claims, "nbf") if "nbf" in claims else None  # present but null → invalid
    if nbf is not None and now < nbf:
        raise _invalid("token not yet valid")
    sid = claims.get("sid")
    if type(sid) is not str or sid == "":
        raise _invalid("claim sid missing or not a non-empty string")
    return JWTClaims(
        sid=_go_string(sid),
        exp=exp,
        iat=iat,
        nbf=nbf,
        origin=_opt_str_claim(claims, "origin"),
        aud=_opt_str_claim(claims, "aud"),
        iss=_opt_str_claim(claims, "iss"),
    )


# --- Credential extraction -----------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in AUTH_MODES:
        raise ValueError(f"unsupported auth mode {mode!r}")


def _authorization_token(value: str) -> str:
    """`Authorization: <ApiKey|Bearer> <token>` → token, else "" (F-048, F-233)."""
    value = go_trim_space(value)
    scheme, sep, token = value.partition(" ")
    if not sep:
        return ""  # F-233: e.g. a bare "Bearer" is ignored
    scheme = go_trim_space(scheme)
    token = go_trim_space(token)
    if not scheme or not token or _go_fold(scheme) not in ("apikey", "bearer"):
        return ""
    return token


def credential_from_request(mode: str, header: Callable[[str], str], query: Callable[[str], str]) -> str:
    """The request credential, or "" when there is none (F-048, F-049, F-233).

    `header(name)` / `query(name)` give the first value or "". Header credentials are trimmed and
    win: api_key mode reads X-API-Key then Authorization, jwt mode the reverse. The query is used
    only when no header credential is present (api_key: apiKey then token; jwt: token then
    apiKey) and, as in Go, its value is not trimmed. Mode none → "". Unknown mode → ValueError.
    """
    _check_mode(mode)
    if mode == "none":
        return ""
    x_api_key = go_trim_space(header("X-API-Key"))
    if mode == "api_key":
        cred = x_api_key or _authorization_token(header("Authorization"))
        first, second = "apiKey", "token"
    else:
        cred = _authorization_token(header("Authorization")) or x_api_key
        first, second = "token", "apiKey"
    if cred:
        return cred
    return query(first) or query(second)


def signal_auth_message_credential(api_key: str, token: str) -> str:
    """The credential of a `/webrtc/signal` `{type:"auth"}` message (F-050).

    `apiKey` when non-empty, otherwise `token`, then trimmed. A non-empty result overrides the
    header/query credential; "" means "fall back to them" (so a blank `apiKey` does not fall
    back to `token`, as in Go).
    """
    return go_trim_space(api_key or token)


def udp_auth_message_credential(mode: str, api_key: str, token: str) -> str:
    """F-088: api_key mode uses `apiKey`, else `token`; jwt mode `token`, else `apiKey`. Not trimmed."""
    _check_mode(mode)
    if mode == "api_key":
        return api_key or token
    if mode == "jwt":
        return token or api_key
    return ""


class UdpAuthMessageError(Exception):
    """A rejected `/udp` first message: send WS err {code, message} then close(close_code, message)."""

    code: str
    message: str
    close_code: int

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code

    def __repr__(self) -> str:
        return f"UdpAuthMessageError({self.code!r}, {self.message!r}, {self.close_code})"


_AUTH_REQUIRED = ("unauthorized", "authentication required", 1008)
_BAD_AUTH_MESSAGE_TYPES = ("bad_message", "invalid auth message", 1003)
_CONFLICTING_AUTH_MESSAGE = ("bad_message", "invalid auth message", 1008)
_MISSING_CREDENTIALS = ("unauthorized", "missing credentials", 1008)


class _Pairs(list[tuple[str, Any]]):
    """A decoded JSON object as ordered pairs (Go's struct decoding sees duplicates in order)."""


def _ignore_number(_s: str) -> int:
    return 0  # numbers are never inspected; avoids int() limits on huge digit strings


_LENIENT_DECODER = json.JSONDecoder(
    object_pairs_hook=_Pairs,
    parse_float=_ignore_number,
    parse_int=_ignore_number,
    parse_constant=_reject_constant,
)


def _string_fields(pairs: _Pairs, names: tuple[str, ...]) -> tuple[dict[str, str], bool]:
    """Go `json.Unmarshal` into a struct of string fields: keys match case-insensitively, later keys
    win, null leaves a field unchanged, any other non-string is a type error."""
    out = dict.fromkeys(names, "")
    ok = True
    for key, value in pairs:
        name = _go_fold(key)
        if name not in out or value is None:
            continue
        if type(value) is str:
            out[name] = _go_string(value)
        else:
            ok = False
    return out, ok


def parse_udp_auth_message(mode: str, text: str | bytes) -> str:
    """The credential of a text first message on `/udp` (F-086 .. F-088), before verification.

    Raises UdpAuthMessageError for: not JSON / not an object / `type` != "auth" (unauthorized,
    "authentication required", 1008); `apiKey` or `token` not a string (bad_message, "invalid
    auth message", 1003); both present and different (bad_message, 1008); no credential
    (unauthorized, "missing credentials", 1008). A binary first message is the caller's
    "authentication required" case. Unknown fields are allowed.
    """
    _check_mode(mode)
    if isinstance(text, bytes):
        text = _utf8_text(text)
    try:
        msg = _LENIENT_DECODER.decode(text)
    except (ValueError, RecursionError):
        raise UdpAuthMessageError(*_AUTH_REQUIRED) from None
    if msg is None:
        msg = _Pairs()  # JSON null decodes into a zero struct in Go
    elif not isinstance(msg, _Pairs):
        raise UdpAuthMessageError(*_AUTH_REQUIRED)
    envelope, ok = _string_fields(msg, ("type",))
    if not ok or envelope["type"] != "auth":
        raise UdpAuthMessageError(*_AUTH_REQUIRED)
    fields, ok = _string_fields(msg, ("type", "apikey", "token"))
    if not ok:
        raise UdpAuthMessageError(*_BAD_AUTH_MESSAGE_TYPES)
    api_key, token = fields["apikey"], fields["token"]
    if api_key and token and api_key != token:
        raise UdpAuthMessageError(*_CONFLICTING_AUTH_MESSAGE)
    cred = udp_auth_message_credential(mode, api_key, token)
    if not cred and mode != "none":
        raise UdpAuthMessageError(*_MISSING_CREDENTIALS)
    return cred


# --- Verification ---------------------------------------------------------------------------------


@attrs.frozen
class AuthResult:
    """`credential` is kept for the L2 bridge (F-047); `session_key` is the JWT sid or "" (F-045)."""

    credential: str
    session_key: str


@attrs.frozen
class Authenticator:
    """AUTH_MODE plus its secret (F-036). Presence of API_KEY / JWT_SECRET is the config's job."""

    mode: str = attrs.field(validator=attrs.validators.in_(AUTH_MODES))
    api_key: str = ""
    jwt_secret: bytes = b""

    def verify(self, credential: str, now: int) -> AuthResult:
        """Check an extracted credential (already trimmed where Go trims it). `now`: Unix seconds.

        api_key (F-037): both the credential and the configured key must be non-empty; the key is
        compared as configured (untrimmed) in constant time. jwt: verify_jwt, sid is the session key.
        """
        if self.mode == "none":
            return AuthResult("", "")
        if not credential:
            raise AuthError("missing", "missing credentials")
        if self.mode == "api_key":
            given = credential.encode("utf-8", "surrogatepass")
            expected = self.api_key.encode("utf-8", "surrogatepass")
            # Both operands are evaluated so a wrong key costs the same whether or not one is set.
            matches = hmac.compare_digest(given, expected)
            if not expected or not matches:
                raise AuthError("invalid", "invalid credentials")
            return AuthResult(credential, "")
        claims = verify_jwt(credential, self.jwt_secret, now)
        return AuthResult(credential, claims.sid)

    def authorize(self, header: Callable[[str], str], query: Callable[[str], str], now: int) -> AuthResult:
        """Extract (F-048/F-049) then verify; no credential → AuthError("missing")."""
        if self.mode == "none":
            return AuthResult("", "")
        return self.verify(credential_from_request(self.mode, header, query), now)
