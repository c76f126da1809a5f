"""Configuration: every env var and flag of the original, its defaults, precedence and error texts.

Spec §20 (72 env vars, 62 flags), F-001 (Go flag syntax, flag over env, -h exits 0), F-002 (a config
error is one line, exit 2), F-215 (an empty env value is unset). The tables below are literal on
purpose: they are the spec, so a wrong SETTINGS table makes these tests fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aero_relay.config import (
    POLICY_ENV_VARS,
    SETTINGS,
    Config,
    ConfigError,
    DestinationPolicyError,
    HelpRequested,
    effective_items,
    load,
    usage,
)

BASE: dict[str, str] = {"AUTH_MODE": "none"}


def _load(env: Mapping[str, str] | None = None, argv: Sequence[str] = ()) -> Config:
    merged = dict(BASE)
    merged.update(env or {})
    return load(merged, list(argv))


def _error(env: Mapping[str, str] | None = None, argv: Sequence[str] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        _load(env, argv)
    text = str(info.value)
    assert "\n" not in text, "F-002: a config error is one line"
    return text


def _get(cfg: Config, path: str) -> Any:
    """An attribute, or a plain projection of the policy's CIDR and port lists."""
    obj: Any = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    if path.endswith("_cidrs"):
        return tuple(c.text for c in obj)
    if path.endswith("_ports"):
        return tuple((r.start, r.end) for r in obj)
    return obj


class Var(NamedTuple):
    env: str
    flag: str | None  # None: env only
    attr: str
    default: Any
    env_value: str
    from_env: Any
    flag_argv: tuple[str, ...] = ()
    from_flag: Any = None
    base: Mapping[str, str] = {}  # added to every case of this row
    env_extra: Mapping[str, str] = {}  # added to the env case only


L2 = {"L2_BACKEND_WS_URL": "ws://backend.example:8090/l2"}

# fmt: off
VARS: tuple[Var, ...] = (
    Var("AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR", "listen-addr", "listen_addr", "127.0.0.1:8080",
        "0.0.0.0:9000", "0.0.0.0:9000", ("--listen-addr", "[::1]:7000"), "[::1]:7000"),
    Var("AERO_WEBRTC_UDP_RELAY_PUBLIC_BASE_URL", "public-base-url", "public_base_url", "",
        " https://relay.example ", " https://relay.example ", ("-public-base-url=https://b.example",),
        "https://b.example"),
    Var("ALLOWED_ORIGINS", "allowed-origins", "allowed_origins", (),
        "HTTPS://Example.COM/, *,, ", ("https://example.com", "*"), ("-allowed-origins", "null"), ("null",)),
    Var("AERO_WEBRTC_UDP_RELAY_MODE", "mode", "mode", "dev", " Production ", "prod", ("-mode=DEV",), "dev"),
    Var("AERO_WEBRTC_UDP_RELAY_LOG_FORMAT", "log-format", "log_format", "text", "JSON", "json",
        ("-log-format", "json"), "json"),
    Var("AERO_WEBRTC_UDP_RELAY_LOG_LEVEL", "log-level", "log_level", "debug", "WARNING", "warn",
        ("-log-level=error",), "error"),
    Var("AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT", "shutdown-timeout", "shutdown_timeout", 15.0, "1m30s", 90.0,
        ("-shutdown-timeout=300ms",), 0.3),
    Var("AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT", "ice-gather-timeout", "ice_gathering_timeout", 2.0,
        "1.5s", 1.5, ("-ice-gather-timeout", "5s"), 5.0),
    Var("WEBRTC_SESSION_CONNECT_TIMEOUT", "webrtc-session-connect-timeout", "webrtc_session_connect_timeout",
        30.0, " 1h2m ", 3720.0, ("--webrtc-session-connect-timeout=45s",), 45.0),
    Var("AUTH_MODE", "auth-mode", "auth_mode", "api_key", " JWT ", "jwt", ("-auth-mode", "none"), "none",
        base={"AUTH_MODE": "", "API_KEY": "k", "JWT_SECRET": "j"}),
    Var("API_KEY", None, "api_key", "", " k ", " k "),
    Var("JWT_SECRET", None, "jwt_secret", "", " s ", " s "),
    Var("SIGNALING_AUTH_TIMEOUT", "signaling-auth-timeout", "signaling_auth_timeout", 2.0, "3s", 3.0,
        ("-signaling-auth-timeout=4s",), 4.0),
    Var("SIGNALING_WS_IDLE_TIMEOUT", "signaling-ws-idle-timeout", "signaling_ws_idle_timeout", 60.0, "90s",
        90.0, ("-signaling-ws-idle-timeout=2m",), 120.0),
    Var("SIGNALING_WS_PING_INTERVAL", "signaling-ws-ping-interval", "signaling_ws_ping_interval", 20.0,
        "10s", 10.0, ("-signaling-ws-ping-interval=30s",), 30.0),
    Var("MAX_SIGNALING_MESSAGE_BYTES", "max-signaling-message-bytes", "max_signaling_message_bytes", 65536,
        " 1024 ", 1024, ("-max-signaling-message-bytes=0x800",), 2048),
    Var("MAX_SIGNALING_MESSAGES_PER_SECOND", "max-signaling-messages-per-second",
        "max_signaling_messages_per_second", 50, "+7", 7, ("-max-signaling-messages-per-second", "9"), 9),
    Var("UDP_WS_IDLE_TIMEOUT", "udp-ws-idle-timeout", "udp_ws_idle_timeout", 60.0, "90s", 90.0,
        ("-udp-ws-idle-timeout=2m",), 120.0),
    Var("UDP_WS_PING_INTERVAL", "udp-ws-ping-interval", "udp_ws_ping_interval", 20.0, "5s", 5.0,
        ("-udp-ws-ping-interval=25s",), 25.0),
    Var("UDP_BINDING_IDLE_TIMEOUT", "udp-binding-idle-timeout", "udp_binding_idle_timeout", 60.0, "30s", 30.0,
        ("-udp-binding-idle-timeout=2m",), 120.0),
    Var("UDP_INBOUND_FILTER_MODE", "udp-inbound-filter-mode", "udp_inbound_filter_mode", "address_and_port",
        "ANY", "any", ("-udp-inbound-filter-mode=any",), "any"),
    Var("UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT", "udp-remote-allowlist-idle-timeout",
        "udp_remote_allowlist_idle_timeout", 60.0, "5m", 300.0, ("-udp-remote-allowlist-idle-timeout=10s",),
        10.0),
    Var("UDP_READ_BUFFER_BYTES", "udp-read-buffer-bytes", "udp_read_buffer_bytes", 1201, "65535", 65535,
        ("-udp-read-buffer-bytes=2000",), 2000),
    Var("DATACHANNEL_SEND_QUEUE_BYTES", "datachannel-send-queue-bytes", "datachannel_send_queue_bytes",
        1048576, "4096", 4096, ("-datachannel-send-queue-bytes=1_000",), 1000),
    Var("MAX_DATAGRAM_PAYLOAD_BYTES", "max-datagram-payload-bytes", "max_datagram_payload_bytes", 1200,
        "1400", 1400, ("-max-datagram-payload-bytes=1000",), 1000),
    Var("MAX_ALLOWED_REMOTES_PER_BINDING", "max-allowed-remotes-per-binding",
        "max_allowed_remotes_per_binding", 1024, "8", 8, ("-max-allowed-remotes-per-binding=16",), 16),
    Var("PREFER_V2", "prefer-v2", "prefer_v2", False, " TRUE ", True, ("-prefer-v2",), True),
    Var("MAX_UDP_BINDINGS_PER_SESSION", "max-udp-bindings-per-session", "max_udp_bindings_per_session", 128,
        "4", 4, ("-max-udp-bindings-per-session=0o10",), 8),
    Var("MAX_SESSIONS", "max-sessions", "max_sessions", 0, "10", 10, ("-max-sessions=-1",), -1),
    Var("SESSION_PREALLOC_TTL", "session-prealloc-ttl", "session_prealloc_ttl", 60.0, "2m", 120.0,
        ("-session-prealloc-ttl=1s",), 1.0),
    Var("MAX_UDP_PPS_PER_SESSION", "max-udp-pps-per-session", "max_udp_pps_per_session", 0, "100", 100,
        ("-max-udp-pps-per-session=200",), 200),
    Var("MAX_UDP_BPS_PER_SESSION", "max-udp-bps-per-session", "max_udp_bps_per_session", 0, "1000", 1000,
        ("-max-udp-bps-per-session=0b101",), 5),
    Var("MAX_UDP_PPS_PER_DEST", "max-udp-pps-per-dest", "max_udp_pps_per_dest", 0, "5", 5,
        ("-max-udp-pps-per-dest=6",), 6),
    Var("MAX_UNIQUE_DESTINATIONS_PER_SESSION", "max-unique-destinations-per-session",
        "max_unique_destinations_per_session", 0, "64", 64, ("-max-unique-destinations-per-session=32",), 32),
    Var("MAX_UDP_DEST_BUCKETS_PER_SESSION", "max-udp-dest-buckets-per-session",
        "max_udp_dest_buckets_per_session", 1024, "10", 10, ("-max-udp-dest-buckets-per-session=20",), 20),
    Var("MAX_DC_BPS_PER_SESSION", "max-dc-bps-per-session", "max_dc_bps_per_session", 0, "100", 100,
        ("-max-dc-bps-per-session=010",), 8),  # a leading 0 is octal for Go flags
    Var("HARD_CLOSE_AFTER_VIOLATIONS", "hard-close-after-violations", "hard_close_after_violations", 0, "3",
        3, ("-hard-close-after-violations=4",), 4),
    Var("VIOLATION_WINDOW_SECONDS", "violation-window", "violation_window", 10.0, "30", 30.0,
        ("-violation-window=1m30s",), 90.0),
    Var("L2_BACKEND_WS_URL", "l2-backend-ws-url", "l2_backend_ws_url", "", " ws://backend:8090/l2 ",
        "ws://backend:8090/l2", ("-l2-backend-ws-url=wss://b.example/l2",), "wss://b.example/l2"),
    Var("L2_BACKEND_ORIGIN", "l2-backend-origin", "l2_backend_origin", "", "HTTPS://A.example",
        "https://a.example", ("-l2-backend-origin=null",), "null"),
    Var("L2_BACKEND_ORIGIN_OVERRIDE", "l2-backend-origin-override", "l2_backend_origin", "",
        "http://o.example:81/",
        "http://o.example:81", ("-l2-backend-origin-override", "https://p.example"), "https://p.example"),
    Var("L2_BACKEND_WS_ORIGIN", "l2-backend-ws-origin", "l2_backend_origin", "", "https://w.example/",
        "https://w.example", ("-l2-backend-ws-origin=https://x.example",), "https://x.example", base=L2),
    Var("L2_BACKEND_TOKEN", "l2-backend-token", "l2_backend_token", "", " tok.1 ", "tok.1",
        ("-l2-backend-token=t2",), "t2"),
    Var("L2_BACKEND_WS_TOKEN", "l2-backend-ws-token", "l2_backend_token", "", "tok~3", "tok~3",
        ("-l2-backend-ws-token", "t4"), "t4"),
    Var("L2_BACKEND_FORWARD_ORIGIN", "l2-backend-forward-origin", "l2_backend_forward_origin", False, "1",
        True, ("-l2-backend-forward-origin",), True),
    Var("L2_BACKEND_AUTH_FORWARD_MODE", "l2-backend-auth-forward-mode", "l2_backend_auth_forward_mode",
        "query", " Subprotocol ", "subprotocol", ("-l2-backend-auth-forward-mode=none",), "none"),
    Var("L2_BACKEND_FORWARD_AERO_SESSION", "l2-backend-forward-aero-session",
        "l2_backend_forward_aero_session",
        False, "t", True, ("--l2-backend-forward-aero-session=true",), True),
    Var("L2_MAX_MESSAGE_BYTES", "l2-max-message-bytes", "l2_max_message_bytes", 4096, "2048", 2048,
        ("-l2-max-message-bytes=8192",), 8192),
    Var("WEBRTC_UDP_PORT_MIN", "webrtc-udp-port-min", "webrtc_udp_port_min", 0, "40000", 40000,
        ("-webrtc-udp-port-min=41000", "-webrtc-udp-port-max=42000"), 41000,
        env_extra={"WEBRTC_UDP_PORT_MAX": "50000"}),
    Var("WEBRTC_UDP_PORT_MAX", "webrtc-udp-port-max", "webrtc_udp_port_max", 0, " 50000 ", 50000,
        ("-webrtc-udp-port-min=100", "-webrtc-udp-port-max=65535"), 65535,
        env_extra={"WEBRTC_UDP_PORT_MIN": "40000"}),
    Var("WEBRTC_UDP_LISTEN_IP", "webrtc-udp-listen-ip", "webrtc_udp_listen_ip", "0.0.0.0",
        " ::ffff:10.0.0.1 ", "10.0.0.1", ("-webrtc-udp-listen-ip=::1",), "::1"),
    Var("WEBRTC_NAT_1TO1_IPS", "webrtc-nat-1to1-ips", "webrtc_nat_1to1_ips", (),
        "203.0.113.10, ,203.0.113.11",
        ("203.0.113.10", "203.0.113.11"), ("-webrtc-nat-1to1-ips=2001:DB8::1",), ("2001:db8::1",)),
    Var("WEBRTC_NAT_1TO1_IP_CANDIDATE_TYPE", "webrtc-nat-1to1-ip-candidate-type",
        "webrtc_nat_1to1_ip_candidate_type", "host", "SRFLX", "srflx",
        ("-webrtc-nat-1to1-ip-candidate-type=",),
        "host"),
    Var("WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES", "webrtc-datachannel-max-message-bytes",
        "webrtc_datachannel_max_message_bytes", 4352, "8192", 8192,
        ("-webrtc-datachannel-max-message-bytes=5000",), 5000),
    Var("WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES", "webrtc-sctp-max-receive-buffer-bytes",
        "webrtc_sctp_max_receive_buffer_bytes", 1048576, "65536", 65536,
        ("-webrtc-sctp-max-receive-buffer-bytes=2097152",), 2097152),
    Var("AERO_ICE_SERVERS_JSON", "ice-servers-json", "ice_servers_json", "",
        '[{"urls":"stun:s.example:3478"}]',
        '[{"urls":"stun:s.example:3478"}]', ("-ice-servers-json=[]",), "[]"),
    Var("AERO_STUN_URLS", "stun-urls", "stun_urls", "", "stun:a.example", "stun:a.example",
        ("-stun-urls=stun:b.example",), "stun:b.example"),
    Var("AERO_TURN_URLS", "turn-urls", "turn_urls", "", "turn:t.example", "turn:t.example",
        ("-turn-urls=turns:u.example",), "turns:u.example"),
    Var("AERO_TURN_USERNAME", "turn-username", "turn_username", "", " u ", "u", ("-turn-username=v",), "v"),
    Var("AERO_TURN_CREDENTIAL", "turn-credential", "turn_credential", "", " c ", "c",
        ("-turn-credential=d",), "d"),
    Var("TURN_REST_SHARED_SECRET", "turn-rest-shared-secret", "turn_rest_shared_secret", "", "s3", "s3",
        ("-turn-rest-shared-secret=s4",), "s4"),
    Var("TURN_REST_TTL_SECONDS", "turn-rest-ttl-seconds", "turn_rest_ttl_seconds", 3600, "60", 60,
        ("-turn-rest-ttl-seconds=120",), 120),
    Var("TURN_REST_USERNAME_PREFIX", "turn-rest-username-prefix", "turn_rest_username_prefix", "aero",
        "relay", "relay", ("-turn-rest-username-prefix=x",), "x"),
    Var("TURN_REST_REALM", "turn-rest-realm", "turn_rest_realm", "", "example.org", "example.org",
        ("-turn-rest-realm=r.example",), "r.example"),
    # Destination policy: env only (F-134..F-136).
    Var("DESTINATION_POLICY_PRESET", None, "policy.preset", "prod", " DEV ", "dev"),
    Var("UDP_DESTINATION_POLICY_PRESET", None, "policy.preset", "prod", "dev", "dev"),
    Var("POLICY_PRESET", None, "policy.preset", "prod", "development", "dev"),
    Var("ALLOW_PRIVATE_NETWORKS", None, "policy.allow_private_networks", False, "true", True),
    Var("ALLOW_UDP_CIDRS", None, "policy.allow_cidrs", (), "10.0.0.0/8", ("10.0.0.0/8",)),
    Var("DENY_UDP_CIDRS", None, "policy.deny_cidrs", (), "192.0.2.0/24,2001:db8::/32",
        ("192.0.2.0/24", "2001:db8::/32")),
    Var("ALLOW_UDP_PORTS", None, "policy.allow_ports", (), "53,1000-2000", ((53, 53), (1000, 2000))),
    Var("DENY_UDP_PORTS", None, "policy.deny_ports", (), "25", ((25, 25),)),
)
# fmt: on

FLAG_VARS = tuple(v for v in VARS if v.flag is not None)
_ids = [v.env for v in VARS]
_flag_ids = [v.env for v in FLAG_VARS]


# --- the inventory ---------------------------------------------------------------------------------


# Settings this project adds beyond the original's 72 env vars / 62 flags (scale-out, issue 8).
EXTENSION_ENV_VARS = {
    "SESSION_REGISTRY_URL": "session-registry-url",
    "SESSION_LEASE_TTL": "session-lease-ttl",
    "AERO_RELAY_WORKERS": "workers",
}


def test_there_are_72_env_vars_of_which_8_are_policy_vars() -> None:
    """Spec §20 totals: 64 read by internal/config (59 + 5 ICE) plus 8 by internal/policy."""
    names = [v.env for v in VARS]
    assert len(names) == len(set(names)) == 72
    assert sum(v.attr.startswith("policy.") for v in VARS) == 8
    table = {e for s in SETTINGS for e in s.envs} | set(POLICY_ENV_VARS)
    assert table == set(names) | set(EXTENSION_ENV_VARS)


def test_there_are_62_flags() -> None:
    flags = [v.flag for v in FLAG_VARS]
    assert len(flags) == len(set(flags)) == 62
    assert {f for s in SETTINGS for f in s.flags} == set(flags) | set(EXTENSION_ENV_VARS.values())


def test_every_flag_is_paired_with_its_own_env_var() -> None:
    pairs = {(e, f) for s in SETTINGS for e, f in zip(s.envs, s.flags, strict=False)}
    for v in FLAG_VARS:
        assert (v.env, v.flag) in pairs


def test_env_only_vars_are_the_secrets_and_the_policy() -> None:
    assert {v.env for v in VARS if v.flag is None} == {"API_KEY", "JWT_SECRET", *POLICY_ENV_VARS}


# --- default, env override, flag override (one row per variable) ---------------------------------------


@pytest.mark.parametrize("var", VARS, ids=_ids)
def test_default(var: Var) -> None:
    assert _get(_load(var.base), var.attr) == var.default


@pytest.mark.parametrize("var", VARS, ids=_ids)
def test_env_override(var: Var) -> None:
    cfg = _load({**var.base, **var.env_extra, var.env: var.env_value})
    assert _get(cfg, var.attr) == var.from_env


@pytest.mark.parametrize("var", FLAG_VARS, ids=_flag_ids)
def test_flag_override(var: Var) -> None:
    assert _get(_load(var.base, var.flag_argv), var.attr) == var.from_flag


@pytest.mark.parametrize("var", FLAG_VARS, ids=_flag_ids)
def test_flag_wins_over_env(var: Var) -> None:
    """F-001: env values are only the flags' defaults."""
    cfg = _load({**var.base, **var.env_extra, var.env: var.env_value}, var.flag_argv)
    assert _get(cfg, var.attr) == var.from_flag


@pytest.mark.parametrize("var", VARS, ids=_ids)
def test_empty_env_value_is_unset(var: Var) -> None:
    """F-215: the e2e harness clears variables by setting them to ""."""
    assert _load({**var.base, var.env: ""}) == _load(var.base)


# --- derived defaults ---------------------------------------------------------------------------------


def test_allowlist_idle_timeout_follows_binding_idle_timeout_after_flags() -> None:
    assert _load({"UDP_BINDING_IDLE_TIMEOUT": "30s"}).udp_remote_allowlist_idle_timeout == 30.0
    cfg = _load({"UDP_BINDING_IDLE_TIMEOUT": "30s"}, ["-udp-binding-idle-timeout=45s"])
    assert cfg.udp_remote_allowlist_idle_timeout == 45.0
    cfg = _load({"UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT": "5s"}, ["-udp-binding-idle-timeout=45s"])
    assert cfg.udp_remote_allowlist_idle_timeout == 5.0


def test_read_buffer_follows_payload_size_after_flags() -> None:
    assert _load({"MAX_DATAGRAM_PAYLOAD_BYTES": "1400"}).udp_read_buffer_bytes == 1401
    assert _load({}, ["-max-datagram-payload-bytes", "9000"]).udp_read_buffer_bytes == 9001
    assert (
        _load({"UDP_READ_BUFFER_BYTES": "65535"}, ["-max-datagram-payload-bytes=9000"]).udp_read_buffer_bytes
        == 65535
    )


def test_dest_buckets_follow_unique_destinations_only_when_not_set() -> None:
    assert _load({"MAX_UNIQUE_DESTINATIONS_PER_SESSION": "64"}).max_udp_dest_buckets_per_session == 64
    assert _load({}, ["-max-unique-destinations-per-session=7"]).max_udp_dest_buckets_per_session == 7
    assert _load({"MAX_UNIQUE_DESTINATIONS_PER_SESSION": "-5"}).max_udp_dest_buckets_per_session == 1024
    env = {"MAX_UNIQUE_DESTINATIONS_PER_SESSION": "64", "MAX_UDP_DEST_BUCKETS_PER_SESSION": "2048"}
    assert _load(env).max_udp_dest_buckets_per_session == 2048
    assert _load(env, ["-max-udp-dest-buckets-per-session=3"]).max_udp_dest_buckets_per_session == 3


def test_forward_origin_defaults_to_true_only_with_l2_on() -> None:
    assert _load(L2).l2_backend_forward_origin is True
    assert _load({}, ["-l2-backend-ws-url=ws://b.example/l2"]).l2_backend_forward_origin is True
    assert _load({**L2, "L2_BACKEND_FORWARD_ORIGIN": "false"}).l2_backend_forward_origin is False
    assert _load(L2, ["-l2-backend-forward-origin=false"]).l2_backend_forward_origin is False
    assert _load({"L2_BACKEND_FORWARD_ORIGIN": "  "}).l2_backend_forward_origin is False
    assert _load({**L2, "L2_BACKEND_FORWARD_ORIGIN": "  "}).l2_backend_forward_origin is True


def test_datachannel_and_sctp_auto_sizes() -> None:
    cfg = _load()
    assert cfg.webrtc_datachannel_max_message_bytes == 4352  # max(1200+24, 4096) + 256
    assert cfg.webrtc_sctp_max_receive_buffer_bytes == 1048576
    cfg = _load({"MAX_DATAGRAM_PAYLOAD_BYTES": "9000", "L2_MAX_MESSAGE_BYTES": "100"})
    assert cfg.webrtc_datachannel_max_message_bytes == 9000 + 24 + 256
    cfg = _load({"WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES": "1000000"})
    assert cfg.webrtc_sctp_max_receive_buffer_bytes == 2000000


@pytest.mark.parametrize(
    ("env", "argv", "fmt", "level"),
    [
        ({}, [], "text", "debug"),
        ({"AERO_WEBRTC_UDP_RELAY_MODE": "prod"}, [], "json", "info"),
        ({}, ["-mode=production"], "json", "info"),
        ({"AERO_WEBRTC_UDP_RELAY_MODE": "prod"}, ["-mode=dev"], "text", "debug"),
        (
            {"AERO_WEBRTC_UDP_RELAY_MODE": "prod", "AERO_WEBRTC_UDP_RELAY_LOG_FORMAT": "text"},
            [],
            "text",
            "info",
        ),
        ({}, ["-mode", "prod", "-log-format", "text", "-log-level", "debug"], "text", "debug"),
    ],
)
def test_log_format_and_level_follow_the_mode_unless_set(
    env: dict[str, str], argv: list[str], fmt: str, level: str
) -> None:
    cfg = _load(env, argv)
    assert (cfg.log_format, cfg.log_level) == (fmt, level)


# --- precedence and read rules --------------------------------------------------------------------------


def test_l2_backend_origin_wins_over_origin_override() -> None:
    env = {"L2_BACKEND_ORIGIN": "https://a.example", "L2_BACKEND_ORIGIN_OVERRIDE": "https://b.example"}
    assert _load(env).l2_backend_origin == "https://a.example"


def test_l2_backend_token_wins_over_ws_token() -> None:
    assert _load({"L2_BACKEND_TOKEN": "a", "L2_BACKEND_WS_TOKEN": "b"}).l2_backend_token == "a"


def test_a_blank_primary_alias_still_hides_the_secondary() -> None:
    """The original takes the first non-empty value: a blank L2_BACKEND_TOKEN wins, then trims to ""."""
    assert _load({"L2_BACKEND_TOKEN": "  ", "L2_BACKEND_WS_TOKEN": "b"}).l2_backend_token == ""


@pytest.mark.parametrize(
    ("argv", "token"),
    [
        (["-l2-backend-token=a", "-l2-backend-ws-token=b"], "b"),
        (["-l2-backend-ws-token=b", "-l2-backend-token=a"], "a"),
    ],
)
def test_alias_flags_write_one_value_and_the_last_wins(argv: list[str], token: str) -> None:
    assert _load({"L2_BACKEND_TOKEN": "env"}, argv).l2_backend_token == token


def test_alias_origin_flags_write_one_value_and_the_last_wins() -> None:
    argv = ["-l2-backend-origin-override=https://a.example", "-l2-backend-origin=https://b.example"]
    assert _load({}, argv).l2_backend_origin == "https://b.example"


def test_origin_override_wins_over_ws_origin_and_an_unused_ws_origin_is_not_checked() -> None:
    env = {**L2, "L2_BACKEND_WS_ORIGIN": "https://bad.example/path", "L2_BACKEND_ORIGIN": "https://o.example"}
    assert _load(env).l2_backend_origin == "https://o.example"
    assert _load({"L2_BACKEND_WS_ORIGIN": "https://bad.example/path"}).l2_backend_origin == ""


def test_repeated_flag_last_wins() -> None:
    assert _load({}, ["-max-sessions=1", "--max-sessions", "2"]).max_sessions == 2


@pytest.mark.parametrize("value", ["0", "-3", " -1 "])
def test_non_positive_violation_window_seconds_is_ignored(value: str) -> None:
    assert _load({"VIOLATION_WINDOW_SECONDS": value}).violation_window == 10.0


def test_violation_window_flag_is_a_duration_and_is_not_checked() -> None:
    assert _load({}, ["-violation-window=0s"]).violation_window == 0.0
    assert _load({}, ["-violation-window=1.5s"]).violation_window == 1.5
    assert "parse error" in _error({}, ["-violation-window=30"])


def test_violation_window_env_is_whole_seconds() -> None:
    assert 'invalid VIOLATION_WINDOW_SECONDS "10s": strconv.Atoi' in _error(
        {"VIOLATION_WINDOW_SECONDS": "10s"}
    )


@pytest.mark.parametrize(
    "env",
    [
        "MAX_SESSIONS",
        "PREFER_V2",
        "UDP_BINDING_IDLE_TIMEOUT",
        "WEBRTC_UDP_PORT_MIN",
        "AUTH_MODE",
        "L2_BACKEND_AUTH_FORWARD_MODE",
        "AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT",
    ],
)
def test_a_blank_typed_env_value_is_unset(env: str) -> None:
    assert _load({"API_KEY": "k", env: " \t "}) == _load({"API_KEY": "k", env: ""})


def test_a_blank_shutdown_timeout_is_parsed_and_rejected() -> None:
    """The original tests only `raw != ""` for this one and parses it untrimmed."""
    assert 'invalid AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT "  ": time: invalid duration "  "' in _error(
        {"AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT": "  "}
    )
    assert "time: invalid duration" in _error({"AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT": " 5s"})


def test_ice_gathering_timeout_is_parsed_untrimmed() -> None:
    text = _error({"AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT": " 2s"})
    assert 'invalid AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT " 2s": time: invalid duration " 2s"' in text


def test_plain_strings_are_not_trimmed() -> None:
    cfg = _load({"API_KEY": " k ", "JWT_SECRET": " j ", "TURN_REST_USERNAME_PREFIX": " p "})
    assert (cfg.api_key, cfg.jwt_secret, cfg.turn_rest_username_prefix) == (" k ", " j ", " p ")


def test_a_blank_string_value_is_set_not_unset() -> None:
    """envOrDefault: only "" is unset, so a blank mode or log format is an error."""
    assert 'invalid mode " " (expected dev or prod)' in _error({"AERO_WEBRTC_UDP_RELAY_MODE": " "})
    assert 'invalid log format "  " (expected text or json)' in _error(
        {"AERO_WEBRTC_UDP_RELAY_LOG_FORMAT": "  "}
    )
    assert 'invalid log level "" (expected' in _error({}, ["-log-level="])


def test_blank_api_key_counts_as_missing() -> None:
    assert "API_KEY must be set when AUTH_MODE=api_key" in _error({"AUTH_MODE": "", "API_KEY": "  "})


def test_env_port_min_with_flag_port_max_is_refused_like_the_original() -> None:
    text = _error({"WEBRTC_UDP_PORT_MIN": "40000"}, ["-webrtc-udp-port-max=50000"])
    assert "WEBRTC_UDP_PORT_MIN and WEBRTC_UDP_PORT_MAX must be set together (or both unset)" in text


def test_turn_rest_rules_apply_only_when_the_secret_is_set() -> None:
    cfg = _load({"TURN_REST_TTL_SECONDS": "0", "TURN_REST_USERNAME_PREFIX": "a:b"})
    assert cfg.turn_rest_enabled is False
    assert _load({"TURN_REST_SHARED_SECRET": "s"}).turn_rest_enabled is True


def test_ice_errors_are_not_fatal() -> None:
    """F-026: an invalid ICE list is reported by /readyz, not at startup."""
    cfg = _load({"AERO_TURN_URLS": "turn:t.example"})
    assert cfg.ice.error and cfg.ice.servers == ()
    assert _load({"AERO_ICE_SERVERS_JSON": '[{"urls":"stun:s.example"}]'}).ice.error == ""


def test_unknown_positional_arguments_end_the_flags_and_are_ignored() -> None:
    assert _load({}, ["-max-sessions=1", "extra", "-max-sessions=2"]).max_sessions == 1


# --- Go duration syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300ms", 0.3), ("1.5s", 1.5), ("1h2m", 3720.0), ("2h45m30.5s", 9930.5), ("1m0.5s", 60.5), ("+7s", 7.0)],
)
def test_go_duration_forms_are_accepted(text: str, seconds: float) -> None:
    assert _load({"SESSION_PREALLOC_TTL": text}).session_prealloc_ttl == pytest.approx(seconds)
    assert _load({}, [f"-session-prealloc-ttl={text}"]).session_prealloc_ttl == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "go_error"),
    [
        ("5", 'time: missing unit in duration "5"'),
        ("1.5", 'time: missing unit in duration "1.5"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("s", 'time: invalid duration "s"'),
    ],
)
def test_a_bare_number_or_unknown_unit_is_not_a_duration(text: str, go_error: str) -> None:
    assert f'invalid UDP_WS_IDLE_TIMEOUT "{text}": {go_error}' in _error({"UDP_WS_IDLE_TIMEOUT": text})
    assert f'invalid value "{text}" for flag -udp-ws-idle-timeout: parse error' in _error(
        {}, [f"-udp-ws-idle-timeout={text}"]
    )


def test_zero_is_a_valid_duration_but_fails_the_positive_check() -> None:
    text = _error({"UDP_WS_IDLE_TIMEOUT": "0"})
    assert "UDP_WS_IDLE_TIMEOUT/--udp-ws-idle-timeout must be > 0" in text


# --- flag syntax (F-001) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-max-sessions", "5"],
        ["--max-sessions", "5"],
        ["-max-sessions=5"],
        ["--max-sessions=5"],
        ["-max-sessions=0x5"],
        ["-max-sessions=+5"],
        ["-max-sessions=0b101"],
        ["-max-sessions=0o5"],
        ["-max-sessions=0_5"],
    ],
)
def test_value_flag_forms(argv: list[str]) -> None:
    assert _load({}, argv).max_sessions == 5


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (["-prefer-v2"], True),
        (["--prefer-v2"], True),
        (["-prefer-v2=false"], False),
        (["-prefer-v2=T"], True),
        (["-prefer-v2=0"], False),
    ],
)
def test_bool_flag_forms(argv: list[str], value: bool) -> None:
    assert _load({"PREFER_V2": "true" if not value else "false"}, argv).prefer_v2 is value


def test_a_bool_flag_does_not_take_the_next_argument() -> None:
    """`-prefer-v2 false` sets true; "false" is a positional argument that ends the flags."""
    cfg = _load({}, ["-prefer-v2", "false", "-max-sessions=3"])
    assert cfg.prefer_v2 is True
    assert cfg.max_sessions == 0


def test_double_dash_ends_the_flags() -> None:
    assert _load({}, ["-max-sessions=1", "--", "-max-sessions=2"]).max_sessions == 1


def test_a_value_starting_with_a_dash_is_taken_as_the_value() -> None:
    assert 'invalid mode "-h" (expected dev or prod)' in _error({}, ["-mode", "-h"])


@pytest.mark.parametrize(
    "argv", [["-h"], ["--help"], ["-help"], ["--h"], ["-help=1"], ["-max-sessions=1", "-h"]]
)
def test_help(argv: list[str]) -> None:
    with pytest.raises(HelpRequested):
        _load({}, argv)


@pytest.mark.parametrize(
    ("argv", "go_text"),
    [
        (["-nope"], "flag provided but not defined: -nope"),
        (["--nope=1"], "flag provided but not defined: -nope"),
        (["---x"], "bad flag syntax: ---x"),
        (["-=x"], "bad flag syntax: -=x"),
        (["--=x"], "bad flag syntax: --=x"),
        (["-mode"], "flag needs an argument: -mode"),
        (["-max-sessions=abc"], 'invalid value "abc" for flag -max-sessions: parse error'),
        (
            ["-max-sessions=9223372036854775808"],
            'invalid value "9223372036854775808" for flag -max-sessions: value out',
        ),
        (["-max-sessions=1__0"], 'invalid value "1__0" for flag -max-sessions: parse error'),
        (["-max-sessions=08"], 'invalid value "08" for flag -max-sessions: parse error'),
        (["-max-sessions=٣"], 'invalid value "٣" for flag -max-sessions: parse error'),
        (["-max-sessions= 5"], 'invalid value " 5" for flag -max-sessions: parse error'),
        (["-webrtc-udp-port-min=-1"], 'invalid value "-1" for flag -webrtc-udp-port-min: parse error'),
        (["-prefer-v2=yes"], 'invalid boolean value "yes" for -prefer-v2: parse error'),
        (["-prefer-v2="], 'invalid boolean value "" for -prefer-v2: parse error'),
        (["-shutdown-timeout=5"], 'invalid value "5" for flag -shutdown-timeout: parse error'),
    ],
)
def test_flag_parse_errors_are_one_line_with_the_go_text(argv: list[str], go_text: str) -> None:
    assert go_text in _error({}, argv)


def test_a_flag_error_never_spans_lines() -> None:
    assert _error({}, ["-no\npe"]).startswith('flag provided but not defined: -"no\\npe"')
    assert _error({}, ["---\n"]).startswith('bad flag syntax: "---\\n"')


def test_int64_flag_range() -> None:
    assert _load({}, ["-max-sessions=-9223372036854775808"]).max_sessions == -(2**63)
    assert _load({}, ["-turn-rest-ttl-seconds=0x7fffffffffffffff"]).turn_rest_ttl_seconds == 2**63 - 1


# --- validation errors: the original's text is inside our one-line message ------------------------------

ERRORS: list[tuple[dict[str, str], list[str], str]] = [
    # env parse errors: invalid <ENV> "<raw>": <go error>
    ({"MAX_SESSIONS": "abc"}, [], 'invalid MAX_SESSIONS "abc": strconv.Atoi: parsing "abc": invalid syntax'),
    ({"MAX_SESSIONS": " 1x "}, [], 'invalid MAX_SESSIONS " 1x ": strconv.Atoi: parsing "1x": invalid syntax'),
    ({"MAX_SESSIONS": "9" * 30}, [], 'strconv.Atoi: parsing "' + "9" * 30 + '": value out of range'),
    (
        {"MAX_SIGNALING_MESSAGE_BYTES": "1k"},
        [],
        'invalid MAX_SIGNALING_MESSAGE_BYTES "1k": strconv.ParseInt: parsing',
    ),
    (
        {"TURN_REST_TTL_SECONDS": "1h"},
        [],
        'invalid TURN_REST_TTL_SECONDS "1h": strconv.ParseInt: parsing "1h"',
    ),
    ({"PREFER_V2": "yes"}, [], 'invalid PREFER_V2 "yes": strconv.ParseBool: parsing "yes": invalid syntax'),
    ({"L2_BACKEND_FORWARD_ORIGIN": "on"}, [], 'invalid L2_BACKEND_FORWARD_ORIGIN "on": strconv.ParseBool'),
    ({"UDP_BINDING_IDLE_TIMEOUT": "60"}, [], 'invalid UDP_BINDING_IDLE_TIMEOUT "60": time: missing unit'),
    (
        {"WEBRTC_UDP_PORT_MIN": "0", "WEBRTC_UDP_PORT_MAX": "1"},
        [],
        'invalid WEBRTC_UDP_PORT_MIN "0": port 0 out of range (1-65535)',
    ),
    ({"WEBRTC_UDP_PORT_MIN": "70000"}, [], 'invalid WEBRTC_UDP_PORT_MIN "70000": invalid port "70000"'),
    ({"WEBRTC_UDP_PORT_MAX": "+1"}, [], 'invalid WEBRTC_UDP_PORT_MAX "+1": invalid port "+1"'),
    # mode, logging, auth
    ({"AERO_WEBRTC_UDP_RELAY_MODE": "staging"}, [], 'invalid mode "staging" (expected dev or prod)'),
    ({}, ["-log-format=xml"], 'invalid log format "xml" (expected text or json)'),
    (
        {"AERO_WEBRTC_UDP_RELAY_LOG_LEVEL": "trace"},
        [],
        'invalid log level "trace" (expected debug, info, warn, error)',
    ),
    ({"AUTH_MODE": "basic"}, [], 'invalid AUTH_MODE "basic" (expected none, api_key, or jwt)'),
    ({"AUTH_MODE": ""}, [], "API_KEY must be set when AUTH_MODE=api_key"),
    ({"AUTH_MODE": "jwt"}, [], "JWT_SECRET must be set when AUTH_MODE=jwt"),
    (
        {"L2_BACKEND_AUTH_FORWARD_MODE": "header"},
        [],
        'invalid L2_BACKEND_AUTH_FORWARD_MODE "header" (expected none, query, or subprotocol)',
    ),
    (
        {"UDP_INBOUND_FILTER_MODE": "full"},
        [],
        'invalid UDP_INBOUND_FILTER_MODE/--udp-inbound-filter-mode "full": expected any or address_and_port',
    ),
    ({}, ["-listen-addr="], "listen address must not be empty"),
    # positive checks
    ({}, ["-shutdown-timeout=0s"], "shutdown timeout must be > 0"),
    (
        {},
        ["-ice-gather-timeout=-1s"],
        "AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT/--ice-gather-timeout must be > 0",
    ),
    (
        {"WEBRTC_SESSION_CONNECT_TIMEOUT": "0"},
        [],
        "WEBRTC_SESSION_CONNECT_TIMEOUT/--webrtc-session-connect-timeout must be > 0",
    ),
    (
        {"UDP_BINDING_IDLE_TIMEOUT": "0"},
        [],
        "UDP_BINDING_IDLE_TIMEOUT/--udp-binding-idle-timeout must be > 0",
    ),
    (
        {"UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT": "-1s"},
        [],
        "UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT/--udp-remote-allowlist-idle-timeout must be > 0",
    ),
    ({"UDP_READ_BUFFER_BYTES": "0"}, [], "UDP_READ_BUFFER_BYTES/--udp-read-buffer-bytes must be > 0"),
    (
        {"UDP_READ_BUFFER_BYTES": "1200"},
        [],
        "UDP_READ_BUFFER_BYTES/--udp-read-buffer-bytes must be >= MAX_DATAGRAM_PAYLOAD_BYTES+1 (1201); "
        "got 1200",
    ),
    (
        {"DATACHANNEL_SEND_QUEUE_BYTES": "0"},
        [],
        "DATACHANNEL_SEND_QUEUE_BYTES/--datachannel-send-queue-bytes must be > 0",
    ),
    (
        {"MAX_DATAGRAM_PAYLOAD_BYTES": "0"},
        [],
        "MAX_DATAGRAM_PAYLOAD_BYTES/--max-datagram-payload-bytes must be > 0",
    ),
    (
        {"MAX_ALLOWED_REMOTES_PER_BINDING": "0"},
        [],
        "MAX_ALLOWED_REMOTES_PER_BINDING/--max-allowed-remotes-per-binding must be > 0",
    ),
    ({"L2_MAX_MESSAGE_BYTES": "0"}, [], "L2_MAX_MESSAGE_BYTES/--l2-max-message-bytes must be > 0"),
    (
        {"MAX_UDP_BINDINGS_PER_SESSION": "0"},
        [],
        "MAX_UDP_BINDINGS_PER_SESSION/--max-udp-bindings-per-session must be > 0",
    ),
    (
        {"MAX_UDP_DEST_BUCKETS_PER_SESSION": "0"},
        [],
        "MAX_UDP_DEST_BUCKETS_PER_SESSION/--max-udp-dest-buckets-per-session must be > 0",
    ),
    ({"SESSION_PREALLOC_TTL": "0"}, [], "SESSION_PREALLOC_TTL/--session-prealloc-ttl must be > 0"),
    ({"SIGNALING_AUTH_TIMEOUT": "0"}, [], "SIGNALING_AUTH_TIMEOUT/--signaling-auth-timeout must be > 0"),
    (
        {"SIGNALING_WS_IDLE_TIMEOUT": "0"},
        [],
        "SIGNALING_WS_IDLE_TIMEOUT/--signaling-ws-idle-timeout must be > 0",
    ),
    (
        {"SIGNALING_WS_PING_INTERVAL": "0"},
        [],
        "SIGNALING_WS_PING_INTERVAL/--signaling-ws-ping-interval must be > 0",
    ),
    (
        {"SIGNALING_WS_PING_INTERVAL": "60s"},
        [],
        "SIGNALING_WS_PING_INTERVAL/--signaling-ws-ping-interval must be < "
        "SIGNALING_WS_IDLE_TIMEOUT/--signaling-ws-idle-timeout",
    ),
    (
        {"MAX_SIGNALING_MESSAGE_BYTES": "0"},
        [],
        "MAX_SIGNALING_MESSAGE_BYTES/--max-signaling-message-bytes must be > 0",
    ),
    (
        {"MAX_SIGNALING_MESSAGES_PER_SECOND": "-1"},
        [],
        "MAX_SIGNALING_MESSAGES_PER_SECOND/--max-signaling-messages-per-second must be > 0",
    ),
    ({"UDP_WS_IDLE_TIMEOUT": "0"}, [], "UDP_WS_IDLE_TIMEOUT/--udp-ws-idle-timeout must be > 0"),
    ({"UDP_WS_PING_INTERVAL": "0"}, [], "UDP_WS_PING_INTERVAL/--udp-ws-ping-interval must be > 0"),
    (
        {},
        ["-udp-ws-ping-interval=1m"],
        "UDP_WS_PING_INTERVAL/--udp-ws-ping-interval must be < UDP_WS_IDLE_TIMEOUT/--udp-ws-idle-timeout",
    ),
    # WebRTC sizes
    (
        {"WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES": "-1"},
        [],
        "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES/--webrtc-datachannel-max-message-bytes must be >= 0 (0 = auto)",
    ),
    (
        {"WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": "-1"},
        [],
        "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES/--webrtc-sctp-max-receive-buffer-bytes must be >= 0 (0 = auto)",
    ),
    (
        {"WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES": "4000"},
        [],
        "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES/--webrtc-datachannel-max-message-bytes must be >= 4096 "
        "(max of MAX_DATAGRAM_PAYLOAD_BYTES+24 and L2_MAX_MESSAGE_BYTES)",
    ),
    (
        {"WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": "200"},
        [],
        "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES/--webrtc-sctp-max-receive-buffer-bytes must be >= 4352 "
        "(must be >= WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES)",
    ),
    (
        {
            "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES": "1000",
            "MAX_DATAGRAM_PAYLOAD_BYTES": "100",
            "L2_MAX_MESSAGE_BYTES": "100",
        },
        [],
        "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES/--webrtc-sctp-max-receive-buffer-bytes must be >= 1500 "
        "(SCTP receive buffer too small)",
    ),
    # TURN REST
    (
        {"TURN_REST_SHARED_SECRET": "s", "TURN_REST_TTL_SECONDS": "0"},
        [],
        "TURN_REST_TTL_SECONDS must be > 0 when TURN_REST_SHARED_SECRET is set",
    ),
    (
        {"TURN_REST_SHARED_SECRET": "s", "TURN_REST_USERNAME_PREFIX": " "},
        [],
        "TURN_REST_USERNAME_PREFIX must be non-empty when TURN_REST_SHARED_SECRET is set",
    ),
    (
        {"TURN_REST_SHARED_SECRET": "s"},
        ["-turn-rest-username-prefix=a:b"],
        "TURN_REST_USERNAME_PREFIX must not contain ':'",
    ),
    # ports
    (
        {"WEBRTC_UDP_PORT_MIN": "40000"},
        [],
        "WEBRTC_UDP_PORT_MIN and WEBRTC_UDP_PORT_MAX must be set together",
    ),
    (
        {},
        ["-webrtc-udp-port-max=40000"],
        "WEBRTC_UDP_PORT_MIN/--webrtc-udp-port-min and WEBRTC_UDP_PORT_MAX/--webrtc-udp-port-max "
        "must be set together (or both unset)",
    ),
    (
        {},
        ["-webrtc-udp-port-min=70000", "-webrtc-udp-port-max=70100"],
        "WEBRTC_UDP_PORT_MIN/--webrtc-udp-port-min: port 70000 out of range (1-65535)",
    ),
    (
        {"WEBRTC_UDP_PORT_MIN": "50000", "WEBRTC_UDP_PORT_MAX": "40000"},
        [],
        "WebRTC UDP port range min (50000) must be <= max (40000)",
    ),
    (
        {"WEBRTC_UDP_PORT_MIN": "40000", "WEBRTC_UDP_PORT_MAX": "40098"},
        [],
        "WebRTC UDP port range is too small: 99 ports (min 100 recommended)",
    ),
    # network
    ({"WEBRTC_UDP_LISTEN_IP": "bad.ip"}, [], 'invalid WEBRTC_UDP_LISTEN_IP/--webrtc-udp-listen-ip "bad.ip"'),
    (
        {"WEBRTC_UDP_LISTEN_IP": "fe80::1%eth0"},
        [],
        'invalid WEBRTC_UDP_LISTEN_IP/--webrtc-udp-listen-ip "fe80::1%eth0"',
    ),
    (
        {"WEBRTC_UDP_LISTEN_IP": "01.2.3.4"},
        [],
        'invalid WEBRTC_UDP_LISTEN_IP/--webrtc-udp-listen-ip "01.2.3.4"',
    ),
    (
        {"WEBRTC_NAT_1TO1_IPS": "1.2.3.4,host.example"},
        [],
        'invalid WEBRTC_NAT_1TO1_IPS/--webrtc-nat-1to1-ips "1.2.3.4,host.example": invalid IP "host.example"',
    ),
    (
        {"WEBRTC_NAT_1TO1_IPS": " , "},
        [],
        'invalid WEBRTC_NAT_1TO1_IPS/--webrtc-nat-1to1-ips " , ": must include at least one IP',
    ),
    (
        {"WEBRTC_NAT_1TO1_IP_CANDIDATE_TYPE": "relay"},
        [],
        'invalid WEBRTC_NAT_1TO1_IP_CANDIDATE_TYPE/--webrtc-nat-1to1-ip-candidate-type "relay": '
        'unknown candidate type "relay"',
    ),
    (
        {"ALLOWED_ORIGINS": "https://ok.example,https://x.example/path"},
        [],
        'ALLOWED_ORIGINS/--allowed-origins: invalid origin "https://x.example/path" '
        "(expected full origin like https://example.com)",
    ),
    # L2
    (
        {"L2_BACKEND_WS_URL": "http://b.example/l2"},
        [],
        'invalid L2_BACKEND_WS_URL/--l2-backend-ws-url "http://b.example/l2" (expected ws:// or wss://)',
    ),
    ({"L2_BACKEND_WS_URL": "b.example/l2"}, [], "(expected ws:// or wss://)"),
    (
        {"L2_BACKEND_WS_URL": "ws:///l2"},
        [],
        'invalid L2_BACKEND_WS_URL/--l2-backend-ws-url "ws:///l2" (missing host)',
    ),
    ({"L2_BACKEND_WS_URL": "ws:b.example"}, [], "(missing host)"),
    (
        {"L2_BACKEND_WS_URL": "wss://u:p@b.example/l2"},
        [],
        'invalid L2_BACKEND_WS_URL/--l2-backend-ws-url "wss://u:p@b.example/l2" '
        "(must not include credentials)",
    ),
    (
        {"L2_BACKEND_WS_URL": " ws://b.example:x/l2"},
        [],
        'invalid L2_BACKEND_WS_URL/--l2-backend-ws-url " ws://b.example:x/l2": parse "ws://b.example:x/l2": '
        'invalid port ":x" after host',
    ),
    ({"L2_BACKEND_WS_URL": "ws://b.ex ample/l2"}, [], 'invalid character " " in host name'),
    ({"L2_BACKEND_WS_URL": "ws://[::1/l2"}, [], "missing ']' in host"),
    ({"L2_BACKEND_WS_URL": "ws://b.example/%zz"}, [], 'invalid URL escape "%zz"'),
    ({"L2_BACKEND_WS_URL": ":foo"}, [], "missing protocol scheme"),
    (
        {**L2, "L2_BACKEND_WS_ORIGIN": "https://w.example/path"},
        [],
        'invalid L2_BACKEND_WS_ORIGIN/--l2-backend-ws-origin "https://w.example/path": '
        "expected full origin like https://example.com",
    ),
    (
        {"L2_BACKEND_ORIGIN": "ftp://o.example"},
        [],
        'invalid L2_BACKEND_ORIGIN_OVERRIDE/--l2-backend-origin-override "ftp://o.example": '
        "expected full origin like https://example.com",
    ),
    (
        {"L2_BACKEND_TOKEN": "abc,def"},
        [],
        "invalid L2_BACKEND_WS_TOKEN/--l2-backend-ws-token (token is not valid for Sec-WebSocket-Protocol)",
    ),
    (
        {**L2, "L2_BACKEND_WS_TOKEN": "not a token"},
        [],
        "invalid L2_BACKEND_WS_TOKEN/--l2-backend-ws-token: "
        "token must be a valid WebSocket subprotocol token "
        '(RFC 7230 tchar); got "not a token"',
    ),
]


@pytest.mark.parametrize(("env", "argv", "go_text"), ERRORS, ids=[e[2][:60] for e in ERRORS])
def test_validation_error_text(env: dict[str, str], argv: list[str], go_text: str) -> None:
    assert go_text in _error(env, argv)


def test_env_errors_are_reported_in_the_original_order() -> None:
    env = {"WEBRTC_UDP_PORT_MAX": "x", "PREFER_V2": "x", "MAX_SESSIONS": "x"}
    assert _error(env).startswith('invalid PREFER_V2 "x"')


def test_env_errors_come_before_flag_errors_and_help() -> None:
    assert _error({"MAX_SESSIONS": "x"}, ["-nope"]).startswith('invalid MAX_SESSIONS "x"')
    assert _error({"MAX_SESSIONS": "x"}, ["-h"]).startswith('invalid MAX_SESSIONS "x"')


def test_validation_order_follows_the_original() -> None:
    # mode is checked before the auth key, the auth key before the listen IP.
    assert "invalid mode" in _error({"AERO_WEBRTC_UDP_RELAY_MODE": "x", "AUTH_MODE": "jwt"})
    assert "JWT_SECRET" in _error({"AUTH_MODE": "jwt", "WEBRTC_UDP_LISTEN_IP": "x"})


def test_policy_errors_are_destination_policy_errors_and_come_last() -> None:
    with pytest.raises(DestinationPolicyError, match="destination policy: invalid ALLOW_UDP_CIDRS"):
        _load({"ALLOW_UDP_CIDRS": "10.0.0.1"})
    assert "invalid mode" in _error({"ALLOW_UDP_CIDRS": "10.0.0.1", "AERO_WEBRTC_UDP_RELAY_MODE": "x"})


def test_a_policy_error_with_a_raw_newline_stays_on_one_line() -> None:
    text = _error({"ALLOW_UDP_CIDRS": "1.2.3.4/8\nx"})
    assert text.startswith("destination policy: invalid ALLOW_UDP_CIDRS: ")
    assert text.endswith("invalid CIDR address: 1.2.3.4/8\\nx")


@pytest.mark.parametrize("addr", ["nohost", "[::1]", "::1:80", "host:port", "host:70000"])
def test_an_unusable_listen_address_is_a_config_error(addr: str) -> None:
    assert "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR/--listen-addr" in _error(
        {"AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR": addr}
    )


@pytest.mark.parametrize("addr", [":8080", "[::1]:0", "localhost:80", "0.0.0.0:"])
def test_go_listen_addresses_are_accepted(addr: str) -> None:
    assert _load({}, ["-listen-addr", addr]).listen_addr == addr


# --- usage and check-config ------------------------------------------------------------------------------


def test_usage_lists_every_flag_with_its_env_var_and_default() -> None:
    lines = usage().splitlines()
    for var in FLAG_VARS:
        head = next((i for i, line in enumerate(lines) if line.split(" ")[2:3] == [f"-{var.flag}"]), None)
        assert head is not None, var.flag
        detail = lines[head + 1]
        assert f"(env {var.env}" in detail
        assert "(default " in detail


def test_usage_shows_go_type_names_and_mentions_env_only_settings() -> None:
    text = usage("prog")
    assert text.startswith("Usage of prog:\n")
    assert "  -shutdown-timeout duration\n" in text
    assert "  -webrtc-udp-port-min uint\n" in text
    assert "  -turn-rest-ttl-seconds int64\n" in text
    assert "  -prefer-v2\n" in text
    assert "(default 15s)" in text
    for name in ("API_KEY", "JWT_SECRET", *POLICY_ENV_VARS):
        assert name in text


def test_effective_items_redact_secrets() -> None:
    env = {
        "AUTH_MODE": "jwt",
        "JWT_SECRET": "jwt-secret-value",
        "API_KEY": "api-key-value",
        "L2_BACKEND_TOKEN": "l2-token-value",
        "TURN_REST_SHARED_SECRET": "turn-rest-value",
        "AERO_TURN_CREDENTIAL": "turn-cred-value",
        "AERO_ICE_SERVERS_JSON": '[{"urls":"turn:t.example","username":"u","credential":"ice-cred-value"}]',
        "L2_BACKEND_WS_URL": "ws://b.example/l2?token=query-secret",
    }
    items = dict(effective_items(_load(env)))
    for name in (
        "JWT_SECRET",
        "API_KEY",
        "L2_BACKEND_TOKEN",
        "TURN_REST_SHARED_SECRET",
        "AERO_TURN_CREDENTIAL",
    ):
        assert items[name] == "<redacted>"
    assert items["AERO_ICE_SERVERS_JSON"] == "<redacted>"
    assert items["L2_BACKEND_WS_URL"] == "ws://b.example/l2?<redacted>"
    assert items["AUTH_MODE"] == "jwt"
    assert items["UDP_WS_IDLE_TIMEOUT"] == "1m0s"
    assert items["PREFER_V2"] == "false"
    assert items["VIOLATION_WINDOW_SECONDS"] == "10"


def test_effective_items_show_the_policy_lists() -> None:
    env = {"ALLOW_UDP_CIDRS": "10.0.0.0/8", "DENY_UDP_PORTS": "25, 6000-6010"}
    items = dict(effective_items(_load(env)))
    assert (items["ALLOW_UDP_CIDRS"], items["DENY_UDP_CIDRS"]) == ("10.0.0.0/8", "")
    assert (items["ALLOW_UDP_PORTS"], items["DENY_UDP_PORTS"]) == ("", "25,6000-6010")
    assert dict(effective_items(_load({}, ["-violation-window=1.5s"])))["VIOLATION_WINDOW_SECONDS"] == "1.5s"


def test_effective_items_name_every_setting() -> None:
    names = [name for name, _ in effective_items(_load())]
    assert {s.envs[0] for s in SETTINGS} - {"L2_BACKEND_WS_ORIGIN"} <= set(names)
    assert (
        dict(effective_items(_load({**L2, "L2_BACKEND_WS_ORIGIN": "https://W.example"})))["L2_BACKEND_ORIGIN"]
        == "https://w.example"
    )


_SECRET_ENVS = (
    "API_KEY",
    "JWT_SECRET",
    "L2_BACKEND_TOKEN",
    "L2_BACKEND_WS_TOKEN",
    "AERO_TURN_CREDENTIAL",
    "TURN_REST_SHARED_SECRET",
    "AERO_ICE_SERVERS_JSON",
)
_PLAIN_ENVS = (
    "AERO_WEBRTC_UDP_RELAY_PUBLIC_BASE_URL",
    "TURN_REST_REALM",
    "AERO_STUN_URLS",
    "AERO_TURN_USERNAME",
)


@settings(max_examples=150, deadline=None)
@given(
    secrets=st.dictionaries(
        st.sampled_from(_SECRET_ENVS),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16),
        min_size=1,
    ),
    reuse=st.sampled_from(_PLAIN_ENVS),
)
def test_effective_items_never_contain_a_secret_value(secrets: dict[str, str], reuse: str) -> None:
    env = {**secrets, reuse: next(iter(secrets.values()))}  # a secret reused in a plain setting
    try:
        cfg = _load(env)
    except ConfigError:
        return
    values = [value for _, value in effective_items(cfg)]
    # Only the value that reached the Config counts (a losing alias or a token that fails is absent).
    live = {v for v in (cfg.api_key, cfg.jwt_secret, cfg.l2_backend_token, cfg.turn_credential,
                        cfg.turn_rest_shared_secret, cfg.ice_servers_json) if v}  # fmt: skip
    for secret in live:
        if secret in "<redacted>":
            continue  # a secret inside the marker itself cannot be told apart
        assert not any(secret in value for value in values), secret


# --- robustness --------------------------------------------------------------------------------------------

_KNOWN_ENVS = tuple(v.env for v in VARS)
_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=24) | st.sampled_from(
    [
        "",
        " ",
        "0",
        "-1",
        "1s",
        "true",
        "ws://h/l2",
        "1.2.3.4",
        "65536",
        "9" * 25,
        "\x00",
        "\ud800",
        "1.2.3.4/8\nx",
        "a\nb",
    ]
)


@settings(max_examples=300, deadline=None)
@given(env=st.dictionaries(st.sampled_from(_KNOWN_ENVS), _ANY_TEXT, max_size=8))
def test_load_raises_only_config_errors_for_any_env_values(env: dict[str, str]) -> None:
    try:
        _load(env)
    except ConfigError as err:
        assert "\n" not in str(err)


_FLAG_WORDS = [f"-{v.flag}" for v in FLAG_VARS] + ["-h", "--", "-", "---", "-=", "x"]


@settings(max_examples=300, deadline=None)
@given(
    argv=st.lists(
        st.sampled_from(_FLAG_WORDS)
        | st.builds(lambda f, v: f"{f}={v}", st.sampled_from(_FLAG_WORDS), _ANY_TEXT)
        | _ANY_TEXT,
        max_size=6,
    )
)
def test_load_raises_only_config_errors_or_help_for_any_argv(argv: list[str]) -> None:
    try:
        _load({}, argv)
    except HelpRequested:
        pass
    except ConfigError as err:
        assert "\n" not in str(err)
