"""Fuzzing the HS256 JWT verifier (spec section 5, F-038 .. F-043): only AuthError, and an accepted
token is always canonical, signed with our secret over its exact text, and within its time window."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.fuzz_targets import JWT_NOW, check_jwt, gen_jwt

B64ISH = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. ", max_size=120
)


@settings(max_examples=800, deadline=None)
@given(st.randoms(use_true_random=False))
def test_generated_tokens_verify_only_when_really_valid(rnd: random.Random) -> None:
    """Signed tokens with random header/claim types, wrong secrets and one-character mutations."""
    check_jwt(gen_jwt(rnd))


@settings(max_examples=500, deadline=None)
@given(B64ISH | st.text(max_size=60), st.integers(min_value=0, max_value=2**40))
def test_arbitrary_strings_raise_only_auth_error(token: str, now: int) -> None:
    check_jwt((token, now))


@settings(max_examples=300, deadline=None)
@given(st.lists(B64ISH, min_size=3, max_size=3).map(".".join))
def test_three_part_strings_raise_only_auth_error(token: str) -> None:
    check_jwt((token, JWT_NOW))
