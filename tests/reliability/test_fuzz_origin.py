"""Fuzzing the origin normaliser and policy (spec section 3, F-014 .. F-024): never raises,
normalisation is idempotent and canonical, and the policy only ever echoes a normalised origin."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.fuzz_targets import check_origin, gen_origin


@settings(max_examples=800, deadline=None)
@given(st.randoms(use_true_random=False))
def test_generated_origins_normalise_idempotently(rnd: random.Random) -> None:
    """Schemes, IPv4 spellings, IPv6, ports, user info, paths, whitespace and mutations."""
    check_origin(gen_origin(rnd))


@settings(max_examples=800, deadline=None)
@given(st.text(max_size=50))
def test_arbitrary_text_never_crashes_the_origin_check(raw: str) -> None:
    check_origin(raw)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(("http://", "https://", "HTTPS://")),
    st.text(alphabet="abcdefx0123456789.:[]%-_~!$&'()*+;=<>\"@/?#", max_size=30),
)
def test_origin_like_text_never_crashes_the_origin_check(scheme: str, rest: str) -> None:
    check_origin(scheme + rest)
