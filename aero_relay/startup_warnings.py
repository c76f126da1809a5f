"""Startup security warnings (spec section 21, F-163..F-172), as a pure function of Config.

Each warning is logged at WARN with a message starting `startup security warning:` (texts as in
the original) and the fields `warning_code`, its own fields, then `mode`, in the original's order.

Deliberate change (F-205, weakness 13): `l2_backend_auth_forward_mode_query` fires only when
the L2 bridge is configured. The original fires it whenever AUTH_MODE != none, so its default
configuration always warns about a feature that is off; warnings that are always there teach
operators to ignore warnings. (An earlier upstream revision also gated it on the L2 URL.)

Small difference: `allowed_origins` is the comma-joined list (as ALLOWED_ORIGINS is written),
where slog prints the Go slice (`[* https://a]` in text, an array in JSON).
"""

from __future__ import annotations

import attrs

from aero_relay.config import Config
from aero_relay.observability.logging import GoDuration

__all__ = ["StartupWarning", "startup_warnings"]

_MIB = 1 << 20


@attrs.frozen
class StartupWarning:
    code: str
    message: str
    fields: tuple[tuple[str, object], ...]


def startup_warnings(cfg: Config) -> list[StartupWarning]:
    out: list[StartupWarning] = []

    def add(code: str, text: str, *fields: tuple[str, object]) -> None:
        out.append(StartupWarning(code, "startup security warning: " + text, fields))

    if cfg.udp_inbound_filter_mode == "any":
        add(
            "udp_inbound_filter_mode_any",
            "UDP_INBOUND_FILTER_MODE=any allows inbound UDP packets from any remote endpoint "
            "(full-cone NAT behavior; less safe)",
            ("udp_inbound_filter_mode", cfg.udp_inbound_filter_mode),
        )
    if cfg.auth_mode == "none":
        add("auth_mode_none", "AUTH_MODE=none disables authentication", ("auth_mode", cfg.auth_mode))
    if "*" in cfg.allowed_origins:
        add(
            "allowed_origins_wildcard",
            "ALLOWED_ORIGINS contains '*' (allows any origin)",
            ("allowed_origins", ",".join(cfg.allowed_origins)),
        )
    p = cfg.policy
    policy_fields = (
        ("destination_policy_preset", p.preset),
        ("allow_private_networks", p.allow_private_networks),
        ("default_allow", p.default_allow),
    )
    if p.preset == "dev":
        add(
            "destination_policy_preset_dev",
            "destination policy preset is dev (allows private network UDP destinations)",
            *policy_fields,
        )
    elif cfg.is_prod and p.allow_private_networks:
        add(
            "allow_private_networks_in_prod",
            "ALLOW_PRIVATE_NETWORKS=true while --mode=prod",
            *policy_fields,
        )
    if cfg.is_prod and cfg.max_sessions <= 0:
        add(
            "max_sessions_unlimited_in_prod",
            "MAX_SESSIONS is unset/0 (unlimited) while --mode=prod",
            ("max_sessions", cfg.max_sessions),
        )
    if cfg.webrtc_datachannel_max_message_bytes > _MIB:
        add(
            "webrtc_datachannel_max_message_large",
            "WEBRTC_DATACHANNEL_MAX_MESSAGE_BYTES is very large "
            "(weakens WebRTC DataChannel/SCTP DoS hardening; increases per-message allocation risk)",
            ("webrtc_datachannel_max_message_bytes", cfg.webrtc_datachannel_max_message_bytes),
        )
    if cfg.webrtc_sctp_max_receive_buffer_bytes > 8 * _MIB:
        add(
            "webrtc_sctp_max_receive_buffer_large",
            "WEBRTC_SCTP_MAX_RECEIVE_BUFFER_BYTES is very large (weakens WebRTC DataChannel/SCTP DoS "
            "hardening; increases receive-side buffering/allocation risk)",
            ("webrtc_sctp_max_receive_buffer_bytes", cfg.webrtc_sctp_max_receive_buffer_bytes),
        )
    if cfg.webrtc_session_connect_timeout > 120:
        add(
            "webrtc_session_connect_timeout_large",
            "WEBRTC_SESSION_CONNECT_TIMEOUT is very large "
            "(increases half-open WebRTC session resource exposure)",
            ("webrtc_session_connect_timeout", GoDuration.from_seconds(cfg.webrtc_session_connect_timeout)),
        )
    if cfg.l2_enabled and cfg.l2_backend_auth_forward_mode == "query" and cfg.auth_mode != "none":
        add(
            "l2_backend_auth_forward_mode_query",
            "L2_BACKEND_AUTH_FORWARD_MODE=query forwards credentials via query params "
            "(leak risk; prefer subprotocol)",
            ("l2_backend_ws_url_set", cfg.l2_enabled),
            ("l2_backend_ws_host", cfg.l2_backend_ws_host),
            ("l2_backend_auth_forward_mode", cfg.l2_backend_auth_forward_mode),
            ("auth_mode", cfg.auth_mode),
        )
    return out
