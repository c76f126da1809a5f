"""Fuzzing the frame decoder (spec section 13, F-116 .. F-121): only FrameError, and agreement with an
independent reference decoder, the encoders and the reply encoder. Fast profile; the 10^6-input run
is benchmarks/fuzz_runner.py."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.fuzz_targets import check_frame, gen_frame

MAX_PAYLOADS = st.sampled_from((0, 1, 8, 100, 1200, 65535))


@settings(max_examples=800, deadline=None)
@given(st.randoms(use_true_random=False))
def test_structured_frames_decode_like_the_reference(rnd: random.Random) -> None:
    """F-116..F-121 on near-valid v1/v2 frames with boundary payload sizes and mutations."""
    check_frame(gen_frame(rnd))


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80), MAX_PAYLOADS)
def test_arbitrary_bytes_raise_only_frame_error(buf: bytes, max_payload: int) -> None:
    """F-119: any byte string either decodes (and re-encodes to itself) or raises FrameError."""
    check_frame((buf, max_payload))


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from((b"\xa2\x02\x04\x00", b"\xa2\x02\x06\x00", b"\xa2\x02", b"\xa2\x03", b"")),
    st.binary(max_size=40),
    MAX_PAYLOADS,
)
def test_v2_prefixes_with_arbitrary_tails(prefix: bytes, tail: bytes, max_payload: int) -> None:
    """F-118: the v2 checks in order (length, type, af, length for af 6, payload size)."""
    check_frame((prefix + tail, max_payload))
