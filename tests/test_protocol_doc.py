"""PROTOCOL.md's examples are executable: every one is checked against the code and the shared vectors.

Conventions in PROTOCOL.md (described in its §3.6):

* ```frame blocks: hex bytes (a ``#`` starts a comment), a ``---`` line, then ``key: value`` lines, either
  the decoded fields (version, guest_port, remote_ip, remote_port, payload_hex) or ``error`` + ``kind``;
  optional ``name`` and ``max_payload`` (default 1200).
* ```json blocks: one JSON value each.
* ```jwt and ```turnrest blocks: ``key: value`` inputs and expected outputs.
* ``<!-- codes: udp|signal|http -->`` before a Markdown table of error / close codes.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import attrs
import pytest

from aero_relay.core import frames
from aero_relay.core.auth import AuthError, verify_jwt
from aero_relay.core.turnrest import turn_rest_credential

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "PROTOCOL.md"
VECTORS = ROOT.parent / "shared" / "vectors"

# The codes a client may see, per surface (spec §9, §10; F-216: the close codes must match exactly).
UDP_WS_CLOSE_CODES = {1000, 1001, 1003, 1008, 1009, 1011, 1013}
SIGNAL_CLOSE_CODES = {1000, 1001, 1003, 1008, 1009, 1011}
UDP_WS_ERROR_CODES = {
    "unauthorized",
    "bad_message",
    "too_many_sessions",
    "session_already_active",
    "internal_error",
}
SIGNAL_ERROR_CODES = {
    "unauthorized",
    "bad_message",
    "unexpected_message",
    "rate_limited",
    "too_many_sessions",
    "session_already_active",
    "internal_error",
}
HTTP_STATUSES = {400, 401, 403, 409, 500, 503}
HTTP_ERROR_CODES = {
    "forbidden",
    "unauthorized",
    "bad_message",
    "internal_error",
    "too_many_sessions",
    "session_already_active",
    "registry_unavailable",
}
NONE = "—"  # a table cell meaning "no error message / no close"

# (surface, error code) -> the only close code allowed for it (F-074, F-090).
PINNED_CLOSE_CODES = {
    ("udp", "too_many_sessions"): 1013,
    ("udp", "session_already_active"): 1013,
    ("signal", "too_many_sessions"): 1008,
    ("signal", "session_already_active"): 1008,
    ("signal", "rate_limited"): 1008,
}

FRAME_FIELDS = {"version", "guest_port", "remote_ip", "remote_port", "payload_hex"}
ERROR_FIELDS = {"error", "kind"}
OPTIONAL_FIELDS = {"name", "max_payload"}


# --- Parsing PROTOCOL.md -------------------------------------------------------------------------


@attrs.frozen
class Block:
    lang: str
    body: str
    line: int  # 1-based line of the opening fence


@attrs.frozen
class FrameExample:
    line: int
    data: bytes
    fields: dict[str, str]

    @property
    def name(self) -> str:
        return self.fields.get("name", f"line{self.line}")


DOC = DOC_PATH.read_text(encoding="utf-8")
_FENCE = re.compile(r"^```(\S*)\s*$")
_HEX_LINE = re.compile(r"^\s*((?:[0-9a-f]{2}\s*)*)(?:#.*)?$")


def _blocks(text: str) -> list[Block]:
    out: list[Block] = []
    lang: str | None = None
    start = 0
    body: list[str] = []
    for i, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if lang is None:
            if m:
                lang, start, body = m.group(1), i, []
        elif line.strip() == "```":
            out.append(Block(lang, "\n".join(body), start))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"unclosed fence opened on line {start}"
    return out


def _key_values(lines: list[str], where: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        assert sep, f"block at line {where}: expected `key: value`, got {line!r}"
        key = key.strip()
        assert key not in fields, f"block at line {where}: duplicate key {key!r}"
        fields[key] = value.strip()
    return fields


def _frame_example(block: Block) -> FrameExample:
    lines = block.body.splitlines()
    assert "---" in lines, f"frame block at line {block.line} has no --- separator"
    cut = lines.index("---")
    hex_text = []
    for line in lines[:cut]:
        m = _HEX_LINE.match(line)
        assert m, f"frame block at line {block.line}: not a hex line: {line!r}"
        hex_text.append(m.group(1))
    return FrameExample(
        block.line, bytes.fromhex("".join(hex_text)), _key_values(lines[cut + 1 :], block.line)
    )


BLOCKS = _blocks(DOC)
FRAME_EXAMPLES = [_frame_example(b) for b in BLOCKS if b.lang == "frame"]
JSON_BLOCKS = [b for b in BLOCKS if b.lang == "json"]


def _tables(marker: str) -> list[list[dict[str, str]]]:
    """The Markdown tables that follow `<!-- codes: marker -->`, as rows keyed by header cell."""
    lines = DOC.splitlines()
    tables = []
    for i, line in enumerate(lines):
        if line.strip() != f"<!-- codes: {marker} -->":
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        rows = []
        while j < len(lines) and lines[j].startswith("|"):
            rows.append([c.strip().replace("`", "") for c in lines[j].strip().strip("|").split("|")])
            j += 1
        assert len(rows) >= 3, f"codes table after line {i + 1} is empty"
        header, body = rows[0], rows[2:]  # rows[1] is the |---| separator
        for row in body:
            assert len(row) == len(header), f"table after line {i + 1}: ragged row {row}"
        tables.append([dict(zip(header, row, strict=True)) for row in body])
    return tables


def _vectors() -> list[dict[str, object]]:
    data = json.loads((VECTORS / "udp-relay.json").read_text(encoding="utf-8"))
    vectors: list[dict[str, object]] = data["vectors"]
    return vectors


# --- Frames ----------------------------------------------------------------------------------------


def test_the_doc_has_frame_examples_and_unique_names() -> None:
    names = [ex.name for ex in FRAME_EXAMPLES]
    assert len(names) >= 9
    assert len(names) == len(set(names))


@pytest.mark.parametrize("ex", FRAME_EXAMPLES, ids=lambda ex: ex.name)
def test_frame_example_decodes_as_documented(ex: FrameExample) -> None:
    """F-116 .. F-118: each hex dump decodes to its fields, or fails with its exact error text."""
    keys = set(ex.fields) - OPTIONAL_FIELDS
    max_payload = int(ex.fields.get("max_payload", "1200"))
    if keys == ERROR_FIELDS:
        with pytest.raises(frames.FrameError) as caught:
            frames.decode(ex.data, max_payload=max_payload)
        assert str(caught.value) == ex.fields["error"]
        assert caught.value.kind == ex.fields["kind"]
        return
    assert keys == FRAME_FIELDS, f"{ex.name}: fields must be {sorted(FRAME_FIELDS)} or {sorted(ERROR_FIELDS)}"
    frame = frames.decode(ex.data, max_payload=max_payload)
    assert frame.version == int(ex.fields["version"])
    assert frame.guest_port == int(ex.fields["guest_port"])
    assert frame.remote_ip_text == ex.fields["remote_ip"]
    assert frame.remote_port == int(ex.fields["remote_port"])
    assert frame.payload == bytes.fromhex(ex.fields["payload_hex"])


@pytest.mark.parametrize(
    "ex", [ex for ex in FRAME_EXAMPLES if "error" not in ex.fields], ids=lambda ex: ex.name
)
def test_valid_frame_example_reencodes_to_the_same_bytes(ex: FrameExample) -> None:
    frame = frames.decode(ex.data, max_payload=int(ex.fields.get("max_payload", "1200")))
    assert frames.encode(frame) == ex.data


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: str(v["name"]))
def test_every_shared_vector_is_documented_verbatim(vector: dict[str, object]) -> None:
    """Every udp-relay.json case appears as a frame block with its name, its bytes and its outcome."""
    by_name = {ex.name: ex for ex in FRAME_EXAMPLES}
    assert vector["name"] in by_name, f"PROTOCOL.md lacks a frame example named {vector['name']}"
    ex = by_name[str(vector["name"])]
    assert ex.data == base64.b64decode(str(vector["frame_b64"]))
    assert "max_payload" not in ex.fields
    if vector.get("expectError"):
        assert str(vector["errorContains"]) in ex.fields["error"]
    else:
        assert int(ex.fields["version"]) == vector["version"]
        assert int(ex.fields["guest_port"]) == vector["guestPort"]
        assert ex.fields["remote_ip"] == vector["remoteIp"]
        assert int(ex.fields["remote_port"]) == vector["remotePort"]
        assert bytes.fromhex(ex.fields["payload_hex"]) == base64.b64decode(str(vector["payload_b64"]))


# --- JSON -----------------------------------------------------------------------------------------


def test_the_doc_has_json_examples() -> None:
    assert len(JSON_BLOCKS) >= 20


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=lambda b: f"line{b.line}")
def test_json_example_parses(block: Block) -> None:
    json.loads(block.body)


def _messages_of_type(kind: str) -> list[dict[str, object]]:
    out = []
    for b in JSON_BLOCKS:
        value = json.loads(b.body)
        if isinstance(value, dict) and value.get("type") == kind:
            out.append(value)
    return out


def test_answer_examples_carry_no_extra_keys() -> None:
    """F-075/F-194: the relay's answer is exactly {type, sdp:{type, sdp}}."""
    answers = _messages_of_type("answer")
    assert answers
    for msg in answers:
        assert set(msg) == {"type", "sdp"}
        sdp = msg["sdp"]
        assert isinstance(sdp, dict) and set(sdp) == {"type", "sdp"} and sdp["type"] == "answer"


def test_candidate_examples_use_only_the_candidate_init_keys() -> None:
    """F-075/F-223: candidate, sdpMid, sdpMLineIndex (and usernameFragment, which the relay omits)."""
    candidates = _messages_of_type("candidate")
    key_sets = []
    for msg in candidates:
        assert set(msg) == {"type", "candidate"}
        cand = msg["candidate"]
        assert isinstance(cand, dict)
        assert "candidate" in cand
        key_sets.append(set(cand))
    # A client example may carry usernameFragment; the relay's own example must not.
    assert {"candidate", "sdpMid", "sdpMLineIndex"} in key_sets
    assert all(keys <= {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"} for keys in key_sets)


def test_error_message_examples_have_non_empty_code_and_message() -> None:
    """F-194: an error message is {type:"error", code, message}, both non-empty."""
    errors = _messages_of_type("error")
    assert errors
    for msg in errors:
        assert set(msg) == {"type", "code", "message"}
        assert msg["code"] and msg["message"]


def test_ready_example_has_a_32_hex_session_id() -> None:
    """F-092."""
    (ready,) = _messages_of_type("ready")
    assert set(ready) == {"type", "sessionId"}
    assert re.fullmatch("[0-9a-f]{32}", str(ready["sessionId"]))


# --- Error and close code tables --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("surface", "close_codes", "error_codes"),
    [("udp", UDP_WS_CLOSE_CODES, UDP_WS_ERROR_CODES), ("signal", SIGNAL_CLOSE_CODES, SIGNAL_ERROR_CODES)],
)
def test_websocket_code_tables_use_the_known_codes_and_cover_them(
    surface: str, close_codes: set[int], error_codes: set[str]
) -> None:
    """Every row of the /udp and /webrtc/signal tables uses a known code, and every known code is shown."""
    tables = _tables(surface)
    assert tables, f"no <!-- codes: {surface} --> table"
    seen_close: set[int] = set()
    seen_error: set[str] = set()
    for row in (r for t in tables for r in t):
        close = int(row["Close code"])
        assert close in close_codes, row
        seen_close.add(close)
        code = row["Error code"]
        if code != NONE:
            assert code in error_codes, row
            assert row["Message"] != NONE, row
            seen_error.add(code)
            pinned = PINNED_CLOSE_CODES.get((surface, code))
            assert pinned is None or close == pinned, row
    assert seen_close == close_codes
    assert seen_error == error_codes


def test_http_code_tables_use_the_known_statuses_and_codes() -> None:
    tables = _tables("http")
    assert len(tables) >= 4
    seen: set[str] = set()
    for row in (r for t in tables for r in t):
        assert int(row["Status"]) in HTTP_STATUSES, row
        code = row["Error code"]
        if code != NONE:
            assert code in HTTP_ERROR_CODES, row
            seen.add(code)
    assert seen == HTTP_ERROR_CODES


# --- JWT and TURN REST ------------------------------------------------------------------------------


def _single(lang: str) -> dict[str, str]:
    (block,) = [b for b in BLOCKS if b.lang == lang]
    return _key_values(block.body.splitlines(), block.line)


def test_jwt_example_verifies_to_the_documented_claims() -> None:
    """F-038 .. F-043."""
    ex = _single("jwt")
    claims = verify_jwt(ex["token"], ex["secret"].encode(), int(ex["now"]))
    assert claims.sid == ex["sid"]
    assert claims.exp == int(ex["exp"])
    assert claims.iat == int(ex["iat"])
    assert (claims.origin, claims.aud, claims.iss) == (ex["origin"], ex["aud"], ex["iss"])


def test_jwt_example_is_expired_at_its_exp_and_bound_to_its_secret() -> None:
    """F-235 and F-041, as the doc states under the example."""
    ex = _single("jwt")
    with pytest.raises(AuthError):
        verify_jwt(ex["token"], ex["secret"].encode(), int(ex["exp"]))
    with pytest.raises(AuthError):
        verify_jwt(ex["token"], b"another-secret", int(ex["now"]))


def test_turnrest_example_matches_the_generator() -> None:
    """F-034: username `<expiry>:<prefix>:<id>`, credential base64(HMAC-SHA1(secret, username))."""
    ex = _single("turnrest")
    cred = turn_rest_credential(
        secret=ex["secret"],
        ttl_seconds=int(ex["ttl"]),
        prefix=ex["prefix"],
        now_unix=int(ex["now"]),
        session_id=ex["id"],
    )
    assert (cred.username, cred.credential) == (ex["username"], ex["credential"])


# --- Cross-references ------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_internal_links_point_at_headings() -> None:
    in_fence = False
    anchors = set()
    for line in DOC.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    links = set(re.findall(r"\]\(#([^)]+)\)", DOC))
    assert links
    assert links <= anchors, sorted(links - anchors)
