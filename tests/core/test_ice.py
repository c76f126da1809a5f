"""ICE server configuration (F-026, F-031..F-033, F-035; env rows AERO_ICE_SERVERS_JSON, AERO_STUN_URLS,
AERO_TURN_URLS, AERO_TURN_USERNAME, AERO_TURN_CREDENTIAL in spec §20)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aero_relay.core.ice import (
    IceConfig,
    IceServer,
    ice_servers_payload,
    inject_turn_rest,
    parse_ice_config,
    server_side_ice_servers,
)

ALLOWED = "(must start with stun:, stuns:, turn: or turns:)"


def parse(
    ice_servers_json: str = "",
    *,
    stun_urls: str = "",
    turn_urls: str = "",
    turn_username: str = "",
    turn_credential: str = "",
    turn_rest_enabled: bool = False,
) -> IceConfig:
    return parse_ice_config(
        ice_servers_json=ice_servers_json,
        stun_urls=stun_urls,
        turn_urls=turn_urls,
        turn_username=turn_username,
        turn_credential=turn_credential,
        turn_rest_enabled=turn_rest_enabled,
    )


def parse_json(value: object, *, turn_rest_enabled: bool = False) -> IceConfig:
    return parse(json.dumps(value), turn_rest_enabled=turn_rest_enabled)


def servers_of(cfg: IceConfig) -> tuple[IceServer, ...]:
    assert cfg.error == ""
    return cfg.servers


def error_of(cfg: IceConfig) -> str:
    assert cfg.error != ""
    assert cfg.servers == ()
    return cfg.error


# --- AERO_ICE_SERVERS_JSON: shapes -------------------------------------------------------------


def test_readme_example_parses() -> None:
    raw = """[
      { "urls": ["stun:stun.l.google.com:19302"] },
      { "urls": ["turn:example.com:3478?transport=udp"], "username": "aero", "credential": "aero" }
    ]"""
    assert servers_of(parse(raw)) == (
        IceServer(urls=("stun:stun.l.google.com:19302",)),
        IceServer(urls=("turn:example.com:3478?transport=udp",), username="aero", credential="aero"),
    )


def test_urls_may_be_a_single_string() -> None:
    assert servers_of(parse_json([{"urls": "stun:a:3478"}])) == (IceServer(urls=("stun:a:3478",)),)


def test_urls_may_be_an_array_of_strings() -> None:
    cfg = parse_json([{"urls": ["stun:a", "stuns:b"]}])
    assert servers_of(cfg) == (IceServer(urls=("stun:a", "stuns:b")),)


def test_urls_are_trimmed_and_empty_ones_dropped() -> None:
    cfg = parse_json([{"urls": ["  stun:a \t", "", "   ", "\u3000stun:b\n"]}])
    assert servers_of(cfg) == (IceServer(urls=("stun:a", "stun:b")),)


def test_null_url_items_are_dropped_like_empty_strings() -> None:
    assert servers_of(parse_json([{"urls": [None, "stun:a"]}])) == (IceServer(urls=("stun:a",)),)


def test_username_is_trimmed_but_a_non_blank_credential_is_kept_verbatim() -> None:
    cfg = parse_json([{"urls": "turn:t", "username": " u ", "credential": " p w "}])
    assert servers_of(cfg) == (IceServer(urls=("turn:t",), username="u", credential=" p w "),)


def test_blank_credential_on_a_stun_server_becomes_empty() -> None:
    cfg = parse_json([{"urls": "stun:s", "username": "  ", "credential": "  "}])
    assert servers_of(cfg) == (IceServer(urls=("stun:s",)),)


def test_empty_array_is_a_valid_empty_list() -> None:
    assert servers_of(parse("[]")) == ()


def test_top_level_null_is_an_empty_list_as_in_go() -> None:
    assert servers_of(parse("null")) == ()


def test_unknown_keys_are_ignored_including_credential_type() -> None:
    huge = "9" * 5000  # Python's int() refuses this many digits; Go's decoder skips it
    cfg = parse(
        f'[{{"urls": "stun:s", "credentialType": "oauth", "x": {{"deep": [1e999, {huge}, -0.5e-3]}}}}]'
    )
    assert servers_of(cfg) == (IceServer(urls=("stun:s",)),)


def test_keys_match_case_insensitively_as_in_go() -> None:
    cfg = parse('[{"URLs": "turn:t", "UserName": "u", "CREDENTIAL": "p"}]')
    assert servers_of(cfg) == (IceServer(urls=("turn:t",), username="u", credential="p"),)


def test_go_unicode_key_folding_long_s_matches_but_dotted_i_does_not() -> None:
    assert servers_of(parse('[{"url\u017f": "stun:s"}]')) == (IceServer(urls=("stun:s",)),)
    assert error_of(parse('[{"urls": "turn:t", "username": "u", "credent\u0130al": "p"}]')).endswith(
        "turn urls require credential"
    )


def test_repeated_key_keeps_the_last_value() -> None:
    assert servers_of(parse('[{"urls": "stun:a", "urls": "stun:b"}]')) == (IceServer(urls=("stun:b",)),)


def test_null_field_value_leaves_the_field_unchanged() -> None:
    cfg = parse('[{"urls": "turn:t", "username": "u", "username": null, "credential": "p"}]')
    assert servers_of(cfg) == (IceServer(urls=("turn:t",), username="u", credential="p"),)


def test_lone_surrogate_escapes_become_replacement_characters() -> None:
    cfg = parse('[{"urls": "stun:\\ud800x"}]')
    assert servers_of(cfg) == (IceServer(urls=("stun:\ufffdx",)),)


# --- AERO_ICE_SERVERS_JSON: errors ------------------------------------------------------------


@pytest.mark.parametrize("urls", [[], "", "   ", ["", " "], None])
def test_entry_without_urls_is_rejected(urls: object) -> None:
    assert error_of(parse_json([{"urls": urls}])) == "AERO_ICE_SERVERS_JSON: iceServers[0]: missing urls"


def test_entry_without_urls_key_or_null_entry_is_rejected() -> None:
    assert error_of(parse("[{}]")) == "AERO_ICE_SERVERS_JSON: iceServers[0]: missing urls"
    assert error_of(parse("[null]")) == "AERO_ICE_SERVERS_JSON: iceServers[0]: missing urls"


@pytest.mark.parametrize("url", ["STUN:s", "Turn:t", "http://x", "stun//x", "stun", "  x:stun:"])
def test_scheme_check_is_case_sensitive_and_lists_the_allowed_schemes(url: str) -> None:
    err = error_of(parse_json([{"urls": ["stun:ok", url]}]))
    shown = json.dumps(url.strip())
    assert err == f"AERO_ICE_SERVERS_JSON: iceServers[0]: unsupported url scheme: {shown} {ALLOWED}"


@pytest.mark.parametrize("url", ["turn:t:3478", "turns:t:5349?transport=tcp"])
def test_turn_entry_requires_username(url: str) -> None:
    cfg = parse_json([{"urls": url, "credential": "p"}])
    assert error_of(cfg) == "AERO_ICE_SERVERS_JSON: iceServers[0]: turn urls require username"


@pytest.mark.parametrize("url", ["turn:t:3478", "turns:t:5349"])
def test_turn_entry_requires_credential(url: str) -> None:
    cfg = parse_json([{"urls": url, "username": "u", "credential": "   "}])
    assert error_of(cfg) == "AERO_ICE_SERVERS_JSON: iceServers[0]: turn urls require credential"


def test_username_is_checked_before_credential() -> None:
    assert error_of(parse_json([{"urls": "turn:t"}])).endswith("turn urls require username")


def test_error_names_the_failing_entry_index() -> None:
    cfg = parse_json([{"urls": "stun:s"}, {"urls": "turn:t"}])
    assert error_of(cfg) == "AERO_ICE_SERVERS_JSON: iceServers[1]: turn urls require username"


def test_turn_rest_exempts_turn_entries_with_neither_username_nor_credential() -> None:
    cfg = parse_json([{"urls": ["turn:t", "turns:t"], "username": " "}], turn_rest_enabled=True)
    assert servers_of(cfg) == (IceServer(urls=("turn:t", "turns:t")),)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"urls": "turn:t", "username": "u"}, "turn urls require credential"),
        ({"urls": "turn:t", "credential": "p"}, "turn urls require username"),
    ],
)
def test_turn_rest_does_not_exempt_half_configured_credentials(entry: dict[str, str], message: str) -> None:
    assert (
        error_of(parse_json([entry], turn_rest_enabled=True))
        == f"AERO_ICE_SERVERS_JSON: iceServers[0]: {message}"
    )


@pytest.mark.parametrize("raw", ["[", "[{]", "{'urls': 1}", "[1,]", "[] x", "\ufeff[]", "[NaN]", '["a\x01"]'])
def test_invalid_json_is_reported_not_raised(raw: str) -> None:
    assert error_of(parse(raw)).startswith("AERO_ICE_SERVERS_JSON: invalid JSON: ")


def test_deeply_nested_json_is_reported_not_raised() -> None:
    assert error_of(parse("[" * 100_000)).startswith("AERO_ICE_SERVERS_JSON: invalid JSON: ")


@pytest.mark.parametrize(
    ("raw", "kind"), [('{"urls": "stun:s"}', "object"), ('"stun:s"', "string"), ("1", "number")]
)
def test_non_array_is_rejected_with_the_expected_shape(raw: str, kind: str) -> None:
    err = error_of(parse(raw))
    assert err.startswith("AERO_ICE_SERVERS_JSON: must be a JSON array of ICE server objects")
    assert err.endswith(f"got {kind}")


@pytest.mark.parametrize(
    ("raw", "kind"), [('"stun:s"', "string"), ('["stun:s"]', "array"), ("true", "boolean")]
)
def test_non_object_entry_is_rejected(raw: str, kind: str) -> None:
    err = error_of(parse(f'[{{"urls": "stun:a"}}, {raw}]'))
    assert err.startswith('AERO_ICE_SERVERS_JSON: iceServers[1]: must be a JSON object with "urls"')
    assert err.endswith(f"got {kind}")


@pytest.mark.parametrize(("value", "kind"), [(5, "number"), ({"a": 1}, "object"), (["stun:a", 5], "array")])
def test_urls_of_the_wrong_type_are_rejected(value: object, kind: str) -> None:
    err = error_of(parse_json([{"urls": value}]))
    assert (
        err
        == f"AERO_ICE_SERVERS_JSON: iceServers[0]: urls must be a string or an array of strings, got {kind}"
    )


@pytest.mark.parametrize("field", ["username", "credential"])
def test_username_and_credential_must_be_strings(field: str) -> None:
    err = error_of(parse_json([{"urls": "turn:t", field: 1}]))
    assert err == f"AERO_ICE_SERVERS_JSON: iceServers[0]: {field} must be a string, got number"


def test_type_errors_anywhere_win_over_validation_errors_as_in_go() -> None:
    err = error_of(parse_json([{"urls": "http://bad"}, {"urls": 5}]))
    assert err.startswith("AERO_ICE_SERVERS_JSON: iceServers[1]: urls must be")


# --- precedence --------------------------------------------------------------------------------


def test_json_wins_over_convenience_vars_even_invalid_ones() -> None:
    cfg = parse('[{"urls": "stun:json"}]', stun_urls="http://bad", turn_urls="turn:t")
    assert servers_of(cfg) == (IceServer(urls=("stun:json",)),)


def test_blank_json_falls_back_to_convenience_vars() -> None:
    assert servers_of(parse(" \n\t", stun_urls="stun:conv")) == (IceServer(urls=("stun:conv",)),)


def test_nothing_configured_is_a_valid_empty_list() -> None:
    assert parse() == IceConfig(servers=(), error="")


# --- convenience variables ---------------------------------------------------------------------


def test_stun_urls_comma_list_is_one_server_trimmed_without_empties() -> None:
    cfg = parse(stun_urls=" stun:a:3478 , ,stuns:b ,")
    assert servers_of(cfg) == (IceServer(urls=("stun:a:3478", "stuns:b")),)


def test_stun_then_turn_with_trimmed_credentials() -> None:
    cfg = parse(
        stun_urls="stun:s",
        turn_urls="turn:t?transport=udp, turns:t",
        turn_username=" u ",
        turn_credential=" p ",
    )
    assert servers_of(cfg) == (
        IceServer(urls=("stun:s",)),
        IceServer(urls=("turn:t?transport=udp", "turns:t"), username="u", credential="p"),
    )


@pytest.mark.parametrize(("username", "credential"), [("", ""), ("u", ""), ("", "p"), ("u", "  ")])
def test_turn_urls_need_both_username_and_credential(username: str, credential: str) -> None:
    cfg = parse(turn_urls="turn:t", turn_username=username, turn_credential=credential)
    assert (
        error_of(cfg)
        == "AERO_TURN_USERNAME/AERO_TURN_CREDENTIAL: both must be set when AERO_TURN_URLS is set"
    )


def test_turn_rest_exempts_turn_urls_when_both_are_blank() -> None:
    cfg = parse(turn_urls="turn:t", turn_username=" ", turn_credential="", turn_rest_enabled=True)
    assert servers_of(cfg) == (IceServer(urls=("turn:t",)),)


def test_turn_rest_does_not_exempt_turn_urls_with_only_one_set() -> None:
    cfg = parse(turn_urls="turn:t", turn_username="u", turn_rest_enabled=True)
    assert error_of(cfg).startswith("AERO_TURN_USERNAME/AERO_TURN_CREDENTIAL: both must be set")


def test_credentials_without_turn_urls_are_ignored() -> None:
    assert servers_of(parse(turn_username="u", turn_credential="p")) == ()


def test_bad_stun_url_names_aero_stun_urls() -> None:
    assert (
        error_of(parse(stun_urls="stun:a,STUN:b"))
        == f'AERO_STUN_URLS: unsupported url scheme: "STUN:b" {ALLOWED}'
    )


def test_bad_turn_url_names_aero_turn_urls() -> None:
    cfg = parse(turn_urls="http://t", turn_username="u", turn_credential="p")
    assert error_of(cfg) == f'AERO_TURN_URLS: unsupported url scheme: "http://t" {ALLOWED}'


def test_turn_url_in_the_stun_list_still_needs_credentials() -> None:
    assert error_of(parse(stun_urls="turn:t")) == "AERO_STUN_URLS: turn urls require username"
    assert servers_of(parse(stun_urls="turn:t", turn_rest_enabled=True)) == (IceServer(urls=("turn:t",)),)


# --- JSON output (F-032) -----------------------------------------------------------------------


def test_to_json_omits_empty_username_and_credential() -> None:
    assert IceServer(urls=("stun:s",)).to_json() == {"urls": ["stun:s"]}
    assert IceServer(urls=("turn:t",), username="u").to_json() == {"urls": ["turn:t"], "username": "u"}


def test_to_json_includes_username_and_credential_when_set() -> None:
    server = IceServer(urls=("turn:a", "turns:b"), username="u", credential="p")
    assert (
        json.dumps(server.to_json()) == '{"urls": ["turn:a", "turns:b"], "username": "u", "credential": "p"}'
    )


def test_payload_is_an_empty_array_never_null() -> None:
    assert json.dumps(ice_servers_payload(())) == '{"iceServers": []}'


def test_payload_lists_every_server_in_order() -> None:
    servers = (IceServer(urls=("stun:s",)), IceServer(urls=("turn:t",), username="u", credential="p"))
    assert ice_servers_payload(servers) == {
        "iceServers": [{"urls": ["stun:s"]}, {"urls": ["turn:t"], "username": "u", "credential": "p"}]
    }


# --- has_turn_url and TURN REST injection (F-033) ----------------------------------------------


@pytest.mark.parametrize("url", ["turn:t", "TURN:t", "Turns:t", "turns:t", " \tturn:t"])
def test_has_turn_url_is_ascii_case_insensitive(url: str) -> None:
    assert IceServer(urls=("stun:s", url)).has_turn_url()


@pytest.mark.parametrize(
    "url", ["stun:s", "stuns:s", "turnx:t", "turn", "xturn:t", "tur\u212an:t", "\u0442urn:t"]
)
def test_has_turn_url_rejects_other_schemes(url: str) -> None:
    assert not IceServer(urls=(url,)).has_turn_url()


def test_injection_replaces_credentials_on_every_turn_server_only() -> None:
    stun = IceServer(urls=("stun:s",))
    servers = (
        IceServer(urls=("turn:a",)),
        stun,
        IceServer(urls=("TURN:b",), username="old", credential="old"),
        IceServer(urls=("stun:x", "turns:c")),
    )
    out = inject_turn_rest(servers, "1700003600:aero:sid", "cred=")
    assert out == (
        IceServer(urls=("turn:a",), username="1700003600:aero:sid", credential="cred="),
        stun,
        IceServer(urls=("TURN:b",), username="1700003600:aero:sid", credential="cred="),
        IceServer(urls=("stun:x", "turns:c"), username="1700003600:aero:sid", credential="cred="),
    )
    assert out[1] is stun


def test_injection_on_an_empty_list_is_empty() -> None:
    assert inject_turn_rest((), "u", "c") == ()


# --- server-side list (F-035) ------------------------------------------------------------------

STUN = IceServer(urls=("stun:s",))
TURN_FULL = IceServer(urls=("turn:t",), username="u", credential="p")
TURN_NONE = IceServer(urls=("turn:t",))
TURN_USER_ONLY = IceServer(urls=("turns:t",), username="u")
TURN_CRED_ONLY = IceServer(urls=("TURN:t",), credential="p")
TURN_BLANK = IceServer(urls=("stun:s", "turn:t"), username=" ", credential=" ")


def test_server_side_list_drops_turn_servers_without_complete_credentials_when_turn_rest_is_on() -> None:
    servers = (STUN, TURN_NONE, TURN_FULL, TURN_USER_ONLY, TURN_CRED_ONLY, TURN_BLANK)
    assert server_side_ice_servers(servers, turn_rest_enabled=True) == (STUN, TURN_FULL)


def test_server_side_list_is_unchanged_when_turn_rest_is_off() -> None:
    servers = [STUN, TURN_NONE, TURN_FULL]
    assert server_side_ice_servers(servers, turn_rest_enabled=False) == tuple(servers)


# --- robustness ---------------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=12),
    st.sampled_from(["stun:a", " turn:b ", "turns:c", "STUN:d", "", "http://x", "stuns:e"]),
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["urls", "URLs", "username", "credential", "credentialType", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def _check_invariants(cfg: IceConfig) -> None:
    if cfg.error:
        assert cfg.servers == ()
        assert cfg.error.startswith(("AERO_ICE_SERVERS_JSON: ", "AERO_STUN_URLS: ", "AERO_TURN_"))
        return
    for server in cfg.servers:
        assert server.urls
        for url in server.urls:
            assert url == url.strip() and url.startswith(("stun:", "stuns:", "turn:", "turns:"))
        json.dumps(server.to_json()).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    ice=st.text(),
    stun=st.text(),
    turn=st.text(),
    user=st.text(),
    cred=st.text(),
    rest=st.booleans(),
)
def test_parse_never_raises_on_arbitrary_text(
    ice: str, stun: str, turn: str, user: str, cred: str, rest: bool
) -> None:
    _check_invariants(
        parse(
            ice,
            stun_urls=stun,
            turn_urls=turn,
            turn_username=user,
            turn_credential=cred,
            turn_rest_enabled=rest,
        )
    )


@settings(max_examples=300, deadline=None)
@given(doc=_json_value, rest=st.booleans())
def test_parse_never_raises_on_arbitrary_json(doc: object, rest: bool) -> None:
    _check_invariants(parse_json(doc, turn_rest_enabled=rest))


@settings(max_examples=200, deadline=None)
@given(urls=st.lists(st.sampled_from(["stun:a", "turn:b", "turns:c", "stuns:d"]), min_size=1, max_size=4))
def test_parsed_turn_servers_survive_the_server_side_filter_only_with_credentials(urls: list[str]) -> None:
    bare = servers_of(parse_json([{"urls": urls}], turn_rest_enabled=True))
    has_turn = any(u.startswith("turn") for u in urls)
    assert server_side_ice_servers(bare, turn_rest_enabled=True) == (() if has_turn else bare)
