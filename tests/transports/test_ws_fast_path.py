"""The `/udp` binary fast path of `ws_hooks` (frames straight to a sink, batched sends).

The main property is differential: a hooked hypercorn `WSStream` fed the same bytes, cut at the
same places, behaves the same with a binary sink (fast path) as without one (plain wsproto and
hypercorn): the same messages in the same order, the same bytes sent back (pongs, closes) and the
same read-limit outcome (F-093).
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.protocol.events import Data, Request, StreamClosed
from hypercorn.protocol.ws_stream import WSStream
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage

from aero_relay.transports import ws_hooks
from aero_relay.transports.ws_hooks import WsControl, ws_control

LIMIT = 300  # read limit of the harness streams (F-093 analogue)


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True, long16: bool = False
) -> bytes:
    """One client frame. ``long16`` forces the 2-byte length form (non-minimal for < 126)."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126 and not long16:
        head += bytes([mask_bit | n])
    elif n < 0x10000:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Harness:
    """A hooked hypercorn WSStream with a recording application side."""

    def __init__(self, *, take: bool = True) -> None:
        ws_hooks.install()
        self.log: list[tuple[str, Any]] = []
        self.sent: list[tuple[str, bytes]] = []
        self.take = take
        self.scope: dict[str, Any] = {}
        self.stream = WSStream(
            None,
            HyperConfig(),
            None,
            _TaskGroup(self),
            False,
            ("127.0.0.1", 1),
            ("127.0.0.1", 2),
            self._send,
            1,
        )
        self.ctl: WsControl
        self.gone = False

    async def _send(self, event: Any) -> None:
        self.sent.append((type(event).__name__, bytes(getattr(event, "data", b""))))
        if isinstance(event, StreamClosed) and not self.gone:
            # What hypercorn's H11Protocol does: close the stream, then drop further reads.
            self.gone = True
            await self.stream.handle(StreamClosed(stream_id=1))

    async def put(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.receive":
            if message.get("bytes") is not None:
                self.log.append(("bin", bytes(message["bytes"])))
            else:
                self.log.append(("text", message["text"]))
        else:
            self.log.append((message["type"], message.get("code")))
        if self.take and "aero.ws" in self.scope.get("extensions", {}):
            ws_control(self.scope).taken()

    async def start(self, *, sink: bool) -> None:
        headers = [
            (b"host", b"relay"),
            (b"connection", b"Upgrade"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"sec-websocket-version", b"13"),
        ]
        await self.stream.handle(
            Request(
                stream_id=1, headers=headers, http_version="1.1", method="GET", raw_path=b"/udp", state={}
            )
        )
        self.ctl = ws_control(self.scope)
        await self.stream.app_send({"type": "websocket.accept"})
        self.ctl.set_max_message_size(LIMIT)
        if sink:
            self.ctl.set_binary_sink(lambda payload: self.log.append(("bin", payload)))

    async def feed(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            await self.stream.handle(Data(stream_id=1, data=data))
        except Exception as exc:  # hypercorn's own failures must be the same too
            self.log.append(("raised", type(exc).__name__))
            self.gone = True


class _TaskGroup:
    def __init__(self, harness: Harness) -> None:
        self.h = harness

    async def spawn_app(
        self, app: Any, config: Any, scope: dict[str, Any], send: Any
    ) -> Callable[[dict[str, Any]], Awaitable[None]]:
        self.h.scope = scope
        return self.h.put

    def spawn(self, func: Any, *args: Any) -> None:
        raise AssertionError("no background tasks expected")


async def run_both(chunks: list[bytes]) -> tuple[Harness, Harness]:
    plain, fast = Harness(), Harness()
    await plain.start(sink=False)
    await fast.start(sink=True)
    for chunk in chunks:
        await plain.feed(chunk)
        await fast.feed(chunk)
    return plain, fast


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


payloads = st.binary(max_size=LIMIT)
frames = st.one_of(
    payloads.map(lambda p: client_frame(2, p)),  # the fast path's frame
    payloads.map(lambda p: client_frame(2, p)),
    st.binary(min_size=LIMIT + 1, max_size=LIMIT + 40).map(lambda p: client_frame(2, p)),  # over the limit
    st.text(max_size=20).map(lambda t: client_frame(1, t.encode())),
    st.binary(max_size=20).map(lambda p: client_frame(9, p)),  # ping
    st.binary(max_size=20).map(lambda p: client_frame(10, p)),  # pong
    st.tuples(payloads, payloads).map(  # a fragmented binary message
        lambda ps: client_frame(2, ps[0][:100], fin=False) + client_frame(0, ps[1][:100])
    ),
    st.binary(max_size=125).map(lambda p: client_frame(2, p, long16=True)),  # non-minimal length
    st.binary(max_size=20).map(lambda p: client_frame(2, p, masked=False)),  # unmasked: protocol error
    st.binary(max_size=20).map(lambda p: client_frame(2, p, rsv=0x40)),  # RSV1 without an extension
    st.just(client_frame(8, struct.pack("!H", 1000))),  # close
)


@settings(max_examples=600, deadline=None)
@given(st.lists(frames, max_size=12), st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_fast_path_behaves_like_wsproto(stream_frames: list[bytes], points: list[int]) -> None:
    data = b"".join(stream_frames)
    plain, fast = trio.run(run_both, cut(data, points))
    assert fast.log == plain.log
    assert fast.sent == plain.sent
    assert fast.ctl.too_large == plain.ctl.too_large


async def test_simple_frames_skip_the_asgi_queue() -> None:
    h = Harness()
    await h.start(sink=True)
    h.log.clear()
    sizes = [0, 1, 125, 126, 300]
    await h.feed(b"".join(client_frame(2, bytes([n % 256]) * n) for n in sizes))
    assert h.log == [("bin", bytes([n % 256]) * n) for n in sizes]
    assert h.ctl.queued == 0


async def test_a_frame_cut_anywhere_arrives_whole() -> None:
    h = Harness()
    await h.start(sink=True)
    h.log.clear()
    frame = client_frame(2, b"x" * 200)
    for i in range(len(frame)):
        await h.feed(frame[i : i + 1])
    assert h.log == [("bin", b"x" * 200)]


async def test_received_frames_push_the_idle_deadline() -> None:
    """F-089: the fast path touches the control like wsproto events did."""
    h = Harness()
    await h.start(sink=True)
    h.ctl.last_activity = -1.0
    before = trio.current_time()
    await h.feed(client_frame(2, b"abc"))
    assert h.ctl.last_activity >= before


async def test_frames_behind_an_untaken_message_wait_for_it() -> None:
    """Order: a frame may not overtake a message the application has not taken yet."""
    h = Harness(take=False)
    await h.start(sink=True)
    h.ctl.taken()  # the application took websocket.connect
    h.log.clear()
    data = client_frame(2, b"one") + client_frame(1, b"hello") + client_frame(2, b"two")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.feed, data)
        await trio.testing.wait_all_tasks_blocked()
        assert h.log == [("bin", b"one"), ("text", "hello")]
        h.ctl.taken()  # the application takes the text message
    assert h.log == [("bin", b"one"), ("text", "hello"), ("bin", b"two")]


async def test_removing_the_sink_releases_a_waiting_reader() -> None:
    h = Harness(take=False)
    await h.start(sink=True)
    h.ctl.taken()
    h.log.clear()
    data = client_frame(1, b"hello") + client_frame(2, b"two")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.feed, data)
        await trio.testing.wait_all_tasks_blocked()
        h.ctl.set_binary_sink(None)  # e.g. the session ended
    assert h.log == [("text", "hello"), ("bin", b"two")]  # the frame went the ASGI way
    assert h.ctl.queued == 2


async def test_a_sink_error_is_raised_in_the_application() -> None:
    h = Harness()
    await h.start(sink=True)

    def broken(payload: bytes) -> None:
        raise RuntimeError("bug")

    h.ctl.set_binary_sink(broken)
    h.log.clear()
    await h.feed(client_frame(2, b"x"))
    assert h.log == [(ws_hooks.SINK_ERROR_MESSAGE, None)]
    assert isinstance(h.ctl.sink_error, RuntimeError)


async def test_send_binary_batch_writes_frames_in_one_write() -> None:
    h = Harness()
    await h.start(sink=True)
    h.sent.clear()
    frames = [b"", b"a" * 125, b"b" * 126, b"c" * 0xFFFF, b"d" * 0x10000]
    await h.ctl.send_binary_batch(frames)
    assert [kind for kind, _ in h.sent] == ["Data"]
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(h.sent[0][1])
    got = [bytes(e.data) for e in client.events() if isinstance(e, BytesMessage)]
    assert got == frames


async def test_send_binary_batch_is_dropped_once_closing() -> None:
    h = Harness()
    await h.start(sink=True)
    await h.stream.app_send({"type": "websocket.close", "code": 1000, "reason": ""})
    h.sent.clear()
    await h.ctl.send_binary_batch([b"late"])
    assert h.sent == []
