"""Signaling message schema: `GET /webrtc/signal` messages and the HTTP offer bodies (spec §7-9).

Pure and sans-IO. Parsers turn text/bytes into frozen values or raise :class:`SignalingError`
(never anything else); builders return JSON-ready dicts that the shell serialises with its one
Go-compatible JSON writer (``transports/http_util.go_json``).

How Go's ``encoding/json`` is reproduced (the original decodes into Go structs):

* **Syntax first, then fields.** Go scans the whole value before it unmarshals, so a syntax
  error anywhere wins over a field error earlier in the text. We parse with :mod:`json` first and
  then walk the result. Numbers keep their literal text, ``NaN``/``Infinity`` are rejected, lone
  UTF-16 surrogates (from ``\\ud800`` escapes or invalid UTF-8 in a body) become U+FFFD as in Go.
* **One value, then trailing data.** Go's ``Decoder`` stops at the end of the first value; a
  top-level scalar glued to a non-space character (``null}``) is already a syntax error there.
  Strict decoders then demand only whitespace after the value (``unexpected trailing data``).
  ``ParseSignalMessage`` validates the message *before* that check (F-070), so
  ``{"type":"x"} junk`` reports the type, not the trailing data; we keep that order.
* **Field names match case-insensitively, like Go** (``bytes.EqualFold``; for our ASCII names
  that is ASCII folding plus U+212A KELVIN SIGN ~ ``k`` and U+017F LONG S ~ ``s``). Copied on
  purpose: this is a drop-in replacement and a stricter parser would reject messages the Go relay
  accepts. Values are case-sensitive (``"type":"AUTH"`` is unsupported).
* **null leaves a value field unchanged and sets a pointer field to nil**; so ``"apiKey":null``
  is the same as no ``apiKey``. **Duplicate keys: the last wins**, and a repeated object field
  merges into the earlier one (Go decodes into the existing struct).
* **Unknown fields** (strict mode) fail with ``json: unknown field "k"``, at every depth: the
  HTTP offer's ``sdp`` object is the original's own ``{type, sdp}`` struct, not pion's
  ``SessionDescription``, so extra keys inside it are rejected too (F-059).
* **Error texts** follow Go's shapes (``json: cannot unmarshal string into Go struct field
  signalMessage.sdp of type signaling.sdp``, ``EOF``, ``unexpected EOF``) but other syntax errors
  say ``invalid JSON at offset N: ...``; F-217: clients check only the code.
* **Nesting deeper than Python's recursion limit** is rejected (``exceeded max depth``). Go allows
  10000 levels; no valid message nests more than two, so only junk inside ignored unknown fields of
  a ``POST /offer`` body could tell the difference.
* **Empty strings are absent.** Go's validation treats ``""`` like an omitted ``apiKey``, ``token``,
  ``code`` or ``message``; :class:`SignalMessage` reports both as ``None``. Candidate fields are Go
  pointers, so there ``""`` and ``None`` stay distinct.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

import attrs

from aero_relay.core.gofmt import quote

__all__ = [
    "MAX_OFFER_BODY_BYTES",
    "MESSAGE_TYPES",
    "IceCandidate",
    "OfferBodyError",
    "OfferRequest",
    "SessionDescription",
    "SignalMessage",
    "SignalingError",
    "answer_message",
    "candidate_message",
    "error_message",
    "offer_response_v1",
    "parse_offer_request_v1",
    "parse_signal_message",
    "parse_webrtc_offer_body",
    "webrtc_offer_response",
]

MAX_OFFER_BODY_BYTES: Final = 2 << 20
"""Body limit of `POST /offer` and `POST /webrtc/offer` (F-054, F-058); the shell enforces it."""

MESSAGE_TYPES: Final = frozenset({"auth", "offer", "answer", "candidate", "close", "error"})


class SignalingError(ValueError):
    """A message or body the relay refuses.

    On `/webrtc/signal` it becomes ``{"type":"error","code":"bad_message","message":...}`` and a
    Close(1008, "bad message") (F-070).
    """

    code: Final = "bad_message"
    ws_close_code: Final = 1008
    ws_close_reason: Final = "bad message"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OfferBodyError(SignalingError):
    """A bad `POST /offer` or `POST /webrtc/offer` body: HTTP 400 ``{"code":"bad_message",...}``."""

    status: Final = 400


@attrs.frozen
class SessionDescription:
    type: str
    sdp: str


@attrs.frozen
class IceCandidate:
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None
    username_fragment: str | None


@attrs.frozen
class SignalMessage:
    """A validated client message (F-071). ``type`` is one of :data:`MESSAGE_TYPES`."""

    type: str
    api_key: str | None
    token: str | None
    sdp: SessionDescription | None
    candidate: IceCandidate | None
    code: str | None
    message: str | None


@attrs.frozen
class OfferRequest:
    """A valid `POST /offer` body; ``version`` is echoed in the answer (F-057)."""

    version: int
    offer: SessionDescription


# --- Go-like JSON decoding ------------------------------------------------------------------------

_WS: Final = " \t\n\r"


class _Obj(tuple[tuple[str, object], ...]):
    """A JSON object as its (key, value) pairs in order, so duplicates survive and ``{}`` != ``[]``."""

    __slots__ = ()


class _Num:
    """A JSON number kept as its literal text (Go checks the literal against the target type)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _BadConstant(Exception):
    pass


def _reject_constant(name: str) -> object:
    raise _BadConstant(name)


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_Obj, parse_int=_Num, parse_float=_Num, parse_constant=_reject_constant
)

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _clean(s: str) -> str:
    """Lone surrogates -> U+FFFD, as Go does for bad ``\\u`` escapes and invalid UTF-8."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", s)
    return s


def _quote_char(c: str) -> str:
    # Go's json quoteChar: the character in single quotes, escaped like %q.
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    return "'" + quote(_clean(c))[1:-1] + "'"


def _as_text(data: str | bytes) -> str:
    # Invalid UTF-8 bytes become lone surrogates: a syntax error outside strings, U+FFFD inside.
    return data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data


def _read_value(text: str) -> tuple[object, bool]:
    """Decode the first JSON value of ``text``; return it and whether only whitespace follows."""
    n = len(text)
    i = 0
    while i < n and text[i] in _WS:
        i += 1
    if i == n:
        raise SignalingError("EOF")
    try:
        value, end = _DECODER.raw_decode(text, i)
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip(_WS)) or e.msg.startswith("Unterminated string"):
            raise SignalingError("unexpected EOF") from None
        raise SignalingError(f"invalid JSON at offset {e.pos}: {e.msg[:1].lower()}{e.msg[1:]}") from None
    except _BadConstant as e:
        if str(e) == "-Infinity":
            raise SignalingError("invalid character 'I' in numeric literal") from None
        raise SignalingError(f"invalid character '{str(e)[0]}' looking for beginning of value") from None
    except RecursionError:
        raise SignalingError("exceeded max depth") from None
    if not isinstance(value, (_Obj, list)) and end < n and text[end] not in _WS:
        # Go needs one byte past a scalar to end it; a non-space there is a syntax error.
        raise SignalingError(f"invalid character {_quote_char(text[end])} after top-level value")
    return value, text[end:].strip(_WS) == ""


@attrs.frozen
class _Field:
    name: str  # the Go json tag; also the key in the decoded dict
    kind: str  # "string", "*string", "int", "*uint16", "struct" or "*struct"
    go_type: str
    schema: _Schema | None = None


@attrs.frozen
class _Schema:
    go_name: str
    go_type: str
    fields: Mapping[str, _Field]  # by folded name


def _fold(key: str) -> str | None:
    """Go's case folding of a key, or None when it cannot match an (ASCII) field name."""
    if not key.isascii():
        key = key.replace("\u212a", "k").replace("\u017f", "s")
        if not key.isascii():
            return None
    return key.lower()


def _schema(go_name: str, go_type: str, *fields: _Field) -> _Schema:
    return _Schema(go_name, go_type, {f.name.lower(): f for f in fields})


def _kind_of(value: object) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, _Num):
        return "number"
    if isinstance(value, bool):
        return "bool"
    return "object" if isinstance(value, _Obj) else "array"


def _number_fits(text: str, kind: str) -> bool:
    if kind == "*uint16":
        return text.isdigit() and len(text) <= 5 and int(text) <= 0xFFFF
    digits = text[1:] if text.startswith("-") else text
    return digits.isdigit() and len(digits) <= 19 and -(1 << 63) <= int(text) < (1 << 63)


def _decode(value: object, schema: _Schema, *, strict: bool) -> dict[str, object]:
    """Unmarshal a top-level value into ``schema``; absent fields are absent from the result."""
    out: dict[str, object] = {}
    if value is None:  # null into a struct: no effect
        return out
    if not isinstance(value, _Obj):
        raise SignalingError(
            f"json: cannot unmarshal {_kind_of(value)} into Go value of type {schema.go_type}"
        )
    _decode_object(value, schema, out, strict, "")
    return out


def _decode_object(pairs: _Obj, schema: _Schema, out: dict[str, object], strict: bool, path: str) -> None:
    for key, value in pairs:
        folded = _fold(key)
        field = schema.fields.get(folded) if folded is not None else None
        if field is None:
            if strict:
                raise SignalingError(f"json: unknown field {quote(_clean(key))}")
            continue
        kind = field.kind
        if value is None:
            if kind[0] == "*":
                out[field.name] = None
            continue
        fpath = f"{path}.{field.name}" if path else field.name
        what = _kind_of(value)
        if kind.endswith("struct"):
            if isinstance(value, _Obj):
                assert field.schema is not None
                inner = out.get(field.name)
                if not isinstance(inner, dict):
                    inner = out[field.name] = {}
                _decode_object(value, field.schema, inner, strict, fpath)
                continue
        elif kind.endswith("string"):
            if isinstance(value, str):
                out[field.name] = _clean(value)
                continue
        elif isinstance(value, _Num):
            if _number_fits(value.text, kind):
                out[field.name] = int(value.text)
                continue
            what = f"number {value.text}"
        raise SignalingError(
            f"json: cannot unmarshal {what} into Go struct field {schema.go_name}.{fpath} "
            f"of type {field.go_type}"
        )


_SDP: Final = _schema(
    "sdp", "signaling.sdp", _Field("type", "string", "string"), _Field("sdp", "string", "string")
)
_CANDIDATE: Final = _schema(
    "candidate",
    "signaling.candidate",
    _Field("candidate", "string", "string"),
    _Field("sdpMid", "*string", "string"),
    _Field("sdpMLineIndex", "*uint16", "uint16"),
    _Field("usernameFragment", "*string", "string"),
)
_SIGNAL: Final = _schema(
    "signalMessage",
    "signaling.signalMessage",
    _Field("type", "string", "signaling.messageType"),
    _Field("sdp", "*struct", "signaling.sdp", _SDP),
    _Field("candidate", "*struct", "signaling.candidate", _CANDIDATE),
    _Field("apiKey", "string", "string"),
    _Field("token", "string", "string"),
    _Field("code", "string", "string"),
    _Field("message", "string", "string"),
)
_HTTP_OFFER: Final = _schema(
    "httpOfferRequest", "signaling.httpOfferRequest", _Field("sdp", "struct", "signaling.sdp", _SDP)
)
_SESSION_DESCRIPTION: Final = _schema(
    "sessionDescription",
    "signaling.sessionDescription",
    _Field("type", "string", "string"),
    _Field("sdp", "string", "string"),
)
_OFFER_V1: Final = _schema(
    "offerRequest",
    "signaling.offerRequest",
    _Field("version", "int", "int"),
    _Field("offer", "struct", "signaling.sessionDescription", _SESSION_DESCRIPTION),
)


def _str(d: Mapping[str, object], key: str) -> str:
    v = d.get(key)
    return v if isinstance(v, str) else ""


def _opt_str(d: Mapping[str, object], key: str) -> str | None:
    v = d.get(key)
    return v if isinstance(v, str) else None


def _sub(d: Mapping[str, object], key: str) -> dict[str, object] | None:
    v = d.get(key)
    return v if isinstance(v, dict) else None


# --- /webrtc/signal -------------------------------------------------------------------------------


def parse_signal_message(text: str | bytes) -> SignalMessage:
    """Parse one `/webrtc/signal` text message (F-070 strict decoding, F-071 validation).

    Raises :class:`SignalingError` whose ``message`` goes into the ``bad_message`` error.
    """
    value, only_space_follows = _read_value(_as_text(text))
    m = _decode(value, _SIGNAL, strict=True)
    msg = _validate(m)
    if not only_space_follows:
        raise SignalingError("unexpected trailing data")
    return msg


def _validate(m: Mapping[str, object]) -> SignalMessage:
    t = _str(m, "type")
    sdp = _sub(m, "sdp")
    cand = _sub(m, "candidate")
    api_key = _str(m, "apiKey")
    token = _str(m, "token")
    code = _str(m, "code")
    message = _str(m, "message")
    if t == "auth":
        if not api_key and not token:
            raise SignalingError("auth message missing apiKey/token")
        if api_key and token and api_key != token:
            raise SignalingError("auth message must not include both apiKey and token unless they match")
        if sdp is not None or cand is not None or code or message:
            raise SignalingError("auth message has unexpected fields")
    elif t in ("offer", "answer"):
        if sdp is None:
            raise SignalingError(f"{t} message missing sdp")
        if _str(sdp, "type") != t:
            raise SignalingError(f"{t} message has sdp.type={quote(_str(sdp, 'type'))}")
        if cand is not None or api_key or token or code or message:
            raise SignalingError(f"{t} message has unexpected fields")
    elif t == "candidate":
        if cand is None:
            raise SignalingError("candidate message missing candidate")
        if sdp is not None or api_key or token or code or message:
            raise SignalingError("candidate message has unexpected fields")
    elif t == "close":
        if sdp is not None or cand is not None or api_key or token or code or message:
            raise SignalingError("close message has unexpected fields")
    elif t == "error":
        if not code or not message:
            raise SignalingError("error message missing code/message")
        if sdp is not None or cand is not None or api_key or token:
            raise SignalingError("error message has unexpected fields")
    else:
        raise SignalingError(f"unsupported message type {quote(t)}")
    index = cand.get("sdpMLineIndex") if cand is not None else None
    return SignalMessage(
        type=t,
        api_key=api_key or None,
        token=token or None,
        sdp=SessionDescription(_str(sdp, "type"), _str(sdp, "sdp")) if sdp is not None else None,
        candidate=IceCandidate(
            candidate=_str(cand, "candidate"),
            sdp_mid=_opt_str(cand, "sdpMid"),
            sdp_mline_index=index if isinstance(index, int) else None,
            username_fragment=_opt_str(cand, "usernameFragment"),
        )
        if cand is not None
        else None,
        code=code or None,
        message=message or None,
    )


def answer_message(sdp: str) -> dict[str, object]:
    """The server's answer (F-075): exactly ``{"type":"answer","sdp":{"type":"answer","sdp":...}}``."""
    return {"type": "answer", "sdp": {"type": "answer", "sdp": sdp}}


def candidate_message(
    candidate: str,
    sdp_mid: str | None = None,
    sdp_mline_index: int | None = None,
    username_fragment: str | None = None,
) -> dict[str, object]:
    """A trickled server candidate (F-075, F-194, F-223): only the four keys, ``None`` ones omitted."""
    c: dict[str, object] = {"candidate": candidate}
    if sdp_mid is not None:
        c["sdpMid"] = sdp_mid
    if sdp_mline_index is not None:
        c["sdpMLineIndex"] = sdp_mline_index
    if username_fragment is not None:
        c["usernameFragment"] = username_fragment
    return {"type": "candidate", "candidate": c}


def error_message(code: str, message: str) -> dict[str, object]:
    """``{"type":"error","code":...,"message":...}``. Like Go's ``omitempty``, an empty code or
    message is left out (callers always pass both; F-194 clients require them non-empty)."""
    m: dict[str, object] = {"type": "error"}
    if code:
        m["code"] = code
    if message:
        m["message"] = message
    return m


# --- HTTP offer bodies ----------------------------------------------------------------------------


def parse_offer_request_v1(body: bytes) -> OfferRequest:
    """`POST /offer` body (F-054): lenient decoding (unknown fields and trailing data ignored).

    Decode failure -> ``invalid offer``; ``version != 1`` -> ``unsupported protocol version``;
    ``offer.type != "offer"`` or empty ``offer.sdp`` -> ``invalid offer``. All raise
    :class:`OfferBodyError` (400 bad_message).
    """
    try:
        value, _ = _read_value(_as_text(body))
        req = _decode(value, _OFFER_V1, strict=False)
    except SignalingError:
        raise OfferBodyError("invalid offer") from None
    version = req.get("version", 0)
    if version != 1:
        raise OfferBodyError("unsupported protocol version")
    offer = _sub(req, "offer") or {}
    if _str(offer, "type") != "offer" or not _str(offer, "sdp"):
        raise OfferBodyError("invalid offer")
    return OfferRequest(version=1, offer=SessionDescription("offer", _str(offer, "sdp")))


def offer_response_v1(version: int, sdp: str) -> dict[str, object]:
    """`POST /offer` success body (F-057): ``{"version":v,"answer":{"type":"answer","sdp":...}}``."""
    return {"version": version, "answer": {"type": "answer", "sdp": sdp}}


def _strict_shape(
    value: object, only_space_follows: bool, schema: _Schema, nested: bool
) -> dict[str, object]:
    d = _decode(value, schema, strict=True)
    if not only_space_follows:
        raise SignalingError("unexpected trailing data")
    return (_sub(d, "sdp") or {}) if nested else d


def parse_webrtc_offer_body(body: bytes) -> SessionDescription:
    """`POST /webrtc/offer` body (F-059, F-060), returned as an ``offer`` description.

    Two strict shapes: ``{"sdp":{"type":"offer","sdp":"..."}}`` first, then a raw
    ``{"type":"offer","sdp":"..."}``. Both failing -> ``invalid offer request body (...): <err1>\\n<err2>``
    (Go's ``errors.Join``). Then ``type`` must be ``offer``/``answer`` (else ``unsupported sdp type
    "<t>"``) and ``answer`` is refused with ``sdp.type must be "offer"``. An empty ``sdp`` passes
    here; the peer connection rejects it later (F-061). Raises :class:`OfferBodyError`.
    """
    errors: list[str] = []
    desc: dict[str, object] | None = None
    try:
        value, only_space_follows = _read_value(_as_text(body))
    except SignalingError as e:
        errors = [e.message, e.message]  # both attempts hit the same syntax error
    else:
        for schema, nested in ((_HTTP_OFFER, True), (_SDP, False)):
            try:
                desc = _strict_shape(value, only_space_follows, schema, nested)
                break
            except SignalingError as e:
                errors.append(e.message)
    if desc is None:
        raise OfferBodyError(
            'invalid offer request body (expected {"sdp":{...}} or a raw SessionDescription): '
            + "\n".join(errors)
        )
    t = _str(desc, "type")
    if t == "answer":
        raise OfferBodyError('sdp.type must be "offer"')
    if t != "offer":
        raise OfferBodyError(f"unsupported sdp type {quote(t)}")
    return SessionDescription("offer", _str(desc, "sdp"))


def webrtc_offer_response(session_id: str, sdp: str) -> dict[str, object]:
    """`POST /webrtc/offer` success body (F-062): ``{"sessionId":...,"sdp":{"type":"answer","sdp":...}}``."""
    return {"sessionId": session_id, "sdp": {"type": "answer", "sdp": sdp}}
