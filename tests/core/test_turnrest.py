"""TURN REST credentials (F-034)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aero_relay.core.turnrest import (
    TurnRestCredential,
    TurnRestError,
    new_session_id,
    turn_rest_credential,
    validate_turn_rest,
)


def _make(
    *,
    secret: str = "shared-secret",
    ttl_seconds: int = 3600,
    prefix: str = "aero",
    now_unix: int = 1_700_000_000,
    session_id: str = "session123",
) -> TurnRestCredential:
    """The F-034 fixed-time vector, with overrides."""
    return turn_rest_credential(
        secret=secret, ttl_seconds=ttl_seconds, prefix=prefix, now_unix=now_unix, session_id=session_id
    )


def _expected_credential(secret: bytes, username: str) -> str:
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()


def test_fixed_time_vector_username_is_expiry_prefix_and_session_id() -> None:
    """F-034: now=1700000000, ttl=3600, prefix aero, sid session123."""
    cred = _make()
    assert cred.username == "1700003600:aero:session123"


def test_fixed_time_vector_credential_is_base64_hmac_sha1_of_username() -> None:
    """F-034: credential = base64.StdEncoding(HMAC-SHA1(secret, username))."""
    cred = _make()
    assert cred.credential == _expected_credential(b"shared-secret", "1700003600:aero:session123")
    # Pinned literal (also checked with `openssl dgst -sha1 -hmac shared-secret -binary | base64`).
    assert cred == TurnRestCredential("1700003600:aero:session123", "7sV7vMb0GsebuVCU0kM0pILAQfc=")


def test_expiry_is_now_plus_ttl() -> None:
    cred = turn_rest_credential(secret="secret", ttl_seconds=10, prefix="aero", now_unix=42, session_id="abc")
    assert cred.username == "52:aero:abc"


@given(
    secret=st.text(min_size=1),
    ttl=st.integers(min_value=1, max_value=2**40),
    now=st.integers(min_value=0, max_value=2**40),
    sid=st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
)
def test_credential_is_28_char_padded_base64_of_a_20_byte_mac(
    secret: str, ttl: int, now: int, sid: str
) -> None:
    secret = secret.encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # keep it plain UTF-8
    cred = turn_rest_credential(secret=secret, ttl_seconds=ttl, prefix="aero", now_unix=now, session_id=sid)
    assert len(cred.credential) == 28
    assert cred.credential.endswith("=")
    assert cred.credential == _expected_credential(secret.encode(), cred.username)


def test_secret_bytes_of_undecodable_env_values_round_trip() -> None:
    """os.environ keeps undecodable bytes as surrogateescape; Go signs the raw bytes."""
    raw_secret = b"sec\xffret"
    cred = _make(secret=raw_secret.decode("utf-8", "surrogateescape"))
    assert cred.credential == _expected_credential(raw_secret, cred.username)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"secret": ""}, "shared secret is required"),
        ({"ttl_seconds": 0}, "TTLSeconds must be > 0"),
        ({"ttl_seconds": -5}, "TTLSeconds must be > 0"),
        ({"prefix": ""}, "UsernamePrefix is required"),
        ({"prefix": "ae:ro"}, "UsernamePrefix must not contain ':'"),
    ],
)
def test_invalid_settings_are_rejected_with_the_original_text(override: dict[str, Any], message: str) -> None:
    """F-034: the generator's checks, in the original's order."""
    with pytest.raises(TurnRestError) as exc:
        _make(**override)
    assert str(exc.value) == message
    settings: dict[str, Any] = {"secret": "s", "ttl_seconds": 1, "prefix": "p", **override}
    with pytest.raises(TurnRestError) as exc:
        validate_turn_rest(**settings)
    assert str(exc.value) == message


def test_blank_but_non_empty_secret_is_accepted_by_the_generator() -> None:
    """Only the empty secret is refused here; config decides that a blank one means 'off'."""
    assert _make(secret=" ").credential


def test_session_id_with_colon_is_rejected() -> None:
    with pytest.raises(TurnRestError, match=r"^sessionID must not contain ':'$"):
        _make(session_id="a:b")


def test_empty_session_id_is_rejected() -> None:
    with pytest.raises(TurnRestError, match=r"^sessionID is required$"):
        _make(session_id="")


def test_turn_rest_error_is_a_value_error() -> None:
    assert issubclass(TurnRestError, ValueError)


def test_new_session_id_is_32_lowercase_hex_of_16_bytes() -> None:
    """F-034: sid is 16 random bytes as 32 lowercase hex."""
    assert new_session_id(bytes(range(0xF0, 0x100))) == "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
    assert new_session_id(b"\x00" * 16) == "0" * 32


@pytest.mark.parametrize("size", [0, 15, 17])
def test_new_session_id_requires_exactly_16_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="16"):
        new_session_id(b"\x01" * size)


def test_generated_session_id_is_accepted_by_the_generator() -> None:
    sid = new_session_id(b"\xab" * 16)
    assert _make(session_id=sid).username == f"1700003600:aero:{sid}"
