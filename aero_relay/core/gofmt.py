"""Go-compatible parsing and quoting.

The original service is configured and reports errors with Go's `strconv`, `time` and `fmt`
semantics; operators' scripts and the drop-in test suites depend on them, so these helpers
reproduce them exactly: `strconv.Quote` (fmt `%q`), `strconv.Atoi`, `strconv.ParseBool`,
`time.ParseDuration` and `time.Duration.String`.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "GoParseError",
    "atoi",
    "format_duration",
    "format_duration_ns",
    "parse_bool",
    "parse_duration",
    "parse_duration_ns",
    "quote",
]

_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)


class GoParseError(ValueError):
    """A parse error whose text matches the Go standard library's message."""


def _is_print(ch: str) -> bool:
    # Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and ASCII space.
    if ch == " ":
        return True
    return unicodedata.category(ch)[0] in "LMNPS"


_SIMPLE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def quote(s: str) -> str:
    """Go `strconv.Quote` / fmt `%q` for a string."""
    out = ['"']
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif _is_print(ch):
            out.append(ch)
        elif ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        else:
            cp = ord(ch)
            if cp < 0x80:
                out.append(f"\\x{cp:02x}")
            elif 0xD800 <= cp <= 0xDFFF:  # lone surrogate: Go would see invalid UTF-8
                out.append("\\ufffd")
            elif cp < 0x10000:
                out.append(f"\\u{cp:04x}")
            else:
                out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def atoi(s: str) -> int:
    """Go `strconv.Atoi` (64-bit): optional sign, ASCII decimal digits only."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body or not body.isascii() or not body.isdigit():
        raise GoParseError(f"strconv.Atoi: parsing {quote(s)}: invalid syntax")
    if len(body.lstrip("0")) > 19:  # also keeps int() clear of its 4300-digit limit
        raise GoParseError(f"strconv.Atoi: parsing {quote(s)}: value out of range")
    value = int(s)
    if value > _INT64_MAX or value < _INT64_MIN:
        raise GoParseError(f"strconv.Atoi: parsing {quote(s)}: value out of range")
    return value


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(s: str) -> bool:
    """Go `strconv.ParseBool`."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise GoParseError(f"strconv.ParseBool: parsing {quote(s)}: invalid syntax")


_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration_ns(s: str) -> int:
    """Go `time.ParseDuration`, returning integer nanoseconds."""
    orig = s
    bad = GoParseError(f"time: invalid duration {quote(orig)}")
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise bad
    total = 0
    while s:
        if not (s[0] == "." or (s[0].isascii() and s[0].isdigit())):
            raise bad
        i = 0
        while i < len(s) and s[i].isascii() and s[i].isdigit():
            i += 1
        int_digits = s[:i]
        s = s[i:]
        frac_digits = ""
        if s.startswith("."):
            s = s[1:]
            j = 0
            while j < len(s) and s[j].isascii() and s[j].isdigit():
                j += 1
            frac_digits = s[:j]
            s = s[j:]
        if not int_digits and not frac_digits:
            raise bad  # no digits at all, e.g. ".s"
        j = 0
        while j < len(s) and s[j] != "." and not (s[j].isascii() and s[j].isdigit()):
            j += 1
        unit = s[:j]
        s = s[j:]
        if unit == "":
            raise GoParseError(f"time: missing unit in duration {quote(orig)}")
        scale = _UNITS_NS.get(unit)
        if scale is None:
            raise GoParseError(f"time: unknown unit {quote(unit)} in duration {quote(orig)}")
        whole = int(int_digits) if int_digits else 0
        value = whole * scale
        if frac_digits:
            # Go truncates the fractional part to whole nanoseconds.
            value += int(frac_digits) * scale // (10 ** len(frac_digits))
        total += value
        if total > _INT64_MAX + (1 if neg else 0):
            raise bad
    return -total if neg else total


def parse_duration(s: str) -> float:
    """Go `time.ParseDuration`, returning seconds as a float (Trio's unit)."""
    return parse_duration_ns(s) / 1e9


def _fmt_frac(v: int, prec: int) -> tuple[str, int]:
    # Mirrors time.fmtFrac: digits after the point with trailing zeros removed.
    digits = []
    printed = False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        v //= 10
    frac = "".join(reversed(digits))
    return ("." + frac if frac else ""), v


def format_duration_ns(d: int) -> str:
    """Go `time.Duration.String` for integer nanoseconds."""
    if d == 0:
        return "0s"
    neg = d < 0
    u = -d if neg else d
    if u < 1_000_000_000:
        if u < 1_000:
            out = f"{u}ns"
        elif u < 1_000_000:
            frac, whole = _fmt_frac(u, 3)
            out = f"{whole}{frac}µs"
        else:
            frac, whole = _fmt_frac(u, 6)
            out = f"{whole}{frac}ms"
    else:
        frac, whole = _fmt_frac(u, 9)
        secs = whole % 60
        whole //= 60
        out = f"{secs}{frac}s"
        if whole > 0:
            mins = whole % 60
            whole //= 60
            out = f"{mins}m{out}"
            if whole > 0:
                out = f"{whole}h{out}"
    return ("-" if neg else "") + out


def format_duration(seconds: float) -> str:
    """Go `time.Duration.String` for a duration held as float seconds."""
    return format_duration_ns(round(seconds * 1e9))
