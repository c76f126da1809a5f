"""A small Redis client (RESP2) on Trio sockets, for the shared session registry.

Why our own client rather than redis-py through `trio.to_thread`: every registry call sits on the
session set-up path, and a thread hop costs more than the loopback round trip itself (see
`RedisSessionRegistry`'s docstring for the measurement). The client is deliberately small:

* `RespParser` is sans-IO (bytes in, replies out); `encode_command` is the other direction.
* `RedisClient` keeps a bounded pool of connections. A connection serves one caller at a time,
  and a caller may pipeline several commands in one round trip (`pipeline`, `eval_many`).
* Every operation is bounded: connecting by `connect_timeout`, the command by `command_timeout`.
  A timeout, a cancellation or a broken socket discards that connection (its protocol state is
  unknown) and raises `RedisUnavailableError`; the pool never hands out a half-used connection.
* Scripts go as EVALSHA and fall back to EVAL on NOSCRIPT (a restarted or flushed server).

Replies: simple and bulk strings are `bytes`, integers `int`, nil `None`, arrays `list`, and an
error reply is a `RedisReplyError` value (raised by `execute`, returned in place by `pipeline`).
"""

from __future__ import annotations

import hashlib
import select
import urllib.parse
from collections.abc import Sequence
from typing import TypeAlias

import attrs
import trio

__all__ = [
    "RedisAddress",
    "RedisClient",
    "RedisError",
    "RedisReplyError",
    "RedisUnavailableError",
    "Reply",
    "RespParser",
    "RespProtocolError",
    "Script",
    "encode_command",
    "parse_redis_url",
    "redact_redis_url",
]

Reply: TypeAlias = "bytes | int | RedisReplyError | list[Reply] | None"
Arg: TypeAlias = bytes | str | int | float

REDACTED = "<redacted>"
DEFAULT_PORT = 6379


class RedisError(Exception):
    """Base class of the client's errors."""


class RedisUnavailableError(RedisError):
    """The server could not be reached or did not answer in time (the caller may retry later).

    `maybe_sent`: the command may have reached the server (and a script may have run) before
    the failure; False when no byte of it was written (connect failed, pool exhausted).
    """

    def __init__(self, message: str, *, maybe_sent: bool = True) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class RespProtocolError(RedisUnavailableError):
    """The byte stream is not RESP2: the connection is unusable."""


class RedisReplyError(RedisError):
    """An error reply (`-PREFIX message`). `prefix` is the first word, e.g. "NOSCRIPT"."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.prefix = message.split(" ", 1)[0]


# --- URLs ----------------------------------------------------------------------------------------


@attrs.frozen
class RedisAddress:
    """Where and how to connect: TCP `host:port` or a Unix socket `unix_path`, then AUTH and SELECT."""

    host: str = ""
    port: int = DEFAULT_PORT
    unix_path: str = ""
    db: int = 0
    username: str = ""
    password: str = attrs.field(default="", repr=False)

    def display(self) -> str:
        """The address as a URL with the password replaced, for logs and `check-config`."""
        auth = ""
        if self.password:
            auth = f"{self.username}:{REDACTED}@" if self.username else f":{REDACTED}@"
        if self.unix_path:
            return f"unix://{auth}{self.unix_path}" + (f"?db={self.db}" if self.db else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{auth}{host}:{self.port}/{self.db}"


def redact_redis_url(url: str) -> str:
    """`url` with any userinfo replaced, even when the URL is malformed (it may hold a password).

    A lone userinfo without a colon is redacted too: some clients read `redis://secret@host` as a
    password. Everything up to the last "@" counts as userinfo, so an unescaped "/" or "@" inside
    a password cannot push part of it out of the redacted span.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, tail = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:{REDACTED}" if colon and user and "/" not in user else REDACTED
    return f"{scheme}://{shown}@{tail}"


def _db_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ValueError(f"invalid database number {text!r} (expected a non-negative integer)")
    return int(text)


def parse_redis_url(url: str) -> RedisAddress:
    """`redis://[[user]:password@]host[:port][/db]` or `unix://[[user]:password@]/path[?db=N]`.

    Raises ValueError with a reason that never contains the password (the caller quotes the URL
    through `redact_redis_url`). The password and username are percent-decoded.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("malformed URL or port (port must be 1-65535)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "unix"):
        raise ValueError("unsupported scheme (expected redis:// or unix://)")
    if parts.fragment:
        raise ValueError("unexpected #fragment")
    username = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    if username and not password:
        raise ValueError("a username needs a password (user:password@)")
    if scheme == "redis":
        host = parts.hostname or ""
        if not host:
            raise ValueError("missing host")
        if port == 0:
            raise ValueError("port must be 1-65535")
        if parts.query:
            raise ValueError("unexpected ?query (put the database number in the path: /db)")
        path = parts.path
        db = 0 if path in ("", "/") else _db_number(path[1:])
        return RedisAddress(host=host, port=port or DEFAULT_PORT, db=db, username=username, password=password)
    if parts.hostname or port is not None:
        raise ValueError("unix:// takes a path, not a host (unix:///path/to/redis.sock)")
    if not parts.path.startswith("/") or parts.path == "/":
        raise ValueError("missing socket path (unix:///path/to/redis.sock)")
    db = 0
    if parts.query:
        name, eq, value = parts.query.partition("=")
        if name != "db" or not eq or "&" in value:
            raise ValueError("the only query parameter is ?db=N")
        db = _db_number(value)
    return RedisAddress(unix_path=parts.path, db=db, username=username, password=password)


# --- RESP2 codec (sans-IO) -----------------------------------------------------------------------


def _arg_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):
        raise TypeError("bool is not a Redis argument")
    if isinstance(arg, int):
        return str(arg).encode()
    return repr(arg).encode()  # float: repr round-trips


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command as a RESP2 array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _arg_bytes(arg)
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


class _NeedMore:
    """Sentinel: the buffer does not hold a whole reply yet."""


NEED_MORE = _NeedMore()
_MAX_BULK = 512 * 1024 * 1024


class RespParser:
    """Incremental RESP2 reply parser: `feed()` bytes, then `next_reply()` until NEED_MORE."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_reply(self) -> Reply | _NeedMore:
        """The next complete reply, or NEED_MORE (nothing is consumed then)."""
        result = self._parse(self._pos)
        if result is None:
            return NEED_MORE
        reply, self._pos = result
        return reply

    def _line(self, pos: int) -> tuple[bytes, int] | None:
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            return None
        return bytes(self._buf[pos:end]), end + 2

    def _parse(self, pos: int) -> tuple[Reply, int] | None:
        line = self._line(pos)
        if line is None:
            return None
        head, pos = line
        if not head:
            raise RespProtocolError("empty reply line")
        kind, body = head[:1], head[1:]
        if kind == b"+":
            return body, pos
        if kind == b"-":
            return RedisReplyError(body.decode("utf-8", "replace")), pos
        try:
            number = int(body)
        except ValueError:
            raise RespProtocolError(f"bad length or integer {body[:32]!r}") from None
        if kind == b":":
            return number, pos
        if kind == b"$":
            if number < 0:
                return None if number == -1 else _bad_length(number), pos
            if number > _MAX_BULK:
                raise RespProtocolError("bulk string too long")
            end = pos + number
            if len(self._buf) < end + 2:
                return None
            if self._buf[end : end + 2] != b"\r\n":
                raise RespProtocolError("bulk string not terminated by CRLF")
            return bytes(self._buf[pos:end]), end + 2
        if kind == b"*":
            if number < 0:
                return None if number == -1 else _bad_length(number), pos
            items: list[Reply] = []
            for _ in range(number):
                item = self._parse(pos)
                if item is None:
                    return None
                value, pos = item
                items.append(value)
            return items, pos
        raise RespProtocolError(f"unknown reply type {kind!r}")


def _bad_length(number: int) -> Reply:
    raise RespProtocolError(f"negative length {number}")


# --- scripts -------------------------------------------------------------------------------------


@attrs.frozen
class Script:
    """A Lua script and its SHA1 (what EVALSHA names)."""

    source: str
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


# --- connections and the pool --------------------------------------------------------------------


class _Connection:
    __slots__ = ("parser", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = RespParser()

    def looks_closed(self) -> bool:
        """An idle connection has nothing to read; readable means EOF, a reset or stray bytes.

        This is what catches a restarted server before a command is sent on a dead socket, so
        no command ever needs a retry (a retry could run a script twice).
        """
        # poll, not select: a busy relay has far more than FD_SETSIZE (1024) descriptors.
        poller = select.poll()
        try:
            poller.register(self.stream.socket.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    async def round_trip(self, payload: bytes, count: int) -> list[Reply]:
        await self.stream.send_all(payload)
        replies: list[Reply] = []
        parser = self.parser
        while len(replies) < count:
            reply = parser.next_reply()
            if reply is NEED_MORE:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise RedisUnavailableError("connection closed by the server")
                parser.feed(data)
                continue
            replies.append(reply)  # type: ignore[arg-type]
        return replies

    def close(self) -> None:
        # SocketStream.aclose only closes the socket; do it synchronously so a cancelled or
        # shielded caller never waits here.
        self.stream.socket.close()


class RedisClient:
    """A bounded pool of RESP2 connections to one server."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        max_connections: int = 16,
        connect_timeout: float = 1.0,
        command_timeout: float = 1.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.address = address
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._slots = trio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._loaded_shas: set[str] = set()

    async def _connect(self) -> _Connection:
        addr = self.address
        with trio.move_on_after(self.connect_timeout) as scope:
            try:
                if addr.unix_path:
                    stream = await trio.open_unix_socket(addr.unix_path)
                else:
                    stream = await trio.open_tcp_stream(addr.host, addr.port)
            except OSError as err:
                raise RedisUnavailableError(
                    f"connect to {addr.display()} failed: {err.strerror or err}", maybe_sent=False
                ) from None
        if scope.cancelled_caught:
            raise RedisUnavailableError(f"connect to {addr.display()} timed out", maybe_sent=False)
        assert isinstance(stream, trio.SocketStream)
        conn = _Connection(stream)
        handshake: list[list[Arg]] = []
        if addr.password:
            handshake.append(
                ["AUTH", addr.username, addr.password] if addr.username else ["AUTH", addr.password]
            )
        if addr.db:
            handshake.append(["SELECT", addr.db])
        if handshake:
            try:
                replies = await self._on(conn, handshake)
            except RedisUnavailableError as err:
                conn.close()
                raise RedisUnavailableError(f"redis handshake failed: {err}", maybe_sent=False) from None
            except BaseException:
                conn.close()
                raise
            for reply in replies:
                if isinstance(reply, RedisReplyError):
                    conn.close()
                    # The server's text never echoes the password (WRONGPASS, NOAUTH, ERR DB index...).
                    raise RedisUnavailableError(f"redis handshake failed: {reply.message}", maybe_sent=False)
        return conn

    async def _on(self, conn: _Connection, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        payload = b"".join(encode_command(c) for c in commands)
        with trio.move_on_after(self.command_timeout) as scope:
            try:
                return await conn.round_trip(payload, len(commands))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as err:
                raise RedisUnavailableError(f"redis connection failed: {err}") from None
        assert scope.cancelled_caught
        raise RedisUnavailableError(f"redis command timed out after {self.command_timeout:g}s")

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        """Send `commands` in one write and return their replies (error replies in place)."""
        if not commands:
            return []
        with trio.move_on_after(self.connect_timeout + self.command_timeout) as wait_scope:
            await self._slots.acquire()
        if wait_scope.cancelled_caught:
            raise RedisUnavailableError("redis connection pool exhausted", maybe_sent=False)
        try:
            conn = None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.looks_closed():
                    candidate.close()
                    continue
                conn = candidate
                break
            if conn is None:
                conn = await self._connect()
            try:
                replies = await self._on(conn, commands)
            except RedisUnavailableError:
                conn.close()
                self._drop_idle()  # a dead or stuck server: every pooled socket is suspect
                raise
            except BaseException:
                conn.close()  # cancelled mid-command: this socket's protocol state is unknown
                raise
            self._idle.append(conn)
            return replies
        finally:
            self._slots.release()

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def execute(self, *args: Arg) -> Reply:
        """One command; an error reply is raised as RedisReplyError."""
        (reply,) = await self.pipeline([args])
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def eval_many(
        self, script: Script, calls: Sequence[tuple[Sequence[Arg], Sequence[Arg]]]
    ) -> list[Reply]:
        """Run `script` once per (keys, args) in one round trip; error replies are returned in place.

        EVALSHA first; the calls that get NOSCRIPT are re-sent as EVAL (which also caches the
        script on the server for next time).
        """

        def command(verb: str, body: str, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
            return [verb, body, len(keys), *keys, *args]

        if script.sha in self._loaded_shas:
            replies = await self.pipeline([command("EVALSHA", script.sha, k, a) for k, a in calls])
            retry = [
                i for i, r in enumerate(replies) if isinstance(r, RedisReplyError) and r.prefix == "NOSCRIPT"
            ]
        else:
            replies = [None] * len(calls)
            retry = list(range(len(calls)))
        if retry:
            again = await self.pipeline([command("EVAL", script.source, *calls[i]) for i in retry])
            for i, reply in zip(retry, again, strict=True):
                replies[i] = reply
            self._loaded_shas.add(script.sha)
        return replies

    async def eval(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Reply:
        """One script call; an error reply is raised as RedisReplyError."""
        (reply,) = await self.eval_many(script, [(keys, args)])
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def close(self) -> None:
        """Close the idle connections (busy ones close when their caller finishes or fails)."""
        self._drop_idle()
