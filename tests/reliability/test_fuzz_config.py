"""Fuzzing the config loader (spec section 20, F-001, F-002): any environment and command line either
loads or raises ConfigError/HelpRequested (exit 2 / usage), never anything else."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from aero_relay.config import SETTINGS
from tests.reliability.fuzz_targets import check_config, gen_config

ENV_NAMES = st.sampled_from([name for s in SETTINGS for name in s.envs])
FLAGS = st.sampled_from([flag for s in SETTINGS for flag in s.flags])


@settings(max_examples=800, deadline=None)
@given(st.randoms(use_true_random=False))
def test_generated_configs_load_or_raise_config_error(rnd: random.Random) -> None:
    """Typed values near their grammar (durations, ints, bools, ports, URLs, lists) and flags."""
    check_config(gen_config(rnd))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(ENV_NAMES, st.text(max_size=20), max_size=4))
def test_arbitrary_env_values_load_or_raise_config_error(env: dict[str, str]) -> None:
    check_config(({"AUTH_MODE": "none", **env}, []))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("-", "--")), FLAGS, st.text(max_size=12)), max_size=3))
def test_arbitrary_flags_load_or_raise_config_error(flags: list[tuple[str, str, str]]) -> None:
    check_config(({"AUTH_MODE": "none"}, [f"{dash}{flag}={value}" for dash, flag, value in flags]))
