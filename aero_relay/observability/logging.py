"""Structured logging in the shape of Go's ``log/slog`` (F-007, F-011, F-160, spec §22).

The original logs through slog's TextHandler or JSONHandler on stdout, and operators grep and
parse those lines, so records look the same here::

    time=2026-11-26T20:55:10.123Z level=INFO msg="starting aero-webrtc-udp-relay" mode=dev
    {"time":"2026-11-26T20:55:10.123456Z","level":"INFO","msg":"http_request","status":200}

It is built on the stdlib `logging` module: one handler on the root logger formats every record,
so third-party libraries (hypercorn, aiortc, aioice) end up in the same stream and format, as
the original's pion and l2 packages share slog's default handler (F-007). Their records carry an
extra ``logger`` field naming the source.

Deliberate differences from slog: times are always UTC (``Z``); the JSON time has at most
nanosecond digits from ``time.time_ns`` (microseconds for third-party records); an empty
exception text is replaced by the exception's type name; DEL (0x7f) forces quoting.

`Redactor` and `sanitize_ws_url` implement F-160 for fields that may carry credentials.
This module is part of the Trio shell but imports neither trio nor asyncio.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import time
import traceback
import unicodedata
import urllib.parse
from collections.abc import Iterable
from typing import TextIO

import attrs

from aero_relay.core.gofmt import format_duration_ns, quote

__all__ = [
    "DEBUG",
    "ERROR",
    "INFO",
    "REDACTED",
    "WARN",
    "GoDuration",
    "Redactor",
    "StructLogger",
    "configure_logging",
    "get_logger",
    "parse_level",
    "sanitize_ws_url",
]

DEBUG = logging.DEBUG
INFO = logging.INFO
WARN = logging.WARNING
ERROR = logging.ERROR

#: Our loggers live under this name; everything else counts as a third-party library.
ROOT_LOGGER_NAME = "aero_relay"

_LEVELS = {"debug": DEBUG, "info": INFO, "warn": WARN, "warning": WARN, "error": ERROR}
_FIELDS_ATTR = "aero_fields"
_NS_ATTR = "aero_time_ns"


def parse_level(level: str | int) -> int:
    """A config level name (``debug|info|warn|warning|error``, any case) or a stdlib level number."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"invalid log level {quote(level)} (expected debug, info, warn, error)") from None


@attrs.frozen
class GoDuration:
    """A duration field value, printed as slog prints a ``time.Duration``.

    The text format shows Go's ``Duration.String`` (``1.5s``, ``250ms``); the JSON format shows
    integer nanoseconds, as ``json.Marshal`` does.
    """

    ns: int

    @classmethod
    def from_seconds(cls, seconds: float) -> GoDuration:
        return cls(round(seconds * 1e9))

    def __str__(self) -> str:
        return format_duration_ns(self.ns)


# --- value formatting -----------------------------------------------------------------------

# slog's needsQuoting: ASCII space, '=', '"' and control bytes force quoting (backslash does not);
# so does any non-ASCII rune that Go's unicode.IsPrint rejects. We also quote DEL.
_ASCII_UNSAFE = re.compile(r'[\x00-\x20"=\x7f]')


def _needs_quoting(s: str) -> bool:
    if not s:
        return True
    if s.isascii():
        return _ASCII_UNSAFE.search(s) is not None
    for ch in s:
        if ch < "\x80":
            if ch <= " " or ch in '"=\x7f':
                return True
        elif unicodedata.category(ch)[0] not in "LMNPS":
            return True
    return False


def _text_str(s: str) -> str:
    return quote(s) if _needs_quoting(s) else s


_JSON_UNSAFE = re.compile('[\x00-\x1f"\\\\\u2028\u2029\ud800-\udfff]')
_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _json_escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    esc = _JSON_ESCAPES.get(ch)
    if esc is not None:
        return esc
    if ch >= "\ud800":  # a lone surrogate: Go sees invalid UTF-8 and writes U+FFFD
        return "\\ufffd"
    return f"\\u{ord(ch):04x}"


def _json_str(s: str) -> str:
    # slog's appendEscapedJSONString: no HTML escaping, lowercase \u00XX for other controls.
    if _JSON_UNSAFE.search(s) is None:
        return f'"{s}"'
    return '"' + _JSON_UNSAFE.sub(_json_escape_char, s) + '"'


def _float_digits(x: float) -> tuple[str, int]:
    """Shortest round-trip digits of a finite positive float and the decimal point position."""
    r = repr(x)
    mant, _, exp = r.partition("e")
    intpart, _, frac = mant.partition(".")
    digits = intpart + frac
    stripped = digits.lstrip("0")
    dp = len(intpart) + (int(exp) if exp else 0) - (len(digits) - len(stripped))
    return stripped.rstrip("0") or "0", dp


def _fmt_e(neg: bool, digits: str, dp: int) -> str:
    exp = dp - 1
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{'-' if neg else ''}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _fmt_f(neg: bool, digits: str, dp: int) -> str:
    if dp <= 0:
        body = "0." + "0" * -dp + digits
    elif dp >= len(digits):
        body = digits + "0" * (dp - len(digits))
    else:
        body = digits[:dp] + "." + digits[dp:]
    return ("-" if neg else "") + body


def _go_float_text(x: float) -> str:
    """strconv.FormatFloat(x, 'g', -1, 64), what slog's text handler prints."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    neg = x < 0 or (x == 0 and str(x).startswith("-"))
    if x == 0:
        return "-0" if neg else "0"
    digits, dp = _float_digits(abs(x))
    exp = dp - 1
    if exp < -4 or exp >= 6:  # Go uses precision 6 for this decision when printing shortest
        return _fmt_e(neg, digits, dp)
    return _fmt_f(neg, digits, dp)


def _go_float_json(x: float) -> str:
    """encoding/json's float format; NaN and infinities (which Go refuses) become strings."""
    if x != x or x in (float("inf"), float("-inf")):
        return _json_str(_go_float_text(x))
    if x == 0:
        return "-0" if str(x).startswith("-") else "0"
    neg = x < 0
    digits, dp = _float_digits(abs(x))
    if abs(x) < 1e-6 or abs(x) >= 1e21:
        out = _fmt_e(neg, digits, dp)
        # Go trims a leading zero from a negative exponent (1e-07 -> 1e-7), not a positive one.
        if out[-4:-1] == "e-0":
            out = out[:-2] + out[-1]
        return out
    return _fmt_f(neg, digits, dp)


def _error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return _text_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _go_float_text(value)
    if isinstance(value, GoDuration):
        return format_duration_ns(value.ns)
    if value is None:
        return "<nil>"
    if isinstance(value, BaseException):
        return _text_str(_error_text(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return quote(bytes(value).decode("utf-8", "replace"))  # slog always quotes []byte
    return _text_str(str(value))


def _json_value(value: object) -> str:
    if isinstance(value, str):
        return _json_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _go_float_json(value)
    if isinstance(value, GoDuration):
        return int.__repr__(value.ns)
    if value is None:
        return "null"
    if isinstance(value, BaseException):
        return _json_str(_error_text(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return _json_str(base64.b64encode(bytes(value)).decode("ascii"))  # json.Marshal of []byte
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return _json_str(str(value))


def _level_name(levelno: int) -> str:
    if levelno < INFO:
        return "DEBUG"
    if levelno < WARN:
        return "INFO"
    if levelno < ERROR:
        return "WARN"
    return "ERROR"


def _record_ns(record: logging.LogRecord) -> int:
    ns = getattr(record, _NS_ATTR, None)
    if isinstance(ns, int):
        return ns
    # Third-party records carry only a float; microseconds are all it holds reliably.
    return round(record.created * 1e6) * 1000


def _rfc3339_millis(ns: int) -> str:
    # slog's text handler: RFC 3339, milliseconds truncated, always three digits.
    secs, sub = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{sub // 1_000_000:03d}Z"


def _rfc3339_nano(ns: int) -> str:
    # slog's JSON handler: time.RFC3339Nano, trailing zeros of the fraction trimmed.
    secs, sub = divmod(ns, 1_000_000_000)
    frac = f".{sub:09d}".rstrip("0") if sub else ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + frac + "Z"


def _record_fields(record: logging.LogRecord) -> Iterable[tuple[str, object]]:
    fields = getattr(record, _FIELDS_ATTR, None)
    if fields is not None:
        return fields  # type: ignore[no-any-return]
    # A stdlib record (a third-party library): name its source, keep its exception.
    extra: list[tuple[str, object]] = [("logger", record.name)]
    if record.exc_info and record.exc_info[1] is not None:
        extra.append(("err", record.exc_info[1]))
        extra.append(("stack", "".join(traceback.format_exception(record.exc_info[1])).rstrip("\n")))
    if record.stack_info:
        extra.append(("stack", record.stack_info))
    return extra


class SlogHandler(logging.Handler):
    """Writes each record as one slog-style text or JSON line and flushes (stdout may be a pipe)."""

    def __init__(self, stream: TextIO, *, json_format: bool) -> None:
        super().__init__()
        self.stream = stream
        self.json_format = json_format

    def format(self, record: logging.LogRecord) -> str:
        ns = _record_ns(record)
        level = _level_name(record.levelno)
        msg = record.getMessage()
        fields = _record_fields(record)
        if self.json_format:
            parts = [
                f'{{"time":"{_rfc3339_nano(ns)}","level":"{level}","msg":{_json_str(msg)}',
            ]
            parts.extend(f",{_json_str(k)}:{_json_value(v)}" for k, v in fields)
            parts.append("}\n")
        else:
            parts = [f"time={_rfc3339_millis(ns)} level={level} msg={_text_str(msg)}"]
            parts.extend(f" {_text_str(k)}={_text_value(v)}" for k, v in fields)
            parts.append("\n")
        return "".join(parts)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.stream.write(line)
            self.stream.flush()
        except Exception:
            self.handleError(record)


class StructLogger:
    """slog-like front end: ``log.info("http_request", method="GET", status=200)``.

    Fields keep the order given; `bind` adds fields to every record (like ``slog.Logger.With``).
    Hot paths call `enabled` first to skip building fields that would be dropped.
    """

    __slots__ = ("_bound", "_logger")

    def __init__(self, logger: logging.Logger, bound: tuple[tuple[str, object], ...] = ()) -> None:
        self._logger = logger
        self._bound = bound

    @property
    def name(self) -> str:
        return self._logger.name

    def enabled(self, level: str | int) -> bool:
        return self._logger.isEnabledFor(parse_level(level))

    def bind(self, **fields: object) -> StructLogger:
        return StructLogger(self._logger, self._bound + tuple(fields.items()))

    def debug(self, msg: str, **fields: object) -> None:
        self._log(DEBUG, msg, fields)

    def info(self, msg: str, **fields: object) -> None:
        self._log(INFO, msg, fields)

    def warn(self, msg: str, **fields: object) -> None:
        self._log(WARN, msg, fields)

    def error(self, msg: str, **fields: object) -> None:
        self._log(ERROR, msg, fields)

    def _log(self, level: int, msg: str, fields: dict[str, object]) -> None:
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        ns = time.time_ns()
        # makeRecord + handle skips Logger._log's caller lookup (a stack walk per record).
        record = logger.makeRecord(logger.name, level, "", 0, msg, (), None)
        setattr(record, _NS_ATTR, ns)
        setattr(record, _FIELDS_ATTR, self._bound + tuple(fields.items()) if self._bound else fields.items())
        logger.handle(record)


def get_logger(name: str) -> StructLogger:
    """A logger under the ``aero_relay`` namespace (other names are placed under it)."""
    if name != ROOT_LOGGER_NAME and not name.startswith(ROOT_LOGGER_NAME + "."):
        name = f"{ROOT_LOGGER_NAME}.{name}"
    return StructLogger(logging.getLogger(name))


def configure_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Install the slog-style handler on the root logger (F-007); calling again replaces it.

    `fmt` is ``text`` or ``json``; output goes to stdout unless `stream` is given. Our loggers
    log at `level`; third-party libraries log at WARNING or above unless `level` is debug.
    """
    kind = fmt.lower()
    if kind not in ("text", "json"):
        raise ValueError(f"invalid log format {quote(fmt)} (expected text or json)")
    ours = parse_level(level)
    handler = SlogHandler(stream if stream is not None else sys.stdout, json_format=kind == "json")
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, SlogHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(DEBUG if ours <= DEBUG else max(ours, WARN))
    logging.getLogger(ROOT_LOGGER_NAME).setLevel(ours)


# --- redaction (F-160) --------------------------------------------------------------------------

REDACTED = "<redacted>"

# Values after these keys are credentials wherever they appear (URLs, headers, error texts).
_KEYED_VALUE = re.compile(r"(token=|apiKey=|aero_session=|aero-l2-token\.)[^& \n\r\t\"'><)\]};,]+")
# scheme://userinfo@ : greedy up to the last '@' of the authority, as URL parsers split it.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#\"']*@")


class Redactor:
    """Removes known secrets and credential-shaped values from log text (F-160).

    In order: each secret and its URL-query-escaped forms become ``<redacted>``; values after
    ``token=``, ``apiKey=``, ``aero_session=`` and ``aero-l2-token.`` are redacted up to a
    delimiter; URL userinfo is stripped. If a secret could still be read in the result (only
    when pieces join around a removed part), the whole text is replaced by ``<redacted>``.
    """

    __slots__ = ("_guard", "_secrets_re")

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.update((secret, urllib.parse.quote_plus(secret), urllib.parse.quote(secret, safe="")))
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._secrets_re = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        # A form inside the marker itself cannot be kept out of the output: skip it in the guard.
        self._guard = tuple(f for f in ordered if f not in REDACTED)

    def redact(self, text: str) -> str:
        out = text
        if self._secrets_re is not None:
            out = self._secrets_re.sub(REDACTED, out)
        out = _KEYED_VALUE.sub(r"\1" + REDACTED, out)
        out = _USERINFO.sub(r"\1", out)
        for form in self._guard:
            if form in out:
                return REDACTED
        return out


def _strip_url_fallback(url: str) -> str:
    cut = len(url)
    for sep in ("?", "#"):
        i = url.find(sep)
        if i != -1:
            cut = min(cut, i)
    return _USERINFO.sub(r"\1", url[:cut])


def sanitize_ws_url(url: str) -> str:
    """The backend URL as logged (F-160): no userinfo, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return _strip_url_fallback(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
