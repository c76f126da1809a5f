"""Configuration: every env var and flag of the original service, with its exact semantics (spec §20).

`load(env, argv)` is the only place that reads the environment (the caller passes `os.environ`).
It reproduces the original's `internal/config.load` (F-001, F-002, F-215):

* An env value is the default of its flag, so a flag overrides its env var. An empty env value
  means unset (the original's e2e harness clears variables by setting them to "").
* How an env value is read depends on the variable, as in the original: plain strings are taken
  verbatim (only "" is unset); numbers, bools, durations, ports, `AUTH_MODE` and
  `L2_BACKEND_AUTH_FORWARD_MODE` treat a blank value as unset and are trimmed with Go's
  `strings.TrimSpace`. Two durations differ: `AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT` is parsed raw
  (a blank value is an error) and `AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT` treats blank as unset
  but parses the untrimmed value.
* Env ints use `strconv.Atoi` (`ParseInt` for the two int64 settings); flag numbers use Go's `flag`
  parsing (base 0: `0x`, `0o`, `0b`, legacy octal, underscores). Durations use `time.ParseDuration`,
  bools `strconv.ParseBool`.
* Validation runs in the original's order, so the first error reported is the original's. Each
  error is one line naming the variable or flag, the value and what is allowed; the original's
  text is kept verbatim inside it so log-matching tests still pass.
* Flag syntax is Go's: `-x`/`--x`, `-x=v`, `-x v`; a bool takes only `-x` or `-x=v`; `--` or the
  first non-flag argument ends the flags and the rest is ignored, as in the original.

The destination policy (F-134..F-136) is env-only in the original and is parsed last, as the
original's main does after config; its errors raise `DestinationPolicyError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import attrs

from aero_relay.core import gofmt
from aero_relay.core.gofmt import quote
from aero_relay.core.ice import IceConfig, parse_ice_config
from aero_relay.core.origin import go_trim_space, normalize_origin, parse_allowed_origins
from aero_relay.core.policy import DestinationPolicy, parse_destination_policy
from aero_relay.relay.resp import parse_redis_url, redact_redis_url

__all__ = [
    "POLICY_ENV_VARS",
    "SETTINGS",
    "Config",
    "ConfigError",
    "DestinationPolicyError",
    "HelpRequested",
    "Setting",
    "effective_items",
    "load",
    "secret_values",
    "split_listen_addr",
    "usage",
]

# 24 = the v2 IPv6 frame header (F-121); kept here to avoid a config -> frames import cycle.
MAX_FRAME_OVERHEAD_BYTES = 24
DC_MAX_MESSAGE_SLACK = 256
SCTP_RECEIVE_BUFFER_FLOOR = 1500
SCTP_RECEIVE_BUFFER_AUTO_MIN = 1 << 20
MIN_WEBRTC_PORT_RANGE = 100
DEFAULT_DEST_BUCKETS = 1024

# "int64" differs from "int" only in the env error text (strconv.ParseInt instead of Atoi) and
# the --help type name; "port" is a Go `uint` flag whose env value must be 1-65535.
Kind = Literal["str", "int", "int64", "port", "duration", "bool", "violation_window"]

_GO_FLAG_TYPE: dict[str, str] = {
    "str": "string",
    "int": "int",
    "int64": "int64",
    "port": "uint",
    "duration": "duration",
    "violation_window": "duration",
    "bool": "",
}


class ConfigError(Exception):
    """A configuration error; `str(err)` is the one line printed before exiting 2 (F-002)."""


class DestinationPolicyError(ConfigError):
    """A destination policy error (F-134..F-136); the original logs "failed to load destination policy"."""


class HelpRequested(Exception):
    """`-h`/`--help` was given; the caller prints `usage()` and exits 0 (F-001)."""


@attrs.frozen
class Setting:
    """One configuration knob: its env vars (in precedence order), flags and default.

    `env_blank_unset`: a whitespace-only env value counts as unset (else only "" does).
    `env_trim`: the env value is trimmed before parsing and storing.
    """

    field: str
    envs: tuple[str, ...]
    flags: tuple[str, ...]
    kind: Kind
    default: object
    help: str
    env_blank_unset: bool
    env_trim: bool
    secret: bool = False
    default_text: str | None = None  # shown in --help when the default is derived


def _s(
    field: str,
    env: str | tuple[str, ...],
    flag: str | tuple[str, ...] | None,
    kind: Kind,
    default: object,
    help: str,
    *,
    blank_unset: bool | None = None,
    trim: bool | None = None,
    secret: bool = False,
    default_text: str | None = None,
) -> Setting:
    envs = (env,) if isinstance(env, str) else env
    flags = (flag,) if isinstance(flag, str) else (flag or ())
    # The original reads strings with envOrDefault (verbatim) and everything else trimmed.
    typed = kind != "str"
    return Setting(
        field,
        envs,
        flags,
        kind,
        default,
        help,
        env_blank_unset=typed if blank_unset is None else blank_unset,
        env_trim=typed if trim is None else trim,
        secret=secret,
        default_text=default_text,
    )


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # Server
    _s("listen_addr", "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR", "listen-addr", "str", "127.0.0.1:8080",
       "HTTP listen address (host:port)"),
    _s("public_base_url", "AERO_WEBRTC_UDP_RELAY_PUBLIC_BASE_URL", "public-base-url", "str", "",
       "public base URL of this relay (used in logs only)"),
    _s("allowed_origins_raw", "ALLOWED_ORIGINS", "allowed-origins", "str", "",
       "comma-separated browser origins allowed (http(s)://host[:port], * or null); "
       "empty = same host:port only"),
    _s("mode", "AERO_WEBRTC_UDP_RELAY_MODE", "mode", "str", "dev", "run mode: dev or prod"),
    _s("log_format", "AERO_WEBRTC_UDP_RELAY_LOG_FORMAT", "log-format", "str", "",
       "log format: text or json", default_text="json in prod, text in dev"),
    _s("log_level", "AERO_WEBRTC_UDP_RELAY_LOG_LEVEL", "log-level", "str", "",
       "log level: debug, info, warn, error", default_text="info in prod, debug in dev"),
    _s("shutdown_timeout", "AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT", "shutdown-timeout", "duration", 15.0,
       "graceful shutdown timeout", blank_unset=False, trim=False),
    _s("ice_gathering_timeout", "AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT", "ice-gather-timeout",
       "duration", 2.0, "max wait for ICE gathering on non-trickle offers (POST /offer, /webrtc/offer)",
       trim=False),
    _s("webrtc_session_connect_timeout", "WEBRTC_SESSION_CONNECT_TIMEOUT", "webrtc-session-connect-timeout",
       "duration", 30.0, "max time for a new WebRTC session to connect"),
    # Auth
    _s("auth_mode", "AUTH_MODE", "auth-mode", "str", "api_key", "signaling auth mode: none, api_key or jwt",
       blank_unset=True, trim=True),
    _s("api_key", "API_KEY", None, "str", "", "API key (AUTH_MODE=api_key)", secret=True),
    _s("jwt_secret", "JWT_SECRET", None, "str", "", "HS256 secret (AUTH_MODE=jwt)", secret=True),
    _s("signaling_auth_timeout", "SIGNALING_AUTH_TIMEOUT", "signaling-auth-timeout", "duration", 2.0,
       "time allowed for WebSocket auth (/webrtc/signal and /udp)"),
    _s("signaling_ws_idle_timeout", "SIGNALING_WS_IDLE_TIMEOUT", "signaling-ws-idle-timeout", "duration",
       60.0, "close idle /webrtc/signal WebSockets after this"),
    _s("signaling_ws_ping_interval", "SIGNALING_WS_PING_INTERVAL", "signaling-ws-ping-interval",
       "duration", 20.0, "ping interval on /webrtc/signal (must be < idle timeout)"),
    _s("max_signaling_message_bytes", "MAX_SIGNALING_MESSAGE_BYTES", "max-signaling-message-bytes", "int64",
       65536, "max signaling WebSocket message size (also the /udp auth read limit)"),
    _s("max_signaling_messages_per_second", "MAX_SIGNALING_MESSAGES_PER_SECOND",
       "max-signaling-messages-per-second", "int", 50, "per-connection signaling message rate limit"),
    _s("udp_ws_idle_timeout", "UDP_WS_IDLE_TIMEOUT", "udp-ws-idle-timeout", "duration", 60.0,
       "close idle /udp WebSockets after this"),
    _s("udp_ws_ping_interval", "UDP_WS_PING_INTERVAL", "udp-ws-ping-interval", "duration", 20.0,
       "ping interval on /udp (must be < idle timeout)"),
    # Relay engine
    _s("udp_binding_idle_timeout", "UDP_BINDING_IDLE_TIMEOUT", "udp-binding-idle-timeout", "duration", 60.0,
       "close a guest port's UDP binding after this long without traffic"),
    _s("udp_inbound_filter_mode", "UDP_INBOUND_FILTER_MODE", "udp-inbound-filter-mode", "str",
       "address_and_port", "inbound UDP filter: address_and_port or any"),
    _s("udp_remote_allowlist_idle_timeout", "UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT",
       "udp-remote-allowlist-idle-timeout", "duration", None, "expire inbound allow-list entries after this",
       default_text="UDP_BINDING_IDLE_TIMEOUT"),
    _s("udp_read_buffer_bytes", "UDP_READ_BUFFER_BYTES", "udp-read-buffer-bytes", "int", None,
       "UDP read buffer (>= MAX_DATAGRAM_PAYLOAD_BYTES+1 so oversize is detected, not truncated)",
       default_text="MAX_DATAGRAM_PAYLOAD_BYTES+1"),
    _s("datachannel_send_queue_bytes", "DATACHANNEL_SEND_QUEUE_BYTES", "datachannel-send-queue-bytes", "int",
       1048576, "relay->client send queue bound in bytes"),
    _s("max_datagram_payload_bytes", "MAX_DATAGRAM_PAYLOAD_BYTES", "max-datagram-payload-bytes", "int", 1200,
       "max UDP payload bytes per relay frame"),
    _s("max_allowed_remotes_per_binding", "MAX_ALLOWED_REMOTES_PER_BINDING",
       "max-allowed-remotes-per-binding", "int", 1024,
       "cap of remotes in each binding's inbound allow-list (LRU eviction)"),
    _s("prefer_v2", "PREFER_V2", "prefer-v2", "bool", False,
       "send v2 frames to clients that have sent v2"),
    _s("max_udp_bindings_per_session", "MAX_UDP_BINDINGS_PER_SESSION", "max-udp-bindings-per-session", "int",
       128, "max UDP bindings (guest ports) per session (LRU eviction)"),
    # Quotas
    _s("max_sessions", "MAX_SESSIONS", "max-sessions", "int", 0, "max concurrent sessions (0 = unlimited)"),
    _s("session_prealloc_ttl", "SESSION_PREALLOC_TTL", "session-prealloc-ttl", "duration", 60.0,
       "TTL of POST /session reservations"),
    # Scale-out (ours, not the original's): the registry of sessions, sids and reservations.
    _s("session_registry_url", "SESSION_REGISTRY_URL", "session-registry-url", "str", "",
       "shared session registry: redis://[user:password@]host[:port][/db] or unix:///path[?db=N] "
       "(empty = in-memory, this process only)"),
    _s("session_lease_ttl", "SESSION_LEASE_TTL", "session-lease-ttl", "duration", 15.0,
       "shared registry lease TTL, renewed every TTL/3: a crashed process's sessions free their sid "
       "and slot within this"),
    _s("workers", "AERO_RELAY_WORKERS", "workers", "int", 1,
       "worker processes sharing the HTTP port (> 1 needs SESSION_REGISTRY_URL; the ICE UDP port range "
       "is split between them, >= 100 ports each)"),
    _s("max_udp_pps_per_session", "MAX_UDP_PPS_PER_SESSION", "max-udp-pps-per-session", "int", 0,
       "outbound UDP packets/s per session (0 = unlimited)"),
    _s("max_udp_bps_per_session", "MAX_UDP_BPS_PER_SESSION", "max-udp-bps-per-session", "int", 0,
       "outbound UDP bytes/s per session (0 = unlimited)"),
    _s("max_udp_pps_per_dest", "MAX_UDP_PPS_PER_DEST", "max-udp-pps-per-dest", "int", 0,
       "outbound UDP packets/s per destination per session (0 = unlimited)"),
    _s("max_unique_destinations_per_session", "MAX_UNIQUE_DESTINATIONS_PER_SESSION",
       "max-unique-destinations-per-session", "int", 0,
       "max distinct destinations per session (0 = unlimited)"),
    _s("max_udp_dest_buckets_per_session", "MAX_UDP_DEST_BUCKETS_PER_SESSION",
       "max-udp-dest-buckets-per-session", "int", None, "cap of per-destination rate buckets (LRU)",
       default_text="1024, or MAX_UNIQUE_DESTINATIONS_PER_SESSION when that is > 0"),
    _s("max_dc_bps_per_session", "MAX_DC_BPS_PER_SESSION", "max-dc-bps-per-session", "int", 0,
       "relay->client bytes/s per session (0 = unlimited)"),
    _s("hard_close_after_violations", "HARD_CLOSE_AFTER_VIOLATIONS", "hard-close-after-violations", "int", 0,
       "close a session after N rate/quota violations (0 = never)"),
    _s("violation_window", "VIOLATION_WINDOW_SECONDS", "violation-window", "violation_window", 10.0,
       "violation window (env: whole seconds, <= 0 ignored; flag: a Go duration)"),
    # L2 bridge
    _s("l2_backend_ws_url", "L2_BACKEND_WS_URL", "l2-backend-ws-url", "str", "",
       "backend ws:// or wss:// URL for the l2 DataChannel bridge (empty = l2 rejected)"),
    _s("l2_backend_origin_override", ("L2_BACKEND_ORIGIN", "L2_BACKEND_ORIGIN_OVERRIDE"),
       ("l2-backend-origin", "l2-backend-origin-override"), "str", "",
       "Origin sent to the L2 backend; overrides forwarding and L2_BACKEND_WS_ORIGIN "
       "(the two flags are aliases)"),
    _s("l2_backend_ws_origin", "L2_BACKEND_WS_ORIGIN", "l2-backend-ws-origin", "str", "",
       "static Origin sent to the L2 backend"),
    _s("l2_backend_token", ("L2_BACKEND_TOKEN", "L2_BACKEND_WS_TOKEN"),
       ("l2-backend-token", "l2-backend-ws-token"), "str", "",
       "token offered to the L2 backend as subprotocol aero-l2-token.<token> (the two flags are aliases)",
       secret=True),
    _s("l2_backend_forward_origin", "L2_BACKEND_FORWARD_ORIGIN", "l2-backend-forward-origin", "bool", None,
       "forward the client Origin to the L2 backend", default_text="true when L2_BACKEND_WS_URL is set"),
    _s("l2_backend_auth_forward_mode", "L2_BACKEND_AUTH_FORWARD_MODE", "l2-backend-auth-forward-mode", "str",
       "query", "forward the client credential to the L2 backend: none, query or subprotocol",
       blank_unset=True, trim=True),
    _s("l2_backend_forward_aero_session", "L2_BACKEND_FORWARD_AERO_SESSION",
       "l2-backend-forward-aero-session", "bool", False, "forward the aero_session cookie to the L2 backend"),
    _s("l2_max_message_bytes", "L2_MAX_MESSAGE_BYTES", "l2-max-message-bytes", "int", 4096,
       "max l2 message size, both directions"),
    # WebRTC network
    _s("webrtc_udp_port_min", "WEBRTC_UDP_PORT_MIN", "webrtc-udp-port-min", "port", 0,
       "lowest ICE UDP port (0 = unset; set with max, range >= 100 ports)"),
    _s("webrtc_udp_port_max", "WEBRTC_UDP_PORT_MAX", "webrtc-udp-port-max", "port", 0,
       "highest ICE UDP port (0 = unset)"),
    _s("webrtc_udp_listen_ip", "WEBRTC_UDP_LISTEN_IP", "webrtc-udp-listen-ip", "str", "0.0.0.0",
       "local IP for ICE UDP sockets (0.0.0.0 or :: = all interfaces)"),
    _s("webrtc_nat_1to1_ips_raw", "WEBRTC_NAT_1TO1_IPS", "webrtc-nat-1to1-ips", "str", "",
       "comma-separated public IPs to advertise when behind 1:1 NAT"),
    _s("webrtc_nat_1to1_ip_candidate_type", "WEBRTC_NAT_1TO1_IP_CANDIDATE_TYPE",
       "webrtc-nat-1to1-ip-candidate-type", "str", "host", "candidate type for NAT 1:1 IPs: host or srflx"),
    _s("webrtc_datachannel_max_message_bytes", "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES",
       "webrtc-datachannel-max-message-bytes", "int", 0, "advertised DataChannel max message size (0 = auto)",
       default_text="0 (auto: max(MAX_DATAGRAM_PAYLOAD_BYTES+24, L2_MAX_MESSAGE_BYTES)+256)"),
    _s("webrtc_sctp_max_receive_buffer_bytes", "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES",
       "webrtc-sctp-max-receive-buffer-bytes", "int", 0, "SCTP receive reassembly cap (0 = auto)",
       default_text="0 (auto: max(1048576, 2*WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES))"),
    # ICE servers
    _s("ice_servers_json", "AERO_ICE_SERVERS_JSON", "ice-servers-json", "str", "",
       "JSON array of ICE servers advertised to clients", secret=True),
    _s("stun_urls", "AERO_STUN_URLS", "stun-urls", "str", "", "comma-separated STUN URLs"),
    _s("turn_urls", "AERO_TURN_URLS", "turn-urls", "str", "", "comma-separated TURN URLs"),
    _s("turn_username", "AERO_TURN_USERNAME", "turn-username", "str", "", "TURN username"),
    _s("turn_credential", "AERO_TURN_CREDENTIAL", "turn-credential", "str", "", "TURN credential",
       secret=True),
    _s("turn_rest_shared_secret", "TURN_REST_SHARED_SECRET", "turn-rest-shared-secret", "str", "",
       "coturn static-auth-secret; enables TURN REST credentials", secret=True),
    _s("turn_rest_ttl_seconds", "TURN_REST_TTL_SECONDS", "turn-rest-ttl-seconds", "int64", 3600,
       "TURN REST credential lifetime in seconds"),
    _s("turn_rest_username_prefix", "TURN_REST_USERNAME_PREFIX", "turn-rest-username-prefix", "str", "aero",
       "TURN REST username prefix"),
    _s("turn_rest_realm", "TURN_REST_REALM", "turn-rest-realm", "str", "",
       "TURN realm (documentation parity with coturn; unused)"),
)
# fmt: on

POLICY_ENV_VARS: tuple[str, ...] = (
    "DESTINATION_POLICY_PRESET",
    "UDP_DESTINATION_POLICY_PRESET",
    "POLICY_PRESET",
    "ALLOW_PRIVATE_NETWORKS",
    "ALLOW_UDP_CIDRS",
    "DENY_UDP_CIDRS",
    "ALLOW_UDP_PORTS",
    "DENY_UDP_PORTS",
)

_BY_FIELD: dict[str, Setting] = {s.field: s for s in SETTINGS}
_BY_FLAG: dict[str, Setting] = {f: s for s in SETTINGS for f in s.flags}

# The order in which the original parses env values that can fail, so that with several bad
# values the same one is reported first. Strings cannot fail at this stage.
_ENV_PARSE_ORDER: dict[str, int] = {
    name: i
    for i, name in enumerate(
        (
            "PREFER_V2",
            "TURN_REST_TTL_SECONDS",
            "UDP_BINDING_IDLE_TIMEOUT",
            "UDP_REMOTE_ALLOWLIST_IDLE_TIMEOUT",
            "MAX_DATAGRAM_PAYLOAD_BYTES",
            "UDP_READ_BUFFER_BYTES",
            "DATACHANNEL_SEND_QUEUE_BYTES",
            "MAX_ALLOWED_REMOTES_PER_BINDING",
            "L2_BACKEND_FORWARD_AERO_SESSION",
            "L2_BACKEND_FORWARD_ORIGIN",
            "L2_MAX_MESSAGE_BYTES",
            "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES",
            "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES",
            "AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT",
            "AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT",
            "WEBRTC_SESSION_CONNECT_TIMEOUT",
            "MAX_SESSIONS",
            "SESSION_PREALLOC_TTL",
            "SESSION_LEASE_TTL",
            "MAX_UDP_PPS_PER_SESSION",
            "MAX_UDP_BPS_PER_SESSION",
            "MAX_UDP_PPS_PER_DEST",
            "MAX_UDP_BINDINGS_PER_SESSION",
            "MAX_UNIQUE_DESTINATIONS_PER_SESSION",
            "MAX_UDP_DEST_BUCKETS_PER_SESSION",
            "MAX_DC_BPS_PER_SESSION",
            "HARD_CLOSE_AFTER_VIOLATIONS",
            "VIOLATION_WINDOW_SECONDS",
            "SIGNALING_AUTH_TIMEOUT",
            "SIGNALING_WS_IDLE_TIMEOUT",
            "SIGNALING_WS_PING_INTERVAL",
            "MAX_SIGNALING_MESSAGE_BYTES",
            "MAX_SIGNALING_MESSAGES_PER_SECOND",
            "UDP_WS_IDLE_TIMEOUT",
            "UDP_WS_PING_INTERVAL",
            "WEBRTC_UDP_PORT_MIN",
            "WEBRTC_UDP_PORT_MAX",
        )
    )
}
_ENV_SETTINGS_IN_ORDER: tuple[Setting, ...] = tuple(
    sorted(SETTINGS, key=lambda s: _ENV_PARSE_ORDER.get(s.envs[0], -1))
)

_TCHAR_EXTRA = frozenset("!#$%&'*+-.^_`|~")


def is_tchar_token(value: str) -> bool:
    """RFC 7230 `token`: the characters allowed in a Sec-WebSocket-Protocol value."""
    return value != "" and all(c.isascii() and (c.isalnum() or c in _TCHAR_EXTRA) for c in value)


@attrs.frozen
class Config:
    """The effective configuration (after env, flags, derived defaults and validation)."""

    listen_addr: str
    public_base_url: str
    allowed_origins: tuple[str, ...]
    mode: str
    log_format: str
    log_level: str
    shutdown_timeout: float
    ice_gathering_timeout: float
    webrtc_session_connect_timeout: float
    auth_mode: str
    api_key: str = attrs.field(repr=False)
    jwt_secret: str = attrs.field(repr=False)
    signaling_auth_timeout: float
    signaling_ws_idle_timeout: float
    signaling_ws_ping_interval: float
    max_signaling_message_bytes: int
    max_signaling_messages_per_second: int
    udp_ws_idle_timeout: float
    udp_ws_ping_interval: float
    udp_binding_idle_timeout: float
    udp_inbound_filter_mode: str
    udp_remote_allowlist_idle_timeout: float
    udp_read_buffer_bytes: int
    datachannel_send_queue_bytes: int
    max_datagram_payload_bytes: int
    max_allowed_remotes_per_binding: int
    prefer_v2: bool
    max_udp_bindings_per_session: int
    max_sessions: int
    session_prealloc_ttl: float
    session_registry_url: str = attrs.field(repr=False)  # may hold a password
    session_lease_ttl: float
    workers: int
    max_udp_pps_per_session: int
    max_udp_bps_per_session: int
    max_udp_pps_per_dest: int
    max_unique_destinations_per_session: int
    max_udp_dest_buckets_per_session: int
    max_dc_bps_per_session: int
    hard_close_after_violations: int
    violation_window: float
    l2_backend_ws_url: str
    l2_backend_origin: str  # the resolved Origin override for backend dials ("" = none)
    l2_backend_token: str = attrs.field(repr=False)
    l2_backend_forward_origin: bool
    l2_backend_auth_forward_mode: str
    l2_backend_forward_aero_session: bool
    l2_max_message_bytes: int
    webrtc_udp_port_min: int  # 0 = unset (both or neither are set)
    webrtc_udp_port_max: int
    webrtc_udp_listen_ip: str
    webrtc_nat_1to1_ips: tuple[str, ...]
    webrtc_nat_1to1_ip_candidate_type: str
    webrtc_datachannel_max_message_bytes: int  # effective (auto resolved)
    webrtc_sctp_max_receive_buffer_bytes: int  # effective (auto resolved)
    ice_servers_json: str = attrs.field(repr=False)
    stun_urls: str
    turn_urls: str
    turn_username: str
    turn_credential: str = attrs.field(repr=False)
    turn_rest_shared_secret: str = attrs.field(repr=False)
    turn_rest_ttl_seconds: int
    turn_rest_username_prefix: str
    turn_rest_realm: str
    ice: IceConfig
    policy: DestinationPolicy

    @property
    def turn_rest_enabled(self) -> bool:
        return go_trim_space(self.turn_rest_shared_secret) != ""

    @property
    def l2_enabled(self) -> bool:
        return self.l2_backend_ws_url != ""

    @property
    def l2_backend_ws_host(self) -> str:
        """The URL's host[:port] (what the original's start log reports instead of the URL)."""
        url = self.l2_backend_ws_url
        if "://" not in url:
            return ""
        authority = url.split("://", 1)[1]
        for sep in "/?#":
            authority = authority.split(sep, 1)[0]
        return authority.rpartition("@")[2]

    @property
    def is_prod(self) -> bool:
        return self.mode == "prod"


# --- value parsers -------------------------------------------------------------------------------


def _oneline(text: str) -> str:
    """`text` as-is when printable, else Go-quoted, so an error stays on one line."""
    quoted = quote(text)
    return text if quoted[1:-1] == text else quoted


def _escape_controls(text: str) -> str:
    """Escape only the characters %q would escape for not being printable (quotes stay as they are)."""
    return "".join(ch if ch in '"\\' or quote(ch)[1:-1] == ch else quote(ch)[1:-1] for ch in text)


def _atoi(s: str) -> int:
    """gofmt.atoi, with Go's range error for numbers too long for Python's int() digit limit."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if len(body) > 20 and body.isascii() and body.isdigit() and len(body.lstrip("0")) > 19:
        raise gofmt.GoParseError(f"strconv.Atoi: parsing {quote(s)}: value out of range")
    return gofmt.atoi(s)


def _parse_env_port(raw: str) -> int:
    """The original's parsePortString: ParseUint(trimmed, 10, 16), then 1-65535."""
    text = go_trim_space(raw)
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 5 or int(text) > 0xFFFF:
        raise ValueError(f"invalid port {quote(raw)}")
    port = int(text)
    if port == 0:
        raise ValueError("port 0 out of range (1-65535)")
    return port


def _parse_env_value(setting: Setting, name: str, raw: str) -> object:
    """Parse one env value; None means "ignored" (a non-positive VIOLATION_WINDOW_SECONDS)."""
    value = go_trim_space(raw) if setting.env_trim else raw
    try:
        match setting.kind:
            case "str":
                return value
            case "int":
                return _atoi(value)
            case "int64":
                try:
                    return _atoi(value)
                except gofmt.GoParseError as err:  # the original uses ParseInt(s, 10, 64) here
                    raise gofmt.GoParseError(
                        str(err).replace("strconv.Atoi:", "strconv.ParseInt:", 1)
                    ) from None
            case "duration":
                return gofmt.parse_duration(value)
            case "bool":
                return gofmt.parse_bool(value)
            case "port":
                return _parse_env_port(raw)
            case "violation_window":
                seconds = _atoi(value)
                # The original silently ignores a non-positive value (the 10s default stays).
                return float(seconds) if seconds > 0 else None
    except ValueError as err:
        raise ConfigError(f"invalid {name} {quote(raw)}: {err}") from None
    raise AssertionError(setting.kind)


class _FlagNumError(ValueError):
    """Go flag's numError: the text is "parse error" or "value out of range"."""


_DIGIT_VALUES = {c: int(c, 36) for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _go_underscores_ok(s: str) -> bool:
    """Go's underscoreOK: each `_` sits between digits, or between a base prefix and a digit."""
    saw = "^"  # ^ = start, 0 = digit or prefix, _ = underscore, ! = other
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexadecimal = False
    if len(s) >= 2 and s[0] == "0" and s[1] in "bBoOxX":
        i = 2
        saw = "0"
        hexadecimal = s[1] in "xX"
    for ch in s[i:]:
        if ch.isascii() and (ch.isdigit() or (hexadecimal and ch in "abcdefABCDEF")):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def _go_flag_number(text: str, *, signed: bool) -> int:
    """Go flag numbers: strconv.ParseInt(s, 0, 64) (signed) or ParseUint(s, 0, 64)."""
    body = text
    negative = False
    if signed and body[:1] in ("+", "-"):
        negative = body[0] == "-"
        body = body[1:]
    base = 10
    if len(body) >= 2 and body[0] == "0":
        prefix = body[1].lower()
        if prefix in "box":
            base = {"b": 2, "o": 8, "x": 16}[prefix]
            body = body[2:]
        else:
            base = 8  # a leading 0 means octal in base 0
            body = body[1:]
    digits = body.replace("_", "")
    if not digits or any(_DIGIT_VALUES.get(c, 99) >= base for c in digits):
        raise _FlagNumError("parse error")
    if not _go_underscores_ok(text):
        raise _FlagNumError("parse error")
    if len(digits.lstrip("0")) > 64:  # more than 64 bits in any base; keeps int() cheap
        raise _FlagNumError("value out of range")
    value = int(digits, base)
    if negative:
        value = -value
    low, high = (-(1 << 63), (1 << 63) - 1) if signed else (0, (1 << 64) - 1)
    if not low <= value <= high:
        raise _FlagNumError("value out of range")
    return value


def _parse_flag_value(setting: Setting, flag: str, raw: str) -> object:
    try:
        match setting.kind:
            case "str":
                return raw
            case "int" | "int64":
                return _go_flag_number(raw, signed=True)
            case "port":
                return _go_flag_number(raw, signed=False)
            case "duration" | "violation_window":
                return gofmt.parse_duration(raw)
            case "bool":
                return gofmt.parse_bool(raw)
    except _FlagNumError as err:
        raise ConfigError(
            f"invalid value {quote(raw)} for flag -{flag}: {err} (expected {_flag_allowed(setting)})"
        ) from None
    except ValueError:
        if setting.kind == "bool":
            raise ConfigError(
                f"invalid boolean value {quote(raw)} for -{flag}: parse error (expected true or false)"
            ) from None
        raise ConfigError(
            f"invalid value {quote(raw)} for flag -{flag}: parse error (expected {_flag_allowed(setting)})"
        ) from None
    raise AssertionError(setting.kind)


def _flag_allowed(setting: Setting) -> str:
    return {
        "str": "a string",
        "int": "a 64-bit integer",
        "int64": "a 64-bit integer",
        "port": "an unsigned integer, a port 1-65535 or 0 for unset",
        "duration": "a Go duration such as 300ms, 1.5s, 1h2m",
        "violation_window": "a Go duration such as 10s",
        "bool": "true or false",
    }[setting.kind]


def _parse_flags(argv: Sequence[str]) -> dict[str, object]:
    """Go `flag` semantics (F-001): `-x`/`--x`, `-x=v`, `-x v`; a bool takes only `-x` or `-x=v`.

    Parsing stops at `--` or at the first non-flag argument; like the original, whatever follows
    is ignored. Both flags of an alias pair write one field, so the last one given wins.
    """
    out: dict[str, object] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if len(arg) < 2 or arg[0] != "-":
            break
        if arg == "--":
            break
        name = arg[2:] if arg[1] == "-" else arg[1:]
        if not name or name[0] in "-=":
            raise ConfigError(f"bad flag syntax: {_oneline(arg)}")
        name, has_value, value = name.partition("=")
        i += 1
        setting = _BY_FLAG.get(name)
        if setting is None:
            if name in ("h", "help"):
                raise HelpRequested
            raise ConfigError(
                f"flag provided but not defined: -{_oneline(name)} (see --help for the list of flags)"
            )
        if setting.kind == "bool":
            parsed: object = _parse_flag_value(setting, name, value) if has_value else True
        else:
            if not has_value:
                if i >= len(args):
                    raise ConfigError(f"flag needs an argument: -{name}")
                value = args[i]
                i += 1
            parsed = _parse_flag_value(setting, name, value)
        out[setting.field] = parsed
    return out


# --- Go net/url and net helpers ------------------------------------------------------------------

_HOST_OK_PUNCT = frozenset("!$&'()*+,;=:[]<>\"-_.~")
_HEX = frozenset("0123456789abcdefABCDEF")
_USERINFO_OK_PUNCT = frozenset("-._:~!$&'()*+,;=%@")


def _go_unescape_check(s: str, *, host: bool) -> None:
    """The error cases of Go url.unescape for the host (encodeHost) and other components."""
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "%":
            if i + 2 >= len(s) or s[i + 1] not in _HEX or s[i + 2] not in _HEX:
                raise ValueError(f"invalid URL escape {quote(s[i : i + 3])}")
            if host and int(s[i + 1], 16) < 8 and s[i : i + 3] != "%25":
                raise ValueError(f"invalid URL escape {quote(s[i : i + 3])}")
            i += 3
            continue
        if host and ch.isascii() and not ch.isalnum() and ch not in _HOST_OK_PUNCT:
            raise ValueError(f"invalid character {quote(ch)} in host name")
        i += 1


def _valid_optional_port(colon_port: str) -> bool:
    return colon_port == "" or (colon_port[0] == ":" and all(c in "0123456789" for c in colon_port[1:]))


def _go_parse_url(url: str) -> tuple[str, str, bool]:
    """The parts of Go `url.Parse` the config checks: (lower-case scheme, host, has userinfo).

    Raises ValueError with Go's reason for the inputs url.Parse rejects.
    """
    rest, _, fragment = url.partition("#")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in rest):
        raise ValueError("net/url: invalid control character in URL")
    scheme = ""
    for idx, ch in enumerate(rest):
        if ch.isascii() and ch.isalpha():
            continue
        if ch in "0123456789+-.":
            if idx == 0:
                break
            continue
        if ch == ":":
            if idx == 0:
                raise ValueError("missing protocol scheme")
            scheme, rest = rest[:idx].lower(), rest[idx + 1 :]
        break
    rest = rest.partition("?")[0]
    host = ""
    has_user = False
    if not rest.startswith("/"):
        if not scheme and ":" in rest.partition("/")[0]:
            raise ValueError("first path segment in URL cannot contain colon")
        if scheme:
            rest = ""  # opaque: no host; nothing else that can fail
    elif rest.startswith("//") and (scheme or not rest.startswith("///")):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        userinfo, at, hostport = authority.rpartition("@")
        if hostport.startswith("["):
            close = hostport.rfind("]")
            if close < 0:
                raise ValueError("missing ']' in host")
            if not _valid_optional_port(hostport[close + 1 :]):
                raise ValueError(f"invalid port {quote(hostport[close + 1 :])} after host")
        elif ":" in hostport:
            colon_port = hostport[hostport.rfind(":") :]
            if not _valid_optional_port(colon_port):
                raise ValueError(f"invalid port {quote(colon_port)} after host")
        _go_unescape_check(hostport, host=True)
        host = hostport
        if at:
            if not all(c.isascii() and (c.isalnum() or c in _USERINFO_OK_PUNCT) for c in userinfo):
                raise ValueError("net/url: invalid userinfo")
            _go_unescape_check(userinfo, host=False)
            has_user = True
    _go_unescape_check(rest, host=False)
    _go_unescape_check(fragment, host=False)
    return scheme, host, has_user


def go_parse_ip(text: str) -> str | None:
    """Go `net.ParseIP(text).String()`; None when Go rejects it (zones and leading zeros included)."""
    if "%" in text:
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)  # net.IP.String prints a v4-mapped address as IPv4
    return str(addr)


def split_listen_addr(addr: str) -> tuple[str, int]:
    """Split host:port like Go net.SplitHostPort; the port is decimal 0-65535 ("" means 0)."""
    name = f"invalid AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR/--listen-addr {quote(addr)}"
    if addr.startswith("["):
        close = addr.find("]")
        if close < 0:
            raise ConfigError(f"{name}: missing ']' in address")
        host, after = addr[1:close], addr[close + 1 :]
        if not after.startswith(":"):
            raise ConfigError(f"{name}: missing port in address (expected host:port, e.g. [::1]:8080)")
        port = after[1:]
    else:
        host, sep, port = addr.rpartition(":")
        if not sep:
            raise ConfigError(f"{name}: missing port in address (expected host:port)")
        if ":" in host:
            raise ConfigError(f"{name}: too many colons in address (bracket IPv6 hosts like [::1]:8080)")
    if port == "":
        return host, 0
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(f"{name}: invalid port {quote(port)} (expected a port 0-65535)")
    return host, int(port)


# --- load ----------------------------------------------------------------------------------------


def _dur(seconds: float) -> str:
    return gofmt.format_duration(seconds)


def _names(field: str) -> str:
    s = _BY_FIELD[field]
    return f"{s.envs[0]}/--{s.flags[0]}"


def _positive(field: str, value: float | int) -> None:
    """The original's `<NAME>/--<flag> must be > 0` check."""
    if value <= 0:
        got = str(value) if isinstance(value, int) else _dur(value)
        raise ConfigError(f"{_names(field)} must be > 0 (got {got})")


def _normalize_config_origin(raw: str, names: str) -> str:
    trimmed = go_trim_space(raw)
    if trimmed == "null":
        return "null"
    norm = normalize_origin(trimmed)
    if norm is None:
        raise ConfigError(f"invalid {names} {quote(raw)}: expected full origin like https://example.com")
    return norm.origin


def load(env: Mapping[str, str], argv: Sequence[str] = ()) -> Config:
    """Build the effective Config from an environment mapping and command-line flags (F-001, F-002)."""
    values: dict[str, object] = {}
    explicit: set[str] = set()  # fields set by a (non-unset) env value or by a flag

    # 1. Env values, in the original's order (the first bad one is the one reported).
    for setting in _ENV_SETTINGS_IN_ORDER:
        for name in setting.envs:  # first non-empty alias wins (L2_BACKEND_ORIGIN, L2_BACKEND_TOKEN)
            raw = env.get(name)
            if raw is None or raw == "" or (setting.env_blank_unset and go_trim_space(raw) == ""):
                continue
            parsed = _parse_env_value(setting, name, raw)
            if parsed is not None:
                values[setting.field] = parsed
                explicit.add(setting.field)
            break
    # The original checks the env port pair before the flags exist (quirk kept: an env MIN with a
    # flag MAX is refused).
    if ("webrtc_udp_port_min" in values) != ("webrtc_udp_port_max" in values):
        raise ConfigError(
            "WEBRTC_UDP_PORT_MIN and WEBRTC_UDP_PORT_MAX must be set together (or both unset) "
            "(found only one in the environment)"
        )

    # 2. Flags override.
    for field, parsed in _parse_flags(argv).items():
        values[field] = parsed
        explicit.add(field)

    def get(field: str) -> object:
        return values[field] if field in values else _BY_FIELD[field].default

    def gs(field: str) -> str:
        v = get(field)
        assert isinstance(v, str)
        return v

    def gi(field: str) -> int:
        v = get(field)
        assert isinstance(v, int) and not isinstance(v, bool)
        return v

    def gd(field: str) -> float:
        v = get(field)
        assert isinstance(v, float)
        return v

    def gb(field: str) -> bool:
        v = get(field)
        assert isinstance(v, bool)
        return v

    # 3. Derived defaults, computed from the values after flags.
    max_payload = gi("max_datagram_payload_bytes")
    read_buf = gi("udp_read_buffer_bytes") if "udp_read_buffer_bytes" in explicit else max_payload + 1
    binding_idle = gd("udp_binding_idle_timeout")
    allowlist_idle = (
        gd("udp_remote_allowlist_idle_timeout")
        if "udp_remote_allowlist_idle_timeout" in explicit
        else binding_idle
    )
    max_unique = gi("max_unique_destinations_per_session")
    if "max_udp_dest_buckets_per_session" in explicit:
        dest_buckets = gi("max_udp_dest_buckets_per_session")
    else:
        dest_buckets = max_unique if max_unique > 0 else DEFAULT_DEST_BUCKETS

    # 4. Validation, in the original's order.
    mode_raw = gs("mode")
    mode = {"dev": "dev", "development": "dev", "prod": "prod", "production": "prod"}.get(
        go_trim_space(mode_raw).lower()
    )
    if mode is None:
        raise ConfigError(
            f"AERO_WEBRTC_UDP_RELAY_MODE/--mode: invalid mode {quote(mode_raw)} (expected dev or prod)"
        )

    # An explicitly set format or level is parsed even when blank (then it is an error).
    log_format_raw = gs("log_format") if "log_format" in explicit else ("json" if mode == "prod" else "text")
    log_format = go_trim_space(log_format_raw).lower()
    if log_format not in ("text", "json"):
        raise ConfigError(
            "AERO_WEBRTC_UDP_RELAY_LOG_FORMAT/--log-format: "
            f"invalid log format {quote(log_format_raw)} (expected text or json)"
        )
    log_level_raw = gs("log_level") if "log_level" in explicit else ("info" if mode == "prod" else "debug")
    log_level = go_trim_space(log_level_raw).lower()
    if log_level == "warning":
        log_level = "warn"
    if log_level not in ("debug", "info", "warn", "error"):
        raise ConfigError(
            "AERO_WEBRTC_UDP_RELAY_LOG_LEVEL/--log-level: "
            f"invalid log level {quote(log_level_raw)} (expected debug, info, warn, error)"
        )

    auth_raw = gs("auth_mode")
    auth_mode = go_trim_space(auth_raw).lower()
    if auth_mode not in ("none", "api_key", "jwt"):
        raise ConfigError(
            f"AUTH_MODE/--auth-mode: invalid AUTH_MODE {quote(auth_raw)} (expected none, api_key, or jwt)"
        )

    fwd_raw = gs("l2_backend_auth_forward_mode")
    fwd_mode = go_trim_space(fwd_raw).lower() or "query"
    if fwd_mode not in ("none", "query", "subprotocol"):
        raise ConfigError(
            f"invalid L2_BACKEND_AUTH_FORWARD_MODE {quote(fwd_raw)} (expected none, query, or subprotocol) "
            "(flag --l2-backend-auth-forward-mode)"
        )

    filter_raw = gs("udp_inbound_filter_mode")
    filter_mode = go_trim_space(filter_raw).lower()
    if filter_mode not in ("any", "address_and_port"):
        raise ConfigError(
            f"invalid UDP_INBOUND_FILTER_MODE/--udp-inbound-filter-mode {quote(filter_raw)}: "
            "expected any or address_and_port"
        )

    listen_addr = gs("listen_addr")
    if listen_addr == "":
        raise ConfigError(
            "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR/--listen-addr: listen address must not be empty "
            "(expected host:port)"
        )
    split_listen_addr(listen_addr)  # the original fails later, at listen time (exit 1)

    shutdown_timeout = gd("shutdown_timeout")
    if shutdown_timeout <= 0:
        raise ConfigError(
            "AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT/--shutdown-timeout: shutdown timeout must be > 0 "
            f"(got {_dur(shutdown_timeout)})"
        )
    ice_gathering_timeout = gd("ice_gathering_timeout")
    _positive("ice_gathering_timeout", ice_gathering_timeout)
    connect_timeout = gd("webrtc_session_connect_timeout")
    _positive("webrtc_session_connect_timeout", connect_timeout)
    _positive("udp_binding_idle_timeout", binding_idle)
    _positive("udp_remote_allowlist_idle_timeout", allowlist_idle)
    _positive("udp_read_buffer_bytes", read_buf)
    _positive("datachannel_send_queue_bytes", gi("datachannel_send_queue_bytes"))
    _positive("max_datagram_payload_bytes", max_payload)
    if read_buf < max_payload + 1:
        raise ConfigError(
            "UDP_READ_BUFFER_BYTES/--udp-read-buffer-bytes must be >= MAX_DATAGRAM_PAYLOAD_BYTES+1 "
            f"({max_payload + 1}); got {read_buf}"
        )
    _positive("max_allowed_remotes_per_binding", gi("max_allowed_remotes_per_binding"))
    l2_max = gi("l2_max_message_bytes")
    _positive("l2_max_message_bytes", l2_max)

    dc_names = "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES/--webrtc-datachannel-max-message-bytes"
    sctp_names = "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES/--webrtc-sctp-max-receive-buffer-bytes"
    dc_max = gi("webrtc_datachannel_max_message_bytes")
    if dc_max < 0:
        raise ConfigError(f"{dc_names} must be >= 0 (0 = auto); got {dc_max}")
    sctp = gi("webrtc_sctp_max_receive_buffer_bytes")
    if sctp < 0:
        raise ConfigError(f"{sctp_names} must be >= 0 (0 = auto); got {sctp}")
    dc_floor = max(max_payload + MAX_FRAME_OVERHEAD_BYTES, l2_max)
    if dc_max == 0:
        dc_max = dc_floor + DC_MAX_MESSAGE_SLACK
    if dc_max < dc_floor:
        raise ConfigError(
            f"{dc_names} must be >= {dc_floor} (max of MAX_DATAGRAM_PAYLOAD_BYTES+{MAX_FRAME_OVERHEAD_BYTES} "
            f"and L2_MAX_MESSAGE_BYTES); got {dc_max}"
        )
    if sctp == 0:
        sctp = max(SCTP_RECEIVE_BUFFER_AUTO_MIN, 2 * dc_max)
    if sctp < dc_max:
        raise ConfigError(
            f"{sctp_names} must be >= {dc_max} (must be >= WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES); got {sctp}"
        )
    if sctp < SCTP_RECEIVE_BUFFER_FLOOR:
        raise ConfigError(
            f"{sctp_names} must be >= {SCTP_RECEIVE_BUFFER_FLOOR} (SCTP receive buffer too small); got {sctp}"
        )

    _positive("max_udp_bindings_per_session", gi("max_udp_bindings_per_session"))
    _positive("max_udp_dest_buckets_per_session", dest_buckets)
    _positive("session_prealloc_ttl", gd("session_prealloc_ttl"))
    _positive("session_lease_ttl", gd("session_lease_ttl"))
    registry_url = go_trim_space(gs("session_registry_url"))
    if registry_url:
        try:
            parse_redis_url(registry_url)
        except ValueError as err:
            shown = quote(redact_redis_url(registry_url))  # the URL may carry a password
            raise ConfigError(
                f"invalid SESSION_REGISTRY_URL/--session-registry-url {shown}: {err} "
                "(expected redis://[user:password@]host[:port][/db] or unix:///path[?db=N])"
            ) from None

    workers = gi("workers")
    _positive("workers", workers)
    if workers > 1 and not registry_url:
        raise ConfigError(
            f"AERO_RELAY_WORKERS/--workers {workers} requires SESSION_REGISTRY_URL/--session-registry-url "
            "(workers share sids, quotas and reservations through the shared registry)"
        )

    api_key = gs("api_key")
    jwt_secret = gs("jwt_secret")
    if auth_mode == "api_key" and go_trim_space(api_key) == "":
        raise ConfigError(
            "API_KEY must be set when AUTH_MODE=api_key (set API_KEY, or AUTH_MODE=jwt with JWT_SECRET, "
            "or AUTH_MODE=none for local development)"
        )
    if auth_mode == "jwt" and go_trim_space(jwt_secret) == "":
        raise ConfigError("JWT_SECRET must be set when AUTH_MODE=jwt (set JWT_SECRET, the HS256 key)")

    _positive("signaling_auth_timeout", gd("signaling_auth_timeout"))
    sig_idle, sig_ping = gd("signaling_ws_idle_timeout"), gd("signaling_ws_ping_interval")
    _positive("signaling_ws_idle_timeout", sig_idle)
    _positive("signaling_ws_ping_interval", sig_ping)
    if sig_ping >= sig_idle:
        raise ConfigError(
            "SIGNALING_WS_PING_INTERVAL/--signaling-ws-ping-interval must be < "
            "SIGNALING_WS_IDLE_TIMEOUT/--signaling-ws-idle-timeout "
            f"(got {_dur(sig_ping)} >= {_dur(sig_idle)})"
        )
    _positive("max_signaling_message_bytes", gi("max_signaling_message_bytes"))
    _positive("max_signaling_messages_per_second", gi("max_signaling_messages_per_second"))
    udp_idle, udp_ping = gd("udp_ws_idle_timeout"), gd("udp_ws_ping_interval")
    _positive("udp_ws_idle_timeout", udp_idle)
    _positive("udp_ws_ping_interval", udp_ping)
    if udp_ping >= udp_idle:
        raise ConfigError(
            "UDP_WS_PING_INTERVAL/--udp-ws-ping-interval must be < UDP_WS_IDLE_TIMEOUT/--udp-ws-idle-timeout "
            f"(got {_dur(udp_ping)} >= {_dur(udp_idle)})"
        )

    turn_secret = gs("turn_rest_shared_secret")
    ttl = gi("turn_rest_ttl_seconds")
    prefix = gs("turn_rest_username_prefix")
    if go_trim_space(turn_secret) != "":
        if ttl <= 0:
            raise ConfigError(
                "TURN_REST_TTL_SECONDS must be > 0 when TURN_REST_SHARED_SECRET is set "
                f"(--turn-rest-ttl-seconds; got {ttl})"
            )
        if go_trim_space(prefix) == "":
            raise ConfigError(
                "TURN_REST_USERNAME_PREFIX must be non-empty when TURN_REST_SHARED_SECRET is set "
                f"(--turn-rest-username-prefix; got {quote(prefix)})"
            )
        if ":" in prefix:
            raise ConfigError(
                "TURN_REST_USERNAME_PREFIX must not contain ':' "
                f"(--turn-rest-username-prefix; got {quote(prefix)})"
            )

    pmin, pmax = gi("webrtc_udp_port_min"), gi("webrtc_udp_port_max")
    if pmin or pmax:
        if not (pmin and pmax):
            raise ConfigError(
                "WEBRTC_UDP_PORT_MIN/--webrtc-udp-port-min and WEBRTC_UDP_PORT_MAX/--webrtc-udp-port-max "
                f"must be set together (or both unset) (got min={pmin}, max={pmax})"
            )
        for field, port in (("webrtc_udp_port_min", pmin), ("webrtc_udp_port_max", pmax)):
            if port > 65535:  # only a flag can get here (Go `uint`)
                raise ConfigError(f"{_names(field)}: port {port} out of range (1-65535)")
        if pmin > pmax:
            raise ConfigError(f"WebRTC UDP port range min ({pmin}) must be <= max ({pmax})")
        size = pmax - pmin + 1
        if size < MIN_WEBRTC_PORT_RANGE:
            raise ConfigError(
                f"WebRTC UDP port range is too small: {size} ports (min {MIN_WEBRTC_PORT_RANGE} recommended) "
                "(WEBRTC_UDP_PORT_MIN/MAX)"
            )
        if size // workers < MIN_WEBRTC_PORT_RANGE:
            raise ConfigError(
                f"WebRTC UDP port range is too small for {workers} workers: {size} ports gives "
                f"{size // workers} per worker (min {MIN_WEBRTC_PORT_RANGE} each) (WEBRTC_UDP_PORT_MIN/MAX, "
                "AERO_RELAY_WORKERS)"
            )

    listen_ip_raw = gs("webrtc_udp_listen_ip")
    listen_ip = go_parse_ip(go_trim_space(listen_ip_raw))
    if listen_ip is None:
        raise ConfigError(
            f"invalid WEBRTC_UDP_LISTEN_IP/--webrtc-udp-listen-ip {quote(listen_ip_raw)} "
            "(expected an IP address)"
        )

    nat_raw = gs("webrtc_nat_1to1_ips_raw")
    nat_ips: list[str] = []
    if go_trim_space(nat_raw) != "":
        nat_names = f"invalid WEBRTC_NAT_1TO1_IPS/--webrtc-nat-1to1-ips {quote(nat_raw)}"
        for part in nat_raw.split(","):
            item = go_trim_space(part)
            if not item:
                continue
            ip = go_parse_ip(item)
            if ip is None:
                raise ConfigError(f"{nat_names}: invalid IP {quote(item)} (expected literal IPs)")
            nat_ips.append(ip)
        if not nat_ips:
            raise ConfigError(f"{nat_names}: must include at least one IP")

    cand_raw = gs("webrtc_nat_1to1_ip_candidate_type")
    cand = go_trim_space(cand_raw).lower() or "host"
    if cand not in ("host", "srflx"):
        raise ConfigError(
            "invalid WEBRTC_NAT_1TO1_IP_CANDIDATE_TYPE/--webrtc-nat-1to1-ip-candidate-type "
            f"{quote(cand_raw)}: unknown candidate type {quote(cand_raw)} (expected host or srflx)"
        )

    try:
        allowed_origins = parse_allowed_origins(gs("allowed_origins_raw"))
    except ValueError as err:
        raise ConfigError(f"ALLOWED_ORIGINS/--allowed-origins: {err}") from None

    # L2 bridge: URL, then (only when L2 is on) the static origin and the token, then the token
    # again and the origin override whatever L2's state (the original's order and messages).
    l2_raw = gs("l2_backend_ws_url")
    l2_url = go_trim_space(l2_raw)
    token_raw = gs("l2_backend_token")
    token = go_trim_space(token_raw)
    override_raw = gs("l2_backend_origin_override")
    l2_origin = ""
    if l2_url:
        _validate_l2_url(l2_raw, l2_url)
        ws_origin_raw = gs("l2_backend_ws_origin")
        if go_trim_space(ws_origin_raw) and not go_trim_space(override_raw):
            l2_origin = _normalize_config_origin(ws_origin_raw, "L2_BACKEND_WS_ORIGIN/--l2-backend-ws-origin")
        if token and not is_tchar_token(token):
            raise ConfigError(
                "invalid L2_BACKEND_WS_TOKEN/--l2-backend-ws-token: "
                "token must be a valid WebSocket subprotocol token (RFC 7230 tchar); "
                f"got {quote(token_raw)}"
            )
    if token and not is_tchar_token(token):
        raise ConfigError(
            "invalid L2_BACKEND_WS_TOKEN/--l2-backend-ws-token "
            "(token is not valid for Sec-WebSocket-Protocol) (allowed: A-Z a-z 0-9 and !#$%&'*+-.^_`|~)"
        )
    forward_origin = (
        gb("l2_backend_forward_origin") if "l2_backend_forward_origin" in explicit else bool(l2_url)
    )
    if go_trim_space(override_raw):
        l2_origin = _normalize_config_origin(
            override_raw, "L2_BACKEND_ORIGIN_OVERRIDE/--l2-backend-origin-override"
        )

    # ICE servers: errors are not fatal (/readyz and /webrtc/ice report them, F-026).
    ice = parse_ice_config(
        ice_servers_json=gs("ice_servers_json"),
        stun_urls=gs("stun_urls"),
        turn_urls=gs("turn_urls"),
        turn_username=gs("turn_username"),
        turn_credential=gs("turn_credential"),
        turn_rest_enabled=go_trim_space(turn_secret) != "",
    )

    try:
        policy = parse_destination_policy(env)
    except ValueError as err:
        # Some of the original's policy texts embed the raw entry unquoted; keep the line single.
        raise DestinationPolicyError(_escape_controls(str(err))) from None

    return Config(
        listen_addr=listen_addr,
        public_base_url=gs("public_base_url"),
        allowed_origins=allowed_origins,
        mode=mode,
        log_format=log_format,
        log_level=log_level,
        shutdown_timeout=shutdown_timeout,
        ice_gathering_timeout=ice_gathering_timeout,
        webrtc_session_connect_timeout=connect_timeout,
        auth_mode=auth_mode,
        api_key=api_key,
        jwt_secret=jwt_secret,
        signaling_auth_timeout=gd("signaling_auth_timeout"),
        signaling_ws_idle_timeout=sig_idle,
        signaling_ws_ping_interval=sig_ping,
        max_signaling_message_bytes=gi("max_signaling_message_bytes"),
        max_signaling_messages_per_second=gi("max_signaling_messages_per_second"),
        udp_ws_idle_timeout=udp_idle,
        udp_ws_ping_interval=udp_ping,
        udp_binding_idle_timeout=binding_idle,
        udp_inbound_filter_mode=filter_mode,
        udp_remote_allowlist_idle_timeout=allowlist_idle,
        udp_read_buffer_bytes=read_buf,
        datachannel_send_queue_bytes=gi("datachannel_send_queue_bytes"),
        max_datagram_payload_bytes=max_payload,
        max_allowed_remotes_per_binding=gi("max_allowed_remotes_per_binding"),
        prefer_v2=gb("prefer_v2"),
        max_udp_bindings_per_session=gi("max_udp_bindings_per_session"),
        max_sessions=gi("max_sessions"),
        session_prealloc_ttl=gd("session_prealloc_ttl"),
        session_registry_url=registry_url,
        session_lease_ttl=gd("session_lease_ttl"),
        workers=workers,
        max_udp_pps_per_session=gi("max_udp_pps_per_session"),
        max_udp_bps_per_session=gi("max_udp_bps_per_session"),
        max_udp_pps_per_dest=gi("max_udp_pps_per_dest"),
        max_unique_destinations_per_session=max_unique,
        max_udp_dest_buckets_per_session=dest_buckets,
        max_dc_bps_per_session=gi("max_dc_bps_per_session"),
        hard_close_after_violations=gi("hard_close_after_violations"),
        violation_window=gd("violation_window"),
        l2_backend_ws_url=l2_url,
        l2_backend_origin=l2_origin,
        l2_backend_token=token,
        l2_backend_forward_origin=forward_origin,
        l2_backend_auth_forward_mode=fwd_mode,
        l2_backend_forward_aero_session=gb("l2_backend_forward_aero_session"),
        l2_max_message_bytes=l2_max,
        webrtc_udp_port_min=pmin,
        webrtc_udp_port_max=pmax,
        webrtc_udp_listen_ip=listen_ip,
        webrtc_nat_1to1_ips=tuple(nat_ips),
        webrtc_nat_1to1_ip_candidate_type=cand,
        webrtc_datachannel_max_message_bytes=dc_max,
        webrtc_sctp_max_receive_buffer_bytes=sctp,
        ice_servers_json=gs("ice_servers_json"),
        stun_urls=gs("stun_urls"),
        turn_urls=gs("turn_urls"),
        turn_username=go_trim_space(gs("turn_username")),
        turn_credential=go_trim_space(gs("turn_credential")),
        turn_rest_shared_secret=turn_secret,
        turn_rest_ttl_seconds=ttl,
        turn_rest_username_prefix=prefix,
        turn_rest_realm=gs("turn_rest_realm"),
        ice=ice,
        policy=policy,
    )


def _validate_l2_url(raw: str, url: str) -> None:
    names = f"invalid L2_BACKEND_WS_URL/--l2-backend-ws-url {quote(raw)}"
    try:
        scheme, host, has_user = _go_parse_url(url)
    except ValueError as err:
        raise ConfigError(f"{names}: parse {quote(url)}: {err}") from None
    if scheme not in ("ws", "wss"):
        raise ConfigError(f"{names} (expected ws:// or wss://)")
    if not host:
        raise ConfigError(f"{names} (missing host)")
    if has_user:
        raise ConfigError(f"{names} (must not include credentials)")


# --- help and effective-config rendering ---------------------------------------------------------


def _default_text(s: Setting) -> str:
    if s.default_text is not None:
        return s.default_text
    if isinstance(s.default, bool):
        return "true" if s.default else "false"
    if isinstance(s.default, float):
        return _dur(s.default)
    if isinstance(s.default, str):
        return quote(s.default)
    return str(s.default)


def usage(prog: str = "aero-relay serve") -> str:
    """Go-style usage (flag.PrintDefaults layout) listing every flag with its env var and default."""
    lines = [
        f"Usage of {prog}:",
        "  Every flag overrides its environment variable; an empty environment value means unset.",
    ]
    by_flag = sorted(((flag, s, i) for s in SETTINGS for i, flag in enumerate(s.flags)), key=lambda t: t[0])
    for flag, s, i in by_flag:
        type_name = _GO_FLAG_TYPE[s.kind]
        lines.append(f"  -{flag}" + (f" {type_name}" if type_name else ""))
        env_text = s.envs[i] if len(s.envs) == len(s.flags) else " or ".join(s.envs)
        if len(s.envs) > 1:
            env_text += f"; {s.envs[0]} wins over {s.envs[1]}"
        lines.append(f"    \t{s.help} (env {env_text}) (default {_default_text(s)})")
    lines.append("")
    lines.append("Environment-only settings:")
    for s in SETTINGS:
        if not s.flags:
            lines.append(f"  {s.envs[0]}\t{s.help}")
    lines.append(
        "  DESTINATION_POLICY_PRESET\tegress preset: prod (deny by default) or dev "
        "(aliases UDP_DESTINATION_POLICY_PRESET, POLICY_PRESET) (default prod)"
    )
    lines.append("  ALLOW_PRIVATE_NETWORKS\tallow private/special destinations (default from the preset)")
    lines.append("  ALLOW_UDP_CIDRS, DENY_UDP_CIDRS\tcomma-separated destination CIDRs (deny wins)")
    lines.append("  ALLOW_UDP_PORTS, DENY_UDP_PORTS\tcomma-separated destination ports or ranges (deny wins)")
    return "\n".join(lines) + "\n"


REDACTED = "<redacted>"


def secret_values(cfg: Config) -> tuple[str, ...]:
    """The configured secrets (non-empty), e.g. for a log redactor."""
    fields = [s.field for s in SETTINGS if s.secret]
    return tuple(v for v in (getattr(cfg, f) for f in fields) if isinstance(v, str) and v)


def _mask(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret in `text`; if one could still be read, the whole text goes."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    if any(secret in text and secret not in REDACTED for secret in secrets):
        return REDACTED
    return text


def effective_items(cfg: Config) -> list[tuple[str, str]]:
    """(ENV_NAME, value) pairs of the effective config for `check-config`; secrets are redacted."""
    rendered: dict[str, Callable[[Config], object]] = {
        "allowed_origins_raw": lambda c: ",".join(c.allowed_origins),
        "webrtc_nat_1to1_ips_raw": lambda c: ",".join(c.webrtc_nat_1to1_ips),
        "l2_backend_origin_override": lambda c: c.l2_backend_origin,
        # The env var takes whole seconds; a sub-second window can only come from the flag.
        "violation_window": lambda c: (
            str(int(c.violation_window))
            if c.violation_window == int(c.violation_window)
            else _dur(c.violation_window)
        ),
        "session_registry_url": lambda c: redact_redis_url(c.session_registry_url),
        # A static token may sit in the query string: show only its presence.
        "l2_backend_ws_url": lambda c: (
            c.l2_backend_ws_url.split("?", 1)[0] + ("?" + REDACTED if "?" in c.l2_backend_ws_url else "")
        ),
    }
    secrets = secret_values(cfg)
    items: list[tuple[str, str]] = []
    for s in SETTINGS:
        if s.field == "l2_backend_ws_origin":
            continue  # folded into the one effective backend Origin, shown as L2_BACKEND_ORIGIN
        value = rendered[s.field](cfg) if s.field in rendered else getattr(cfg, s.field)
        if s.secret and value:
            text = REDACTED
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = _dur(value)
        else:
            text = str(value)
        # A secret reused in a plain setting (say API_KEY == PUBLIC_BASE_URL) must not leak there.
        items.append((s.envs[0], _mask(text, secrets)))
    p = cfg.policy
    items.append(("DESTINATION_POLICY_PRESET", _mask(p.preset, secrets)))
    items.append(("ALLOW_PRIVATE_NETWORKS", _mask("true" if p.allow_private_networks else "false", secrets)))
    for name, cidrs in (("ALLOW_UDP_CIDRS", p.allow_cidrs), ("DENY_UDP_CIDRS", p.deny_cidrs)):
        items.append((name, _mask(",".join(c.text for c in cidrs), secrets)))
    for name, ports in (("ALLOW_UDP_PORTS", p.allow_ports), ("DENY_UDP_PORTS", p.deny_ports)):
        text = ",".join(str(r.start) if r.start == r.end else f"{r.start}-{r.end}" for r in ports)
        items.append((name, _mask(text, secrets)))
    ice_text = str(len(cfg.ice.servers))
    if cfg.ice.error:
        # The error may quote a URL from a redacted variable; never let a whole secret through.
        ice_text += f" (error: {cfg.ice.error})"
    items.append(("(ice servers)", _mask(ice_text, secrets)))
    return items
