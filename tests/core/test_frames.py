"""UDP relay frame codec v1/v2 (spec §13, F-116 .. F-121)."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aero_relay.core.frames import (
    AF_INET,
    AF_INET6,
    MAX_FRAME_OVERHEAD_BYTES,
    V2_MAGIC,
    V2_VERSION,
    Frame,
    FrameError,
    _make,
    decode,
    encode,
    encode_reply,
    encode_v1,
    encode_v2,
    ip_to_text,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
MAX = 1200
IP4 = bytes([192, 0, 2, 1])
IP6 = ipaddress.IPv6Address("2001:db8::1").packed
MAPPED = ipaddress.IPv6Address("::ffff:192.0.2.1").packed


def _udp_relay_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / "udp-relay.json").read_text())["vectors"]
    for c in cases:
        c["frame"] = base64.b64decode(c["frame_b64"])
        if "payload_b64" in c:
            c["payload"] = base64.b64decode(c["payload_b64"])
    return cases


def _conformance_cases() -> list[dict[str, Any]]:
    doc = json.loads((VECTORS / "aero-vectors-v2.json").read_text())
    cases: list[dict[str, Any]] = doc["aero-udp-relay-v1v2"]["vectors"]
    for c in cases:
        c["frame"] = bytes.fromhex(c["frameHex"])
        if "payloadHex" in c:
            c["payload"] = bytes.fromhex(c["payloadHex"])
    return cases


def _params(valid: bool) -> list[Any]:
    return [
        pytest.param(c, id=f"{source}:{c['name']}")
        for source, cases in (("udp-relay", _udp_relay_cases()), ("aero-vectors-v2", _conformance_cases()))
        for c in cases
        if bool(c.get("expectError")) != valid
    ]


VALID = _params(valid=True)
INVALID = _params(valid=False)


def _err(buf: bytes, max_payload: int = MAX) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode(buf, max_payload=max_payload)
    return info.value


# --- golden vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VALID)
def test_vector_decodes_to_its_fields(case: dict[str, Any]) -> None:
    frame = decode(case["frame"], max_payload=MAX)
    assert frame.version == case["version"]
    assert frame.guest_port == case["guestPort"]
    assert frame.remote_ip == ipaddress.ip_address(case["remoteIp"]).packed
    assert frame.remote_ip_text == case["remoteIp"]
    assert frame.remote_port == case["remotePort"]
    assert frame.payload == case["payload"]


@pytest.mark.parametrize("case", VALID)
def test_vector_reencodes_byte_for_byte_in_its_version(case: dict[str, Any]) -> None:
    ip = ipaddress.ip_address(case["remoteIp"]).packed
    fields = (case["guestPort"], ip, case["remotePort"], case["payload"])
    enc = encode_v1 if case["version"] == 1 else encode_v2
    assert enc(*fields) == case["frame"]
    assert encode(Frame(case["version"], *fields)) == case["frame"]


@pytest.mark.parametrize("case", INVALID)
def test_vector_error_contains_expected_text(case: dict[str, Any]) -> None:
    err = _err(case["frame"])
    assert case["errorContains"] in str(err)
    assert err.kind != "payload_too_large"


def test_both_vector_files_hold_the_same_frames() -> None:
    assert [c["frame"] for c in _udp_relay_cases()] == [c["frame"] for c in _conformance_cases()]


# --- F-116 dispatch -------------------------------------------------------------------------------


def test_a2_02_prefix_is_v2() -> None:
    """F-116."""
    assert decode(encode_v2(1, IP4, 2, b"x"), max_payload=MAX).version == 2


@pytest.mark.parametrize("second", [0x00, 0x01, 0x03, 0x7F, 0xFF])
def test_other_a2_prefixes_are_v1_not_rejected(second: int) -> None:
    """F-116: ``A2 03..`` is a v1 frame from guest port 0xA2xx (e.g. a Linux ephemeral port)."""
    buf = bytes([V2_MAGIC, second]) + IP4 + b"\x00\x35payload"
    frame = decode(buf, max_payload=MAX)
    assert frame == Frame(1, (V2_MAGIC << 8) | second, IP4, 53, b"payload")


def test_v1_from_guest_port_0xa202_is_read_as_v2() -> None:
    """F-116: the one ambiguous v1 guest port; its frame decodes as v2, not as the v1 that was sent."""
    with pytest.raises(FrameError) as info:
        decode(encode_v1(0xA202, bytes([10, 1, 0, 2]), 53, b"data"), max_payload=MAX)
    assert info.value.kind == "unsupported_type"  # the second IP octet (1) became the type byte
    misread = decode(encode_v1(0xA202, bytes([4, 0, 0, 2]), 53, b"data"), max_payload=MAX)
    assert misread.version == 2


@pytest.mark.parametrize("buf", [b"", b"\xa2", b"\x00"])
def test_under_two_bytes_is_v1_too_short(buf: bytes) -> None:
    """F-116/F-117."""
    assert _err(buf).kind == "too_short"


# --- F-117 v1 -------------------------------------------------------------------------------------


def test_v1_layout() -> None:
    """F-117: guest_port u16BE | ipv4 | remote_port u16BE | payload."""
    assert encode_v1(0x1234, IP4, 0xABCD, b"pl") == b"\x12\x34" + IP4 + b"\xab\xcd" + b"pl"


def test_v1_seven_bytes_is_too_short_with_go_message() -> None:
    """F-117."""
    err = _err(bytes(7))
    assert (err.kind, str(err)) == ("too_short", "udpproto: datagram frame too short")


def test_v1_empty_payload_is_valid() -> None:
    assert decode(bytes(8), max_payload=MAX) == Frame(1, 0, bytes(4), 0, b"")


def test_v1_payload_at_max_is_accepted() -> None:
    """F-117: the bound is ``len - 8 > max``."""
    assert len(decode(bytes(8 + MAX), max_payload=MAX).payload) == MAX


def test_v1_payload_over_max_is_too_large_with_go_message() -> None:
    """F-117/F-119."""
    err = _err(bytes(8 + MAX + 1))
    assert (err.kind, str(err)) == ("payload_too_large", "udpproto: payload too large: 1201 > 1200")


def test_max_payload_zero_allows_only_empty() -> None:
    assert decode(bytes(8), max_payload=0).payload == b""
    assert _err(bytes(9), max_payload=0).kind == "payload_too_large"


# --- F-118 v2 and its check order -----------------------------------------------------------------


def _v2(af: int, mtype: int, rest: bytes) -> bytes:
    return bytes([V2_MAGIC, V2_VERSION, af, mtype]) + rest


def test_v2_layouts() -> None:
    """F-118: A2 02 af type guest_port ip remote_port payload."""
    assert encode_v2(0x1234, IP4, 0xABCD, b"p") == b"\xa2\x02\x04\x00\x12\x34" + IP4 + b"\xab\xcd" + b"p"
    assert encode_v2(0x1234, IP6, 0xABCD, b"p") == b"\xa2\x02\x06\x00\x12\x34" + IP6 + b"\xab\xcd" + b"p"


def test_v2_under_12_bytes_is_too_short_before_type_and_af() -> None:
    """F-118 check 1: length beats a bad type and a bad af."""
    assert _err(_v2(0xFF, 0x01, bytes(7))).kind == "too_short"


def test_v2_bad_type_beats_bad_af_and_short_ipv6() -> None:
    """F-118 check 2: type is checked before af, and before the af 6 length."""
    err = _err(_v2(0xFF, 0x01, bytes(8)))
    assert (err.kind, str(err)) == ("unsupported_type", "udpproto: v2 unsupported message type: 0x01")
    assert _err(_v2(AF_INET6, 0xAB, bytes(8))).kind == "unsupported_type"


def test_v2_type_message_is_two_lowercase_hex_digits() -> None:
    assert str(_err(_v2(AF_INET, 0xAB, bytes(8)))) == "udpproto: v2 unsupported message type: 0xab"


def test_v2_ipv4_needs_exactly_12_bytes() -> None:
    """F-118 check 3: af 4 at 12 bytes is a complete frame with an empty payload."""
    assert decode(_v2(AF_INET, 0, bytes(8)), max_payload=MAX) == Frame(2, 0, bytes(4), 0, b"")


@pytest.mark.parametrize("length", [12, 22, 23])
def test_v2_ipv6_under_24_bytes_is_too_short(length: int) -> None:
    """F-118 check 3: af 6 needs 24 bytes."""
    assert _err(_v2(AF_INET6, 0, bytes(length - 4))).kind == "too_short"


def test_v2_ipv6_at_24_bytes_is_valid() -> None:
    assert decode(_v2(AF_INET6, 0, bytes(20)), max_payload=MAX) == Frame(2, 0, bytes(16), 0, b"")


@pytest.mark.parametrize("af", [0x00, 0x05, 0x41, 0xFF])
def test_v2_unknown_af_with_go_message(af: int) -> None:
    """F-118 check 4 (af is checked after type)."""
    err = _err(_v2(af, 0, bytes(30)))
    assert (err.kind, str(err)) == ("unknown_af", f"udpproto: v2 unknown address family: 0x{af:02x}")


@pytest.mark.parametrize(("ip", "header"), [(IP4, 12), (IP6, 24)])
def test_v2_max_payload_boundary(ip: bytes, header: int) -> None:
    """F-118 check 5: payload == max is accepted, max + 1 is payload_too_large."""
    assert len(decode(encode_v2(1, ip, 2, bytes(MAX)), max_payload=MAX).payload) == MAX
    err = _err(encode_v2(1, ip, 2, bytes(MAX + 1)))
    assert (err.kind, str(err)) == ("payload_too_large", "udpproto: payload too large: 1201 > 1200")


def test_v2_short_ipv6_beats_payload_size() -> None:
    assert _err(_v2(AF_INET6, 0, bytes(10)), max_payload=0).kind == "too_short"


# --- F-119 / F-121 --------------------------------------------------------------------------------


def test_frame_error_is_a_value_error() -> None:
    """F-119: callers branch on ``kind``; it is still a ValueError for generic handlers."""
    assert isinstance(_err(b""), ValueError)


def test_max_overhead_is_the_v2_ipv6_header() -> None:
    """F-121."""
    assert MAX_FRAME_OVERHEAD_BYTES == 24 == len(encode_v2(0, IP6, 0, b""))
    assert len(encode_v1(0, IP4, 0, b"")) < MAX_FRAME_OVERHEAD_BYTES


# --- encoders ----------------------------------------------------------------------------------------


def test_encode_v1_rejects_an_ipv6_address() -> None:
    with pytest.raises(ValueError, match="v1 only supports IPv4"):
        encode(Frame(1, 1, IP6, 2, b""))


@pytest.mark.parametrize("ip", [b"", b"\x01\x02\x03", bytes(5), bytes(15), bytes(17)])
def test_encoders_reject_bad_ip_lengths(ip: bytes) -> None:
    with pytest.raises(ValueError):
        encode_v1(1, ip, 2, b"")
    with pytest.raises(ValueError):
        encode_v2(1, ip, 2, b"")
    with pytest.raises(ValueError):
        encode_reply(1, ip, 2, b"", use_v2=True)


@pytest.mark.parametrize(("guest", "remote"), [(-1, 1), (65536, 1), (1, -1), (1, 65536)])
def test_encoders_reject_out_of_range_ports_as_value_error(guest: int, remote: int) -> None:
    with pytest.raises(ValueError, match="port out of range"):
        encode_v1(guest, IP4, remote, b"")
    with pytest.raises(ValueError, match="port out of range"):
        encode_v2(guest, IP6, remote, b"")
    with pytest.raises(ValueError, match="port out of range"):
        encode_reply(guest, IP4, remote, b"", use_v2=False)


def test_encode_rejects_unknown_version() -> None:
    with pytest.raises(ValueError):
        encode(Frame(3, 1, IP4, 2, b""))


# --- F-120 encode_reply ---------------------------------------------------------------------------


def test_reply_from_ipv4_is_v1_unless_use_v2() -> None:
    """F-120."""
    assert encode_reply(7, IP4, 53, b"r", use_v2=False) == encode_v1(7, IP4, 53, b"r")


def test_reply_from_ipv4_is_v2_af4_when_use_v2() -> None:
    """F-120: v2 for IPv4 only when PREFER_V2 and the client has sent v2 (computed by the caller)."""
    assert encode_reply(7, IP4, 53, b"r", use_v2=True) == encode_v2(7, IP4, 53, b"r")


@pytest.mark.parametrize("use_v2", [False, True])
@pytest.mark.parametrize("ip", [IP6, MAPPED], ids=["ipv6", "v4-mapped"])
def test_reply_from_16_byte_source_is_always_v2_af6(ip: bytes, use_v2: bool) -> None:
    """F-120: IPv6 sources, including v4-mapped ones, are v2/af 6 and are not unmapped."""
    out = encode_reply(7, ip, 53, b"r", use_v2=use_v2)
    assert out[:4] == b"\xa2\x02\x06\x00"
    assert decode(out, max_payload=MAX) == Frame(2, 7, ip, 53, b"r")


# --- Frame helpers ---------------------------------------------------------------------------------


def test_remote_ip_text() -> None:
    assert Frame(1, 1, IP4, 2, b"").remote_ip_text == "192.0.2.1"
    assert Frame(2, 1, IP6, 2, b"").remote_ip_text == "2001:db8::1"
    assert ip_to_text(MAPPED) == "::ffff:192.0.2.1"
    with pytest.raises(ValueError):
        ip_to_text(bytes(5))


def test_fast_constructor_matches_attrs_constructor() -> None:
    made = _make(2, 1, IP6, 2, b"p")
    assert made == Frame(2, 1, IP6, 2, b"p")
    assert type(made) is Frame
    assert hash(made) == hash(Frame(2, 1, IP6, 2, b"p"))


def test_decoded_payload_is_bytes() -> None:
    """The payload goes straight to ``sendto`` and keeps ``Frame`` hashable."""
    payload = decode(encode_v1(1, IP4, 2, b"payload"), max_payload=MAX).payload
    assert type(payload) is bytes
    assert payload == b"payload"


# --- properties -----------------------------------------------------------------------------------

ports = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=MAX)
# Guest port 0xA202 is excluded from v1: its frames are read as v2 (test_v1_from_guest_port_0xa202...).
v1_frames = st.builds(
    Frame, st.just(1), ports.filter(lambda p: p != 0xA202), st.binary(min_size=4, max_size=4), ports, payloads
)
v2_frames = st.builds(
    Frame,
    st.just(2),
    ports,
    st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
    ports,
    payloads,
)


@settings(max_examples=300)
@given(v1_frames | v2_frames)
def test_round_trip(frame: Frame) -> None:
    assert decode(encode(frame), max_payload=MAX) == frame


@settings(max_examples=300)
@given(st.binary(max_size=64) | st.binary(min_size=1200, max_size=1260), st.integers(0, MAX))
def test_decode_raises_only_frame_error_and_bounds_payload(buf: bytes, max_payload: int) -> None:
    try:
        frame = decode(buf, max_payload=max_payload)
    except FrameError as err:
        assert err.kind in ("too_short", "payload_too_large", "unsupported_type", "unknown_af")
        return
    assert len(frame.payload) <= max_payload
    assert len(frame.remote_ip) in ((4,) if frame.version == 1 else (4, 16))
    assert encode(frame) == buf


@settings(max_examples=300)
@given(
    st.sampled_from([V2_MAGIC]),
    st.sampled_from([V2_VERSION]),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=40),
    st.integers(0, 16),
)
def test_decode_of_v2_prefixed_bytes_raises_only_frame_error(
    magic: int, version: int, af: int, mtype: int, rest: bytes, max_payload: int
) -> None:
    buf = bytes([magic, version, af, mtype]) + rest
    try:
        frame = decode(buf, max_payload=max_payload)
    except FrameError:
        return
    assert frame.version == 2
    assert len(frame.payload) <= max_payload
    assert encode(frame) == buf
