"""Configuration: every env var and flag of the original service, with its exact semantics.

`load(env, argv)` is the only place that reads the environment (the caller passes `os.environ`).
Semantics copied from the Go original (spec section 20, F-001, F-002):

* An env value is the default of its flag, so a flag overrides its env var. An empty env value
  means unset (the original's e2e harness clears variables by setting them to "").
* Env ints use `strconv.Atoi` on the trimmed value; flag ints use Go's `flag` parsing (base 0).
  Durations use Go `time.ParseDuration`. Bools use `strconv.ParseBool`.
* Errors raise `ConfigError` whose text is one line naming the variable or flag, the value and
  what is allowed. Where the original has an exact message it is kept verbatim inside that line.

The destination policy (F-134..F-136) is env-only in the original; it is parsed here too so
that nothing else reads the environment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import attrs

from aero_relay.core import gofmt
from aero_relay.core.gofmt import quote
from aero_relay.core.ice import IceConfig, parse_ice_config
from aero_relay.core.origin import normalize_origin, parse_allowed_origins
from aero_relay.core.policy import DestinationPolicy, parse_destination_policy

__all__ = [
    "SETTINGS",
    "Config",
    "ConfigError",
    "HelpRequested",
    "Setting",
    "load",
    "usage",
]

# 24 = the v2 IPv6 frame header (F-121); kept here to avoid a config -> frames import cycle.
MAX_FRAME_OVERHEAD_BYTES = 24
DC_MAX_MESSAGE_SLACK = 256
SCTP_RECEIVE_BUFFER_FLOOR = 1500
SCTP_RECEIVE_BUFFER_AUTO_MIN = 1 << 20
MIN_WEBRTC_PORT_RANGE = 100

Kind = Literal["str", "int", "duration", "bool", "port", "violation_window"]


class ConfigError(Exception):
    """A configuration error; `str(err)` is the one line printed before exiting 2."""


class HelpRequested(Exception):
    """`-h`/`--help` was given; the caller prints `usage()` and exits 0."""


@attrs.frozen
class Setting:
    """One configuration knob: its env vars (in precedence order), flags and default."""

    field: str
    envs: tuple[str, ...]
    flags: tuple[str, ...]
    kind: Kind
    default: object
    help: str
    trim_env: bool = True
    secret: bool = False
    default_text: str | None = None  # shown in --help when the default is derived


def _s(
    field: str,
    env: str | tuple[str, ...] | None,
    flag: str | tuple[str, ...] | None,
    kind: Kind,
    default: object,
    help: str,
    **kw: object,
) -> Setting:
    envs = (env,) if isinstance(env, str) else (env or ())
    flags = (flag,) if isinstance(flag, str) else (flag or ())
    return Setting(field, envs, flags, kind, default, help, **kw)  # type: ignore[arg-type]


_MIN = 60.0
SETTINGS: tuple[Setting, ...] = (
    # Server
    _s("listen_addr", "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR", "listen-addr", "str", "127.0.0.1:8080",
       "HTTP listen address (host:port)"),
    _s("public_base_url", "AERO_WEBRTC_UDP_RELAY_PUBLIC_BASE_URL", "public-base-url", "str", "",
       "public base URL of this relay (used in logs only)"),
    _s("allowed_origins_raw", "ALLOWED_ORIGINS", "allowed-origins", "str", "",
       "comma-separated browser origins allowed (http(s)://host[:port], * or null); empty = same host:port only"),
    _s("mode", "AERO_WEBRTC_UDP_RELAY_MODE", "mode", "str", "dev", "run mode: dev or prod"),
    _s("log_format", "AERO_WEBRTC_UDP_RELAY_LOG_FORMAT", "log-format", "str", "",
       "log format: text or json", default_text="json in prod, text in dev"),
    _s("log_level", "AERO_WEBRTC_UDP_RELAY_LOG_LEVEL", "log-level", "str", "",
       "log level: debug, info, warn, error", default_text="info in prod, debug in dev"),
    _s("shutdown_timeout", "AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT", "shutdown-timeout", "duration", 15.0,
       "graceful shutdown timeout", trim_env=False),
    _s("ice_gathering_timeout", "AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT", "ice-gather-timeout",
       "duration", 2.0, "max wait for ICE gathering on non-trickle offers (POST /offer, /webrtc/offer)",
       trim_env=False),
    _s("webrtc_session_connect_timeout", "WEBRTC_SESSION_CONNECT_TIMEOUT", "webrtc-session-connect-timeout",
       "duration", 30.0, "max time for a new WebRTC session to connect"),
    # Auth
    _s("auth_mode", "AUTH_MODE", "auth-mode", "str", "api_key", "signaling auth mode: none, api_key or jwt"),
    _s("api_key", "API_KEY", None, "str", "", "API key (AUTH_MODE=api_key)", trim_env=False, secret=True),
    _s("jwt_secret", "JWT_SECRET", None, "str", "", "HS256 secret (AUTH_MODE=jwt)", trim_env=False,
       secret=True),
    _s("signaling_auth_timeout", "SIGNALING_AUTH_TIMEOUT", "signaling-auth-timeout", "duration", 2.0,
       "time allowed for WebSocket auth (/webrtc/signal and /udp)"),
    _s("signaling_ws_idle_timeout", "SIGNALING_WS_IDLE_TIMEOUT", "signaling-ws-idle-timeout", "duration",
       60.0, "close idle /webrtc/signal WebSockets after this"),
    _s("signaling_ws_ping_interval", "SIGNALING_WS_PING_INTERVAL", "signaling-ws-ping-interval",
       "duration", 20.0, "ping interval on /webrtc/signal (must be < idle timeout)"),
    _s("max_signaling_message_bytes", "MAX_SIGNALING_MESSAGE_BYTES", "max-signaling-message-bytes", "int",
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
    _s("max_allowed_remotes_per_binding", "MAX_ALLOWED_REMOTES_PER_BINDING", "max-allowed-remotes-per-binding",
       "int", 1024, "cap of remotes in each binding's inbound allow-list (LRU eviction)"),
    _s("prefer_v2", "PREFER_V2", "prefer-v2", "bool", False,
       "send v2 frames to clients that have sent v2"),
    _s("max_udp_bindings_per_session", "MAX_UDP_BINDINGS_PER_SESSION", "max-udp-bindings-per-session", "int",
       128, "max UDP bindings (guest ports) per session (LRU eviction)"),
    # Quotas
    _s("max_sessions", "MAX_SESSIONS", "max-sessions", "int", 0, "max concurrent sessions (0 = unlimited)"),
    _s("session_prealloc_ttl", "SESSION_PREALLOC_TTL", "session-prealloc-ttl", "duration", 60.0,
       "TTL of POST /session reservations"),
    _s("max_udp_pps_per_session", "MAX_UDP_PPS_PER_SESSION", "max-udp-pps-per-session", "int", 0,
       "outbound UDP packets/s per session (0 = unlimited)"),
    _s("max_udp_bps_per_session", "MAX_UDP_BPS_PER_SESSION", "max-udp-bps-per-session", "int", 0,
       "outbound UDP bytes/s per session (0 = unlimited)"),
    _s("max_udp_pps_per_dest", "MAX_UDP_PPS_PER_DEST", "max-udp-pps-per-dest", "int", 0,
       "outbound UDP packets/s per destination per session (0 = unlimited)"),
    _s("max_unique_destinations_per_session", "MAX_UNIQUE_DESTINATIONS_PER_SESSION",
       "max-unique-destinations-per-session", "int", 0, "max distinct destinations per session (0 = unlimited)"),
    _s("max_udp_dest_buckets_per_session", "MAX_UDP_DEST_BUCKETS_PER_SESSION",
       "max-udp-dest-buckets-per-session", "int", None, "cap of per-destination rate buckets (LRU)",
       default_text="1024, or MAX_UNIQUE_DESTINATIONS_PER_SESSION when set"),
    _s("max_dc_bps_per_session", "MAX_DC_BPS_PER_SESSION", "max-dc-bps-per-session", "int", 0,
       "relay->client bytes/s per session (0 = unlimited)"),
    _s("hard_close_after_violations", "HARD_CLOSE_AFTER_VIOLATIONS", "hard-close-after-violations", "int", 0,
       "close a session after N rate/quota violations (0 = never)"),
    _s("violation_window", "VIOLATION_WINDOW_SECONDS", "violation-window", "violation_window", 10.0,
       "violation window (env: integer seconds; flag: Go duration)"),
    # L2 bridge
    _s("l2_backend_ws_url", "L2_BACKEND_WS_URL", "l2-backend-ws-url", "str", "",
       "backend ws:// or wss:// URL for the l2 DataChannel bridge (empty = l2 rejected)"),
    _s("l2_backend_origin_override", ("L2_BACKEND_ORIGIN", "L2_BACKEND_ORIGIN_OVERRIDE"),
       ("l2-backend-origin", "l2-backend-origin-override"), "str", "",
       "Origin sent to the L2 backend (overrides forwarding and L2_BACKEND_WS_ORIGIN)"),
    _s("l2_backend_ws_origin", "L2_BACKEND_WS_ORIGIN", "l2-backend-ws-origin", "str", "",
       "static Origin sent to the L2 backend"),
    _s("l2_backend_token", ("L2_BACKEND_TOKEN", "L2_BACKEND_WS_TOKEN"), ("l2-backend-token", "l2-backend-ws-token"),
       "str", "", "token offered to the L2 backend as subprotocol aero-l2-token.<token>", secret=True),
    _s("l2_backend_forward_origin", "L2_BACKEND_FORWARD_ORIGIN", "l2-backend-forward-origin", "bool", None,
       "forward the client Origin to the L2 backend", default_text="true when L2_BACKEND_WS_URL is set"),
    _s("l2_backend_auth_forward_mode", "L2_BACKEND_AUTH_FORWARD_MODE", "l2-backend-auth-forward-mode", "str",
       "query", "forward the client credential to the L2 backend: none, query or subprotocol"),
    _s("l2_backend_forward_aero_session", "L2_BACKEND_FORWARD_AERO_SESSION", "l2-backend-forward-aero-session",
       "bool", False, "forward the aero_session cookie to the L2 backend"),
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
    _s("turn_credential", "AERO_TURN_CREDENTIAL", "turn-credential", "str", "", "TURN credential", secret=True),
    _s("turn_rest_shared_secret", "TURN_REST_SHARED_SECRET", "turn-rest-shared-secret", "str", "",
       "coturn static-auth-secret; enables TURN REST credentials", secret=True),
    _s("turn_rest_ttl_seconds", "TURN_REST_TTL_SECONDS", "turn-rest-ttl-seconds", "int", 3600,
       "TURN REST credential lifetime in seconds"),
    _s("turn_rest_username_prefix", "TURN_REST_USERNAME_PREFIX", "turn-rest-username-prefix", "str", "aero",
       "TURN REST username prefix"),
    _s("turn_rest_realm", "TURN_REST_REALM", "turn-rest-realm", "str", "",
       "TURN realm (documentation parity with coturn; unused)"),
)

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

_BY_FLAG: dict[str, Setting] = {f: s for s in SETTINGS for f in s.flags}

# RFC 7230 tchar: the characters allowed in a Sec-WebSocket-Protocol token.
_TCHAR_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def is_tchar_token(value: str) -> bool:
    return bool(_TCHAR_RE.match(value))


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
    webrtc_udp_port_min: int
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
        return self.turn_rest_shared_secret.strip() != ""

    @property
    def l2_enabled(self) -> bool:
        return self.l2_backend_ws_url != ""

    @property
    def l2_backend_ws_host(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.l2_backend_ws_url).netloc.rpartition("@")[2] if self.l2_backend_ws_url else ""

    @property
    def is_prod(self) -> bool:
        return self.mode == "prod"


# --- value parsers -------------------------------------------------------------------------------


def _parse_env_value(setting: Setting, name: str, raw: str) -> object:
    value = raw.strip() if setting.trim_env else raw
    try:
        if setting.kind == "str":
            return value
        if setting.kind == "int":
            return gofmt.atoi(value)
        if setting.kind == "duration":
            return gofmt.parse_duration(value)
        if setting.kind == "bool":
            return gofmt.parse_bool(value)
        if setting.kind == "port":
            port = gofmt.atoi(value)
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} out of range (1-65535)")
            return port
        if setting.kind == "violation_window":
            seconds = gofmt.atoi(value)
            # The original silently ignores a non-positive env value (keeps the 10s default).
            return float(seconds) if seconds > 0 else None
    except ValueError as err:
        raise ConfigError(f"invalid {name} {quote(raw)}: {err}") from None
    raise AssertionError(setting.kind)


def _go_flag_int(text: str) -> int:
    """Go flag.Int: strconv.ParseInt(s, 0, 64) (0x/0o/0b prefixes, leading-0 octal, underscores)."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or body.strip() != body or body[:1] in "+-":
        raise ValueError("invalid syntax")
    if len(body) > 1 and body[0] == "0" and (body[1].isdigit() or body[1] == "_"):
        body = "0o" + body[1:]  # Go base 0 reads a leading 0 as octal
    value = int(body, 0)  # raises ValueError on bad syntax; accepts the same underscore rules
    if text[:1] == "-":
        value = -value
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError("value out of range")
    return value


def _flag_allowed(setting: Setting) -> str:
    return {
        "str": "a string",
        "int": "an integer",
        "port": "a port 0-65535 (0 = unset)",
        "duration": "a Go duration such as 300ms, 1.5s, 1h2m",
        "violation_window": "a Go duration such as 10s",
        "bool": "true or false",
    }[setting.kind]


def _parse_flag_value(setting: Setting, flag: str, raw: str) -> object:
    try:
        if setting.kind == "str":
            return raw
        if setting.kind in ("int", "port"):
            value = _go_flag_int(raw)
            if setting.kind == "port" and not 0 <= value <= 65535:
                raise ConfigError(
                    f"invalid value {quote(raw)} for flag -{flag}: port {value} out of range (1-65535)"
                )
            return value
        if setting.kind in ("duration", "violation_window"):
            return gofmt.parse_duration(raw)
        if setting.kind == "bool":
            return gofmt.parse_bool(raw)
    except ValueError:
        if setting.kind == "bool":
            raise ConfigError(
                f"invalid boolean value {quote(raw)} for -{flag}: parse error (expected true or false)"
            ) from None
        raise ConfigError(
            f"invalid value {quote(raw)} for flag -{flag}: parse error (expected {_flag_allowed(setting)})"
        ) from None
    raise AssertionError(setting.kind)


def _parse_flags(argv: Sequence[str]) -> dict[str, tuple[str, object]]:
    """Go `flag` package semantics: `-x`/`--x`, `-x=v`, `-x v`; a bool takes only `-x` or `-x=v`.

    Parsing stops at `--` or the first non-flag argument; leftover arguments are an error here
    (the original ignores them, which hides typos such as `-mode prod` after a stray word).
    Returns field -> (flag name, value); later flags win, as in Go.
    """
    out: dict[str, tuple[str, object]] = {}
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        if len(arg) < 2 or arg[0] != "-":
            break
        if arg == "--":
            i += 1
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name[0] in "-=":
            raise ConfigError(f"bad flag syntax: {arg}")
        has_value = "=" in name
        value = ""
        if has_value:
            name, value = name.split("=", 1)
        if name in ("h", "help"):
            raise HelpRequested
        setting = _BY_FLAG.get(name)
        if setting is None:
            raise ConfigError(f"flag provided but not defined: -{name} (see --help for the list of flags)")
        i += 1
        if setting.kind == "bool":
            parsed: object = _parse_flag_value(setting, name, value) if has_value else True
        else:
            if not has_value:
                if i >= len(args):
                    raise ConfigError(f"flag needs an argument: -{name}")
                value = args[i]
                i += 1
            parsed = _parse_flag_value(setting, name, value)
        out[setting.field] = (name, parsed)
    if i < len(args):
        raise ConfigError(f"unexpected argument {quote(args[i])} (flags must be given as -name=value)")
    return out


# --- load ----------------------------------------------------------------------------------------


def _pos(name: str, value: float | int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0 (got {value if isinstance(value, int) else _dur(value)})")


def _dur(seconds: float) -> str:
    return gofmt.format_duration(seconds)


def _names(setting_field: str) -> str:
    s = next(x for x in SETTINGS if x.field == setting_field)
    return "/".join([*s.envs[:1], *("--" + f for f in s.flags[:1])])


def load(env: Mapping[str, str], argv: Sequence[str] = ()) -> Config:
    """Build the effective Config from an environment mapping and command-line flags."""
    values: dict[str, object] = {}
    explicit: set[str] = set()
    for setting in SETTINGS:
        for name in setting.envs:  # first present (non-empty) alias wins
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            parsed = _parse_env_value(setting, name, raw)
            if parsed is not None:
                values[setting.field] = parsed
                explicit.add(setting.field)
            break
    for field, (_flag, parsed) in _parse_flags(argv).items():
        values[field] = parsed
        explicit.add(field)

    def get(field: str) -> object:
        if field in values:
            return values[field]
        return next(s.default for s in SETTINGS if s.field == field)

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

    # Server and logging.
    listen_addr = gs("listen_addr").strip()
    if not listen_addr:
        raise ConfigError("AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR/--listen-addr: listen address must not be empty")
    _split_listen_addr(listen_addr)

    mode_raw = gs("mode")
    mode = {"dev": "dev", "development": "dev", "prod": "prod", "production": "prod"}.get(
        mode_raw.strip().lower()
    )
    if mode is None:
        raise ConfigError(f"AERO_WEBRTC_UDP_RELAY_MODE/--mode: invalid mode {quote(mode_raw)} (expected dev or prod)")

    log_format_raw = gs("log_format")
    log_format = log_format_raw.strip().lower() or ("json" if mode == "prod" else "text")
    if log_format not in ("text", "json"):
        raise ConfigError(
            "AERO_WEBRTC_UDP_RELAY_LOG_FORMAT/--log-format: "
            f"invalid log format {quote(log_format_raw)} (expected text or json)"
        )
    log_level_raw = gs("log_level")
    log_level = log_level_raw.strip().lower() or ("info" if mode == "prod" else "debug")
    if log_level == "warning":
        log_level = "warn"
    if log_level not in ("debug", "info", "warn", "error"):
        raise ConfigError(
            "AERO_WEBRTC_UDP_RELAY_LOG_LEVEL/--log-level: "
            f"invalid log level {quote(log_level_raw)} (expected debug, info, warn, error)"
        )

    allowed_raw = gs("allowed_origins_raw")
    try:
        allowed_origins = parse_allowed_origins(allowed_raw)
    except ValueError as err:
        raise ConfigError(f"ALLOWED_ORIGINS/--allowed-origins: {err}") from None

    shutdown_timeout = gd("shutdown_timeout")
    if shutdown_timeout <= 0:
        raise ConfigError(
            f"AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT/--shutdown-timeout: shutdown timeout must be > 0 "
            f"(got {_dur(shutdown_timeout)})"
        )
    ice_gathering_timeout = gd("ice_gathering_timeout")
    _pos(_names("ice_gathering_timeout"), ice_gathering_timeout)
    connect_timeout = gd("webrtc_session_connect_timeout")
    _pos(_names("webrtc_session_connect_timeout"), connect_timeout)

    # Auth.
    auth_raw = gs("auth_mode")
    auth_mode = auth_raw.strip().lower()
    if auth_mode not in ("none", "api_key", "jwt"):
        raise ConfigError(f"AUTH_MODE/--auth-mode: invalid AUTH_MODE {quote(auth_raw)} (expected none, api_key, or jwt)")
    api_key = gs("api_key")
    jwt_secret = gs("jwt_secret")
    if auth_mode == "api_key" and not api_key.strip():
        raise ConfigError(
            "API_KEY must be set when AUTH_MODE=api_key (set API_KEY, or AUTH_MODE=jwt with JWT_SECRET, "
            "or AUTH_MODE=none for local development)"
        )
    if auth_mode == "jwt" and not jwt_secret.strip():
        raise ConfigError("JWT_SECRET must be set when AUTH_MODE=jwt")

    for field in (
        "signaling_auth_timeout",
        "signaling_ws_idle_timeout",
        "signaling_ws_ping_interval",
        "udp_ws_idle_timeout",
        "udp_ws_ping_interval",
        "udp_binding_idle_timeout",
        "session_prealloc_ttl",
    ):
        _pos(_names(field), gd(field))
    for field in (
        "max_signaling_message_bytes",
        "max_signaling_messages_per_second",
        "datachannel_send_queue_bytes",
        "max_datagram_payload_bytes",
        "max_allowed_remotes_per_binding",
        "max_udp_bindings_per_session",
        "l2_max_message_bytes",
    ):
        _pos(_names(field), gi(field))
    if gd("signaling_ws_ping_interval") >= gd("signaling_ws_idle_timeout"):
        raise ConfigError(
            "SIGNALING_WS_PING_INTERVAL/--signaling-ws-ping-interval must be < "
            "SIGNALING_WS_IDLE_TIMEOUT/--signaling-ws-idle-timeout "
            f"(got {_dur(gd('signaling_ws_ping_interval'))} >= {_dur(gd('signaling_ws_idle_timeout'))})"
        )
    if gd("udp_ws_ping_interval") >= gd("udp_ws_idle_timeout"):
        raise ConfigError(
            "UDP_WS_PING_INTERVAL/--udp-ws-ping-interval must be < UDP_WS_IDLE_TIMEOUT/--udp-ws-idle-timeout "
            f"(got {_dur(gd('udp_ws_ping_interval'))} >= {_dur(gd('udp_ws_idle_timeout'))})"
        )

    filter_raw = gs("udp_inbound_filter_mode")
    filter_mode = filter_raw.strip().lower()
    if filter_mode not in ("any", "address_and_port"):
        raise ConfigError(
            f"invalid UDP_INBOUND_FILTER_MODE/--udp-inbound-filter-mode {quote(filter_raw)}: "
            "expected any or address_and_port"
        )

    binding_idle = gd("udp_binding_idle_timeout")
    allowlist_idle_v = get("udp_remote_allowlist_idle_timeout")
    allowlist_idle = binding_idle if allowlist_idle_v is None else float(allowlist_idle_v)  # type: ignore[arg-type]
    _pos(_names("udp_remote_allowlist_idle_timeout"), allowlist_idle)

    max_payload = gi("max_datagram_payload_bytes")
    read_buf_v = get("udp_read_buffer_bytes")
    read_buf = max_payload + 1 if read_buf_v is None else int(read_buf_v)  # type: ignore[call-overload]
    _pos(_names("udp_read_buffer_bytes"), read_buf)
    if read_buf < max_payload + 1:
        raise ConfigError(
            "UDP_READ_BUFFER_BYTES/--udp-read-buffer-bytes must be >= MAX_DATAGRAM_PAYLOAD_BYTES+1 "
            f"({max_payload + 1}); got {read_buf}"
        )

    max_unique = gi("max_unique_destinations_per_session")
    buckets_v = get("max_udp_dest_buckets_per_session")
    if buckets_v is None:
        dest_buckets = max_unique if max_unique > 0 else 1024
    else:
        dest_buckets = int(buckets_v)  # type: ignore[call-overload]
    _pos(_names("max_udp_dest_buckets_per_session"), dest_buckets)

    window = gd("violation_window")

    # L2 bridge.
    l2_url = gs("l2_backend_ws_url").strip()
    if l2_url:
        _validate_l2_url(l2_url)
    override_raw = gs("l2_backend_origin_override").strip()
    l2_origin = ""
    if override_raw:
        l2_origin = _normalize_config_origin(override_raw, "L2_BACKEND_ORIGIN_OVERRIDE/--l2-backend-origin-override")
    elif l2_url:
        ws_origin_raw = gs("l2_backend_ws_origin").strip()
        if ws_origin_raw:
            l2_origin = _normalize_config_origin(ws_origin_raw, "L2_BACKEND_WS_ORIGIN/--l2-backend-ws-origin")
    l2_token = gs("l2_backend_token").strip()
    if l2_token and not is_tchar_token(l2_token):
        raise ConfigError(
            "invalid L2_BACKEND_WS_TOKEN/--l2-backend-ws-token (token is not valid for Sec-WebSocket-Protocol; "
            "allowed: RFC 7230 tchar characters A-Z a-z 0-9 !#$%&'*+-.^_`|~)"
        )
    forward_origin_v = get("l2_backend_forward_origin")
    forward_origin = bool(l2_url) if forward_origin_v is None else bool(forward_origin_v)
    fwd_raw = gs("l2_backend_auth_forward_mode")
    fwd_mode = fwd_raw.strip().lower() or "query"
    if fwd_mode not in ("none", "query", "subprotocol"):
        raise ConfigError(
            f"invalid L2_BACKEND_AUTH_FORWARD_MODE/--l2-backend-auth-forward-mode {quote(fwd_raw)} "
            "(expected none, query, or subprotocol)"
        )

    # WebRTC network.
    pmin, pmax = gi("webrtc_udp_port_min"), gi("webrtc_udp_port_max")
    if (pmin == 0) != (pmax == 0):
        raise ConfigError(
            "WEBRTC_UDP_PORT_MIN/--webrtc-udp-port-min and WEBRTC_UDP_PORT_MAX/--webrtc-udp-port-max "
            f"must be set together (got min={pmin}, max={pmax})"
        )
    if pmin:
        if pmin > pmax:
            raise ConfigError(
                f"WEBRTC_UDP_PORT_MIN/--webrtc-udp-port-min ({pmin}) must be <= "
                f"WEBRTC_UDP_PORT_MAX/--webrtc-udp-port-max ({pmax})"
            )
        size = pmax - pmin + 1
        if size < MIN_WEBRTC_PORT_RANGE:
            raise ConfigError(
                f"WEBRTC_UDP_PORT_MIN/MAX: WebRTC UDP port range is too small: {size} ports "
                f"(min {MIN_WEBRTC_PORT_RANGE} recommended)"
            )
    listen_ip_raw = gs("webrtc_udp_listen_ip").strip()
    try:
        listen_ip = str(ipaddress.ip_address(listen_ip_raw))
    except ValueError:
        raise ConfigError(
            f"invalid WEBRTC_UDP_LISTEN_IP/--webrtc-udp-listen-ip {quote(listen_ip_raw)} (expected an IP address)"
        ) from None
    nat_raw = gs("webrtc_nat_1to1_ips_raw")
    nat_ips: list[str] = []
    if nat_raw.strip():
        for part in nat_raw.split(","):
            item = part.strip()
            if not item:
                continue
            try:
                nat_ips.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise ConfigError(
                    f"invalid WEBRTC_NAT_1TO1_IPS/--webrtc-nat-1to1-ips entry {quote(item)} (expected a literal IP)"
                ) from None
        if not nat_ips:
            raise ConfigError(
                f"invalid WEBRTC_NAT_1TO1_IPS/--webrtc-nat-1to1-ips {quote(nat_raw)} (expected at least one IP)"
            )
    cand_raw = gs("webrtc_nat_1to1_ip_candidate_type")
    cand = cand_raw.strip().lower() or "host"
    if cand not in ("host", "srflx"):
        raise ConfigError(
            "invalid WEBRTC_NAT_1TO1_IP_CANDIDATE_TYPE/--webrtc-nat-1to1-ip-candidate-type "
            f"{quote(cand_raw)} (expected host or srflx)"
        )

    l2_max = gi("l2_max_message_bytes")
    dc_floor = max(max_payload + MAX_FRAME_OVERHEAD_BYTES, l2_max)
    dc_max = gi("webrtc_datachannel_max_message_bytes")
    if dc_max < 0:
        raise ConfigError(
            f"WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES/--webrtc-datachannel-max-message-bytes must be >= 0 "
            f"(0 = auto; got {dc_max})"
        )
    if dc_max == 0:
        dc_max = dc_floor + DC_MAX_MESSAGE_SLACK
    if dc_max < dc_floor:
        raise ConfigError(
            "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES/--webrtc-datachannel-max-message-bytes must be >= "
            f"{dc_floor} (max of MAX_DATAGRAM_PAYLOAD_BYTES+24 and L2_MAX_MESSAGE_BYTES); got {dc_max}"
        )
    sctp = gi("webrtc_sctp_max_receive_buffer_bytes")
    if sctp < 0:
        raise ConfigError(
            "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES/--webrtc-sctp-max-receive-buffer-bytes must be >= 0 "
            f"(0 = auto; got {sctp})"
        )
    if sctp == 0:
        sctp = max(SCTP_RECEIVE_BUFFER_AUTO_MIN, 2 * dc_max)
    if sctp < SCTP_RECEIVE_BUFFER_FLOOR:
        raise ConfigError(
            "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES/--webrtc-sctp-max-receive-buffer-bytes must be >= 1500 "
            f"(SCTP receive buffer too small); got {sctp}"
        )
    if sctp < dc_max:
        raise ConfigError(
            "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES/--webrtc-sctp-max-receive-buffer-bytes must be >= "
            f"WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES ({dc_max}); got {sctp}"
        )

    # TURN REST and ICE servers (ICE errors are not fatal: /readyz and /webrtc/ice report them).
    turn_secret = gs("turn_rest_shared_secret")
    turn_rest_on = turn_secret.strip() != ""
    ttl = gi("turn_rest_ttl_seconds")
    prefix = gs("turn_rest_username_prefix")
    if turn_rest_on:
        _pos("TURN_REST_TTL_SECONDS/--turn-rest-ttl-seconds", ttl)
        if not prefix.strip() or ":" in prefix:
            raise ConfigError(
                f"invalid TURN_REST_USERNAME_PREFIX/--turn-rest-username-prefix {quote(prefix)} "
                "(must be non-empty and must not contain ':')"
            )
    ice = parse_ice_config(
        ice_servers_json=gs("ice_servers_json"),
        stun_urls=gs("stun_urls"),
        turn_urls=gs("turn_urls"),
        turn_username=gs("turn_username"),
        turn_credential=gs("turn_credential"),
        turn_rest_enabled=turn_rest_on,
    )

    try:
        policy = parse_destination_policy(env)
    except ValueError as err:
        raise ConfigError(str(err)) from None

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
        signaling_ws_idle_timeout=gd("signaling_ws_idle_timeout"),
        signaling_ws_ping_interval=gd("signaling_ws_ping_interval"),
        max_signaling_message_bytes=gi("max_signaling_message_bytes"),
        max_signaling_messages_per_second=gi("max_signaling_messages_per_second"),
        udp_ws_idle_timeout=gd("udp_ws_idle_timeout"),
        udp_ws_ping_interval=gd("udp_ws_ping_interval"),
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
        max_udp_pps_per_session=gi("max_udp_pps_per_session"),
        max_udp_bps_per_session=gi("max_udp_bps_per_session"),
        max_udp_pps_per_dest=gi("max_udp_pps_per_dest"),
        max_unique_destinations_per_session=max_unique,
        max_udp_dest_buckets_per_session=dest_buckets,
        max_dc_bps_per_session=gi("max_dc_bps_per_session"),
        hard_close_after_violations=gi("hard_close_after_violations"),
        violation_window=window,
        l2_backend_ws_url=l2_url,
        l2_backend_origin=l2_origin,
        l2_backend_token=l2_token,
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
        turn_username=gs("turn_username").strip(),
        turn_credential=gs("turn_credential").strip(),
        turn_rest_shared_secret=turn_secret,
        turn_rest_ttl_seconds=ttl,
        turn_rest_username_prefix=prefix,
        turn_rest_realm=gs("turn_rest_realm"),
        ice=ice,
        policy=policy,
    )


def _split_listen_addr(addr: str) -> tuple[str, int]:
    """Split host:port like Go net.SplitHostPort; the port may be a number 0-65535."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ConfigError(
            f"invalid AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR/--listen-addr {quote(addr)} (expected host:port)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(
            f"invalid AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR/--listen-addr {quote(addr)} "
            "(expected host:port; bracket IPv6 hosts like [::1]:8080)"
        )
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"invalid AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR/--listen-addr {quote(addr)} (expected a port 0-65535)"
        )
    return host, int(port)


def split_listen_addr(addr: str) -> tuple[str, int]:
    return _split_listen_addr(addr)


def _validate_l2_url(url: str) -> None:
    from urllib.parse import urlsplit

    name = "L2_BACKEND_WS_URL/--l2-backend-ws-url"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ConfigError(f"invalid {name} {quote(url)} (expected ws:// or wss:// URL)") from None
    if parts.scheme.lower() not in ("ws", "wss"):
        raise ConfigError(f"invalid {name} {quote(url)} (expected ws:// or wss://)")
    if "@" in parts.netloc:
        raise ConfigError(f"invalid {name} {quote(url)} (must not include credentials)")
    if not parts.hostname:
        raise ConfigError(f"invalid {name} {quote(url)} (missing host)")


def _normalize_config_origin(raw: str, names: str) -> str:
    if raw == "null":
        return "null"
    norm = normalize_origin(raw)
    if norm is None:
        raise ConfigError(f"invalid {names} {quote(raw)} (expected full origin like https://example.com)")
    return norm.origin


# --- help and effective-config rendering ---------------------------------------------------------


def _default_text(s: Setting) -> str:
    if s.default_text is not None:
        return s.default_text
    if s.kind in ("duration", "violation_window"):
        assert isinstance(s.default, float)
        return _dur(s.default)
    if isinstance(s.default, bool):
        return "true" if s.default else "false"
    if isinstance(s.default, str):
        return quote(s.default)
    return str(s.default)


def usage(prog: str = "aero-relay serve") -> str:
    """Go-style usage listing every flag with its env var and default."""
    lines = [f"Usage of {prog}:", "  Every flag overrides its environment variable; an empty env value means unset."]
    type_names = {"str": "string", "int": "int", "port": "int", "duration": "duration",
                  "violation_window": "duration", "bool": ""}
    for s in sorted((s for s in SETTINGS if s.flags), key=lambda s: s.flags[0]):
        for flag in s.flags:
            t = type_names[s.kind]
            lines.append(f"  -{flag}" + (f" {t}" if t else ""))
            envs = " or ".join(s.envs)
            lines.append(f"    \t{s.help} (env {envs}) (default {_default_text(s)})")
    lines.append("")
    lines.append("Environment-only settings:")
    for s in SETTINGS:
        if not s.flags:
            lines.append(f"  {s.envs[0]}\t{s.help}")
    lines.append("  DESTINATION_POLICY_PRESET\tegress preset: prod (deny by default) or dev "
                 "(aliases UDP_DESTINATION_POLICY_PRESET, POLICY_PRESET)")
    lines.append("  ALLOW_PRIVATE_NETWORKS\tallow private/special destinations (default from the preset)")
    lines.append("  ALLOW_UDP_CIDRS / DENY_UDP_CIDRS\tcomma-separated destination CIDRs (deny wins)")
    lines.append("  ALLOW_UDP_PORTS / DENY_UDP_PORTS\tcomma-separated destination ports or ranges (deny wins)")
    return "\n".join(lines) + "\n"


REDACTED = "<redacted>"


def effective_items(cfg: Config) -> list[tuple[str, str]]:
    """(ENV_NAME, value) pairs of the effective config, secrets redacted, for `check-config`."""
    secret_fields = {s.field for s in SETTINGS if s.secret} | {"l2_backend_token"}
    rendered: dict[str, Callable[[Config], object]] = {
        "allowed_origins_raw": lambda c: ",".join(c.allowed_origins),
        "webrtc_nat_1to1_ips_raw": lambda c: ",".join(c.webrtc_nat_1to1_ips),
        "l2_backend_origin_override": lambda c: c.l2_backend_origin,
    }
    items: list[tuple[str, str]] = []
    for s in SETTINGS:
        if s.field in rendered:
            value = rendered[s.field](cfg)
        else:
            value = getattr(cfg, s.field)
        if s.field in secret_fields and value:
            text = REDACTED
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = _dur(value)
        else:
            text = str(value)
        items.append((s.envs[0], text))
    p = cfg.policy
    items.append(("DESTINATION_POLICY_PRESET", p.preset))
    items.append(("ALLOW_PRIVATE_NETWORKS", "true" if p.allow_private_networks else "false"))
    items.append(("(ice servers)", str(len(cfg.ice.servers)) + (f" (error: {cfg.ice.error})" if cfg.ice.error else "")))
    return items
