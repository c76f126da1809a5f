"""slog-shaped structured logging (F-007, F-011, §22) and log redaction (F-160)."""

from __future__ import annotations

import enum
import io
import json
import logging
import re
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aero_relay.observability.logging import (
    REDACTED,
    GoDuration,
    Redactor,
    SlogHandler,
    configure_logging,
    get_logger,
    sanitize_ws_url,
)

TEXT_PREFIX = re.compile(r"^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(DEBUG|INFO|WARN|ERROR) ")
JSON_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    root = logging.getLogger()
    ours = logging.getLogger("aero_relay")
    saved = (list(root.handlers), root.level, ours.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    ours.setLevel(saved[2])


def capture(fmt: str, level: str = "debug") -> io.StringIO:
    out = io.StringIO()
    configure_logging(fmt, level, stream=out)
    return out


def text_line(**fields: object) -> str:
    """One text record's body after ``time=… level=… ``, logged at INFO with msg "m"."""
    out = capture("text")
    get_logger("test").info("m", **fields)
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    prefix = TEXT_PREFIX.match(line)
    assert prefix is not None, line
    body = line[prefix.end() : -1]
    assert body.startswith("msg=m")
    return body[len("msg=m") :].lstrip(" ")


def json_record(**fields: object) -> dict[str, object]:
    out = capture("json")
    get_logger("test").info("m", **fields)
    line = out.getvalue()
    assert line.endswith("}\n") and line.count("\n") == 1
    record: dict[str, object] = json.loads(line)
    return record


# --- text format --------------------------------------------------------------------------------


def test_text_record_has_time_level_msg_then_fields_in_order() -> None:
    """F-003/F-173: the start record, as slog's TextHandler writes it."""
    out = capture("text")
    get_logger("aero_relay.cli").info(
        "starting aero-webrtc-udp-relay", listen_addr="127.0.0.1:8080", mode="dev", max_sessions=0
    )
    line = out.getvalue()
    assert TEXT_PREFIX.match(line)
    assert line.split(" ", 1)[1] == (
        'level=INFO msg="starting aero-webrtc-udp-relay" listen_addr=127.0.0.1:8080 mode=dev max_sessions=0\n'
    )


def test_text_access_log_record() -> None:
    """F-011: one INFO ``http_request`` record with the access-log fields."""
    out = capture("text", "info")
    get_logger("aero_relay.app").info(
        "http_request",
        method="GET",
        path="/healthz",
        status=200,
        duration_ms=3,
        remote_addr="127.0.0.1:5555",
        request_id="0123abcd",
    )
    assert out.getvalue().split(" ", 1)[1] == (
        "level=INFO msg=http_request method=GET path=/healthz status=200 duration_ms=3 "
        "remote_addr=127.0.0.1:5555 request_id=0123abcd\n"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        ("has space", '"has space"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("", '""'),
        ("tab\there", '"tab\\there"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("bell\x07", '"bell\\a"'),
        ("del\x7f", '"del\\x7f"'),
        ("nbsp\u00a0x", '"nbsp\\u00a0x"'),
        ("zero\u200bwidth", '"zero\\u200bwidth"'),
        ("back\\slash", "back\\slash"),
        ("héllo", "héllo"),
        ("<tag>&", "<tag>&"),
    ],
)
def test_text_values_are_quoted_like_slog(value: str, shown: str) -> None:
    """slog quotes with %q when a value is empty or has a space, '=', '"' or a non-printable char."""
    assert text_line(v=value) == f"v={shown}"


def test_text_scalar_values() -> None:
    assert text_line(t=True, f=False, n=-42, x=1.5, big=1e6, none=None) == (
        "t=true f=false n=-42 x=1.5 big=1e+06 none=<nil>"
    )


def test_text_exception_values_show_their_text() -> None:
    assert text_line(err=ConnectionRefusedError(111, "Connection refused")) == (
        'err="[Errno 111] Connection refused"'
    )
    assert text_line(err=ValueError("bad")) == "err=bad"


def test_an_exception_with_no_text_shows_its_type_name() -> None:
    assert text_line(err=TimeoutError()) == "err=TimeoutError"


def test_text_enum_values_show_their_value() -> None:
    class Mode(enum.StrEnum):
        DEV = "dev"

    class Code(enum.IntEnum):
        CLOSE = 1008

    assert text_line(mode=Mode.DEV, code=Code.CLOSE) == "mode=dev code=1008"


def test_text_duration_is_go_duration_string() -> None:
    assert text_line(timeout=GoDuration(30_000_000_000), rtt=GoDuration(1_500)) == "timeout=30s rtt=1.5µs"
    assert text_line(d=GoDuration.from_seconds(90.25)) == "d=1m30.25s"


def test_text_bytes_are_always_quoted() -> None:
    assert text_line(b=b"ab") == 'b="ab"'


# --- JSON format --------------------------------------------------------------------------------


def test_json_record_has_time_level_msg_then_fields_in_order() -> None:
    rec = json_record(session_id="abc", msg_bytes=1300, ordered=False)
    assert list(rec) == ["time", "level", "msg", "session_id", "msg_bytes", "ordered"]
    assert JSON_TIME.match(str(rec["time"]))
    assert rec["level"] == "INFO"
    assert rec["msg"] == "m"
    assert (rec["session_id"], rec["msg_bytes"], rec["ordered"]) == ("abc", 1300, False)


def test_json_line_is_compact_like_slog() -> None:
    out = capture("json")
    get_logger("x").warn("w", a=1)
    line = out.getvalue()
    assert line.startswith('{"time":"')
    assert line.endswith('","level":"WARN","msg":"w","a":1}\n')


def test_json_strings_are_escaped_without_html_escaping() -> None:
    out = capture("json")
    get_logger("x").info("m", s='<a&b> "q" \\ \n\t\x01\u2028é')
    assert out.getvalue().endswith(',"s":"<a&b> \\"q\\" \\\\ \\n\\t\\u0001\\u2028é"}\n')
    assert json.loads(out.getvalue())["s"] == '<a&b> "q" \\ \n\t\x01\u2028é'


def test_json_duration_is_integer_nanoseconds() -> None:
    assert json_record(timeout=GoDuration(30_000_000_000))["timeout"] == 30_000_000_000


def test_json_scalar_values() -> None:
    rec = json_record(none=None, x=1e-7, big=1e21, err=OSError("boom"), raw=b"\x00\xff", lst=[1, "a"])
    assert (rec["none"], rec["x"], rec["big"], rec["err"]) == (None, 1e-7, 1e21, "boom")
    assert rec["raw"] == "AP8="  # base64, as json.Marshal writes []byte
    assert rec["lst"] == [1, "a"]


def test_json_float_spelling_follows_go() -> None:
    out = capture("json")
    get_logger("x").info("m", a=1e-7, b=1e6, c=0.5)
    assert out.getvalue().endswith(',"a":1e-7,"b":1000000,"c":0.5}\n')


def test_record_times_use_rfc3339_utc() -> None:
    """Text: milliseconds, truncated, always three digits; JSON: RFC3339Nano."""
    record = logging.LogRecord("lib", logging.WARNING, "", 0, "x", (), None)
    record.created = 1795726753.1239
    text = SlogHandler(io.StringIO(), json_format=False).format(record)
    assert text.startswith("time=2026-11-26T20:59:13.123Z level=WARN msg=x ")
    record.created = 1795726753.0
    assert (
        SlogHandler(io.StringIO(), json_format=False)
        .format(record)
        .startswith("time=2026-11-26T20:59:13.000Z")
    )
    record.created = 1795726753.1239
    rec = json.loads(SlogHandler(io.StringIO(), json_format=True).format(record))
    assert rec["time"] == "2026-11-26T20:59:13.1239Z"


# --- levels, configuration, third-party records ---------------------------------------------------


def test_levels_below_the_configured_one_are_dropped() -> None:
    out = capture("text", "warn")
    log = get_logger("lvl")
    log.debug("d")
    log.info("i")
    log.warn("w")
    log.error("e")
    assert [line.split(" ")[1:3] for line in out.getvalue().splitlines()] == [
        ["level=WARN", "msg=w"],
        ["level=ERROR", "msg=e"],
    ]


@pytest.mark.parametrize(
    ("name", "enabled"), [("debug", False), ("info", True), ("warn", True), ("error", True)]
)
def test_enabled_tells_hot_paths_whether_a_level_is_logged(name: str, enabled: bool) -> None:
    capture("json", "info")
    assert get_logger("hot").enabled(name) is enabled


def test_warning_is_an_alias_of_warn_and_levels_ignore_case() -> None:
    capture("text", "WARNING")
    log = get_logger("a")
    assert log.enabled("warn") and not log.enabled("info")


def test_invalid_format_or_level_is_rejected_with_the_config_message() -> None:
    with pytest.raises(ValueError, match=r'^invalid log format "xml" \(expected text or json\)$'):
        configure_logging("xml", "info", stream=io.StringIO())
    with pytest.raises(ValueError, match=r'^invalid log level "loud" \(expected debug, info, warn, error\)$'):
        configure_logging("text", "loud", stream=io.StringIO())


def test_reconfiguring_replaces_the_handler() -> None:
    first = capture("text")
    second = capture("json")
    get_logger("r").info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "once"
    assert sum(isinstance(h, SlogHandler) for h in logging.getLogger().handlers) == 1


def test_output_goes_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """F-007: the handler writes to stdout."""
    configure_logging("text", "info")
    get_logger("s").info("to stdout")
    captured = capsys.readouterr()
    assert 'msg="to stdout"' in captured.out
    assert "to stdout" not in captured.err


def test_third_party_records_go_through_the_same_handler() -> None:
    """F-007: library records share the handler, with a ``logger`` field naming the source."""
    out = capture("text", "info")
    logging.getLogger("aioice.ice").warning("check %s failed", "pair-1")
    assert out.getvalue().split(" ", 1)[1] == 'level=WARN msg="check pair-1 failed" logger=aioice.ice\n'


def test_third_party_records_below_warning_are_dropped_unless_debug() -> None:
    out = capture("text", "info")
    logging.getLogger("hypercorn.error").info("noise")
    get_logger("ours").info("kept")
    assert "noise" not in out.getvalue()
    assert "msg=kept" in out.getvalue()

    out = capture("json", "debug")
    logging.getLogger("aiortc.rtcpeerconnection").debug("detail")
    rec = json.loads(out.getvalue())
    assert (rec["level"], rec["msg"], rec["logger"]) == ("DEBUG", "detail", "aiortc.rtcpeerconnection")


def test_third_party_level_is_never_below_ours() -> None:
    out = capture("text", "error")
    logging.getLogger("hypercorn.error").warning("w")
    assert out.getvalue() == ""


def test_third_party_exceptions_keep_their_error_and_stack() -> None:
    out = capture("json", "info")
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        logging.getLogger("hypercorn.error").exception("handler failed")
    rec = json.loads(out.getvalue())
    assert rec["level"] == "ERROR" and rec["err"] == "kaput"
    assert "Traceback" in str(rec["stack"]) and "RuntimeError: kaput" in str(rec["stack"])


def test_bound_fields_come_first_on_every_record() -> None:
    out = capture("text")
    log = get_logger("b").bind(session_id="s1")
    log.info("one", n=1)
    log.info("two")
    bodies = [line.split(" ", 2)[2] for line in out.getvalue().splitlines()]
    assert bodies == ["msg=one session_id=s1 n=1", "msg=two session_id=s1"]


def test_percent_signs_in_messages_are_not_formatting() -> None:
    out = capture("text")
    get_logger("p").info("100% done %s", pct="50%")
    assert 'msg="100% done %s" pct=50%' in out.getvalue()


def test_loggers_are_placed_under_the_aero_relay_namespace() -> None:
    assert get_logger("aero_relay.relay.session").name == "aero_relay.relay.session"
    assert get_logger("webrtc").name == "aero_relay.webrtc"


# --- redaction (F-160) ----------------------------------------------------------------------------


def test_a_known_secret_is_redacted() -> None:
    r = Redactor(["s3cret-key"])
    assert r.redact("auth failed for s3cret-key") == f"auth failed for {REDACTED}"


def test_query_escaped_forms_of_a_secret_are_redacted() -> None:
    secret = "a b/c+d"
    r = Redactor([secret])
    plus = urllib.parse.quote_plus(secret)  # a+b%2Fc%2Bd
    pct = urllib.parse.quote(secret, safe="")  # a%20b%2Fc%2Bd
    assert r.redact(f"x={plus} y={pct} z={secret}") == f"x={REDACTED} y={REDACTED} z={REDACTED}"


def test_empty_secrets_are_ignored() -> None:
    assert Redactor(["", ""]).redact("nothing to hide") == "nothing to hide"


def test_a_longer_secret_containing_a_shorter_one_is_redacted_whole() -> None:
    r = Redactor(["abcd", "abcdefgh"])
    assert r.redact("[abcdefgh]") == f"[{REDACTED}]"


@pytest.mark.parametrize("key", ["token=", "apiKey=", "aero_session=", "aero-l2-token."])
def test_values_after_credential_keys_are_redacted(key: str) -> None:
    r = Redactor([])
    assert r.redact(f"dial wss://b/l2?{key}XYZ123") == f"dial wss://b/l2?{key}{REDACTED}"


@pytest.mark.parametrize("delim", ["&", " ", "\n", "\r", "\t", '"', "'", ">", "<", ")", "]", "}", ";", ","])
def test_credential_values_end_at_each_delimiter(delim: str) -> None:
    r = Redactor([])
    assert r.redact(f"token=abc{delim}rest") == f"token={REDACTED}{delim}rest"


def test_an_empty_credential_value_is_left_alone() -> None:
    assert Redactor([]).redact("token=&apiKey=") == "token=&apiKey="


def test_cookie_header_value_is_redacted() -> None:
    r = Redactor([])
    assert r.redact("Cookie: aero_session=v.sig; other=1") == f"Cookie: aero_session={REDACTED}; other=1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wss://user:pass@backend:8443/l2", "wss://backend:8443/l2"),
        ("dial 'ws://u@h/x' failed", "dial 'ws://h/x' failed"),
        ("ws://u:p@ss@host/x", "ws://host/x"),
        ("ws://@host", "ws://host"),
        ("see https://example.com/a@b", "see https://example.com/a@b"),
    ],
)
def test_url_userinfo_is_stripped(text: str, expected: str) -> None:
    assert Redactor([]).redact(text) == expected


def test_a_secret_in_userinfo_is_gone_either_way() -> None:
    r = Redactor(["hunter22"])
    assert r.redact("ws://bob:hunter22@h/") == "ws://h/"


def test_a_secret_that_reappears_after_redaction_redacts_the_whole_text() -> None:
    # Stripping userinfo joins "ws://" and "host-x": a secret spanning the join must not leak.
    r = Redactor(["ws://host-x"])
    assert r.redact("ws://u@host-x") == REDACTED


_SECRET_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"])
_secrets = st.lists(
    st.text(_SECRET_CHARS, min_size=4, max_size=12).filter(lambda s: s not in REDACTED),
    min_size=1,
    max_size=3,
)


@st.composite
def _texts_with_secrets(draw: st.DrawFn) -> tuple[list[str], str]:
    secrets = draw(_secrets)
    forms = st.sampled_from(secrets).flatmap(
        lambda s: st.sampled_from([s, urllib.parse.quote_plus(s), urllib.parse.quote(s, safe="")])
    )
    pieces = draw(
        st.lists(st.one_of(forms, st.text(max_size=8), st.sampled_from(["token=", "://", "@", "&"])))
    )
    return secrets, "".join(pieces)


@given(_texts_with_secrets())
def test_redacted_text_never_contains_a_secret(case: tuple[list[str], str]) -> None:
    """F-160, as a property: for secrets of 4+ chars, no given secret survives redaction."""
    secrets, text = case
    out = Redactor(secrets).redact(text)
    for secret in secrets:
        assert secret not in out


# --- sanitize_ws_url (F-160) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://user:pw@backend.example:8443/l2?token=abc#frag", "wss://backend.example:8443/l2"),
        ("ws://127.0.0.1:9000/l2", "ws://127.0.0.1:9000/l2"),
        ("ws://[::1]:9000/x?q=1", "ws://[::1]:9000/x"),
        ("ws://host", "ws://host"),
    ],
)
def test_backend_url_is_logged_without_userinfo_query_or_fragment(url: str, expected: str) -> None:
    assert sanitize_ws_url(url) == expected


def test_unparseable_backend_url_is_stripped_best_effort() -> None:
    assert sanitize_ws_url("ws://u:p@[::1/x?token=abc#f") == "ws://[::1/x"
