"""The one JSON writer and the small response helpers every handler shares.

JSON matches Go's `json.Encoder.Encode` (F-013): compact, HTML characters escaped as
`\\u003c`/`\\u003e`/`\\u0026` (and U+2028/U+2029), a trailing newline; callers build dicts in the
key order Go would emit (struct order, or sorted for maps).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from quart import Response

__all__ = [
    "JSON_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "go_json",
    "json_error",
    "json_response",
    "text_response",
]

JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json(obj: object, *, newline: bool = True) -> str:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_HTML_ESCAPES)
    return text + "\n" if newline else text


def json_response(
    obj: object, status: int = 200, headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None
) -> Response:
    resp = Response(go_json(obj), status=status, content_type=JSON_CONTENT_TYPE)
    if headers:
        items = headers.items() if isinstance(headers, Mapping) else headers
        for k, v in items:
            resp.headers[k] = v
    return resp


def json_error(status: int, code: str, message: str) -> Response:
    """F-226 signaling shape: `{"code":...,"message":...}`."""
    return json_response({"code": code, "message": message}, status)


def text_response(body: str, status: int = 200) -> Response:
    resp = Response(body, status=status, content_type=TEXT_CONTENT_TYPE)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
