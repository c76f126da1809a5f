"""The L2 tunnel bridge: the reliable `l2` DataChannel <-> a backend WebSocket (spec §19).

One `L2Bridge` per accepted `l2` channel, run as a task in the session's nursery. It dials the
backend at once (F-150), pumps binary messages both ways without parsing them, and ends through
one shutdown path that logs `l2_bridge_shutdown` once, closes the backend WebSocket and closes the
`l2` channel unless the channel caused it (F-159). A bridge failure never touches the
PeerConnection or the `udp` channel (F-221); only an l2 message over the session-wide DataChannel
cap closes the session (F-111).

Decisions
---------
* **Client -> backend never blocks aiortc (fixes F-200).** aiortc delivers DataChannel messages
  through a sync callback on the loop that also carries the `udp` channel, and SCTP flow control
  is per association, not per stream: any way of pushing back on `l2` (blocking the callback or
  withholding the receive window) would stall `udp` too. So client messages go into a bounded
  queue of `TO_BACKEND_QUEUE_MESSAGES` (256, the original's channel size, so at most
  256 x L2_MAX_MESSAGE_BYTES bytes per bridge) that also holds messages sent before the dial
  completes. When it is full the backend has stopped reading (its TCP window and our socket
  buffer are full too): the bridge shuts down with reason ``backpressure`` (WARN) and closes the
  `l2` channel. A reliable channel is never thinned out by silent drops; the client reopens `l2`.
* **Backend -> client is lossless backpressure.** aiortc's `send` queues without limit, so after
  each send the reader waits while the channel's `bufferedAmount` is over
  DATACHANNEL_SEND_QUEUE_BYTES (until it falls to a quarter of that). Meanwhile trio-websocket's
  one-message queue fills and the backend's TCP window closes. `udp` is unaffected: it has its own
  per-channel drop threshold.
* **The backend WebSocket** is trio-websocket over a stream the bridge opens and always closes
  itself. `wrap_client_stream`'s reader task is hosted by `_ReaderHost`, so a rejection, a reset
  or a refused subprotocol during the handshake fails the dial at once instead of at the 5 s dial
  timeout. Pings are answered and close handshakes echoed by trio-websocket, its writes
  serialized by its stream lock (F-161). A read over L2_MAX_MESSAGE_BYTES is refused by
  trio-websocket with close 1009 (as gorilla's read limit does, F-158); it is recognised by the
  close reason text that trio-websocket 0.12 writes.
* **Closing the backend**: on a bridge-initiated shutdown, a close frame (1000) and at most
  `CLOSE_TIMEOUT` for the reply; when the whole session is cancelled, or a write was cut off
  mid-frame, the TCP stream is just closed (the original always does the latter).
* **A bug in the bridge** (an unexpected exception) is logged at ERROR (``l2 bridge failed``) and
  closes the `l2` channel only: the bridge task never takes the session down with it (F-221).
* **Logs** follow F-156..F-159 and F-186..F-189; `err` and `ws_close_text` go through `Redactor`
  (the credential, the backend token and the cookie value, F-160), `backend_ws_url` through
  `sanitize_ws_url`. Close errors are worded as gorilla words them
  (``ws_read: websocket: close 1000 (normal): bye``).
"""

from __future__ import annotations

import functools
import math
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import attrs
import trio
import trio_websocket
from aiortc import RTCDataChannel
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from aero_relay.config import Config, is_tchar_token
from aero_relay.core.gofmt import quote
from aero_relay.observability.logging import INFO, WARN, Redactor, get_logger, sanitize_ws_url
from aero_relay.observability.metrics import Event, Metrics
from aero_relay.relay.quota import QuotaSession

if TYPE_CHECKING:
    from aero_relay.webrtc.peer import PeerInfo

__all__ = [
    "CLOSE_TIMEOUT",
    "DIAL_TIMEOUT",
    "REASON_BACKEND_CLOSED",
    "REASON_BACKPRESSURE",
    "REASON_DATACHANNEL_CLOSED",
    "REASON_OVERSIZED",
    "SUBPROTOCOL",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "TO_BACKEND_QUEUE_MESSAGES",
    "WRITE_TIMEOUT",
    "DialPlan",
    "L2Bridge",
    "L2DialError",
    "build_dial_plan",
    "forward_query_credential",
    "ws_close_error_text",
]

_log = get_logger("aero_relay.webrtc.l2")

SUBPROTOCOL = "aero-l2-tunnel-v1"
TOKEN_SUBPROTOCOL_PREFIX = "aero-l2-token."

DIAL_TIMEOUT = 5.0  # F-150: TCP + TLS + handshake
WRITE_TIMEOUT = 5.0  # F-157: per backend write
CLOSE_TIMEOUT = 1.0  # our close frame's reply
TO_BACKEND_QUEUE_MESSAGES = 256  # F-157's channel size; see "Decisions"

REASON_BACKEND_CLOSED = "backend_closed"
REASON_DATACHANNEL_CLOSED = "datachannel_closed"
REASON_OVERSIZED = "oversized_message"
REASON_BACKPRESSURE = "backpressure"  # ours: the original blocks instead (F-200)

# trio-websocket's read buffer per receive_some; messages are at most L2_MAX_MESSAGE_BYTES anyway.
_RECEIVE_BYTES = 64 * 1024


class L2DialError(Exception):
    """A backend dial failure; the message is what `l2_bridge_backend_dial_failed` logs as `err`."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


# --- the dial request (F-151 .. F-154) -------------------------------------------------------------


@attrs.frozen
class DialPlan:
    """What one backend dial sends: the URL, the offered subprotocols, Origin and Cookie."""

    url: str
    subprotocols: tuple[str, ...]
    origin: str = ""  # "" = no Origin header
    cookie: str | None = None  # the whole Cookie header value, or no header

    def headers(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if self.origin:
            # The client origin may be a raw, non-normalising header value: send its bytes back.
            out.append((b"Origin", self.origin.encode("utf-8", "surrogateescape")))
        if self.cookie is not None:
            out.append((b"Cookie", self.cookie.encode("latin-1", "replace")))
        return out


def build_dial_plan(
    cfg: Config, *, credential: str, client_origin: str, aero_session: str | None
) -> DialPlan:
    """The backend dial for one session (F-151 .. F-154). Raises `L2DialError` for a token that
    cannot be a subprotocol entry (F-151) or a credential that cannot be one in `subprotocol`
    mode (F-152)."""
    protocols = [SUBPROTOCOL]
    token = cfg.l2_backend_token
    if token:
        entry = TOKEN_SUBPROTOCOL_PREFIX + token
        if not is_tchar_token(entry):
            raise L2DialError(
                "l2 backend token is not valid for Sec-WebSocket-Protocol; use query-string auth instead"
            )
        protocols.append(entry)
    url = cfg.l2_backend_ws_url
    mode = cfg.l2_backend_auth_forward_mode
    if mode == "query" and credential:
        url = forward_query_credential(url, credential)
    elif mode == "subprotocol" and credential and not token:
        # With a static backend token configured, only that one aero-l2-token entry is offered.
        entry = TOKEN_SUBPROTOCOL_PREFIX + credential
        if not is_tchar_token(entry):
            raise L2DialError(
                f"l2 auth forwarding mode {quote('subprotocol')} requires a credential that is valid "
                f"for Sec-WebSocket-Protocol; use {quote('query')} instead"
            )
        protocols.append(entry)
    origin = cfg.l2_backend_origin or (client_origin if cfg.l2_backend_forward_origin else "")
    cookie = None
    if cfg.l2_backend_forward_aero_session and aero_session is not None:
        cookie = "aero_session=" + aero_session  # F-154, F-212: only this cookie, even when empty
    return DialPlan(url=url, subprotocols=tuple(protocols), origin=origin, cookie=cookie)


_HEX = frozenset("0123456789abcdefABCDEF")


def _go_query_unescape(s: str) -> str:
    # url.QueryUnescape: a '%' must be followed by two hex digits, else the pair is dropped.
    i = s.find("%")
    while i != -1:
        if i + 2 >= len(s) or s[i + 1] not in _HEX or s[i + 2] not in _HEX:
            raise ValueError(s)
        i = s.find("%", i + 3)
    return urllib.parse.unquote_plus(s, errors="surrogateescape")


def forward_query_credential(url: str, credential: str) -> str:
    """F-152 `query` mode: Go's ``q := u.Query(); q.Set("token", c); q.Set("apiKey", c);
    u.RawQuery = q.Encode()``: existing values of those keys replaced, keys sorted, values escaped
    as ``url.QueryEscape`` does. Pairs Go cannot parse (a ``;``, a bad ``%`` escape) are dropped."""
    parts = urllib.parse.urlsplit(url)
    values: dict[str, list[str]] = {}
    for pair in parts.query.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        try:
            values.setdefault(_go_query_unescape(key), []).append(_go_query_unescape(value))
        except ValueError:
            continue
    values["token"] = [credential]
    values["apiKey"] = [credential]

    def esc(s: str) -> str:
        return urllib.parse.quote_plus(s, safe="", errors="surrogateescape")

    query = "&".join(f"{esc(k)}={esc(v)}" for k in sorted(values) for v in values[k])
    return urllib.parse.urlunsplit(parts._replace(query=query))


# gorilla/websocket's CloseError wording (what the original's err field shows).
_CLOSE_NAMES = {
    1000: "normal",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status",
    1006: "abnormal closure",
    1007: "invalid payload data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension missing",
    1011: "internal server error",
    1015: "TLS handshake error",
}


def ws_close_error_text(code: int, text: str) -> str:
    """``websocket: close 1000 (normal): bye``, as gorilla's CloseError.Error() reads."""
    name = _CLOSE_NAMES.get(code)
    out = f"websocket: close {code}" + (f" ({name})" if name else "")
    return f"{out}: {text}" if text else out


# --- the bridge ---------------------------------------------------------------------------------------


@attrs.frozen
class _Shutdown:
    reason: str
    direction: str = ""
    msg_bytes: int = 0
    max_bytes: int = 0
    close_code: int | None = None
    close_text: str = ""
    err: str = ""


class _ReaderHost:
    """The "nursery" handed to `trio_websocket.wrap_client_stream`, which only calls `start_soon`
    for its reader task. Wrapping that task lets the bridge see it end or fail while the handshake
    is pending (trio-websocket would otherwise wait for the dial timeout) or afterwards."""

    def __init__(self, nursery: trio.Nursery, on_exit: Callable[[BaseException | None], None]) -> None:
        self._nursery = nursery
        self._on_exit = on_exit

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None) -> None:
        async def hosted() -> None:
            error: BaseException | None = None
            try:
                await fn(*args)
            except Exception as exc:  # a bridge failure must not take the session down (F-221)
                error = exc
            finally:
                self._on_exit(error)

        self._nursery.start_soon(hosted, name=name)


class L2Bridge:
    """Bridges one `l2` DataChannel to the backend (F-150 .. F-161).

    Construct it synchronously where the channel is accepted (that registers the channel's
    message and close handlers at once), then run `run()` in the session's nursery.
    `close_session(reason)` ends the whole session (F-111); `on_done()` runs when `run()` returns.
    `early` holds messages queued by an earlier intake handler; they are taken over in order.
    """

    def __init__(
        self,
        channel: RTCDataChannel,
        *,
        cfg: Config,
        metrics: Metrics,
        quota: QuotaSession,
        session_id: str,
        info: PeerInfo,
        close_session: Callable[[str], None],
        on_done: Callable[[], None] | None = None,
        early: trio.MemoryReceiveChannel[bytes | str] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.channel = channel
        self.cfg = cfg
        self.metrics = metrics
        self.quota = quota
        self.session_id = session_id
        self.info = info
        self._close_session = close_session
        self._on_done = on_done
        self._clock = clock
        self._l2_max = cfg.l2_max_message_bytes
        self._dc_max = cfg.webrtc_datachannel_max_message_bytes
        self._backend_url_for_log = sanitize_ws_url(cfg.l2_backend_ws_url.strip())
        self._redactor = Redactor(
            (info.credential.strip(), cfg.l2_backend_token.strip(), (info.aero_session or "").strip())
        )
        self._to_backend_send, self._to_backend_recv = trio.open_memory_channel[bytes](
            TO_BACKEND_QUEUE_MESSAGES
        )
        #: Set once by `_shutdown`; the pump then stops and the backend is closed.
        self.stopped = trio.Event()
        self.shutdown_reason: str | None = None
        self._dial_scope: trio.CancelScope | None = None
        self._stream: trio.abc.Stream | None = None  # the backend TCP (or TLS) stream, ours to close
        self._handshake_done = False
        self._reader_error: BaseException | None = None
        self._reader_exited = False
        self._ws_broken = False
        self._rate_limited_logged = False
        self._drained = trio.Event()
        # Lossless backpressure toward the backend: wait above `high`, resume at `low`.
        self._buffer_high = max(cfg.datachannel_send_queue_bytes, 1)
        channel.bufferedAmountLowThreshold = self._buffer_high // 4
        if early is not None:
            channel.remove_all_listeners("message")  # the intake's handler; ours replaces it
        channel.on("message", self._on_message)
        channel.on("close", self._on_channel_close)
        channel.on("bufferedamountlow", self._on_buffered_amount_low)
        if early is not None:
            # Messages that arrived before the channel was routed here, in order (all of this is
            # synchronous on the loop thread, so none can slip in between).
            while True:
                try:
                    self._on_message(early.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            early.close()

    # --- aiortc callbacks (sync, on the bridge loop: never block) ----------------------------------

    def _on_message(self, msg: bytes | str) -> None:
        """F-111 then F-157: the session cap, text ignored, the l2 cap, then the queue."""
        size = len(msg) if isinstance(msg, bytes) else len(msg.encode("utf-8", "surrogatepass"))
        if size > self._dc_max:
            self.metrics.inc(Event.WEBRTC_DATACHANNEL_L2_MESSAGE_TOO_LARGE)
            _log.warn(
                "l2 datachannel message too large",
                session_id=self.session_id,
                msg_bytes=size,
                max_bytes=self._dc_max,
            )
            self._close_session("l2_message_too_large")
            return
        if isinstance(msg, str) or self.stopped.is_set():
            return
        if size > self._l2_max:
            self.metrics.inc(Event.L2_BRIDGE_DROPPED_OVERSIZED_TOTAL)
            self._shutdown(
                _Shutdown(REASON_OVERSIZED, direction="from_client", msg_bytes=size, max_bytes=self._l2_max),
                close_channel=True,
            )
            return
        try:
            self._to_backend_send.send_nowait(msg)
        except trio.WouldBlock:
            # The backend stopped reading; blocking here would stall `udp` as well (F-200).
            self.metrics.inc(Event.L2_BRIDGE_DROPPED_BACKPRESSURE_TOTAL)
            self._shutdown(
                _Shutdown(
                    REASON_BACKPRESSURE,
                    direction="from_client",
                    msg_bytes=size,
                    err=f"backend is not reading: {TO_BACKEND_QUEUE_MESSAGES} messages queued",
                ),
                close_channel=True,
            )
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _on_buffered_amount_low(self) -> None:
        self._drained.set()

    def _on_channel_close(self) -> None:
        # F-159: a DataChannel close shuts the bridge down without closing the channel again.
        self._shutdown(_Shutdown(REASON_DATACHANNEL_CLOSED), close_channel=False)

    # --- the one shutdown path (F-159) ---------------------------------------------------------

    def _shutdown(self, info: _Shutdown | None, *, close_channel: bool) -> None:
        """Exactly once: log (unless `info` is None: a failed dial, F-156), stop the pump (the
        run task closes the backend) and close the channel if it did not cause this."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._drained.set()
        self._to_backend_send.close()
        if info is not None:
            self.shutdown_reason = info.reason
            self._log_shutdown(info)
        if self._dial_scope is not None:
            self._dial_scope.cancel()
        if close_channel and self.channel.readyState not in ("closing", "closed"):
            self.channel.close()

    def _log_shutdown(self, info: _Shutdown) -> None:
        fields: dict[str, object] = {"reason": info.reason, "session_id": self.session_id}
        if self._backend_url_for_log:
            fields["backend_ws_url"] = self._backend_url_for_log
        if info.direction:
            fields["direction"] = info.direction
        if info.msg_bytes > 0:
            fields["msg_bytes"] = info.msg_bytes
        if info.max_bytes > 0:
            fields["max_bytes"] = info.max_bytes
        if info.close_code is not None:
            fields["ws_close_code"] = info.close_code
            fields["ws_close_text"] = self._redact(info.close_text)
        if info.err:
            fields["err"] = self._redact(info.err)
        level = WARN if info.reason in (REASON_OVERSIZED, REASON_BACKPRESSURE) else INFO
        if level == WARN:
            _log.warn("l2_bridge_shutdown", **fields)
        else:
            _log.info("l2_bridge_shutdown", **fields)

    def _redact(self, text: str) -> str:
        return self._redactor.redact(text) if text else ""

    # --- the task ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Dial, pump until shutdown, close the backend. Returns when the bridge is done."""
        try:
            if self.channel.readyState == "closed":
                self._on_channel_close()
            elif not self.stopped.is_set():  # an early message may have ended it already
                await self._dial_and_pump()
        except Exception as err:
            # A bug here must cost the l2 channel only, never the session (F-221).
            _log.error("l2 bridge failed", session_id=self.session_id, err=self._redact(_err_text(err)))
            self._shutdown(None, close_channel=True)
        finally:
            if not self.stopped.is_set():
                # Cancelled with the session: the PeerConnection is closing the channel (F-159).
                self._shutdown(_Shutdown(REASON_DATACHANNEL_CLOSED), close_channel=True)
            if self._stream is not None:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                    await self._stream.aclose()
            if self._on_done is not None:
                self._on_done()

    async def _dial_and_pump(self) -> None:
        self.metrics.inc(Event.L2_BRIDGE_DIALS_TOTAL)
        started = trio.current_time()
        async with trio.open_nursery() as ws_nursery:  # hosts trio-websocket's reader task
            try:
                ws = await self._dial(ws_nursery)
            except L2DialError as err:
                if not self.stopped.is_set():  # not "cancelled because the bridge closed"
                    self._dial_failed(err, started)
                ws = None
            if ws is not None:
                _log.info(
                    "l2_bridge_backend_dial_succeeded",
                    session_id=self.session_id,
                    backend_ws_url=self._backend_url_for_log,
                    dial_duration_ms=_millis(trio.current_time() - started),
                )
                await self._pump(ws)
            ws_nursery.cancel_scope.cancel()

    def _dial_failed(self, err: L2DialError, started: float) -> None:
        """F-156: count, WARN, then shut down (no shutdown record) and close the channel."""
        self.metrics.inc(Event.L2_BRIDGE_DIAL_ERRORS_TOTAL)
        fields: dict[str, object] = {
            "session_id": self.session_id,
            "backend_ws_url": self._backend_url_for_log,
            "dial_duration_ms": _millis(trio.current_time() - started),
        }
        if err.status_code:
            fields["status_code"] = err.status_code
        fields["err"] = self._redact(err.message)
        _log.warn("l2_bridge_backend_dial_failed", **fields)
        self._shutdown(None, close_channel=True)

    async def _dial(self, ws_nursery: trio.Nursery) -> WebSocketConnection | None:
        """Open the backend WebSocket within DIAL_TIMEOUT; None when the bridge closed meanwhile."""
        info = self.info
        plan = build_dial_plan(
            self.cfg, credential=info.credential, client_origin=info.origin, aero_session=info.aero_session
        )
        try:
            parts = urllib.parse.urlsplit(plan.url)
            host = parts.hostname or ""
            secure = parts.scheme == "wss"
            port = parts.port or (443 if secure else 80)
        except ValueError as err:  # the URL may carry the credential now: not quoted here
            raise L2DialError(f"invalid backend URL: {err}") from None
        host_header = parts.netloc.rpartition("@")[2]
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        ws: WebSocketConnection | None = None
        with trio.CancelScope(deadline=trio.current_time() + DIAL_TIMEOUT) as scope:
            self._dial_scope = scope
            if self.stopped.is_set():
                scope.cancel()
            try:
                stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
                if secure:
                    stream = await trio.open_ssl_over_tcp_stream(
                        host, port, ssl_context=_tls_context(), https_compatible=True
                    )
                else:
                    stream = await trio.open_tcp_stream(host, port)
                self._stream = stream
                ws = await trio_websocket.wrap_client_stream(
                    cast(trio.Nursery, _ReaderHost(ws_nursery, self._on_reader_exit)),
                    stream,
                    host_header,
                    resource,
                    subprotocols=plan.subprotocols,
                    extra_headers=plan.headers(),
                    message_queue_size=1,
                    max_message_size=self._l2_max,
                    receive_buffer_size=_RECEIVE_BYTES,
                )
                self._handshake_done = True
            except OSError as err:  # refused, unreachable, DNS, TLS
                raise L2DialError(f"dial tcp {host_header}: {_err_text(err)}") from None
            except trio.BrokenResourceError as err:
                raise L2DialError(f"dial tcp {host_header}: {_err_text(err)}") from None
            finally:
                self._dial_scope = None
        if ws is None:
            if self.stopped.is_set():
                return None
            failure = self._reader_error
            if isinstance(failure, ConnectionRejected):
                raise L2DialError("websocket: bad handshake", status_code=failure.status_code)
            if failure is not None:
                raise L2DialError(f"websocket: bad handshake: {_err_text(failure)}")
            if self._reader_exited:
                raise L2DialError("websocket: bad handshake: connection closed")
            raise L2DialError(f"l2 backend dial timed out after {DIAL_TIMEOUT:g}s")
        if ws.subprotocol != SUBPROTOCOL:  # F-151: strict
            raise L2DialError(
                f"l2 backend did not negotiate required subprotocol {quote(SUBPROTOCOL)} "
                f"(got {quote(ws.subprotocol or '')})"
            )
        return ws

    def _on_reader_exit(self, error: BaseException | None) -> None:
        self._reader_exited = True
        self._reader_error = error
        if not self._handshake_done:
            if self._dial_scope is not None:
                self._dial_scope.cancel()
        elif error is not None:
            self._ws_broken = True
            self._shutdown(
                _Shutdown(REASON_BACKEND_CLOSED, err=f"ws_read: {_err_text(error)}"), close_channel=True
            )

    async def _pump(self, ws: WebSocketConnection) -> None:
        async with trio.open_nursery() as pump:
            pump.start_soon(self._to_backend, ws)
            pump.start_soon(self._to_client, ws)
            await self.stopped.wait()
            pump.cancel_scope.cancel()
        if not self._ws_broken and ws.closed is None:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(1000, self.shutdown_reason or None)

    async def _to_backend(self, ws: WebSocketConnection) -> None:
        """F-157: each queued client message as one binary message, 5 s write deadline each."""
        metrics = self.metrics
        async for msg in self._to_backend_recv:
            sent = False
            try:
                with trio.move_on_after(WRITE_TIMEOUT):
                    await ws.send_message(msg)
                    sent = True
            except ConnectionClosed as exc:
                self._shutdown(
                    _Shutdown(REASON_BACKEND_CLOSED, err=_closed_text("ws_write", exc)), close_channel=True
                )
                return
            finally:
                if not sent:  # cancelled or timed out mid-frame: no close frame can follow it
                    self._ws_broken = True
            if not sent:
                self._shutdown(
                    _Shutdown(
                        REASON_BACKEND_CLOSED, err=f"ws_write: write timed out after {WRITE_TIMEOUT:g}s"
                    ),
                    close_channel=True,
                )
                return
            metrics.inc(Event.L2_BRIDGE_MESSAGES_FROM_CLIENT_TOTAL)
            metrics.inc(Event.L2_BRIDGE_BYTES_FROM_CLIENT_TOTAL, len(msg))

    async def _to_client(self, ws: WebSocketConnection) -> None:
        """F-158: binary backend messages through the DC bps budget onto the channel."""
        metrics = self.metrics
        channel = self.channel
        quota = self.quota
        limiter = quota.limiter
        l2_max = self._l2_max
        while True:
            try:
                msg = await ws.get_message()
            except ConnectionClosed as exc:
                self._shutdown(self._read_closed(exc), close_channel=True)
                return
            if isinstance(msg, str):
                continue  # F-158: text is ignored
            size = len(msg)
            if size > l2_max:  # trio-websocket enforces this already; kept as the contract
                metrics.inc(Event.L2_BRIDGE_DROPPED_OVERSIZED_TOTAL)
                self._shutdown(
                    _Shutdown(
                        REASON_OVERSIZED,
                        direction="to_client",
                        msg_bytes=size,
                        max_bytes=l2_max,
                        err=f"l2 message too large: {size} bytes (max {l2_max})",
                    ),
                    close_channel=True,
                )
                return
            if quota.closed:
                continue  # F-147: the session is going away
            if not limiter.allow_to_client(size, self._clock()):
                self._rate_limited(size)
                continue
            if channel.readyState != "open":
                self._shutdown(
                    _Shutdown(REASON_DATACHANNEL_CLOSED, err=f"datachannel is {channel.readyState}"),
                    close_channel=False,
                )
                return
            try:
                channel.send(msg)
            except Exception as err:
                self._shutdown(_Shutdown(REASON_DATACHANNEL_CLOSED, err=_err_text(err)), close_channel=True)
                return
            metrics.inc(Event.L2_BRIDGE_MESSAGES_TO_CLIENT_TOTAL)
            metrics.inc(Event.L2_BRIDGE_BYTES_TO_CLIENT_TOTAL, size)
            if channel.bufferedAmount > self._buffer_high:
                self._drained = trio.Event()
                await self._drained.wait()  # set at the low-water mark, or by `_shutdown`

    def _rate_limited(self, size: int) -> None:
        """F-145, F-158, F-189: count, one WARN per bridge, and a violation (may hard-close)."""
        self.metrics.inc(Event.L2_BRIDGE_DROPPED_RATE_LIMITED_TOTAL)
        self.metrics.inc(Event.RATE_LIMITED)
        if not self._rate_limited_logged:
            self._rate_limited_logged = True
            _log.warn("l2_bridge_dropped_rate_limited", session_id=self.session_id, msg_bytes=size)
        self.quota.record_violation()

    def _read_closed(self, exc: ConnectionClosed) -> _Shutdown:
        reason = exc.reason
        if reason is None:
            return _Shutdown(REASON_BACKEND_CLOSED, err="ws_read: connection closed")
        code = int(reason.code)
        text = reason.reason or ""
        if code == 1009 and text == f"Exceeded maximum message size: {self._l2_max} bytes":
            # Our read limit (F-158): trio-websocket already sent 1009 to the backend.
            self.metrics.inc(Event.L2_BRIDGE_DROPPED_OVERSIZED_TOTAL)
            return _Shutdown(
                REASON_OVERSIZED,
                direction="to_client",
                max_bytes=self._l2_max,
                err=f"l2 message too large (max {self._l2_max})",
            )
        if code == 1006:
            text = "unexpected EOF"  # gorilla's wording for a TCP close without a close frame
        return _Shutdown(
            REASON_BACKEND_CLOSED,
            close_code=code,
            close_text=text,
            err="ws_read: " + ws_close_error_text(code, text),
        )


def _closed_text(op: str, exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return f"{op}: connection closed"
    return f"{op}: " + ws_close_error_text(int(reason.code), reason.reason or "")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the system CAs takes milliseconds: once per process, not per dial.
    return ssl.create_default_context()


def _err_text(err: BaseException) -> str:
    return str(err).strip() or type(err).__name__


def _millis(seconds: float) -> int:
    return math.floor(max(seconds, 0.0) * 1000)
