"""`GET /webrtc/signal`: WebSocket signaling with trickle ICE (spec section 9, F-063..F-080).

One connection may carry one WebRTC session. The connection is a Trio cancel scope holding the
keepalive task, the read loop and, once an offer arrived, the session (`RelayPeer.run`). The
two lifetimes are coupled (F-078): the WebSocket closing ends the session, and the session
ending closes the WebSocket.

Deliberate changes (F-202, F-077): where the original drops the TCP connection without a
Close frame (after a client `close` message, or when the session ends on its own), we send a
proper Close frame (1000), so browsers see a clean close instead of 1006.
"""

from __future__ import annotations

from typing import Any

import trio

from aero_relay.context import RelayContext
from aero_relay.core.auth import AuthError, credential_from_request, signal_auth_message_credential
from aero_relay.core.limits import TokenBucket
from aero_relay.core.signaling import (
    SignalingError,
    SignalMessage,
    answer_message,
    candidate_message,
    error_message,
    parse_signal_message,
)
from aero_relay.observability.logging import get_logger
from aero_relay.observability.metrics import Event
from aero_relay.relay.manager import (
    SessionAlreadyActiveError,
    SessionRegistryError,
    TooManySessionsError,
)
from aero_relay.transports.asgi_util import header_getter, query_getter, remote_addr
from aero_relay.transports.ws import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    WRITE_DEADLINE,
    CloseWith,
    WebSocketConn,
    WebSocketDisconnect,
    keepalive,
)
from aero_relay.transports.ws_hooks import write_watchdog
from aero_relay.webrtc.peer import NegotiationError, PeerInfo, RelayPeer, sdp_candidates

__all__ = ["SignalWebSocketEndpoint", "request_peer_info"]

_log = get_logger("aero_relay.signal")


def request_peer_info(scope: dict[str, Any], credential: str) -> PeerInfo:
    """Origin, remote address, credential and aero_session cookie of a signaling request."""
    from aero_relay.core.origin import decode_header_value, derive_client_origin

    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    origins = [decode_header_value(v) for k, v in headers if k == b"origin"]
    hosts = [decode_header_value(v) for k, v in headers if k == b"host"]
    protos = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-proto"]
    origin = derive_client_origin(origins, hosts[0] if hosts else "", protos[0] if protos else "", False)
    cookie: str | None = None
    for k, v in headers:
        if k != b"cookie":
            continue
        for part in v.decode("latin-1").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name == "aero_session" and cookie is None:
                cookie = value
    return PeerInfo(origin=origin, remote_addr=remote_addr(scope), credential=credential, aero_session=cookie)


class SignalWebSocketEndpoint:
    """The raw ASGI handler for WebSocket requests on `/webrtc/signal`."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        ws = WebSocketConn(scope, receive, send)
        if not await ws.wait_connect():
            return
        await ws.accept()  # F-064: no subprotocol, no compression
        ws.ctl.set_max_message_size(self.ctx.config.max_signaling_message_bytes)  # F-065
        conn = _SignalConnection(self.ctx, ws, scope)
        async with trio.open_nursery() as guard:
            guard.start_soon(write_watchdog, ws.ctl, WRITE_DEADLINE)  # F-079: 1 s write deadline
            try:
                await conn.run()
            finally:
                guard.cancel_scope.cancel()


class _SignalConnection:
    def __init__(self, ctx: RelayContext, ws: WebSocketConn, scope: dict[str, Any]) -> None:
        self.ctx = ctx
        self.ws = ws
        self.scope = scope
        cfg = ctx.config
        self.bucket = TokenBucket(cfg.max_signaling_messages_per_second)  # F-068
        self.authenticated = False
        self.credential = ""
        self.session_key = ""
        self.peer: RelayPeer | None = None
        self.close_with: tuple[int, str] | None = None
        self.conn_scope = ctx.open_session_scope()
        self.nursery: trio.Nursery | None = None

    def end(self, code: int, reason: str) -> None:
        if self.close_with is None:
            self.close_with = (code, reason)
        self.conn_scope.cancel()

    async def run(self) -> None:
        ctx, ws = self.ctx, self.ws
        try:
            with self.conn_scope:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    try:
                        await self._authenticate_from_request()
                        await self._read_loop()
                    except CloseWith as close:
                        if close.code:
                            await ws.send_json(error_message(close.code, close.message))
                        self.end(close.close_code, close.reason)
                    except WebSocketDisconnect:
                        pass
                    nursery.cancel_scope.cancel()
            if self.conn_scope.cancelled_caught and self.close_with is None and ctx.shutting_down:
                self.close_with = (CLOSE_GOING_AWAY, "server shutting down")
        finally:
            ctx.close_session_scope(self.conn_scope)
            if self.peer is not None:
                self.peer.close("signaling_closed")  # F-078: the WebSocket closing ends the session
        if self.close_with is not None:
            code, reason = self.close_with
            if code == 1009:
                return  # hypercorn already sent Close 1009 (F-065)
            await ws.close(code, reason)

    # --- auth --------------------------------------------------------------------------------

    async def _authenticate_from_request(self) -> None:
        """F-066: mode none or a valid header/query credential authenticates at once."""
        auth = self.ctx.authenticator
        if auth.mode == "none":
            self._authenticated("")
            return
        try:
            credential = credential_from_request(
                auth.mode, header_getter(self.scope), query_getter(self.scope)
            )
        except Exception:
            raise CloseWith(CLOSE_INTERNAL, "internal error", "internal_error", "internal error") from None
        if credential:
            self._verify(credential)

    def _verify(self, credential: str) -> None:
        auth = self.ctx.authenticator
        try:
            result = auth.verify(credential, self.ctx.unix_seconds())
        except AuthError:
            self.ctx.metrics.inc(Event.AUTH_FAILURE)
            raise CloseWith(CLOSE_POLICY, "unauthorized", "unauthorized", "unauthorized") from None
        except Exception:
            raise CloseWith(CLOSE_INTERNAL, "internal error", "internal_error", "internal error") from None
        self.session_key = result.session_key
        self._authenticated(result.credential or credential)

    def _authenticated(self, credential: str) -> None:
        self.authenticated = True
        self.credential = credential
        assert self.nursery is not None
        self.ws.ctl.touch()
        cfg = self.ctx.config
        self.nursery.start_soon(
            keepalive, self.ws, cfg.signaling_ws_ping_interval, cfg.signaling_ws_idle_timeout, self.end
        )

    # --- messages ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        ctx, ws = self.ctx, self.ws
        cfg = ctx.config
        auth_deadline = trio.current_time() + cfg.signaling_auth_timeout
        while True:
            msg: bytes | str | None = None
            if self.authenticated:
                msg = await ws.receive()
            else:
                with trio.move_on_at(auth_deadline):  # F-067: pings don't extend it
                    msg = await ws.receive()
                if msg is None:
                    if ws.ctl.too_large:
                        raise WebSocketDisconnect(1009)
                    ctx.metrics.inc(Event.AUTH_FAILURE)
                    raise CloseWith(CLOSE_POLICY, "authentication timeout")  # no error JSON on this path
            if not self.bucket.allow(1, trio.current_time()):  # F-068: after the read
                ctx.metrics.inc(Event.RATE_LIMITED)
                raise CloseWith(CLOSE_POLICY, "rate limit exceeded", "rate_limited", "rate limit exceeded")
            if isinstance(msg, bytes):  # F-069
                raise CloseWith(
                    CLOSE_UNSUPPORTED, "expected text message", "bad_message", "expected text message"
                )
            try:
                message = parse_signal_message(msg)
            except SignalingError as err:  # F-070
                raise CloseWith(CLOSE_POLICY, "bad message", "bad_message", err.message) from None
            await self._dispatch(message)

    async def _dispatch(self, m: SignalMessage) -> None:
        ctx = self.ctx
        if not self.authenticated:
            if m.type != "auth":  # F-072
                ctx.metrics.inc(Event.AUTH_FAILURE)
                raise CloseWith(
                    CLOSE_POLICY, "authentication required", "unauthorized", "authentication required"
                )
            credential = signal_auth_message_credential(m.api_key or "", m.token or "")
            if not credential:
                ctx.metrics.inc(Event.AUTH_FAILURE)
                raise CloseWith(CLOSE_POLICY, "unauthorized", "unauthorized", "unauthorized")
            self._verify(credential)
            return
        if m.type == "auth":  # F-073 (and F-208: ignored in mode none before the offer)
            if self.peer is not None:
                raise CloseWith(
                    CLOSE_POLICY, "unexpected message", "unexpected_message", "auth received after offer"
                )
            return
        if m.type == "offer":
            assert m.sdp is not None
            await self._offer(m.sdp.sdp)
            return
        if m.type == "candidate":
            if self.peer is None:  # F-076
                raise CloseWith(
                    CLOSE_POLICY,
                    "unexpected message",
                    "unexpected_message",
                    "candidate received before offer",
                )
            assert m.candidate is not None
            c = m.candidate
            try:
                await self.peer.add_remote_candidate(c.candidate, c.sdp_mid, c.sdp_mline_index)
            except NegotiationError as err:
                raise CloseWith(CLOSE_POLICY, "bad message", "bad_message", err.message) from None
            return
        if m.type == "close":  # F-077 (we send a Close frame; see the module docstring)
            self.end(CLOSE_NORMAL, "close")
            return
        # A client-sent answer or error is valid JSON but not acceptable here (F-077).
        raise CloseWith(CLOSE_POLICY, "bad message", "bad_message", f'unexpected message type "{m.type}"')

    async def _offer(self, sdp: str) -> None:
        """F-074/F-075: take the quota and sid first, then negotiate; answer at once, then trickle."""
        ctx = self.ctx
        if self.peer is not None:
            raise CloseWith(
                CLOSE_POLICY, "unexpected message", "unexpected_message", "offer already received"
            )
        bridge = ctx.bridge
        if bridge is None:
            raise CloseWith(CLOSE_INTERNAL, "internal error", "internal_error", "webrtc is not available")
        try:
            lease = await ctx.registry.acquire(self.session_key, kind="webrtc")
        except TooManySessionsError as err:
            ctx.metrics.inc(Event.TOO_MANY_SESSIONS)
            raise CloseWith(CLOSE_POLICY, "too_many_sessions", err.code, err.message) from None
        except SessionAlreadyActiveError as err:
            raise CloseWith(CLOSE_POLICY, "session_already_active", err.code, err.message) from None
        except SessionRegistryError as err:
            raise CloseWith(CLOSE_INTERNAL, "internal error", err.code, err.message) from None
        try:
            peer = RelayPeer(ctx, bridge, lease, request_peer_info(self.scope, self.credential))
        except Exception as err:  # F-074: NewSession failed; the lease must not leak
            with trio.CancelScope(shield=True):
                await ctx.registry.release(lease)
            raise CloseWith(CLOSE_INTERNAL, "internal error", "internal_error", str(err)) from None
        self.peer = peer
        assert self.nursery is not None
        await self.nursery.start(peer.run)
        self.nursery.start_soon(self._watch_peer, peer)
        try:
            local_sdp = await peer.negotiate(sdp)
        except NegotiationError as err:
            if err.status == 400:
                raise CloseWith(CLOSE_POLICY, "bad_message", "bad_message", err.message) from None
            raise CloseWith(CLOSE_INTERNAL, "internal error", "internal_error", err.message) from None
        await self.ws.send_json(answer_message(local_sdp))
        mid, candidates = sdp_candidates(local_sdp)
        for cand in candidates:
            await self.ws.send_json(candidate_message(cand, mid, 0, None))

    async def _watch_peer(self, peer: RelayPeer) -> None:
        """F-078: when the session ends on its own, the signaling WebSocket closes too."""
        await peer.finished.wait()
        if self.ctx.shutting_down:
            self.end(CLOSE_GOING_AWAY, "server shutting down")
        else:
            self.end(CLOSE_NORMAL, "session closed")
