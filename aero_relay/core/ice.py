"""ICE server configuration: parsing, validation and TURN credential handling (F-026, F-031..F-033, F-035).

The list comes from AERO_ICE_SERVERS_JSON when that is non-blank, otherwise from the convenience
variables AERO_STUN_URLS / AERO_TURN_URLS / AERO_TURN_USERNAME / AERO_TURN_CREDENTIAL. An invalid
list is not fatal: `parse_ice_config` returns the error text and the HTTP layer reports it
(readyz 503, /webrtc/ice 503 `{"error": ...}`).

JSON decoding follows what Go's `encoding/json` did with the original's struct, so configs that
worked there work here:
- a top-level `null` is an empty list; an entry `null` is an entry without urls;
- keys match case-insensitively (`URLs`, `Username`), a repeated key keeps its last value and a
  `null` value leaves the field unset;
- unknown keys are ignored. This includes pion's `credentialType`: only password credentials
  exist here (the original's struct had no such field), so `"credentialType": "oauth"` is dropped
  rather than rejected;
- `username` is trimmed but a non-blank `credential` is kept verbatim (it is a password);
- invalid UTF-8 becomes U+FFFD. Here that means lone surrogates (os.environ's surrogateescape
  bytes, or `\\ud800` escapes), in every input, so the result always encodes as UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs

from aero_relay.core.gofmt import quote

__all__ = [
    "IceConfig",
    "IceServer",
    "ice_servers_payload",
    "inject_turn_rest",
    "parse_ice_config",
    "server_side_ice_servers",
]

ENV_ICE_SERVERS_JSON = "AERO_ICE_SERVERS_JSON"
ENV_STUN_URLS = "AERO_STUN_URLS"
ENV_TURN_URLS = "AERO_TURN_URLS"
ENV_TURN_USERNAME = "AERO_TURN_USERNAME"
ENV_TURN_CREDENTIAL = "AERO_TURN_CREDENTIAL"

_ALLOWED_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
_TURN_SCHEMES = ("turn:", "turns:")

# Go's strings.TrimSpace (unicode.IsSpace). Python's str.strip() would also eat \x1c-\x1f.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)


def _trim(s: str) -> str:
    return s.strip(_GO_SPACE)


@attrs.frozen
class IceServer:
    """One ICE server, as pion's `ICEServer` with a password credential."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""

    def to_json(self) -> dict[str, object]:
        """pion's ICEServer JSON: `username` and `credential` are left out when empty (F-032)."""
        out: dict[str, object] = {"urls": list(self.urls)}
        if self.username:
            out["username"] = self.username
        if self.credential:
            out["credential"] = self.credential
        return out

    def has_turn_url(self) -> bool:
        """Any URL starting with `turn:` or `turns:`, ASCII case-insensitive (F-033)."""
        return any(_has_turn_prefix(url) for url in self.urls)


def _has_turn_prefix(url: str) -> bool:
    url = url.lstrip(_GO_SPACE)
    return any(_ascii_prefix_fold(url, scheme) for scheme in _TURN_SCHEMES)


def _ascii_prefix_fold(s: str, prefix: str) -> bool:
    # Only ASCII letters fold; a non-ASCII character never matches the (ASCII) scheme.
    head = s[: len(prefix)]
    return head.isascii() and head.lower() == prefix


def ice_servers_payload(servers: Sequence[IceServer]) -> dict[str, object]:
    """The `/webrtc/ice` success body: `{"iceServers": [...]}`, `[]` (never null) when empty (F-032)."""
    return {"iceServers": [server.to_json() for server in servers]}


@attrs.frozen
class IceConfig:
    """The parsed ICE server list, or the reason it is invalid (`error` is "" when valid)."""

    servers: tuple[IceServer, ...]
    error: str


class _IceError(Exception):
    """Internal: carries a finished error text up to `parse_ice_config`."""


def parse_ice_config(
    *,
    ice_servers_json: str,
    stun_urls: str,
    turn_urls: str,
    turn_username: str,
    turn_credential: str,
    turn_rest_enabled: bool,
) -> IceConfig:
    """Parse the ICE server settings. Never raises: errors are returned in `IceConfig.error` (F-026).

    AERO_ICE_SERVERS_JSON, when non-blank, wins over the convenience variables. With TURN REST
    enabled a TURN server may have neither username nor credential (they are injected per
    request, F-033); having only one of them is still an error.
    """
    try:
        raw = _trim(_scrub(ice_servers_json))
        if raw:
            servers = _parse_json(raw, turn_rest_enabled)
        else:
            servers = _parse_convenience(
                _scrub(stun_urls),
                _scrub(turn_urls),
                _scrub(turn_username),
                _scrub(turn_credential),
                turn_rest_enabled,
            )
    except _IceError as exc:
        return IceConfig(servers=(), error=str(exc))
    return IceConfig(servers=servers, error="")


# --- validation shared by both sources -------------------------------------------------------


def _validate(server: IceServer, turn_rest_enabled: bool) -> str:
    """Return "" when the server is usable, else the reason (the original's texts)."""
    if not server.urls:
        return "missing urls"
    needs_creds = False
    for url in server.urls:
        # Case-sensitive, as in the original (only the F-033 injection check folds case).
        if not url.startswith(_ALLOWED_SCHEMES):
            return f"unsupported url scheme: {quote(url)} (must start with stun:, stuns:, turn: or turns:)"
        if url.startswith(_TURN_SCHEMES):
            needs_creds = True
    if needs_creds:
        username = _trim(server.username)
        credential = _trim(server.credential)
        if turn_rest_enabled and not username and not credential:
            return ""
        if not username:
            return "turn urls require username"
        if not credential:
            return "turn urls require credential"
    return ""


# --- convenience variables -------------------------------------------------------------------


def _split_commas(value: str) -> tuple[str, ...]:
    value = _trim(value)
    if not value:
        return ()
    return tuple(part for part in (_trim(p) for p in value.split(",")) if part)


def _parse_convenience(
    stun_urls: str, turn_urls: str, turn_username: str, turn_credential: str, turn_rest_enabled: bool
) -> tuple[IceServer, ...]:
    servers: list[IceServer] = []
    stun_list = _split_commas(stun_urls)
    if stun_list:
        server = IceServer(urls=stun_list)
        if err := _validate(server, turn_rest_enabled):
            raise _IceError(f"{ENV_STUN_URLS}: {err}")
        servers.append(server)

    turn_list = _split_commas(turn_urls)
    if turn_list:
        username = _trim(turn_username)
        credential = _trim(turn_credential)
        exempt = turn_rest_enabled and not username and not credential
        if not exempt and (not username or not credential):
            raise _IceError(
                f"{ENV_TURN_USERNAME}/{ENV_TURN_CREDENTIAL}: both must be set when {ENV_TURN_URLS} is set"
            )
        server = IceServer(urls=turn_list, username=username, credential=credential)
        if err := _validate(server, turn_rest_enabled):
            raise _IceError(f"{ENV_TURN_URLS}: {err}")
        servers.append(server)
    return tuple(servers)


# --- AERO_ICE_SERVERS_JSON -------------------------------------------------------------------


@attrs.frozen
class _JsonNumber:
    """A JSON number kept as its literal: no field takes a number, and this avoids Python's
    int-digit limit on numbers inside ignored keys."""

    literal: str


@attrs.frozen
class _JsonObject:
    pairs: list[tuple[str, object]]


def _reject_constant(name: str) -> object:
    # Python accepts NaN/Infinity; JSON (and Go) do not.
    raise ValueError(f"invalid literal {name}")


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, _JsonNumber):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# Go's encoding/json matches keys by Unicode simple case folding; besides ASCII case, only the
# long s and the Kelvin sign fold onto ASCII letters.
_FOLD_SPECIALS = str.maketrans({"\u017f": "s", "\u212a": "k"})
_FIELDS = frozenset({"urls", "username", "credential"})


def _field_name(key: str) -> str:
    folded = key.translate(_FOLD_SPECIALS)
    return folded.lower() if folded.isascii() else ""


def _scrub(s: str) -> str:
    """Replace lone surrogates (invalid UTF-8 in Go terms) with U+FFFD."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)
    return s


@attrs.define(slots=True)
class _RawEntry:
    urls: list[str] = attrs.Factory(list)
    username: str = ""
    credential: str = ""


def _decode_entry(index: int, value: object) -> _RawEntry:
    entry = _RawEntry()
    if value is None:
        return entry
    prefix = f"{ENV_ICE_SERVERS_JSON}: iceServers[{index}]"
    if not isinstance(value, _JsonObject):
        raise _IceError(
            f'{prefix}: must be a JSON object with "urls" and optional "username" and "credential",'
            f" got {_json_kind(value)}"
        )
    for key, item in value.pairs:
        field = _field_name(key)
        if field not in _FIELDS or item is None:
            continue  # unknown keys are ignored; null leaves the field as it was
        if field == "urls":
            if isinstance(item, str):
                entry.urls = [item]
            elif isinstance(item, list) and all(v is None or isinstance(v, str) for v in item):
                entry.urls = ["" if v is None else v for v in item]
            else:
                raise _IceError(
                    f"{prefix}: urls must be a string or an array of strings, got {_json_kind(item)}"
                )
        else:
            if not isinstance(item, str):
                raise _IceError(f"{prefix}: {field} must be a string, got {_json_kind(item)}")
            setattr(entry, field, item)
    return entry


def _parse_json(raw: str, turn_rest_enabled: bool) -> tuple[IceServer, ...]:
    try:
        doc = json.loads(
            raw,
            object_pairs_hook=_JsonObject,
            parse_int=_JsonNumber,
            parse_float=_JsonNumber,
            parse_constant=_reject_constant,
        )
    except RecursionError:
        raise _IceError(f"{ENV_ICE_SERVERS_JSON}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # includes json.JSONDecodeError
        raise _IceError(f"{ENV_ICE_SERVERS_JSON}: invalid JSON: {exc}") from None
    if doc is None:
        return ()  # Go decodes `null` into an empty list
    if not isinstance(doc, list):
        raise _IceError(
            f"{ENV_ICE_SERVERS_JSON}: must be a JSON array of ICE server objects"
            f' like [{{"urls": ["stun:host:3478"]}}], got {_json_kind(doc)}'
        )
    # Decode every entry before validating any, as Go did: a type error anywhere wins.
    entries = [_decode_entry(i, value) for i, value in enumerate(doc)]
    servers: list[IceServer] = []
    for i, entry in enumerate(entries):
        credential = _scrub(entry.credential)
        server = IceServer(
            urls=tuple(url for url in (_trim(_scrub(u)) for u in entry.urls) if url),
            username=_trim(_scrub(entry.username)),
            credential=credential if _trim(credential) else "",
        )
        if err := _validate(server, turn_rest_enabled):
            raise _IceError(f"{ENV_ICE_SERVERS_JSON}: iceServers[{i}]: {err}")
        servers.append(server)
    return tuple(servers)


# --- per-use transformations -----------------------------------------------------------------


def server_side_ice_servers(servers: Sequence[IceServer], turn_rest_enabled: bool) -> tuple[IceServer, ...]:
    """Servers for our own PeerConnections (F-035).

    With TURN REST on, the configured TURN servers may lack credentials (the browser gets them
    injected); the server side cannot use those, so they are dropped.
    """
    if not turn_rest_enabled:
        return tuple(servers)
    return tuple(s for s in servers if not s.has_turn_url() or (_trim(s.username) and _trim(s.credential)))


def inject_turn_rest(servers: Sequence[IceServer], username: str, credential: str) -> tuple[IceServer, ...]:
    """Put one TURN REST credential on every server with a TURN URL; others are unchanged (F-033)."""
    return tuple(
        attrs.evolve(s, username=username, credential=credential) if s.has_turn_url() else s for s in servers
    )
