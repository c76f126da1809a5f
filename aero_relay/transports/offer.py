"""`POST /offer` and `POST /webrtc/offer`: non-trickle HTTP signaling (spec sections 7, 8).

The WebRTC session outlives the request: it runs in the server's session nursery until the
peer closes, the connect timeout fires, or the server shuts down (F-210, F-219).
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from quart import Quart, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from aero_relay.context import RelayContext
from aero_relay.core.auth import AuthError, AuthResult
from aero_relay.core.signaling import (
    OfferBodyError,
    offer_response_v1,
    parse_offer_request_v1,
    parse_webrtc_offer_body,
    webrtc_offer_response,
)
from aero_relay.observability.logging import get_logger
from aero_relay.observability.metrics import Event
from aero_relay.relay.manager import SessionRegistryError
from aero_relay.transports.auth_http import authorize_request
from aero_relay.transports.http_util import json_error, json_response
from aero_relay.transports.session import registry_error_response
from aero_relay.transports.signal_ws import request_peer_info
from aero_relay.webrtc.peer import NegotiationError, RelayPeer

__all__ = ["register"]

_log = get_logger("aero_relay.offer")

# F-055 (/offer) uses fixed texts; F-061 (/webrtc/offer) passes the error text through.
_OFFER_V1_TEXT = {400: "failed to set remote description", 500: "failed to create answer"}


async def _read_body() -> bytes | None:
    try:
        data = await request.get_data(cache=False, as_text=False)
    except RequestEntityTooLarge:
        return None
    return data if isinstance(data, bytes) else data.encode()


def _authorize(ctx: RelayContext) -> AuthResult | Response:
    try:
        return authorize_request(ctx, request)
    except AuthError:
        ctx.metrics.inc(Event.AUTH_FAILURE)
        return json_error(401, "unauthorized", "unauthorized")
    except Exception as err:
        _log.error("offer auth error", err=str(err))
        return json_error(500, "internal_error", "internal error")


async def _answer(
    ctx: RelayContext,
    auth: AuthResult,
    sdp: str,
    error_text: Callable[[NegotiationError], str],
    create_error_text: str | None = None,
) -> tuple[str, str] | Response:
    """Allocate the session, start it, apply the offer, wait for gathering: (session id, answer SDP)."""
    bridge, nursery = ctx.bridge, ctx.session_nursery
    if bridge is None or nursery is None:
        return json_error(500, "internal_error", "internal error")
    try:
        lease = await ctx.registry.acquire(auth.session_key, kind="webrtc")
    except SessionRegistryError as err:
        return registry_error_response(ctx, err)
    try:
        peer = RelayPeer(ctx, bridge, lease, request_peer_info(dict(request.scope), auth.credential))
    except Exception as err:  # F-055/F-061: NewSession failed; the lease must not leak
        with trio.CancelScope(shield=True):
            await ctx.registry.release(lease)
        return json_error(500, "internal_error", create_error_text or str(err) or "failed to create session")
    await nursery.start(peer.run)
    started = trio.current_time()
    try:
        # aiortc gathers inside setLocalDescription; STUN/TURN gathering is bounded by
        # AERO_WEBRTC_UDP_RELAY_ICE_GATHERING_TIMEOUT (F-055/F-056).
        local_sdp = await peer.negotiate(sdp)
    except NegotiationError as err:
        peer.close("negotiation_failed")
        return json_error(
            err.status, "bad_message" if err.status == 400 else "internal_error", error_text(err)
        )
    except BaseException:
        peer.close("negotiation_failed")
        raise
    timed_out = any(c.gather_timed_out for c in peer.pc.ice_connections)
    if timed_out or trio.current_time() - started >= ctx.config.ice_gathering_timeout:
        ctx.metrics.inc(Event.ICE_GATHERING_TIMEOUT)
    return lease.session_id, local_sdp


def register(app: Quart, ctx: RelayContext) -> None:
    @app.post("/offer", provide_automatic_options=False)
    async def offer_v1() -> Response:
        body = await _read_body()
        # F-054/F-193: the body is decoded (and a bad one refused) before auth.
        try:
            if body is None:
                raise OfferBodyError("invalid offer")
            req = parse_offer_request_v1(body)
        except OfferBodyError as err:
            return json_error(400, err.code, err.message)
        auth = _authorize(ctx)
        if isinstance(auth, Response):
            return auth
        result = await _answer(
            ctx,
            auth,
            req.offer.sdp,
            lambda e: _OFFER_V1_TEXT.get(e.status, e.message),
            create_error_text="failed to create session",
        )
        if isinstance(result, Response):
            return result
        _, local_sdp = result
        return json_response(offer_response_v1(req.version, local_sdp))

    @app.post("/webrtc/offer", provide_automatic_options=False)
    async def webrtc_offer() -> Response:
        body = await _read_body()
        if body is None:  # F-058: Go's MaxBytesReader text
            return json_error(400, "bad_message", "http: request body too large")
        try:
            desc = parse_webrtc_offer_body(body)
        except OfferBodyError as err:
            return json_error(400, err.code, err.message)
        auth = _authorize(ctx)
        if isinstance(auth, Response):
            return auth
        result = await _answer(ctx, auth, desc.sdp, lambda e: e.message)
        if isinstance(result, Response):
            return result
        session_id, local_sdp = result
        return json_response(webrtc_offer_response(session_id, local_sdp))
