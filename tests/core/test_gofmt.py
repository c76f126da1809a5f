"""Go-compatible parsing helpers (strconv, time, fmt %q)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aero_relay.core.gofmt import (
    GoParseError,
    atoi,
    format_duration_ns,
    parse_bool,
    parse_duration,
    parse_duration_ns,
    quote,
)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("300ms", 300_000_000),
        ("1.5s", 1_500_000_000),
        ("1h2m", 3_720_000_000_000),
        ("0", 0),
        ("-1s", -1_000_000_000),
        ("+2m", 120_000_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("2h45m0.5s", 9_900_500_000_000),
        ("1.000000001s", 1_000_000_001),
        ("1µs", 1_000),
        ("1μs", 1_000),
        ("1us", 1_000),
        ("7ns", 7),
    ],
)
def test_parse_duration_accepts_go_forms(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("1", 'time: missing unit in duration "1"'),
        ("10", 'time: missing unit in duration "10"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("x", 'time: invalid duration "x"'),
        (".s", 'time: invalid duration ".s"'),
        (" 1s", 'time: invalid duration " 1s"'),
        ("1s ", 'time: unknown unit "s " in duration "1s "'),
    ],
)
def test_parse_duration_rejects_with_go_messages(text: str, message: str) -> None:
    with pytest.raises(GoParseError) as err:
        parse_duration_ns(text)
    assert str(err.value) == message


def test_parse_duration_seconds() -> None:
    assert parse_duration("1500ms") == 1.5


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (2_000_000, "2ms"),
        (1_500_000_000, "1.5s"),
        (60_000_000_000, "1m0s"),
        (3_723_000_000_000, "1h2m3s"),
        (-30_000_000_000, "-30s"),
    ],
)
def test_format_duration_like_go(ns: int, text: str) -> None:
    assert format_duration_ns(ns) == text


@given(st.integers(min_value=0, max_value=10**15))
def test_format_then_parse_round_trips(ns: int) -> None:
    assert parse_duration_ns(format_duration_ns(ns)) == ns


@pytest.mark.parametrize(("text", "value"), [("12", 12), ("+7", 7), ("-3", -3), ("007", 7)])
def test_atoi(text: str, value: int) -> None:
    assert atoi(text) == value


@pytest.mark.parametrize("text", ["", "+", "1.0", " 1", "0x10", "1_000", "١٢"])
def test_atoi_invalid(text: str) -> None:
    with pytest.raises(GoParseError, match="invalid syntax"):
        atoi(text)


def test_atoi_out_of_range() -> None:
    with pytest.raises(GoParseError, match="value out of range"):
        atoi("9223372036854775808")


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["yes", "tRUE", " true", ""])
def test_parse_bool_invalid(text: str) -> None:
    with pytest.raises(GoParseError, match=r"strconv\.ParseBool"):
        parse_bool(text)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("abc", '"abc"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("\t\n", '"\\t\\n"'),
        ("\x01", '"\\x01"'),
        ("é", '"é"'),
        ("\u200b", '"\\u200b"'),
        ("\U0001f600", '"\U0001f600"'),
    ],
)
def test_quote_like_go(text: str, quoted: str) -> None:
    assert quote(text) == quoted


def test_atoi_huge():
    import pytest

    from aero_relay.core.gofmt import GoParseError, atoi

    with pytest.raises(GoParseError, match="out of range"):
        atoi("1" * 5000)
