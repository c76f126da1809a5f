"""Fuzzing the destination policy (spec section 16, F-134 .. F-139, F-228): parsing raises only
PolicyError, check() never raises, v4-mapped is judged as IPv4, and the special-range decision
agrees with an independent ``ipaddress`` oracle for every embedded-IPv4 spelling."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.fuzz_targets import check_policy, gen_policy

PORTS = st.integers(min_value=0, max_value=65535)


@settings(max_examples=1000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_generated_policies_and_addresses(rnd: random.Random) -> None:
    """Presets, CIDR/port lists and addresses in every IPv6 spelling of an IPv4 address."""
    check_policy(gen_policy(rnd))


@settings(max_examples=800, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=16, max_size=16) | st.binary(max_size=17), PORTS), max_size=4))
def test_arbitrary_addresses_match_the_special_range_oracle(probes: list[tuple[bytes, int]]) -> None:
    check_policy(({}, probes))


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            (
                "DESTINATION_POLICY_PRESET",
                "ALLOW_PRIVATE_NETWORKS",
                "ALLOW_UDP_CIDRS",
                "DENY_UDP_CIDRS",
                "ALLOW_UDP_PORTS",
                "DENY_UDP_PORTS",
            )
        ),
        st.text(alphabet="0123456789abcdef.:/,- x", max_size=25),
        max_size=3,
    )
)
def test_arbitrary_policy_env_parses_or_raises_policy_error(env: dict[str, str]) -> None:
    check_policy((env, [(b"\x08\x08\x08\x08", 53)]))
