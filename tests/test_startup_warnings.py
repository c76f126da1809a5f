"""Startup security warnings (spec section 21, F-163..F-172): conditions, texts, codes and fields.

Configs are built through `aero_relay.config.load(env, argv)`, as the process builds them. The
`mode` field that every record also carries is added by the server when it logs (see
tests/test_cli.py); `StartupWarning.fields` holds the warning's own fields in the original's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from aero_relay.config import load
from aero_relay.observability.logging import GoDuration
from aero_relay.startup_warnings import StartupWarning, startup_warnings

PREFIX = "startup security warning: "

# The original's texts (cmd/aero-webrtc-udp-relay/startup_warnings.go), after the prefix.
TEXTS = {
    "udp_inbound_filter_mode_any": (
        "UDP_INBOUND_FILTER_MODE=any allows inbound UDP packets from any remote endpoint "
        "(full-cone NAT behavior; less safe)"
    ),
    "auth_mode_none": "AUTH_MODE=none disables authentication",
    "allowed_origins_wildcard": "ALLOWED_ORIGINS contains '*' (allows any origin)",
    "destination_policy_preset_dev": (
        "destination policy preset is dev (allows private network UDP destinations)"
    ),
    "allow_private_networks_in_prod": "ALLOW_PRIVATE_NETWORKS=true while --mode=prod",
    "max_sessions_unlimited_in_prod": "MAX_SESSIONS is unset/0 (unlimited) while --mode=prod",
    "webrtc_datachannel_max_message_large": (
        "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES is very large (weakens WebRTC DataChannel/SCTP DoS "
        "hardening; increases per-message allocation risk)"
    ),
    "webrtc_sctp_max_receive_buffer_large": (
        "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES is very large (weakens WebRTC DataChannel/SCTP DoS "
        "hardening; increases receive-side buffering/allocation risk)"
    ),
    "webrtc_session_connect_timeout_large": (
        "WEBRTC_SESSION_CONNECT_TIMEOUT is very large (increases half-open WebRTC session resource exposure)"
    ),
    "l2_backend_auth_forward_mode_query": (
        "L2_BACKEND_AUTH_FORWARD_MODE=query forwards credentials via query params "
        "(leak risk; prefer subprotocol)"
    ),
}

# Documented emission order (section 21).
ORDER = list(TEXTS)

# A dev config that warns about nothing: the baseline every test adds one change to.
QUIET_DEV = {"AUTH_MODE": "api_key", "API_KEY": "test-key"}
PROD = {**QUIET_DEV, "AERO_WEBRTC_UDP_RELAY_MODE": "prod", "MAX_SESSIONS": "100"}
L2_URL = "ws://l2-backend.internal:8090/l2"
MIB = 1 << 20


def warnings_for(env: Mapping[str, str], argv: Sequence[str] = ()) -> list[StartupWarning]:
    return startup_warnings(load(env, argv))


def codes_for(env: Mapping[str, str], argv: Sequence[str] = ()) -> list[str]:
    return [w.code for w in warnings_for(env, argv)]


def the_warning(env: Mapping[str, str], code: str, argv: Sequence[str] = ()) -> StartupWarning:
    """The one warning with `code`, checked for the prefix and the original's exact text."""
    matching = [w for w in warnings_for(env, argv) if w.code == code]
    assert len(matching) == 1, matching
    warning = matching[0]
    assert warning.message.startswith(PREFIX)
    assert warning.message == PREFIX + TEXTS[code]
    return warning


# --- baselines ---------------------------------------------------------------------------------


def test_quiet_dev_baseline_gives_no_warnings() -> None:
    assert warnings_for(QUIET_DEV) == []


def test_safe_prod_config_gives_no_warnings() -> None:
    """Section 21 [T]: api_key auth, prod mode, MAX_SESSIONS set, prod preset -> silence."""
    env = {**PROD, "DESTINATION_POLICY_PRESET": "prod"}
    assert warnings_for(env) == []


def test_safe_prod_config_with_l2_over_subprotocol_gives_no_warnings() -> None:
    env = {**PROD, "L2_BACKEND_WS_URL": L2_URL, "L2_BACKEND_AUTH_FORWARD_MODE": "subprotocol"}
    assert warnings_for(env) == []


# --- one test per code ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["any", "ANY", " Any "])
def test_udp_inbound_filter_mode_any_warns(value: str) -> None:
    """F-163: UDP_INBOUND_FILTER_MODE=any (case-insensitive) warns with the normalised mode."""
    w = the_warning({**QUIET_DEV, "UDP_INBOUND_FILTER_MODE": value}, "udp_inbound_filter_mode_any")
    assert w.fields == (("udp_inbound_filter_mode", "any"),)


def test_udp_inbound_filter_mode_address_and_port_is_quiet() -> None:
    assert codes_for({**QUIET_DEV, "UDP_INBOUND_FILTER_MODE": "address_and_port"}) == []


def test_auth_mode_none_warns() -> None:
    """F-164."""
    w = the_warning({"AUTH_MODE": "none"}, "auth_mode_none")
    assert w.fields == (("auth_mode", "none"),)


def test_auth_mode_none_from_the_flag_warns() -> None:
    w = the_warning(QUIET_DEV, "auth_mode_none", ["--auth-mode=NONE"])
    assert w.fields == (("auth_mode", "none"),)


def test_allowed_origins_wildcard_warns_with_the_origin_list() -> None:
    """F-165: the field lists every configured origin (comma-joined, see startup_warnings.py)."""
    env = {**QUIET_DEV, "ALLOWED_ORIGINS": "https://app.example.com, *"}
    w = the_warning(env, "allowed_origins_wildcard")
    assert w.fields == (("allowed_origins", "https://app.example.com,*"),)


def test_allowed_origins_without_wildcard_is_quiet() -> None:
    assert codes_for({**QUIET_DEV, "ALLOWED_ORIGINS": "https://app.example.com,null"}) == []


@pytest.mark.parametrize("mode", ["dev", "prod"])
def test_dev_destination_policy_preset_warns_in_any_mode(mode: str) -> None:
    """F-166: the dev preset warns regardless of --mode."""
    env = {**PROD, "DESTINATION_POLICY_PRESET": "dev"}
    w = the_warning(env, "destination_policy_preset_dev", [f"--mode={mode}"])
    assert w.fields == (
        ("destination_policy_preset", "dev"),
        ("allow_private_networks", True),
        ("default_allow", True),
    )


def test_dev_preset_reports_an_allow_private_networks_override() -> None:
    env = {**QUIET_DEV, "DESTINATION_POLICY_PRESET": "dev", "ALLOW_PRIVATE_NETWORKS": "false"}
    w = the_warning(env, "destination_policy_preset_dev")
    assert dict(w.fields) == {
        "destination_policy_preset": "dev",
        "allow_private_networks": False,
        "default_allow": True,
    }


def test_allow_private_networks_in_prod_warns() -> None:
    """F-167: prod mode, prod preset, ALLOW_PRIVATE_NETWORKS=true."""
    env = {**PROD, "ALLOW_PRIVATE_NETWORKS": "true"}
    w = the_warning(env, "allow_private_networks_in_prod")
    assert w.fields == (
        ("destination_policy_preset", "prod"),
        ("allow_private_networks", True),
        ("default_allow", False),
    )


def test_allow_private_networks_in_dev_mode_is_quiet() -> None:
    assert codes_for({**QUIET_DEV, "ALLOW_PRIVATE_NETWORKS": "true"}) == []


def test_dev_preset_and_private_networks_in_prod_is_else_if() -> None:
    """F-166/F-167: the dev preset warning replaces the private-networks one (else if)."""
    env = {**PROD, "DESTINATION_POLICY_PRESET": "dev", "ALLOW_PRIVATE_NETWORKS": "true"}
    assert codes_for(env) == ["destination_policy_preset_dev"]


@pytest.mark.parametrize(("max_sessions", "expected"), [(None, 0), ("0", 0), ("-5", -5)])
def test_unlimited_max_sessions_in_prod_warns(max_sessions: str | None, expected: int) -> None:
    """F-168: prod mode and MAX_SESSIONS <= 0 (unset counts as 0)."""
    env = {k: v for k, v in PROD.items() if k != "MAX_SESSIONS"}
    if max_sessions is not None:
        env["MAX_SESSIONS"] = max_sessions
    w = the_warning(env, "max_sessions_unlimited_in_prod")
    assert w.fields == (("max_sessions", expected),)


def test_unlimited_max_sessions_in_dev_is_quiet() -> None:
    assert codes_for({**QUIET_DEV, "MAX_SESSIONS": "0"}) == []


def test_max_sessions_flag_silences_the_prod_warning() -> None:
    env = {k: v for k, v in PROD.items() if k != "MAX_SESSIONS"}
    assert codes_for(env, ["--max-sessions=1"]) == []


def test_large_datachannel_max_message_warns() -> None:
    """F-169: effective DataChannel max > 1 MiB."""
    env = {**QUIET_DEV, "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES": str(MIB + 1)}
    w = the_warning(env, "webrtc_datachannel_max_message_large")
    assert w.fields == (("webrtc_datachannel_max_message_bytes", MIB + 1),)


def test_datachannel_max_message_of_exactly_one_mib_is_quiet() -> None:
    assert codes_for({**QUIET_DEV, "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES": str(MIB)}) == []


def test_large_sctp_receive_buffer_warns() -> None:
    """F-170: effective SCTP receive buffer > 8 MiB."""
    env = {**QUIET_DEV, "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": str(8 * MIB + 1)}
    w = the_warning(env, "webrtc_sctp_max_receive_buffer_large")
    assert w.fields == (("webrtc_sctp_max_receive_buffer_bytes", 8 * MIB + 1),)


def test_sctp_receive_buffer_of_exactly_eight_mib_is_quiet() -> None:
    assert codes_for({**QUIET_DEV, "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": str(8 * MIB)}) == []


def test_auto_sctp_buffer_from_a_large_datachannel_max_warns_on_the_effective_value() -> None:
    """F-169/F-170 check effective values: auto SCTP = 2 x DC max, here 8 MiB + 2."""
    env = {**QUIET_DEV, "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES": str(4 * MIB + 1)}
    warnings = {w.code: w for w in warnings_for(env)}
    assert list(warnings) == ["webrtc_datachannel_max_message_large", "webrtc_sctp_max_receive_buffer_large"]
    assert warnings["webrtc_sctp_max_receive_buffer_large"].fields == (
        ("webrtc_sctp_max_receive_buffer_bytes", 8 * MIB + 2),
    )


def test_long_session_connect_timeout_warns_with_a_go_duration() -> None:
    """F-171: connect timeout > 2m; the field prints like time.Duration."""
    env = {**QUIET_DEV, "WEBRTC_SESSION_CONNECT_TIMEOUT": "2m1s"}
    w = the_warning(env, "webrtc_session_connect_timeout_large")
    assert w.fields == (("webrtc_session_connect_timeout", GoDuration(121_000_000_000)),)
    assert str(w.fields[0][1]) == "2m1s"


def test_session_connect_timeout_of_exactly_two_minutes_is_quiet() -> None:
    assert codes_for(QUIET_DEV, ["--webrtc-session-connect-timeout=120s"]) == []


@pytest.mark.parametrize(
    ("auth", "forward_mode"),
    [("api_key", None), ("api_key", ""), ("api_key", "QUERY"), ("jwt", "query")],
)
def test_l2_query_forwarding_warns_when_l2_is_on(auth: str, forward_mode: str | None) -> None:
    """F-172: query forwarding (the default; "" means query) with auth on and the L2 bridge set."""
    env = {"AUTH_MODE": auth, "API_KEY": "k", "JWT_SECRET": "s", "L2_BACKEND_WS_URL": L2_URL}
    if forward_mode is not None:
        env["L2_BACKEND_AUTH_FORWARD_MODE"] = forward_mode
    w = the_warning(env, "l2_backend_auth_forward_mode_query")
    assert w.fields == (
        ("l2_backend_ws_url_set", True),
        ("l2_backend_ws_host", "l2-backend.internal:8090"),
        ("l2_backend_auth_forward_mode", "query"),
        ("auth_mode", auth),
    )


def test_l2_query_forwarding_is_quiet_when_l2_is_off() -> None:
    """Deliberate change (F-205, documented in startup_warnings.py): the original warns here
    because the default forward mode is query, although the L2 bridge is off."""
    cfg = load(QUIET_DEV)
    assert cfg.l2_backend_auth_forward_mode == "query"
    assert not cfg.l2_enabled
    assert startup_warnings(cfg) == []


def test_l2_query_forwarding_with_auth_none_does_not_warn_about_l2() -> None:
    env = {"AUTH_MODE": "none", "L2_BACKEND_WS_URL": L2_URL}
    assert codes_for(env) == ["auth_mode_none"]


@pytest.mark.parametrize("forward_mode", ["none", "subprotocol"])
def test_l2_without_query_forwarding_is_quiet(forward_mode: str) -> None:
    env = {**QUIET_DEV, "L2_BACKEND_WS_URL": L2_URL, "L2_BACKEND_AUTH_FORWARD_MODE": forward_mode}
    assert codes_for(env) == []


# --- all together -------------------------------------------------------------------------------


def test_every_warning_fires_in_the_documented_order() -> None:
    """Section 21 order. Two configs cover all ten codes: the dev preset excludes
    allow_private_networks_in_prod (else if) and AUTH_MODE=none excludes the L2 query warning."""
    common = {
        "AERO_WEBRTC_UDP_RELAY_MODE": "prod",
        "UDP_INBOUND_FILTER_MODE": "any",
        "ALLOWED_ORIGINS": "*",
        "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES": str(2 * MIB),
        "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": str(16 * MIB),
        "WEBRTC_SESSION_CONNECT_TIMEOUT": "5m",
        "L2_BACKEND_WS_URL": L2_URL,
    }
    no_auth_dev_preset = {**common, "AUTH_MODE": "none", "DESTINATION_POLICY_PRESET": "dev"}
    skipped = ("allow_private_networks_in_prod", "l2_backend_auth_forward_mode_query")
    assert codes_for(no_auth_dev_preset) == [c for c in ORDER if c not in skipped]

    auth_private_in_prod = {**common, **QUIET_DEV, "ALLOW_PRIVATE_NETWORKS": "true"}
    skipped = ("auth_mode_none", "destination_policy_preset_dev")
    assert codes_for(auth_private_in_prod) == [c for c in ORDER if c not in skipped]


def test_every_message_has_the_prefix_and_a_known_code() -> None:
    env = {
        "AUTH_MODE": "none",
        "UDP_INBOUND_FILTER_MODE": "any",
        "ALLOWED_ORIGINS": "*",
        "DESTINATION_POLICY_PRESET": "dev",
    }
    warnings = warnings_for(env)
    assert len(warnings) == 4
    for w in warnings:
        assert w.message == PREFIX + TEXTS[w.code]
        assert all(name not in ("warning_code", "mode") for name, _ in w.fields)
