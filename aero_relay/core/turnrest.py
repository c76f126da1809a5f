"""coturn-compatible TURN REST credentials (`--use-auth-secret`, F-034).

    username   = "<now_unix + ttl>:<prefix>:<session_id>"
    credential = base64(HMAC-SHA1(key=shared secret, msg=username))

Sans-IO: the caller supplies the wall-clock Unix time (UTC seconds; coturn compares it with its
own clock, so this one is not monotonic) and the random bytes for the session id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import attrs

__all__ = [
    "TurnRestCredential",
    "TurnRestError",
    "new_session_id",
    "turn_rest_credential",
    "validate_turn_rest",
]

SESSION_ID_BYTES = 16


class TurnRestError(ValueError):
    """The generator's inputs are invalid; the text is the original's (F-034)."""


@attrs.frozen
class TurnRestCredential:
    username: str
    credential: str


def _to_bytes(s: str) -> bytes:
    # surrogateescape gives back the raw bytes of an undecodable env value, as Go's []byte(s) would.
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


def validate_turn_rest(*, secret: str, ttl_seconds: int, prefix: str) -> None:
    """Check the generator settings, raising TurnRestError with the original's text (F-034)."""
    if secret == "":
        raise TurnRestError("shared secret is required")
    if ttl_seconds <= 0:
        raise TurnRestError("TTLSeconds must be > 0")
    if prefix == "":
        raise TurnRestError("UsernamePrefix is required")
    if ":" in prefix:
        raise TurnRestError("UsernamePrefix must not contain ':'")


def turn_rest_credential(
    *, secret: str, ttl_seconds: int, prefix: str, now_unix: int, session_id: str
) -> TurnRestCredential:
    """One TURN REST credential (F-034). `:` separates the username fields, so neither the
    prefix nor the session id may contain one (coturn reads the expiry up to the first `:`)."""
    validate_turn_rest(secret=secret, ttl_seconds=ttl_seconds, prefix=prefix)
    if session_id == "":
        raise TurnRestError("sessionID is required")
    if ":" in session_id:
        raise TurnRestError("sessionID must not contain ':'")
    username = f"{now_unix + ttl_seconds}:{prefix}:{session_id}"
    mac = hmac.new(_to_bytes(secret), _to_bytes(username), hashlib.sha1).digest()
    return TurnRestCredential(username=username, credential=base64.b64encode(mac).decode("ascii"))


def new_session_id(random_bytes: bytes) -> str:
    """16 random bytes as 32 lowercase hex digits (the shell passes os.urandom(16))."""
    if len(random_bytes) != SESSION_ID_BYTES:
        raise ValueError(f"session id needs {SESSION_ID_BYTES} random bytes, got {len(random_bytes)}")
    return random_bytes.hex()
