"""`GET /udp`: the WebSocket UDP data plane (spec section 10, F-081..F-098).

One connection is one relay session: a Trio cancel scope holding the shared datagram pipeline
(bindings, reader tasks, sender), the keepalive task and the read loop. Every way the session
ends (client close, idle timeout, hard close, server shutdown) cancels that scope; the lease
and sockets are released in `finally` blocks, and the close frame goes out last.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from aero_relay.context import RelayContext
from aero_relay.core.auth import AuthError, UdpAuthMessageError, parse_udp_auth_message
from aero_relay.core.frames import MAX_FRAME_OVERHEAD_BYTES
from aero_relay.observability.logging import get_logger
from aero_relay.observability.metrics import UDP_WS, Event
from aero_relay.relay.manager import (
    SessionAlreadyActiveError,
    SessionLease,
    SessionRegistryError,
    TooManySessionsError,
)
from aero_relay.relay.pipeline import DatagramPipeline
from aero_relay.relay.quota import QuotaSession
from aero_relay.transports.asgi_util import header_getter, query_getter, remote_addr
from aero_relay.transports.ws import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNSUPPORTED,
    WRITE_DEADLINE,
    CloseWith,
    WebSocketConn,
    WebSocketDisconnect,
    keepalive,
)
from aero_relay.transports.ws_hooks import write_watchdog

__all__ = ["UdpWebSocketEndpoint"]

_log = get_logger("aero_relay.udp_ws")


class UdpWebSocketEndpoint:
    """The raw ASGI handler for WebSocket requests on `/udp`."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        ws = WebSocketConn(scope, receive, send)
        if not await ws.wait_connect():
            return
        await ws.accept()
        self.ctx.metrics.inc(Event.UDP_WS_CONNECTIONS)  # F-082: right after the upgrade, before auth
        async with trio.open_nursery() as guard:
            # The write deadline holds for the connection's whole life, teardown included.
            guard.start_soon(write_watchdog, ws.ctl, WRITE_DEADLINE)
            try:
                await self._serve(ws, scope)
            finally:
                guard.cancel_scope.cancel()

    async def _serve(self, ws: WebSocketConn, scope: dict[str, Any]) -> None:
        ctx = self.ctx
        # Registered from the start, so shutdown also ends connections that are still authenticating.
        auth_scope = ctx.open_session_scope()
        lease: SessionLease | None = None
        try:
            with auth_scope:
                session_key = await self._authenticate(ws, scope)
                lease = await self._acquire(session_key)
        except CloseWith as close:
            if close.code:
                await ws.send_json({"type": "error", "code": close.code, "message": close.message})
            await ws.close(close.close_code, close.reason)
            return
        except WebSocketDisconnect:
            return
        finally:
            ctx.close_session_scope(auth_scope)
        if lease is None:  # cancelled while authenticating: only shutdown does that
            await ws.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        try:
            await self._run_session(ws, scope, lease)
        finally:
            with trio.CancelScope(shield=True):
                await ctx.registry.release(lease)

    async def _authenticate(self, ws: WebSocketConn, scope: dict[str, Any]) -> str:
        """Return the session key (JWT sid or ""), or raise _Close (F-083..F-088)."""
        ctx = self.ctx
        auth = ctx.authenticator
        if auth.mode == "none":
            return ""  # F-083: header and query are ignored
        header, query = header_getter(scope), query_getter(scope)
        from aero_relay.core.auth import credential_from_request

        try:
            credential = credential_from_request(auth.mode, header, query)
        except Exception:
            raise CloseWith(
                CLOSE_INTERNAL, "invalid auth configuration", "internal_error", "invalid auth configuration"
            ) from None
        if credential == "":
            credential = await self._auth_message(ws)
        try:
            return auth.verify(credential, ctx.unix_seconds()).session_key
        except AuthError:
            ctx.metrics.inc(Event.AUTH_FAILURE)
            raise CloseWith(
                CLOSE_POLICY, "invalid credentials", "unauthorized", "invalid credentials"
            ) from None

    async def _auth_message(self, ws: WebSocketConn) -> str:
        """F-085..F-088: the first message must be `{"type":"auth",...}` within the auth timeout."""
        ctx = self.ctx
        cfg = ctx.config
        ws.ctl.set_max_message_size(cfg.max_signaling_message_bytes)
        msg: bytes | str | None = None
        with trio.move_on_after(cfg.signaling_auth_timeout):
            msg = await ws.receive()
        if msg is None:
            if ws.ctl.too_large:
                raise WebSocketDisconnect(1009)  # F-085: 1009 from the read limit, no JSON, no metric
            ctx.metrics.inc(Event.AUTH_FAILURE)
            raise CloseWith(CLOSE_POLICY, "authentication timeout", "unauthorized", "authentication timeout")
        if isinstance(msg, bytes):
            ctx.metrics.inc(Event.AUTH_FAILURE)
            raise CloseWith(
                CLOSE_POLICY, "authentication required", "unauthorized", "authentication required"
            )
        try:
            return parse_udp_auth_message(ctx.authenticator.mode, msg)
        except UdpAuthMessageError as err:
            ctx.metrics.inc(Event.AUTH_FAILURE)
            raise CloseWith(err.close_code, err.message, err.code, err.message) from None

    async def _acquire(self, session_key: str) -> SessionLease:
        """F-090: the relay session is created after auth."""
        ctx = self.ctx
        try:
            return await ctx.registry.acquire(session_key, kind="udp_ws")
        except SessionAlreadyActiveError as err:
            raise CloseWith(CLOSE_TRY_AGAIN, "session already active", err.code, err.message) from None
        except TooManySessionsError as err:
            ctx.metrics.inc(Event.TOO_MANY_SESSIONS)
            raise CloseWith(CLOSE_TRY_AGAIN, "too many sessions", err.code, err.message) from None
        except SessionRegistryError as err:
            if err.code == "registry_unavailable":
                raise CloseWith(
                    CLOSE_TRY_AGAIN, "session registry unavailable", err.code, err.message
                ) from None
            raise CloseWith(
                CLOSE_INTERNAL, "internal error", "internal_error", "failed to allocate session"
            ) from None

    async def _run_session(self, ws: WebSocketConn, scope: dict[str, Any], lease: SessionLease) -> None:
        ctx = self.ctx
        cfg = ctx.config
        remote = remote_addr(scope)
        close: list[tuple[int, str]] = []  # the first reason to end wins
        session_scope = ctx.open_session_scope()

        def end(code: int, reason: str) -> None:
            if not close:
                close.append((code, reason))
            ws.ctl.set_binary_sink(None)  # no frame may reach the pipeline once the session ends
            session_scope.cancel()

        oversized: list[bool] = []

        def count_oversized() -> None:
            """F-093: the over-limit frame counts once, whichever of the watcher and the read loop
            sees it first (both can, when the disconnect and the watcher wake in one batch)."""
            if not oversized:
                oversized.append(True)
                self._count_oversized()

        quota = QuotaSession(cfg, ctx.metrics, on_hard_close=lambda: end(CLOSE_POLICY, "session closed"))
        pipeline = DatagramPipeline(
            cfg=cfg,
            metrics=ctx.metrics,
            transport=UDP_WS,
            quota=quota,
            send_to_client=ws.send_bytes,
            send_batch_to_client=ws.send_bytes_batch,  # a burst of replies is one write
        )
        try:
            with session_scope:
                # F-093: the datagram read limit is in force before the client can see "ready", so
                # its first frame is always judged by it (setting it after the send raced that frame).
                ws.ctl.set_max_message_size(cfg.max_datagram_payload_bytes + MAX_FRAME_OVERHEAD_BYTES)
                await ws.send_json({"type": "ready", "sessionId": lease.session_id})  # F-092
                ws.ctl.touch()
                _log.info("udp_ws_connected", session_id=lease.session_id, remote_addr=remote)
                async with trio.open_nursery() as nursery:
                    await nursery.start(pipeline.run)
                    nursery.start_soon(keepalive, ws, cfg.udp_ws_ping_interval, cfg.udp_ws_idle_timeout, end)
                    nursery.start_soon(self._watch_too_large, ws, end, count_oversized)
                    await self._read_loop(ws, pipeline, end, count_oversized)
                    nursery.cancel_scope.cancel()
            if session_scope.cancelled_caught and not close and ctx.shutting_down:
                close.append((CLOSE_GOING_AWAY, "server shutting down"))
        finally:
            ctx.close_session_scope(session_scope)
            quota.closed = True
            _log.info("udp_ws_disconnected", session_id=lease.session_id, remote_addr=remote)
        if close:
            await ws.close(*close[0])

    async def _read_loop(
        self, ws: WebSocketConn, pipeline: DatagramPipeline, end: Any, count_oversized: Any
    ) -> None:
        handle = pipeline.handle_client_frame
        ctl = ws.ctl
        # The fast path: hypercorn hands binary frames straight to the pipeline whenever nothing is
        # queued ahead of them (ws_hooks); the rest (and any backlog) arrives through receive().
        ctl.set_binary_sink(handle)
        try:
            while True:
                try:
                    msg = await ws.receive()
                except WebSocketDisconnect:
                    if ctl.too_large:
                        count_oversized()
                    return
                if isinstance(msg, bytes):
                    handle(msg)  # F-095: one binary message is one frame
                    continue
                # F-094: a later {"type":"auth"} is ignored; any other text closes with 1003.
                if _is_auth_message(msg):
                    continue
                ctl.set_binary_sink(None)  # frames after the bad message are not relayed
                await ws.send_json(
                    {"type": "error", "code": "bad_message", "message": "expected binary message"}
                )
                end(CLOSE_UNSUPPORTED, "expected binary message")
                return
        finally:
            ctl.set_binary_sink(None)

    def _count_oversized(self) -> None:
        self.ctx.metrics.inc(UDP_WS.dropped)
        self.ctx.metrics.inc(UDP_WS.dropped_oversized)

    async def _watch_too_large(self, ws: WebSocketConn, end: Any, count_oversized: Any) -> None:
        """F-093: a frame over the read limit ends the connection (hypercorn already sent 1009)."""
        await ws.ctl.too_large_event.wait()
        count_oversized()
        ws.closed = True  # the close handshake is already under way
        end(1009, "")


def _is_auth_message(text: str) -> bool:
    try:
        obj = json.loads(text)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("type") == "auth"
