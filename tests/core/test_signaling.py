"""Signaling message schema and HTTP offer bodies (spec §7-9)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aero_relay.core.signaling import (
    MESSAGE_TYPES,
    IceCandidate,
    OfferBodyError,
    OfferRequest,
    SessionDescription,
    SignalingError,
    SignalMessage,
    answer_message,
    candidate_message,
    error_message,
    offer_response_v1,
    parse_offer_request_v1,
    parse_signal_message,
    parse_webrtc_offer_body,
    webrtc_offer_response,
)

BODY_PREFIX = 'invalid offer request body (expected {"sdp":{...}} or a raw SessionDescription): '


def signal_error(text: str | bytes) -> str:
    with pytest.raises(SignalingError) as info:
        parse_signal_message(text)
    return info.value.message


def offer_v1_error(body: bytes) -> str:
    with pytest.raises(OfferBodyError) as info:
        parse_offer_request_v1(body)
    return info.value.message


def webrtc_offer_error(body: bytes) -> str:
    with pytest.raises(OfferBodyError) as info:
        parse_webrtc_offer_body(body)
    return info.value.message


def msg(type_: str, **kw: object) -> SignalMessage:
    fields: dict[str, object] = dict(
        api_key=None, token=None, sdp=None, candidate=None, code=None, message=None
    )
    fields.update(kw)
    return SignalMessage(type=type_, **fields)  # type: ignore[arg-type]


# --- errors -----------------------------------------------------------------------------------------


def test_signaling_error_carries_bad_message_code_and_ws_close() -> None:
    """F-070: a parse failure is sent as bad_message, then Close(1008, "bad message")."""
    err = SignalingError("boom")
    assert isinstance(err, ValueError)
    assert (err.message, err.code, err.ws_close_code, err.ws_close_reason) == (
        "boom",
        "bad_message",
        1008,
        "bad message",
    )


def test_offer_body_error_is_a_400_bad_message() -> None:
    """F-054, F-059: bad offer bodies are 400 {"code":"bad_message",...}."""
    err = OfferBodyError("invalid offer")
    assert isinstance(err, SignalingError)
    assert (err.status, err.code, err.message, str(err)) == (
        400,
        "bad_message",
        "invalid offer",
        "invalid offer",
    )


# --- F-070: strict decoding -------------------------------------------------------------------------


def test_valid_auth_message_parses() -> None:
    assert parse_signal_message('{"type":"auth","apiKey":"k"}') == msg("auth", api_key="k")


def test_unknown_top_level_field_is_rejected() -> None:
    """F-070."""
    assert signal_error('{"type":"close","extra":1}') == 'json: unknown field "extra"'


def test_unknown_field_inside_sdp_is_rejected() -> None:
    """F-070: DisallowUnknownFields is recursive."""
    text = '{"type":"offer","sdp":{"type":"offer","sdp":"v=0","x":true}}'
    assert signal_error(text) == 'json: unknown field "x"'


def test_unknown_field_inside_candidate_is_rejected() -> None:
    """F-070."""
    text = '{"type":"candidate","candidate":{"candidate":"c","foundation":"1"}}'
    assert signal_error(text) == 'json: unknown field "foundation"'


def test_unknown_field_name_is_quoted_like_go() -> None:
    assert signal_error('{"a\\n\\"b":1}') == 'json: unknown field "a\\n\\"b"'


def test_trailing_object_is_rejected() -> None:
    """F-070: exactly one JSON value."""
    assert signal_error('{"type":"close"}{"type":"close"}') == "unexpected trailing data"


def test_trailing_garbage_is_rejected() -> None:
    assert signal_error('{"type":"close"} x') == "unexpected trailing data"
    assert signal_error('{"type":"close"}}') == "unexpected trailing data"


def test_surrounding_whitespace_is_allowed() -> None:
    assert parse_signal_message(' \t\r\n{"type":"close"}\n\r\t ') == msg("close")


def test_non_json_whitespace_is_not_whitespace() -> None:
    assert signal_error('{"type":"close"}\u00a0') == "unexpected trailing data"
    assert signal_error('\ufeff{"type":"close"}').startswith("invalid JSON at offset 0")


def test_validation_runs_before_the_trailing_data_check() -> None:
    """F-070: Go's ParseSignalMessage validates the first value, then looks for trailing data."""
    assert signal_error('{"type":"nope"} junk') == 'unsupported message type "nope"'
    assert signal_error('{"type":"auth"}{}') == "auth message missing apiKey/token"


def test_empty_input_is_eof() -> None:
    assert signal_error("") == "EOF"
    assert signal_error(" \n ") == "EOF"


def test_truncated_input_is_unexpected_eof() -> None:
    assert signal_error('{"type":') == "unexpected EOF"
    assert signal_error('{"type":"clo') == "unexpected EOF"
    assert signal_error('{"type":"close" ') == "unexpected EOF"


def test_syntax_error_reports_its_offset() -> None:
    assert signal_error('{"type" "close"}') == "invalid JSON at offset 8: expecting ':' delimiter"


def test_syntax_error_wins_over_an_earlier_field_error() -> None:
    """Go scans the whole value before unmarshalling it."""
    assert signal_error('{"bogus":1,"type":}') == "invalid JSON at offset 18: expecting value"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":NaN}', "invalid character 'N' looking for beginning of value"),
        ('{"type":Infinity}', "invalid character 'I' looking for beginning of value"),
        ('{"type":-Infinity}', "invalid character 'I' in numeric literal"),
    ],
)
def test_non_standard_json_constants_are_rejected(text: str, expected: str) -> None:
    assert signal_error(text) == expected


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[]", "array"), ('"auth"', "string"), ("1", "number"), ("true", "bool")],
)
def test_top_level_value_must_be_an_object(text: str, kind: str) -> None:
    """F-070: one JSON object."""
    assert (
        signal_error(text) == f"json: cannot unmarshal {kind} into Go value of type signaling.signalMessage"
    )


def test_top_level_null_decodes_to_an_empty_message() -> None:
    """Go: null into a struct has no effect, so validation sees type ""."""
    assert signal_error("null") == 'unsupported message type ""'
    assert signal_error(" null ") == 'unsupported message type ""'


def test_scalar_glued_to_garbage_is_a_syntax_error() -> None:
    """Go's decoder needs a delimiter after a top-level scalar."""
    assert signal_error("null}") == "invalid character '}' after top-level value"
    assert signal_error("1'") == "invalid character '\\'' after top-level value"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":1}', "number into Go struct field signalMessage.type of type signaling.messageType"),
        (
            '{"type":"close","sdp":"v=0"}',
            "string into Go struct field signalMessage.sdp of type signaling.sdp",
        ),
        ('{"type":"close","sdp":[]}', "array into Go struct field signalMessage.sdp of type signaling.sdp"),
        ('{"type":"auth","apiKey":{}}', "object into Go struct field signalMessage.apiKey of type string"),
        ('{"type":"auth","token":false}', "bool into Go struct field signalMessage.token of type string"),
        (
            '{"type":"offer","sdp":{"type":"offer","sdp":1}}',
            "number into Go struct field sdp.sdp.sdp of type string",
        ),
        (
            '{"type":"candidate","candidate":{"candidate":"c","sdpMLineIndex":"0"}}',
            "string into Go struct field candidate.candidate.sdpMLineIndex of type uint16",
        ),
    ],
)
def test_wrong_value_types_are_rejected(text: str, expected: str) -> None:
    assert signal_error(text) == "json: cannot unmarshal " + expected


@pytest.mark.parametrize("literal", ["-1", "65536", "1.0", "1e0", "-0", "99999999999999999999999"])
def test_sdp_mline_index_must_be_a_uint16_literal(literal: str) -> None:
    text = '{"type":"candidate","candidate":{"candidate":"c","sdpMLineIndex":' + literal + "}}"
    assert signal_error(text) == (
        f"json: cannot unmarshal number {literal} into Go struct field "
        "candidate.candidate.sdpMLineIndex of type uint16"
    )


@pytest.mark.parametrize("index", [0, 1, 65535])
def test_sdp_mline_index_accepts_the_uint16_range(index: int) -> None:
    text = '{"type":"candidate","candidate":{"candidate":"c","sdpMLineIndex":' + str(index) + "}}"
    cand = parse_signal_message(text).candidate
    assert cand is not None and cand.sdp_mline_index == index


def test_field_names_match_case_insensitively_like_go() -> None:
    """Go's encoding/json folds key case; copied so every message Go accepts is accepted."""
    text = (
        '{"TYPE":"candidate","Candidate":{"CANDIDATE":"c","sdpmid":"0","SDPMLINEINDEX":1,'
        '"UsernameFragment":"u"}}'
    )
    assert parse_signal_message(text) == msg("candidate", candidate=IceCandidate("c", "0", 1, "u"))


def test_field_names_fold_kelvin_and_long_s_like_go() -> None:
    """bytes.EqualFold: U+212A KELVIN SIGN ~ k and U+017F LONG S ~ s."""
    assert parse_signal_message('{"type":"auth","apiKey":"x"}'.replace("K", "\u212a")) == msg(
        "auth", api_key="x"
    )
    text = '{"type":"offer","\u017fdp":{"type":"offer","\u017fdp":"v=0"}}'
    assert parse_signal_message(text) == msg("offer", sdp=SessionDescription("offer", "v=0"))


def test_message_type_values_are_case_sensitive() -> None:
    assert signal_error('{"type":"AUTH","apiKey":"k"}') == 'unsupported message type "AUTH"'


def test_null_fields_count_as_absent() -> None:
    """Go: null leaves a string unchanged and sets a pointer to nil."""
    text = (
        '{"type":"close","sdp":null,"candidate":null,"apiKey":null,"token":null,"code":null,"message":null}'
    )
    assert parse_signal_message(text) == msg("close")
    assert signal_error('{"type":null}') == 'unsupported message type ""'


def test_null_candidate_fields_are_none() -> None:
    text = (
        '{"type":"candidate","candidate":{"candidate":null,"sdpMid":null,'
        '"sdpMLineIndex":null,"usernameFragment":null}}'
    )
    assert parse_signal_message(text) == msg("candidate", candidate=IceCandidate("", None, None, None))


def test_duplicate_keys_last_one_wins() -> None:
    assert parse_signal_message('{"type":"auth","apiKey":"a","apiKey":"b"}') == msg("auth", api_key="b")
    assert parse_signal_message('{"type":"close","type":"auth","token":"t"}') == msg("auth", token="t")


def test_duplicate_object_fields_merge_like_go() -> None:
    """Go decodes a repeated object into the struct it already allocated."""
    text = '{"type":"offer","sdp":{"type":"offer"},"sdp":{"sdp":"v=0"}}'
    assert parse_signal_message(text) == msg("offer", sdp=SessionDescription("offer", "v=0"))
    assert signal_error('{"type":"offer","sdp":{"type":"offer"},"sdp":null}') == "offer message missing sdp"


def test_lone_surrogate_escapes_become_replacement_characters() -> None:
    """Go replaces invalid \\u surrogates with U+FFFD; a valid pair is one character."""
    text = '{"type":"auth","apiKey":"a\\ud800b\\udc00c\\ud83d\\ude00"}'
    assert parse_signal_message(text) == msg("auth", api_key="a\ufffdb\ufffdc\U0001f600")


def test_invalid_utf8_bytes_in_strings_become_replacement_characters() -> None:
    assert parse_signal_message(b'{"type":"auth","token":"a\xffb"}') == msg("auth", token="a\ufffdb")


def test_deep_nesting_is_rejected_not_crashing() -> None:
    assert signal_error("[" * 100_000) == "exceeded max depth"
    assert signal_error('{"type":"close","x":' + "[" * 5000 + "]" * 5000 + "}") == "exceeded max depth"


def test_huge_numbers_do_not_trip_int_conversion_limits() -> None:
    digits = "9" * 10_000
    assert signal_error('{"type":' + digits + "}").startswith("json: cannot unmarshal number into")


# --- F-071: per-type validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"auth","apiKey":"k"}', msg("auth", api_key="k")),
        ('{"type":"auth","token":"t"}', msg("auth", token="t")),
        ('{"type":"auth","apiKey":"s","token":"s"}', msg("auth", api_key="s", token="s")),
        ('{"type":"auth","apiKey":"","token":"t"}', msg("auth", token="t")),
        (
            '{"type":"offer","sdp":{"type":"offer","sdp":"v=0"}}',
            msg("offer", sdp=SessionDescription("offer", "v=0")),
        ),
        ('{"type":"offer","sdp":{"type":"offer"}}', msg("offer", sdp=SessionDescription("offer", ""))),
        (
            '{"type":"answer","sdp":{"type":"answer","sdp":"v=0"}}',
            msg("answer", sdp=SessionDescription("answer", "v=0")),
        ),
        (
            '{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host",'
            '"sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}',
            msg(
                "candidate",
                candidate=IceCandidate("candidate:1 1 udp 1 192.0.2.1 9 typ host", "0", 0, "abcd"),
            ),
        ),
        (
            '{"type":"candidate","candidate":{}}',
            msg("candidate", candidate=IceCandidate("", None, None, None)),
        ),
        (
            '{"type":"candidate","candidate":{"candidate":"","sdpMid":""}}',
            msg("candidate", candidate=IceCandidate("", "", None, None)),
        ),
        ('{"type":"close"}', msg("close")),
        ('{"type":"close","apiKey":"","code":""}', msg("close")),
        ('{"type":"error","code":"c","message":"m"}', msg("error", code="c", message="m")),
    ],
)
def test_valid_messages_of_every_type(text: str, expected: SignalMessage) -> None:
    """F-071; empty strings count as absent, as in Go's checks."""
    assert parse_signal_message(text) == expected
    assert expected.type in MESSAGE_TYPES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"auth"}', "auth message missing apiKey/token"),
        ('{"type":"auth","apiKey":"","token":""}', "auth message missing apiKey/token"),
        (
            '{"type":"auth","apiKey":"a","token":"b"}',
            "auth message must not include both apiKey and token unless they match",
        ),
        ('{"type":"auth","apiKey":"k","sdp":{}}', "auth message has unexpected fields"),
        ('{"type":"auth","apiKey":"k","candidate":{}}', "auth message has unexpected fields"),
        ('{"type":"auth","apiKey":"k","code":"c"}', "auth message has unexpected fields"),
        ('{"type":"auth","apiKey":"k","message":"m"}', "auth message has unexpected fields"),
        ('{"type":"offer"}', "offer message missing sdp"),
        ('{"type":"offer","sdp":{}}', 'offer message has sdp.type=""'),
        ('{"type":"offer","sdp":{"type":"answer","sdp":"v=0"}}', 'offer message has sdp.type="answer"'),
        ('{"type":"offer","sdp":{"type":"a\\tb"}}', 'offer message has sdp.type="a\\tb"'),
        ('{"type":"offer","sdp":{"type":"offer"},"candidate":{}}', "offer message has unexpected fields"),
        ('{"type":"offer","sdp":{"type":"offer"},"apiKey":"k"}', "offer message has unexpected fields"),
        ('{"type":"offer","sdp":{"type":"offer"},"token":"t"}', "offer message has unexpected fields"),
        ('{"type":"offer","sdp":{"type":"offer"},"code":"c"}', "offer message has unexpected fields"),
        ('{"type":"offer","sdp":{"type":"offer"},"message":"m"}', "offer message has unexpected fields"),
        ('{"type":"answer"}', "answer message missing sdp"),
        ('{"type":"answer","sdp":{"type":"offer"}}', 'answer message has sdp.type="offer"'),
        ('{"type":"answer","sdp":{"type":"answer"},"token":"t"}', "answer message has unexpected fields"),
        ('{"type":"candidate"}', "candidate message missing candidate"),
        ('{"type":"candidate","candidate":null}', "candidate message missing candidate"),
        ('{"type":"candidate","candidate":{},"sdp":{}}', "candidate message has unexpected fields"),
        ('{"type":"candidate","candidate":{},"apiKey":"k"}', "candidate message has unexpected fields"),
        ('{"type":"candidate","candidate":{},"message":"m"}', "candidate message has unexpected fields"),
        ('{"type":"close","sdp":{}}', "close message has unexpected fields"),
        ('{"type":"close","candidate":{}}', "close message has unexpected fields"),
        ('{"type":"close","token":"t"}', "close message has unexpected fields"),
        ('{"type":"close","code":"c"}', "close message has unexpected fields"),
        ('{"type":"error"}', "error message missing code/message"),
        ('{"type":"error","code":"c"}', "error message missing code/message"),
        ('{"type":"error","message":"m"}', "error message missing code/message"),
        ('{"type":"error","code":"c","message":"m","apiKey":"k"}', "error message has unexpected fields"),
        ('{"type":"error","code":"c","message":"m","sdp":{}}', "error message has unexpected fields"),
        ("{}", 'unsupported message type ""'),
        ('{"type":"hello"}', 'unsupported message type "hello"'),
        ('{"type":"\\u0000"}', 'unsupported message type "\\x00"'),
    ],
)
def test_validation_messages(text: str, expected: str) -> None:
    """F-071: the exact texts of Go's validate()."""
    assert signal_error(text) == expected


def test_legacy_versioned_offer_on_the_websocket_is_a_bad_message() -> None:
    """F-195: the client's legacy {version:1,offer} JSON is rejected."""
    assert (
        signal_error('{"version":1,"offer":{"type":"offer","sdp":"v=0"}}') == 'json: unknown field "version"'
    )


def test_back_to_back_auth_with_equal_credentials() -> None:
    """F-208: the client may send apiKey and token, equal."""
    assert parse_signal_message('{"type":"auth","token":"x","apiKey":"x"}') == msg(
        "auth", api_key="x", token="x"
    )


# --- server -> client builders (F-075, F-194, F-223) ------------------------------------------------


def test_answer_message_has_exactly_the_browser_keys() -> None:
    """F-075, F-194."""
    assert answer_message("v=0\r\n") == {"type": "answer", "sdp": {"type": "answer", "sdp": "v=0\r\n"}}
    assert (
        json.dumps(answer_message("x"), separators=(",", ":"))
        == '{"type":"answer","sdp":{"type":"answer","sdp":"x"}}'
    )


def test_candidate_message_as_pion_sends_it() -> None:
    """F-075, F-223: sdpMid "0", sdpMLineIndex 0, usernameFragment omitted."""
    m = candidate_message("candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host", "0", 0, None)
    assert json.dumps(m, separators=(",", ":")) == (
        '{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host",'
        '"sdpMid":"0","sdpMLineIndex":0}}'
    )


def test_candidate_message_omits_none_fields_but_keeps_empty_strings() -> None:
    """F-075: nil pointers are left out; a pointer to "" is not."""
    assert candidate_message("c") == {"type": "candidate", "candidate": {"candidate": "c"}}
    assert candidate_message("", "", None, "") == {
        "type": "candidate",
        "candidate": {"candidate": "", "sdpMid": "", "usernameFragment": ""},
    }
    full = candidate_message("c", "1", 2, "u")["candidate"]
    assert isinstance(full, dict) and list(full) == [
        "candidate",
        "sdpMid",
        "sdpMLineIndex",
        "usernameFragment",
    ]


def test_error_message_shape() -> None:
    """F-194: {"type":"error","code":...,"message":...}."""
    assert error_message("bad_message", "expected text message") == {
        "type": "error",
        "code": "bad_message",
        "message": "expected text message",
    }


def test_error_message_omits_empty_fields_like_go() -> None:
    assert error_message("", "") == {"type": "error"}
    assert signal_error(json.dumps(error_message("c", ""))) == "error message missing code/message"


# --- POST /offer (F-054, F-057) ---------------------------------------------------------------------


def test_offer_v1_valid_body() -> None:
    body = b'{"version":1,"offer":{"type":"offer","sdp":"v=0"}}'
    assert parse_offer_request_v1(body) == OfferRequest(1, SessionDescription("offer", "v=0"))


def test_offer_v1_ignores_unknown_fields_at_any_depth() -> None:
    """F-054: lenient decoder."""
    body = b'{"x":[1,{"y":null}],"version":1,"offer":{"type":"offer","sdp":"v=0","z":1}}'
    assert parse_offer_request_v1(body).offer.sdp == "v=0"


def test_offer_v1_ignores_trailing_data() -> None:
    """F-054: only the first JSON value is read."""
    body = b'{"version":1,"offer":{"type":"offer","sdp":"v=0"}} trailing }{ garbage'
    assert parse_offer_request_v1(body).version == 1


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"not json",
        b'{"version":1,',
        b"[]",
        b'"offer"',
        b'{"version":"1","offer":{"type":"offer","sdp":"v=0"}}',
        b'{"version":1.0,"offer":{"type":"offer","sdp":"v=0"}}',
        b'{"version":1e0,"offer":{"type":"offer","sdp":"v=0"}}',
        b'{"version":99999999999999999999,"offer":{"type":"offer","sdp":"v=0"}}',
        b'{"version":1,"offer":"v=0"}',
        b'{"version":1,"offer":{"type":"offer","sdp":0}}',
        b'{"version":2,"offer":[]}',
        b"null}",
        b'{"version":1,"offer":{"type":"offer","sdp":"v=0"},"x":NaN}',
    ],
)
def test_offer_v1_decode_failure_is_invalid_offer(body: bytes) -> None:
    """F-054: any decode failure (syntax or a known field's type) -> "invalid offer"."""
    assert offer_v1_error(body) == "invalid offer"


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"null",
        b'{"version":0,"offer":{"type":"offer","sdp":"v=0"}}',
        b'{"version":2,"offer":{"type":"offer","sdp":"v=0"}}',
        b'{"version":-1}',
        b'{"version":null,"offer":{"type":"offer","sdp":"v=0"}}',
        b'{"version":2,"offer":{"type":"answer"}}',
    ],
)
def test_offer_v1_other_versions_are_unsupported(body: bytes) -> None:
    """F-054: the version is checked before the offer."""
    assert offer_v1_error(body) == "unsupported protocol version"


@pytest.mark.parametrize(
    "body",
    [
        b'{"version":1}',
        b'{"version":1,"offer":null}',
        b'{"version":1,"offer":{"type":"answer","sdp":"v=0"}}',
        b'{"version":1,"offer":{"type":"Offer","sdp":"v=0"}}',
        b'{"version":1,"offer":{"type":"offer"}}',
        b'{"version":1,"offer":{"type":"offer","sdp":""}}',
    ],
)
def test_offer_v1_requires_an_offer_with_sdp(body: bytes) -> None:
    """F-054: offer.type != "offer" or an empty offer.sdp -> "invalid offer"."""
    assert offer_v1_error(body) == "invalid offer"


def test_offer_v1_keys_are_case_insensitive_and_last_wins() -> None:
    body = b'{"VERSION":2,"Version":1,"OFFER":{"Type":"offer","SDP":"v=0"}}'
    assert parse_offer_request_v1(body) == OfferRequest(1, SessionDescription("offer", "v=0"))


def test_offer_v1_null_offer_keeps_earlier_fields() -> None:
    """The offer is a Go value struct: null has no effect on it."""
    body = b'{"version":1,"offer":{"type":"offer","sdp":"v=0"},"offer":null}'
    assert parse_offer_request_v1(body).offer.sdp == "v=0"


def test_offer_response_v1_echoes_the_version() -> None:
    """F-057."""
    assert offer_response_v1(1, "v=0") == {"version": 1, "answer": {"type": "answer", "sdp": "v=0"}}


# --- POST /webrtc/offer (F-059, F-060, F-062) -------------------------------------------------------


def test_webrtc_offer_wrapped_shape() -> None:
    """F-059: {"sdp":{...}} is tried first."""
    assert parse_webrtc_offer_body(b'{"sdp":{"type":"offer","sdp":"v=0"}}') == SessionDescription(
        "offer", "v=0"
    )


def test_webrtc_offer_raw_shape() -> None:
    """F-059: then a raw SessionDescription."""
    assert parse_webrtc_offer_body(b'{"type":"offer","sdp":"v=0"}') == SessionDescription("offer", "v=0")


def test_webrtc_offer_empty_sdp_passes_the_parser() -> None:
    """The peer connection rejects it later (F-061)."""
    assert parse_webrtc_offer_body(b'{"type":"offer"}') == SessionDescription("offer", "")


def test_webrtc_offer_keys_are_case_insensitive() -> None:
    assert parse_webrtc_offer_body(b'{"SDP":{"Type":"offer","Sdp":"v=0"}}') == SessionDescription(
        "offer", "v=0"
    )


def test_webrtc_offer_both_shapes_failing_joins_both_errors() -> None:
    """F-059: Go's errors.Join puts a newline between the wrapped and the raw attempt's error."""
    assert webrtc_offer_error(b'{"type":"offer","sdp":"v=0","extra":1}') == (
        BODY_PREFIX + 'json: unknown field "type"\njson: unknown field "extra"'
    )


def test_webrtc_offer_unknown_field_inside_wrapped_sdp_is_rejected() -> None:
    """F-059: strict recursively; the nested object is the original's own {type, sdp} struct."""
    assert webrtc_offer_error(b'{"sdp":{"type":"offer","sdp":"v=0","foo":1}}') == (
        BODY_PREFIX
        + 'json: unknown field "foo"\n'
        + "json: cannot unmarshal object into Go struct field sdp.sdp of type string"
    )


def test_webrtc_offer_trailing_data_is_rejected() -> None:
    """F-059: no trailing data in either shape."""
    assert webrtc_offer_error(b'{"type":"offer","sdp":"v=0"} {}') == (
        BODY_PREFIX + 'json: unknown field "type"\nunexpected trailing data'
    )


def test_webrtc_offer_syntax_error_appears_in_both_attempts() -> None:
    assert webrtc_offer_error(b"") == BODY_PREFIX + "EOF\nEOF"
    assert webrtc_offer_error(b"[]") == BODY_PREFIX + (
        "json: cannot unmarshal array into Go value of type signaling.httpOfferRequest\n"
        "json: cannot unmarshal array into Go value of type signaling.sdp"
    )


@pytest.mark.parametrize("body", [b"{}", b"null", b'{"sdp":null}', b'{"sdp":{}}', b'{"sdp":"v=0"}'])
def test_webrtc_offer_missing_type_is_unsupported(body: bytes) -> None:
    """F-060: `{}` passes the shape check, then fails the type conversion."""
    assert webrtc_offer_error(body) == 'unsupported sdp type ""'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"type":"pranswer","sdp":"v=0"}', 'unsupported sdp type "pranswer"'),
        (b'{"sdp":{"type":"rollback"}}', 'unsupported sdp type "rollback"'),
        (b'{"sdp":{"type":"OFFER","sdp":"v=0"}}', 'unsupported sdp type "OFFER"'),
        (b'{"type":"answer","sdp":"v=0"}', 'sdp.type must be "offer"'),
        (b'{"sdp":{"type":"answer","sdp":"v=0"}}', 'sdp.type must be "offer"'),
    ],
)
def test_webrtc_offer_type_conversion(body: bytes, expected: str) -> None:
    """F-060: offer/answer convert, anything else is unsupported; answer is refused."""
    assert webrtc_offer_error(body) == expected


def test_webrtc_offer_invalid_utf8_in_sdp_becomes_replacement_character() -> None:
    assert parse_webrtc_offer_body(b'{"type":"offer","sdp":"v=\xff"}') == SessionDescription(
        "offer", "v=\ufffd"
    )


def test_webrtc_offer_response_shape() -> None:
    """F-062: {"sessionId":...,"sdp":{"type":"answer","sdp":...}}, nothing else (F-194)."""
    assert webrtc_offer_response("ab" * 16, "v=0") == {
        "sessionId": "ab" * 16,
        "sdp": {"type": "answer", "sdp": "v=0"},
    }


# --- properties -------------------------------------------------------------------------------------

FIELD_NAMES = [
    "type",
    "sdp",
    "candidate",
    "apiKey",
    "token",
    "code",
    "message",
    "sdpMid",
    "sdpMLineIndex",
    "usernameFragment",
    "version",
    "offer",
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(sorted(MESSAGE_TYPES))
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=12,
)
json_texts = json_values.map(json.dumps)
suffixes = st.sampled_from(["", " ", "\n", "x", "}", "{}", " null", "\ufeff", "\ud800"])


@settings(max_examples=300)
@given(st.text())
def test_arbitrary_text_only_raises_signaling_error(text: str) -> None:
    with contextlib.suppress(SignalingError):
        parse_signal_message(text)


@settings(max_examples=300)
@given(json_texts, suffixes)
def test_arbitrary_json_only_raises_signaling_error(text: str, suffix: str) -> None:
    try:
        result = parse_signal_message(text + suffix)
    except SignalingError as e:
        assert e.message
    else:
        assert result.type in MESSAGE_TYPES


@settings(max_examples=300)
@given(st.binary() | json_texts.map(str.encode), st.sampled_from([b"", b" ", b"x", b"\xff"]))
def test_arbitrary_bodies_only_raise_offer_body_error(body: bytes, suffix: bytes) -> None:
    for parse in (parse_offer_request_v1, parse_webrtc_offer_body):
        try:
            parse(body + suffix)
        except OfferBodyError as e:
            assert e.status == 400 and e.message


optional_text = st.none() | st.text()


def fffd(s: str | None) -> str | None:
    """Lone surrogates cannot survive a round trip (Go sees invalid UTF-8): they become U+FFFD."""
    return None if s is None else "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)


@settings(max_examples=200)
@given(st.text(), optional_text, st.none() | st.integers(0, 0xFFFF), optional_text, st.booleans())
def test_candidate_message_round_trips(
    candidate: str, mid: str | None, index: int | None, ufrag: str | None, ascii_only: bool
) -> None:
    text = json.dumps(candidate_message(candidate, mid, index, ufrag), ensure_ascii=ascii_only)
    expected = IceCandidate(fffd(candidate) or "", fffd(mid), index, fffd(ufrag))
    assert parse_signal_message(text) == msg("candidate", candidate=expected)


@settings(max_examples=100)
@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_answer_message_round_trips(sdp: str) -> None:
    parsed = parse_signal_message(json.dumps(answer_message(sdp)))
    assert parsed == msg("answer", sdp=SessionDescription("answer", sdp))


@settings(max_examples=100)
@given(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1),
)
def test_error_message_round_trips(code: str, message: str) -> None:
    parsed = parse_signal_message(json.dumps(error_message(code, message), ensure_ascii=False))
    assert parsed == msg("error", code=code, message=message)


@settings(max_examples=100)
@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_http_answer_bodies_parse_back_as_offers_once_retyped(sdp: str) -> None:
    """The HTTP answer shapes use the same {type, sdp} object as the offers."""
    wrapped = webrtc_offer_response("0" * 32, sdp)
    body = json.dumps({"sdp": {**wrapped["sdp"], "type": "offer"}})  # type: ignore[dict-item]
    assert parse_webrtc_offer_body(body.encode()) == SessionDescription("offer", sdp)
    v1 = offer_response_v1(1, sdp)
    if sdp:
        body = json.dumps({"version": v1["version"], "offer": {**v1["answer"], "type": "offer"}})  # type: ignore[dict-item]
        assert parse_offer_request_v1(body.encode()) == OfferRequest(1, SessionDescription("offer", sdp))


@settings(max_examples=100)
@given(st.data())
def test_key_case_never_matters(data: st.DataObject) -> None:
    def recase(key: str) -> str:
        flips = data.draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
        return "".join(c.swapcase() if f else c for c, f in zip(key, flips, strict=True))

    text = (
        f'{{"{recase("type")}":"candidate","{recase("candidate")}":{{"{recase("candidate")}":"c",'
        f'"{recase("sdpMid")}":"0","{recase("sdpMLineIndex")}":3,"{recase("usernameFragment")}":"u"}}}}'
    )
    assert parse_signal_message(text) == msg("candidate", candidate=IceCandidate("c", "0", 3, "u"))
