"""Fuzzing the signaling parsers (spec sections 7-9, F-054, F-059, F-070, F-071): only SignalingError,
per-type invariants of accepted messages, text and bytes judged alike."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.fuzz_targets import check_signal, gen_signal

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(("type", "apiKey", "token", "sdp", "candidate", "code", "message", "x"))
            | st.text(),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_generated_messages_parse_or_raise_signaling_error(rnd: random.Random) -> None:
    """F-070/F-071 on near-valid messages of every type, duplicates, folded keys and mutations."""
    check_signal(gen_signal(rnd))


@settings(max_examples=500, deadline=None)
@given(JSON)
def test_arbitrary_json_values_parse_or_raise_signaling_error(value: object) -> None:
    check_signal(json.dumps(value))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_signaling_error(text: str) -> None:
    check_signal(text)
