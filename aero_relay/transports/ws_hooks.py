"""What ASGI does not expose about a WebSocket, hooked into hypercorn's WebSocket stream.

The original's keepalive rules need things ASGI hides: every received frame including pings
and pongs pushes the idle deadline forward (F-079, F-089), the server sends its own pings, the
read limit changes per connection and per phase (F-065, F-085, F-093) and the application must
know when the peer went over it (to count `*_dropped_oversized`). Also, like the original
(F-064), no permessage-deflate is negotiated: compression costs CPU per datagram and widens
the attack surface for no gain on binary frames.

`install()` adds, for each WebSocket, a `WsControl` at `scope["extensions"]["aero.ws"]`. It
wraps a few methods of hypercorn 0.18's `WSStream`, `WebsocketBuffer` and `Handshake`, which
are private API: hypercorn is pinned exactly and `install()` fails loudly at startup if the
shapes it relies on are gone.

The datagram fast path (measured in benchmarks/README.md). Through ASGI, every message costs a
pass through wsproto's pure-Python frame decoder, a `BytesIO` buffer, a dict, a trip through
hypercorn's memory channel with a task switch, and the same again on the way out; that was most
of the relay's CPU per datagram. So, while the application has registered a *binary sink*:

* **Receive**: complete, unfragmented, masked binary frames (``FIN`` + opcode 2, no RSV bits,
  minimal length encoding, within the read limit) are parsed here, straight from the bytes
  hypercorn read, and handed to the sink synchronously: no ASGI message, no task switch. Any
  other frame (text, ping, pong, close, a fragment, an oversized or malformed frame) is handed to
  wsproto and hypercorn on its own, exactly as before, so their events, errors and close codes are
  unchanged; then the fast path resumes. Order is kept: frames bypass the ASGI queue only while
  the application has taken everything queued for it (else hypercorn's reader waits for that, as
  it waits when the queue is full), and only at frame boundaries where wsproto holds no state.
  A simple frame cut by the read is kept here until its rest arrives.
* **Send**: `send_binary_batch()` writes several binary frames with one write through
  hypercorn's own send path (same lock, same order as its pings and closes). Server frames are
  unmasked and unextended, so serialising them needs no wsproto state.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import trio

from aero_relay.transports.hypercorn_fixes import abort_connection, current_connection

__all__ = [
    "EXTENSION",
    "SINK_ERROR_MESSAGE",
    "BinarySink",
    "HooksUnavailableError",
    "WsControl",
    "install",
    "write_watchdog",
    "ws_control",
]

EXTENSION = "aero.ws"
# The ASGI message that wakes the application after its binary sink raised (WsControl.sink_error).
SINK_ERROR_MESSAGE = "aero.ws.sink_error"
_SINK_ERROR = SINK_ERROR_MESSAGE
_SUPPORTED_HYPERCORN = "0.18.0"


class HooksUnavailableError(RuntimeError):
    """hypercorn's internals changed; the WebSocket hooks cannot be installed."""


BinarySink = Callable[[bytes], None]

# Server-to-client binary frame headers (FIN + opcode 2, unmasked) by payload length class.
_pack_head16 = struct.Struct("!BBH").pack
_pack_head64 = struct.Struct("!BBQ").pack
_HEAD7 = [bytes((0x82, n)) for n in range(126)]


class WsControl:
    """Per-connection controls the application reaches through the ASGI scope."""

    __slots__ = (
        "_drained",
        "_held",
        "_sends",
        "_sink",
        "_stream",
        "_tcp",
        "closed",
        "last_activity",
        "queued",
        "send_started",
        "sink_error",
        "too_large",
        "too_large_event",
    )

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        # The TCP connection (hypercorn_fixes): a stuck write can only be ended by closing it.
        self._tcp = current_connection()
        # Writes in flight and when the oldest unfinished one started (None: nothing pending);
        # `write_watchdog` aborts the connection when one takes longer than the write deadline.
        self._sends = 0
        self.send_started: float | None = None
        self.last_activity = trio.current_time()
        # The peer sent a message over the read limit; hypercorn has already sent Close 1009.
        self.too_large = False
        self.too_large_event = trio.Event()
        self.closed = False
        self._sink: BinarySink | None = None
        # The start of a simple frame cut by a read, kept by the fast path (never given to wsproto)
        # until the rest arrives; at most one frame within the read limit.
        self._held = b""
        # Messages hypercorn has put on the ASGI receive queue that the application has not taken
        # yet (`taken()` counts them down). The fast path waits for 0: that keeps message order.
        self.queued = 0
        self._drained = trio.lowlevel.ParkingLot()
        # An exception the binary sink raised; WebSocketConn.receive re-raises it in the app.
        self.sink_error: BaseException | None = None

    def touch(self) -> None:
        self.last_activity = trio.current_time()

    def begin_send(self) -> None:
        self._sends += 1
        if self._sends == 1:
            self.send_started = trio.current_time()

    def end_send(self) -> None:
        self._sends -= 1
        # Progress was made: the deadline of any write still pending starts again now.
        self.send_started = trio.current_time() if self._sends else None

    def abort(self) -> None:
        """Close the TCP connection at once (wakes writes hypercorn shields from cancellation)."""
        if self._tcp is not None:
            abort_connection(self._tcp)

    def set_binary_sink(self, sink: BinarySink | None) -> None:
        """Deliver complete binary messages to ``sink`` (synchronously, from hypercorn's reader
        task) instead of the ASGI queue, whenever order allows (module docstring); None stops it.
        ``sink`` must not block. If it raises, the fast path stops and the exception is raised by
        the application's next ``WebSocketConn.receive()``, as if its own handler had raised."""
        self._sink = sink
        self._drained.unpark_all()  # a reader waiting for the queue to drain re-checks

    def taken(self) -> None:
        """The application took one message off the ASGI receive queue."""
        self.queued -= 1
        if not self.queued and self._drained:
            self._drained.unpark_all()

    async def _wait_drained(self) -> None:
        """Wait (in hypercorn's reader) until the application has taken every queued message, or
        the sink is removed."""
        while self.queued and self._sink is not None:
            await self._drained.park()

    async def send_binary_batch(self, frames: Sequence[bytes]) -> None:
        """Send each of ``frames`` as one binary message, all in one write. Dropped silently once
        the connection is closing or closed (like hypercorn drops sends after a close)."""
        stream = self._stream
        if stream.closed or stream.state is not _CONNECTED or _ws_state(stream) is not _WS_OPEN:
            return
        parts: list[bytes] = []
        append = parts.append
        head7 = _HEAD7
        for frame in frames:
            n = len(frame)
            if n < 126:
                append(head7[n])
            elif n < 0x10000:
                append(_pack_head16(0x82, 126, n))
            else:
                append(_pack_head64(0x82, 127, n))
            append(frame)
        self.begin_send()
        try:
            await stream.send(_Data(stream_id=stream.stream_id, data=b"".join(parts)))
        finally:
            self.end_send()

    def set_max_message_size(self, limit: int) -> None:
        self._stream.buffer.max_length = limit

    async def ping(self, payload: bytes = b"") -> bool:
        """Send a Ping frame; False when the connection is already gone."""
        from wsproto.events import Ping

        if self.closed or self._stream.closed:
            return False
        self.begin_send()
        try:
            await self._stream._send_wsproto_event(Ping(payload=payload))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        finally:
            self.end_send()
        return not self._stream.closed


async def write_watchdog(ctl: WsControl, deadline: float) -> None:
    """F-079/F-096: a write (data, ping or close) that has not completed within `deadline` seconds
    means the peer stopped reading; the connection is aborted. Runs until cancelled."""
    while True:
        await trio.sleep(deadline / 2)
        started = ctl.send_started
        if started is not None and trio.current_time() - started > deadline:
            ctl.abort()
            return


def ws_control(scope: dict[str, Any]) -> WsControl:
    ctl = scope.get("extensions", {}).get(EXTENSION)
    if not isinstance(ctl, WsControl):
        raise HooksUnavailableError("WebSocket hooks are not installed (call ws_hooks.install())")
    return ctl


# Filled in by install() from hypercorn and wsproto (imported lazily, like the hooks themselves).
_CONNECTED: Any = None
_WS_OPEN: Any = None
_Data: Any = None


def _ws_state(stream: Any) -> Any:
    """wsproto's connection state behind our `_ActivityConnection` wrapper."""
    return stream.connection._inner._state


# XOR tables for unmasking: _XOR[k] maps each byte b to b ^ k (bytes.translate does a lane in C).
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]


def _unmask(data: bytes, start: int, end: int, key: bytes | bytearray) -> bytes:
    """``data[start:end]`` XOR the 4-byte masking ``key`` (RFC 6455 5.3). Four strided translates
    measured fastest in pure Python (~2.5 us for 1.2 KB; big-int XOR takes ~4.5 us)."""
    buf = bytearray(data[start:end])
    xor = _XOR
    buf[0::4] = buf[0::4].translate(xor[key[0]])
    buf[1::4] = buf[1::4].translate(xor[key[1]])
    buf[2::4] = buf[2::4].translate(xor[key[2]])
    buf[3::4] = buf[3::4].translate(xor[key[3]])
    return bytes(buf)


def _fast_frames(data: bytes, max_length: int, sink: BinarySink) -> tuple[int, bool]:
    """Hand every leading complete, simple binary frame of ``data`` to ``sink``. Returns the bytes
    consumed and whether the rest is the start of another simple frame cut by the read (rather
    than a frame for wsproto). The checks are the ones wsproto makes, so nothing it would reject
    passes here."""
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] != 0x82:  # FIN, no RSV bits, opcode binary
            return pos, False
        if n - pos < 2:
            return pos, True
        length = data[pos + 1]
        if length < 0x80:  # a client frame must be masked
            return pos, False
        length &= 0x7F
        if length < 126:
            head = pos + 2
        elif length == 126:
            if n - pos < 4:
                return pos, True
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:  # non-minimal length: wsproto's protocol error
                return pos, False
            head = pos + 4
        else:  # 64-bit lengths are far beyond any datagram limit
            return pos, False
        if length > max_length:  # over the read limit: hypercorn closes with 1009
            return pos, False
        start = head + 4
        end = start + length
        if end > n:
            return pos, True
        payload = _unmask(data, start, end, data[head:start])
        pos = end
        sink(payload)
    return pos, False


def _has_payload_byte(partial: bytes) -> bool:
    """Whether a cut simple frame has its whole header and some payload: the point from which
    wsproto would have yielded a partial message event (and so touched the idle deadline)."""
    n = len(partial)
    return n > 6 and n > (6 if (partial[1] & 0x7F) < 126 else 8)


def _frame_size(data: bytes) -> int | None:
    """Total size of the (client, masked or not) frame starting ``data``, None if cut short."""
    n = len(data)
    if n < 2:
        return None
    length = data[1] & 0x7F
    head = 2
    if length == 126:
        if n < 4:
            return None
        length = (data[2] << 8) | data[3]
        head = 4
    elif length == 127:
        if n < 10:
            return None
        length = int.from_bytes(data[2:10], "big")
        head = 10
    if data[1] & 0x80:
        head += 4
    size = head + length
    return size if size <= n else None


def _open_for_fast_path(stream: Any) -> Any:
    """wsproto's FrameProtocol when the stream is open and plain (no extension, no pending event),
    else None: the fast path is off."""
    if stream.closed:
        return None
    conn = getattr(stream, "connection", None)
    if not isinstance(conn, _ActivityConnection):
        return None  # not accepted yet
    inner = conn._inner
    if inner._state is not _WS_OPEN or inner._events:
        return None
    proto = inner._proto
    return None if proto.extensions else proto


async def _fast_receive(
    stream: Any, ctl: WsControl, data: bytes, feed: Callable[[bytes], Awaitable[None]]
) -> bytes:
    """Run the fast path over ``data`` (module docstring). ``feed`` gives bytes to hypercorn's own
    handling (wsproto). Returns the bytes left for the normal path, b"" when none."""
    while data:
        sink = ctl._sink
        if sink is None:
            return data
        proto = _open_for_fast_path(stream)
        if proto is None:
            return data
        if ctl.queued:
            await ctl._wait_drained()  # order: the application first takes what is queued
            continue
        decoder = proto._frame_decoder
        if decoder.header is not None:
            # wsproto is inside a frame (one it was given whole or cut): let it finish just that.
            need = decoder.header.payload_len - decoder.payload_consumed - len(decoder.buffer.buffer)
            if need <= 0:
                return data  # not a state we know: wsproto takes everything
            await feed(data[:need])
            data = data[need:]
            if ctl.too_large:
                return _leave_unparsed(stream, data)
            continue
        if decoder.buffer.buffer:
            # A frame header cut by an earlier read; a decoder without a header holds nothing but
            # these bytes, so take them back and parse the frame whole.
            data = bytes(decoder.buffer.buffer) + data
            del decoder.buffer.buffer[:]
            decoder.buffer.bytes_used = 0
        if proto._message_decoder.opcode is None and stream.buffer.value is None:
            try:
                used, cut = _fast_frames(data, stream.buffer.max_length, sink)
            except Exception as exc:  # the sink's bug: surface it in the app (set_binary_sink)
                ctl._sink = None
                ctl.sink_error = exc
                await stream.app_put({"type": _SINK_ERROR})
                return b""
            if cut:
                ctl._held = data[used:]
                if used or _has_payload_byte(ctl._held):
                    ctl.touch()  # F-089, as _ActivityConnection would have for these frames
                return b""
            if used:
                ctl.touch()  # F-089
                data = data[used:]
                if not data:
                    return b""
        # The next frame is one for wsproto: hand it over alone, or all the rest if it is cut.
        size = _frame_size(data)
        if size is None:
            return data
        await feed(data[:size])
        data = data[size:]
        if ctl.too_large:
            return _leave_unparsed(stream, data)
    return b""


def _leave_unparsed(stream: Any, rest: bytes) -> bytes:
    """After a frame over the read limit hypercorn stops handling events (it has sent Close 1009)
    and wsproto keeps the rest of that read unparsed until the next one: do the same."""
    if rest:
        stream.connection._inner.receive_data(rest)
    return b""


class _ActivityConnection:
    """Wraps wsproto's Connection so every event from the peer touches the control."""

    __slots__ = ("_ctl", "_inner")

    def __init__(self, inner: Any, ctl: WsControl) -> None:
        self._inner = inner
        self._ctl = ctl

    def events(self) -> Iterator[Any]:
        for event in self._inner.events():
            self._ctl.touch()
            yield event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ScopeTaskGroup:
    """Puts the control into the scope before the application task can see it."""

    __slots__ = ("_ctl", "_inner")

    def __init__(self, inner: Any, ctl: WsControl) -> None:
        self._inner = inner
        self._ctl = ctl

    async def spawn_app(
        self, app: Any, config: Any, scope: Any, send: Any
    ) -> Callable[[Any], Awaitable[None]]:
        ctl = self._ctl
        scope.setdefault("extensions", {})[EXTENSION] = ctl
        put: Callable[[Any], Awaitable[None]] = await self._inner.spawn_app(app, config, scope, send)

        async def counted_put(message: Any) -> None:
            ctl.queued += 1
            try:
                await put(message)
            except BaseException:
                ctl.queued -= 1  # never queued
                raise

        return counted_put

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_installed = False


def install() -> None:
    """Install the hooks (idempotent). Raises HooksUnavailableError on an unsupported hypercorn."""
    global _installed
    if _installed:
        return
    global _CONNECTED, _WS_OPEN, _Data
    import hypercorn
    import hypercorn.protocol.ws_stream as ws_stream
    from hypercorn.protocol.events import Body, Data, Request, StreamClosed
    from wsproto.connection import ConnectionState

    version = getattr(hypercorn, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("hypercorn")
    required = {
        "WSStream": ("handle", "_accept", "_send_wsproto_event"),
        "WebsocketBuffer": ("extend",),
        "Handshake": ("__init__",),
    }
    for cls_name, attrs in required.items():
        cls = getattr(ws_stream, cls_name, None)
        if cls is None or any(not hasattr(cls, a) for a in attrs):
            raise HooksUnavailableError(f"hypercorn {version}: {cls_name} lacks {attrs}")
    if list(inspect.signature(ws_stream.Handshake.__init__).parameters) != [
        "self",
        "headers",
        "http_version",
    ]:
        raise HooksUnavailableError(f"hypercorn {version}: Handshake.__init__ signature changed")
    if version != _SUPPORTED_HYPERCORN:
        raise HooksUnavailableError(
            f"hypercorn {version} is not supported (pinned {_SUPPORTED_HYPERCORN}); the WebSocket hooks "
            "touch its internals"
        )

    _CONNECTED = ws_stream.ASGIWebsocketState.CONNECTED
    _WS_OPEN = ConnectionState.OPEN
    _Data = Data
    wsstream = ws_stream.WSStream
    orig_handle = wsstream.handle
    orig_accept = wsstream._accept
    orig_extend = ws_stream.WebsocketBuffer.extend
    orig_handshake_init = ws_stream.Handshake.__init__
    too_large_error = ws_stream.FrameTooLargeError

    async def handle(self: Any, event: Any) -> None:
        ctl: WsControl | None = getattr(self, "_aero_ctl", None)
        if ctl is not None and isinstance(event, (Data, Body)):
            held = ctl._held
            data = held + event.data if held else event.data
            ctl._held = b""
            if ctl._sink is not None:
                kind = type(event)
                stream_id = event.stream_id

                async def feed(chunk: bytes) -> None:
                    await orig_handle(self, kind(stream_id=stream_id, data=chunk))

                data = await _fast_receive(self, ctl, data, feed)
                if not data:
                    return
            if data is not event.data:
                event = type(event)(stream_id=event.stream_id, data=data)
        if isinstance(event, Request) and ctl is None:
            ctl = WsControl(self)
            self._aero_ctl = ctl
            self.buffer._aero_ctl = ctl
            self.task_group = _ScopeTaskGroup(self.task_group, ctl)
        elif isinstance(event, StreamClosed) and ctl is not None:
            ctl.closed = True
        await orig_handle(self, event)

    async def accept(self: Any, message: Any) -> None:
        await orig_accept(self, message)
        ctl = getattr(self, "_aero_ctl", None)
        if ctl is not None:
            self.connection = _ActivityConnection(self.connection, ctl)

    def extend(self: Any, event: Any) -> None:
        try:
            orig_extend(self, event)
        except too_large_error:
            # hypercorn sends Close 1009 but keeps the partial message; a later text frame would
            # then be written into that BytesIO (TypeError, which escaped and ended the server).
            self.clear()
            ctl = getattr(self, "_aero_ctl", None)
            if ctl is not None:
                ctl.too_large = True
                ctl.too_large_event.set()
            raise

    def handshake_init(self: Any, headers: Any, http_version: str) -> None:
        orig_handshake_init(self, headers, http_version)
        self.extensions = None  # never negotiate permessage-deflate (F-064)

    wsstream.handle = handle  # type: ignore[method-assign]
    wsstream._accept = accept  # type: ignore[method-assign]
    ws_stream.WebsocketBuffer.extend = extend  # type: ignore[method-assign]
    ws_stream.Handshake.__init__ = handshake_init  # type: ignore[method-assign]
    _installed = True
