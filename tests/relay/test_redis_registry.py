"""The Redis session registry (scale-out): F-045, F-053, F-140, F-236 across processes, on a real Redis.

Two `RedisSessionRegistry` instances on one server stand for two relay processes. Lease TTLs are
short (300 ms); every wait for an effect is a condition polled under a deadline, and time bounds
are checked on Redis' own clock where scheduling noise could blur them. The last test runs two
real `aero-relay serve` processes. Everything that needs redis-server skips when it is missing.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from aero_relay.config import ConfigError, effective_items, load
from aero_relay.observability.metrics import Event, Metrics
from aero_relay.relay.manager import (
    InMemorySessionRegistry,
    RegistryUnavailableError,
    SessionAlreadyActiveError,
    SessionLease,
    SessionRegistryError,
    TooManySessionsError,
)
from aero_relay.relay.redis_registry import (
    DEFAULT_PREFIX,
    HEARTBEAT_FRACTION,
    RedisSessionRegistry,
    registry_from_config,
)
from aero_relay.relay.resp import (
    NEED_MORE,
    RedisAddress,
    RedisClient,
    RedisReplyError,
    Reply,
    RespParser,
    RespProtocolError,
    encode_command,
    parse_redis_url,
    redact_redis_url,
)
from tests.helpers import mint_jwt
from tests.relay.redis_server import RedisServer
from tests.test_cli import AERO_RELAY, Relay, clean_env
from tests.wsclient import connect

TTL = 0.3  # lease TTL of the in-process tests
SLACK = 2.0  # scheduling slack on a loaded machine; bounds are asserted on Redis' own clock
EXPIRY_KEY = f"{DEFAULT_PREFIX}:expiry"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


MakeRegistry = Callable[..., RedisSessionRegistry]


@pytest.fixture
def make_registry(redis: RedisServer) -> MakeRegistry:
    """A registry ("one relay process") on the test's Redis; not running until `running()`."""

    def make(max_sessions: int = 0, **kw: object) -> RedisSessionRegistry:
        kw.setdefault("lease_ttl", TTL)
        kw.setdefault("timeout", 1.0)  # generous: the machine may be loaded; timeouts have own tests
        return RedisSessionRegistry(parse_redis_url(redis.url), max_sessions, **kw)  # type: ignore[arg-type]

    return make


@asynccontextmanager
async def running(*registries: RedisSessionRegistry) -> AsyncIterator[trio.CancelScope]:
    """Run the registries' background tasks; cancelling the yielded scope is a crash (no release)."""
    async with trio.open_nursery() as nursery:
        for reg in registries:
            await nursery.start(reg.run)
        yield nursery.cancel_scope
        nursery.cancel_scope.cancel()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = SLACK) -> float:
    """Poll `check` until it is true; returns the time it took (fails after `timeout`)."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.01)
    return trio.current_time() - start


async def sid_is_free(reg: RedisSessionRegistry, sid: str) -> bool:
    try:
        lease = await reg.acquire(sid, kind="udp_ws")
    except SessionAlreadyActiveError:
        return False
    await reg.release(lease)
    return True


async def raw(redis: RedisServer, *args: str | int) -> Reply:
    client = RedisClient(parse_redis_url(redis.url))
    try:
        return await client.execute(*args)
    finally:
        client.close()


def _numbers(reply: Reply) -> list[int]:
    assert isinstance(reply, list) and all(isinstance(x, bytes) for x in reply), reply
    return [int(float(x)) for x in reply]  # type: ignore[arg-type]


async def server_ms(redis: RedisServer) -> int:
    sec, usec = _numbers(await raw(redis, "TIME"))
    return sec * 1000 + usec // 1000


async def expiry_ms(redis: RedisServer, lease: SessionLease) -> int:
    reply = await raw(redis, "ZSCORE", EXPIRY_KEY, lease.session_id)
    assert isinstance(reply, bytes), reply
    return int(float(reply))


# --- RESP codec and URLs (no server) ---------------------------------------------------------------


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode_command(["SET", "k", 12, b"\x00\r\n"]) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n\x00\r\n\r\n"
    )


def test_parser_reads_every_reply_type() -> None:
    parser = RespParser()
    parser.feed(b"+OK\r\n-NOSCRIPT No matching script\r\n:-42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n:1\r\n*-1\r\n")
    assert parser.next_reply() == b"OK"
    err = parser.next_reply()
    assert isinstance(err, RedisReplyError) and err.prefix == "NOSCRIPT"
    assert parser.next_reply() == -42
    assert parser.next_reply() == b"a\r\n"
    assert parser.next_reply() is None
    assert parser.next_reply() == [1, None]
    assert parser.next_reply() is NEED_MORE


@pytest.mark.parametrize("data", [b"?x\r\n", b":12a\r\n", b"$3\r\nabcXY", b"$-2\r\n", b"\r\n"])
def test_parser_rejects_what_is_not_resp2(data: bytes) -> None:
    parser = RespParser()
    parser.feed(data)
    with pytest.raises(RespProtocolError):
        parser.next_reply()


def _encode_reply(reply: Reply) -> bytes:
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if isinstance(reply, RedisReplyError):
        return f"-{reply.message}\r\n".encode()
    return b"*%d\r\n" % len(reply) + b"".join(_encode_reply(r) for r in reply)


def _norm(reply: Reply | object) -> object:
    if isinstance(reply, RedisReplyError):
        return ("error", reply.message)
    if isinstance(reply, list):
        return [_norm(r) for r in reply]
    return reply


_replies: st.SearchStrategy[Reply] = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=40)
    | st.builds(
        lambda prefix, text: RedisReplyError(f"{prefix} {text}"),
        st.sampled_from(["ERR", "NOSCRIPT", "WRONGTYPE"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    ),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=80, deadline=None)
@given(replies=st.lists(_replies, max_size=6), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_parser_is_indifferent_to_how_the_stream_is_cut(replies: list[Reply], cuts: list[int]) -> None:
    stream = b"".join(_encode_reply(r) for r in replies)
    parser = RespParser()
    got: list[object] = []
    for a, b in itertools.pairwise([0, *sorted(c for c in cuts if c < len(stream)), len(stream)]):
        parser.feed(stream[a:b])
        while (reply := parser.next_reply()) is not NEED_MORE:
            got.append(_norm(reply))
    assert got == [_norm(r) for r in replies]


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://127.0.0.1", RedisAddress(host="127.0.0.1")),
        ("redis://cache:6380/2", RedisAddress(host="cache", port=6380, db=2)),
        ("redis://[::1]:7000/", RedisAddress(host="::1", port=7000)),
        ("REDIS://:p%40ss@h", RedisAddress(host="h", password="p@ss")),
        ("redis://relay:pw@h:1/0", RedisAddress(host="h", port=1, username="relay", password="pw")),
        ("unix:///run/redis.sock", RedisAddress(unix_path="/run/redis.sock")),
        ("unix://:pw@/run/redis.sock?db=3", RedisAddress(unix_path="/run/redis.sock", db=3, password="pw")),
    ],
)
def test_registry_urls(url: str, address: RedisAddress) -> None:
    assert parse_redis_url(url) == address


@pytest.mark.parametrize(
    "url",
    [
        "rediss://h:6379",
        "http://h",
        "redis://",
        "redis://:pw@:6379",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:port",
        "redis://h/db",
        "redis://h/-1",
        "redis://h/0?x=1",
        "redis://h#f",
        "redis://user@h",
        "unix://host/path",
        "unix://",
        "unix:///s?db=x",
        "unix:///s?timeout=1",
    ],
)
def test_bad_registry_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_redis_url(url)


@settings(max_examples=100, deadline=None)
@given(password=st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=4, max_size=20))
def test_redaction_never_shows_a_password(password: str) -> None:
    lone = password.replace(":", "")  # a lone userinfo; with a colon, what precedes it is a username
    for userinfo, shown in (
        (f":{password}", "<redacted>"),
        (f"user:{password}", "user:<redacted>"),
        (lone, "<redacted>"),
    ):
        assert redact_redis_url(f"redis://{userinfo}@host:6379/0") == f"redis://{shown}@host:6379/0"


def test_address_display_hides_the_password() -> None:
    assert RedisAddress(host="h", password="pw").display() == "redis://:<redacted>@h:6379/0"
    assert (
        RedisAddress(unix_path="/s", db=1, username="u", password="pw").display()
        == "unix://u:<redacted>@/s?db=1"
    )


# --- configuration ---------------------------------------------------------------------------------


def test_registry_settings_default_to_in_memory_and_15s() -> None:
    cfg = load({"AUTH_MODE": "none"})
    assert (cfg.session_registry_url, cfg.session_lease_ttl) == ("", 15.0)
    assert isinstance(registry_from_config(cfg), InMemorySessionRegistry)


def test_registry_url_selects_redis_with_env_or_flag() -> None:
    cfg = load({"AUTH_MODE": "none", "SESSION_REGISTRY_URL": " redis://h:1/2 ", "SESSION_LEASE_TTL": "2s"})
    reg = registry_from_config(cfg, Metrics())
    assert isinstance(reg, RedisSessionRegistry)
    assert (reg.address, reg.lease_ttl, reg.heartbeat_interval) == (
        RedisAddress(host="h", port=1, db=2),
        2.0,
        2 / HEARTBEAT_FRACTION,
    )
    flagged = load(
        {"AUTH_MODE": "none"}, ["--session-registry-url", "unix:///s", "--session-lease-ttl=500ms"]
    )
    assert (flagged.session_registry_url, flagged.session_lease_ttl) == ("unix:///s", 0.5)


def test_bad_registry_url_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load({"AUTH_MODE": "none", "SESSION_REGISTRY_URL": "redis://:hunter22@h:99999"})
    text = str(info.value)
    assert text.startswith('invalid SESSION_REGISTRY_URL/--session-registry-url "redis://<redacted>@h:99999"')
    assert "hunter22" not in text


@pytest.mark.parametrize("ttl", ["0s", "-1s"])
def test_lease_ttl_must_be_positive(ttl: str) -> None:
    with pytest.raises(ConfigError, match=r"^SESSION_LEASE_TTL/--session-lease-ttl must be > 0"):
        load({"AUTH_MODE": "none", "SESSION_LEASE_TTL": ttl})


def test_check_config_redacts_the_registry_password() -> None:
    cfg = load({"AUTH_MODE": "none", "SESSION_REGISTRY_URL": "redis://relay:hunter22@cache:6379/1"})
    items = dict(effective_items(cfg))
    assert items["SESSION_REGISTRY_URL"] == "redis://relay:<redacted>@cache:6379/1"
    assert items["SESSION_LEASE_TTL"] == "15s"
    assert "hunter22" not in repr(cfg)


# --- two processes, one Redis ---------------------------------------------------------------------


async def test_keys_and_ids_match_the_in_memory_registry(make_registry: MakeRegistry) -> None:
    """F-236 keys, F-140 ids (32 lowercase hex)."""
    reg = make_registry()
    keyed = await reg.acquire("abc", kind="udp_ws")
    anon = await reg.acquire("", kind="webrtc")
    spaced = await reg.acquire(" ", kind="webrtc")
    assert (keyed.key, spaced.key, anon.key) == ("sid:abc", "sid: ", f"id:{anon.session_id}")
    assert all(
        len(lease.session_id) == 32 and lease.session_id == lease.session_id.lower()
        for lease in (keyed, anon)
    )
    int(anon.session_id, 16)
    assert reg.active_count() == 3


async def test_same_sid_on_another_process_is_refused_until_released(make_registry: MakeRegistry) -> None:
    """F-045 across processes: one live session per JWT sid."""
    a, b = make_registry(), make_registry()
    lease = await a.acquire("user-1", kind="webrtc")
    with pytest.raises(SessionAlreadyActiveError):
        await b.acquire("user-1", kind="udp_ws")
    with pytest.raises(SessionAlreadyActiveError):
        await b.reserve("user-1", 60)
    other = await b.acquire("user-2", kind="udp_ws")
    await a.release(lease)
    await a.release(lease)  # idempotent
    again = await b.acquire("user-1", kind="udp_ws")
    assert again.session_id not in (lease.session_id, other.session_id)


async def test_anonymous_sessions_are_not_unique(make_registry: MakeRegistry) -> None:
    a, b = make_registry(), make_registry()
    leases = [await reg.acquire("", kind="udp_ws") for reg in (a, b, a, b)]
    assert len({lease.session_id for lease in leases}) == 4


async def test_max_sessions_is_one_global_budget(make_registry: MakeRegistry) -> None:
    """F-140: reservations, WebRTC and /udp sessions of every process share MAX_SESSIONS."""
    a, b = make_registry(3), make_registry(3)
    await a.reserve("", 60)
    first = await b.acquire("", kind="webrtc")
    await a.acquire("x", kind="udp_ws")
    with pytest.raises(TooManySessionsError):
        await b.acquire("", kind="udp_ws")
    with pytest.raises(TooManySessionsError):
        await a.reserve("y", 60)
    assert (a.active_count(), b.active_count(), await a.global_count()) == (2, 1, 3)
    await b.release(first)
    await a.acquire("", kind="udp_ws")


async def test_already_active_is_checked_before_too_many(make_registry: MakeRegistry) -> None:
    """F-045: session_already_active wins over too_many_sessions."""
    a, b = make_registry(1), make_registry(1)
    await a.acquire("dup", kind="webrtc")
    with pytest.raises(SessionAlreadyActiveError):
        await b.acquire("dup", kind="webrtc")
    with pytest.raises(TooManySessionsError):
        await b.acquire("other", kind="webrtc")


async def test_session_id_collisions_with_another_process_are_retried(make_registry: MakeRegistry) -> None:
    """F-140: never the id of a live session, up to 3 tries, then an error."""
    a = make_registry(rand=lambda n: b"\x01" * n)
    ids = iter([b"\x01" * 16, b"\x01" * 16, b"\x02" * 16])
    b = make_registry(rand=lambda n: next(ids))
    await a.acquire("", kind="udp_ws")
    assert (await b.acquire("", kind="udp_ws")).session_id == "02" * 16
    with pytest.raises(SessionRegistryError, match="unique session id"):
        await a.acquire("", kind="udp_ws")


async def test_heartbeat_keeps_a_live_lease_past_its_ttl(make_registry: MakeRegistry) -> None:
    a, b = make_registry(), make_registry()
    async with running(a):
        lease = await a.acquire("held", kind="udp_ws")
        await trio.sleep(3 * TTL)
        assert not await sid_is_free(b, "held")
        assert not lease.released and a.active_count() == 1


async def test_crashed_process_frees_its_sid_and_slot_within_the_lease_ttl(
    redis: RedisServer, make_registry: MakeRegistry
) -> None:
    """A process that dies without releasing: its sessions are free <= SESSION_LEASE_TTL later."""
    a, b = make_registry(2), make_registry(2)
    async with running(a) as a_process:
        await a.acquire("crash", kind="webrtc")
        await a.acquire("", kind="udp_ws")
        await trio.sleep(2 * TTL)  # a few heartbeats
        a_process.cancel()  # the crash: heartbeats stop, nothing is released
    crashed_at = await server_ms(redis)
    scored = await raw(redis, "ZRANGE", EXPIRY_KEY, 0, -1, "WITHSCORES")  # [id, score, id, score]
    expiries = _numbers(scored[1::2])  # type: ignore[index]
    assert len(expiries) == 2 and max(expiries) - crashed_at <= TTL * 1000  # the bound, on Redis' clock
    assert not await sid_is_free(b, "crash")
    with pytest.raises(TooManySessionsError):
        await b.acquire("", kind="udp_ws")
    waited = await eventually(lambda: sid_is_free(b, "crash"), TTL + SLACK)
    assert waited <= TTL + SLACK
    assert await b.global_count() == 0
    await b.acquire("", kind="udp_ws")
    await b.acquire("", kind="udp_ws")


async def test_a_stale_process_cannot_release_the_newer_lease(make_registry: MakeRegistry) -> None:
    """Fencing: the session id is the token; an expired holder's release touches nothing else."""
    stale, newer, third = make_registry(), make_registry(), make_registry()
    old = await stale.acquire("sid-x", kind="udp_ws")  # `stale` never heartbeats
    await eventually(lambda: sid_is_free(newer, "sid-x"), TTL + SLACK)
    current = await newer.acquire("sid-x", kind="udp_ws")
    await stale.release(old)
    with pytest.raises(SessionAlreadyActiveError):
        await third.acquire("sid-x", kind="udp_ws")
    assert not current.released


async def test_heartbeat_reclaims_an_expired_lease_whose_sid_is_still_free(
    make_registry: MakeRegistry,
) -> None:
    a, b = make_registry(), make_registry()
    lease = await a.acquire("late", kind="udp_ws")
    await eventually(lambda: sid_is_free(b, "late"), TTL + SLACK)  # expired: no heartbeat ran
    await a.heartbeat()
    assert not await sid_is_free(b, "late")
    assert not lease.released


async def test_lease_lost_to_another_process_is_reported_not_stolen_back(make_registry: MakeRegistry) -> None:
    lost: list[SessionLease] = []
    a, b = make_registry(on_lease_lost=lost.append), make_registry()
    lease = await a.acquire("contested", kind="webrtc")
    await eventually(lambda: sid_is_free(b, "contested"), TTL + SLACK)
    winner = await b.acquire("contested", kind="webrtc")
    await a.heartbeat()
    assert lost == [lease]
    await a.heartbeat()  # reported once; the lost lease is no longer renewed
    assert lost == [lease]
    await a.release(lease)
    with pytest.raises(SessionAlreadyActiveError):
        await a.acquire("contested", kind="udp_ws")
    assert not winner.released


async def test_reservation_expires_on_redis_and_locally(make_registry: MakeRegistry) -> None:
    """F-053: SESSION_PREALLOC_TTL frees the slot and the sid on every process."""
    expired: list[SessionLease] = []
    a, b = make_registry(1, on_reservation_expired=expired.append), make_registry(1)
    async with running(a):
        lease = await a.reserve("sid-r", TTL)
        with pytest.raises(SessionAlreadyActiveError):
            await b.acquire("sid-r", kind="webrtc")
        await eventually(lambda: sid_is_free(b, "sid-r"), TTL + SLACK)
        await eventually(lambda: _true(lease.released))
        assert expired == [lease] and a.active_count() == 0


async def _true(value: bool) -> bool:
    return value


async def test_reservations_are_not_renewed_by_the_heartbeat(
    redis: RedisServer, make_registry: MakeRegistry
) -> None:
    a = make_registry()
    async with running(a):
        lease = await a.reserve("r", 60.0)
        before = await expiry_ms(redis, lease)
        await a.heartbeat()
        assert await expiry_ms(redis, lease) == before


async def test_release_all_reservations_frees_them_for_every_process(make_registry: MakeRegistry) -> None:
    """F-053: server close drops this process's reservations, not its live sessions."""
    a, b = make_registry(), make_registry()
    live = await a.acquire("live", kind="webrtc")
    reserved = await a.reserve("res", 60)
    await a.release_all_reservations()
    assert reserved.released and not live.released
    assert await sid_is_free(b, "res")
    assert not await sid_is_free(b, "live")


async def test_scripts_survive_a_script_cache_flush(redis: RedisServer, make_registry: MakeRegistry) -> None:
    """EVALSHA falls back to EVAL on NOSCRIPT."""
    reg = make_registry()
    await reg.release(await reg.acquire("s", kind="udp_ws"))
    assert await raw(redis, "SCRIPT", "FLUSH") == b"OK"
    lease = await reg.acquire("s", kind="udp_ws")
    await reg.heartbeat()
    await reg.release(lease)


async def test_password_protected_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret pw")
    server.start()
    try:
        good = RedisSessionRegistry(parse_redis_url(f"redis://:s3cret%20pw@127.0.0.1:{server.port}/1"), 0)
        await good.release(await good.acquire("s", kind="udp_ws"))
        metrics = Metrics()
        bad = RedisSessionRegistry(
            parse_redis_url(f"redis://:wrong@127.0.0.1:{server.port}"), 0, metrics=metrics
        )
        with pytest.raises(RegistryUnavailableError):
            await bad.acquire("s", kind="udp_ws")
        assert metrics.value(Event.SESSION_REGISTRY_UNAVAILABLE) == 1
    finally:
        server.stop()


# --- Redis down ------------------------------------------------------------------------------------


async def test_redis_down_refuses_new_sessions_quickly_with_a_metric(
    redis: RedisServer, make_registry: MakeRegistry
) -> None:
    metrics = Metrics()
    reg = make_registry(metrics=metrics)
    await reg.acquire("", kind="udp_ws")  # a pooled connection that the outage will break
    redis.stop()
    start = time.monotonic()
    with pytest.raises(RegistryUnavailableError) as info:
        await reg.acquire("s", kind="udp_ws")
    with pytest.raises(RegistryUnavailableError):
        await reg.reserve("s", 60)
    assert time.monotonic() - start < 1.0
    assert info.value.code == "registry_unavailable"
    assert metrics.value(Event.SESSION_REGISTRY_UNAVAILABLE) == 2


async def test_a_hung_redis_is_bounded_by_the_timeout(
    redis: RedisServer, make_registry: MakeRegistry
) -> None:
    reg = make_registry(timeout=0.2)
    lease = await reg.acquire("s", kind="udp_ws")
    redis.pause()
    try:
        start = trio.current_time()
        with pytest.raises(RegistryUnavailableError):
            await reg.acquire("t", kind="udp_ws")
        await reg.release(lease)  # never raises into session teardown
        assert trio.current_time() - start < 0.2 * 2 + SLACK
        assert lease.released and reg.active_count() == 0
    finally:
        redis.resume()


async def test_a_release_that_failed_is_retried_by_the_heartbeat(
    redis: RedisServer, make_registry: MakeRegistry
) -> None:
    """A failed release never raises; the heartbeat retries it (an ACL makes scripts fail, since a
    timed-out command may still run later on a hung server and prove nothing)."""
    metrics = Metrics()
    a, b = make_registry(metrics=metrics, lease_ttl=30.0), make_registry()
    lease = await a.acquire("sticky", kind="webrtc")
    assert await raw(redis, "ACL", "SETUSER", "default", "-@scripting") == b"OK"
    try:
        await a.release(lease)
    finally:
        assert await raw(redis, "ACL", "SETUSER", "default", "+@all") == b"OK"
    assert lease.released and metrics.value(Event.SESSION_REGISTRY_UNAVAILABLE) == 1
    assert not await sid_is_free(b, "sticky")  # a 30 s lease: only the retry can free it now
    await a.heartbeat()
    assert await sid_is_free(b, "sticky")


async def test_an_acquire_cancelled_in_flight_is_undone_by_the_heartbeat(
    redis: RedisServer, make_registry: MakeRegistry
) -> None:
    """The script may run after its caller gave up; the lease it took must not hold the sid for a TTL."""
    a, b = make_registry(lease_ttl=30.0), make_registry()
    await a.release(await a.acquire("warm-up", kind="udp_ws"))
    redis.pause()
    try:
        with trio.move_on_after(0.2):
            await a.acquire("ghost", kind="udp_ws")
            pytest.fail("acquire answered by a paused server")
    finally:
        redis.resume()

    async def ghost_is_held() -> bool:
        return not await sid_is_free(b, "ghost")

    await eventually(ghost_is_held)  # the server ran the buffered script after all
    assert a.active_count() == 0
    await a.heartbeat()
    assert await sid_is_free(b, "ghost")


async def test_live_sessions_survive_a_redis_restart_and_heartbeats_resume(
    redis: RedisServer, make_registry: MakeRegistry
) -> None:
    """Redis down: new sessions refused, live ones untouched; back (empty): leases re-claimed."""
    metrics = Metrics()
    a, b = make_registry(metrics=metrics), make_registry()
    async with running(a):
        lease = await a.acquire("survivor", kind="udp_ws")
        redis.stop()
        await eventually(lambda: _true(metrics.value(Event.SESSION_REGISTRY_UNAVAILABLE) >= 1))
        with pytest.raises(RegistryUnavailableError):
            await b.acquire("newcomer", kind="udp_ws")
        assert not lease.released and a.active_count() == 1
        redis.start()  # no persistence: the server comes back empty
        await eventually(lambda: _global_count_is(b, 1))  # a's heartbeat re-claimed its lease
        assert not await sid_is_free(b, "survivor")
        await b.acquire("newcomer", kind="udp_ws")
        await a.release(lease)
        assert await sid_is_free(b, "survivor")


async def _global_count_is(reg: RedisSessionRegistry, n: int) -> bool:
    return await reg.global_count() == n


# --- two real relay processes ------------------------------------------------------------------------

JWT_SECRET = "scale-out-secret"
LEASE_TTL_S = 1.0


def _token(sid: str) -> str:
    now = int(time.time())
    return mint_jwt(JWT_SECRET, {"sid": sid, "iat": now - 5, "exp": now + 600})


@pytest.fixture
def relay_processes(redis: RedisServer) -> Iterator[Callable[[], Relay]]:
    if not AERO_RELAY.exists():
        pytest.skip(f"{AERO_RELAY} missing: run `.venv/bin/pip install -q -e . --no-deps`")
    env = clean_env(
        AUTH_MODE="jwt",
        JWT_SECRET=JWT_SECRET,
        SESSION_REGISTRY_URL=redis.url,
        SESSION_LEASE_TTL=f"{int(LEASE_TTL_S * 1000)}ms",
        AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR="127.0.0.1:0",
    )
    started: list[Relay] = []

    def start() -> Relay:
        relay = Relay([str(AERO_RELAY), "serve"], env)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.kill()


async def test_two_relay_processes_share_sids_and_a_killed_one_lets_go(
    redis: RedisServer, relay_processes: Callable[[], Relay]
) -> None:
    """POST /session with the same sid on the other process is 409 (F-045/F-046); a SIGKILLed
    process's live session frees its sid within SESSION_LEASE_TTL."""
    first, second = relay_processes(), relay_processes()
    url1 = await trio.to_thread.run_sync(first.wait_serving)
    url2 = await trio.to_thread.run_sync(second.wait_serving)
    started = await trio.to_thread.run_sync(first.wait_for_msg, "session registry")
    assert "backend=redis" in started and f"127.0.0.1:{redis.port}/0" in started
    async with httpx.AsyncClient(timeout=10) as http:

        async def post_session(base: str, sid: str) -> httpx.Response:
            return await http.post(f"{base}/session", headers={"Authorization": f"Bearer {_token(sid)}"})

        reserved = await post_session(url1, "alice")
        assert reserved.status_code == 201 and len(reserved.text) == 32
        dup = await post_session(url2, "alice")
        assert dup.status_code == 409
        assert dup.content == b'{"code":"session_already_active","message":"session already active"}\n'
        assert (await post_session(url2, "bob")).status_code == 201

        # A live /udp session on the first process, then the process dies without a word.
        async with connect(url1.removeprefix("http://"), f"/udp?token={_token('carol')}") as ws:
            assert (await ws.receive_json())["type"] == "ready"
            assert (await post_session(url2, "carol")).status_code == 409
            os.kill(first.proc.pid, signal.SIGKILL)
            killed_at = trio.current_time()

            async def carol_is_free() -> bool:
                status = (await post_session(url2, "carol")).status_code
                assert status in (201, 409), status
                return status == 201

            await eventually(carol_is_free, LEASE_TTL_S + SLACK)
            assert trio.current_time() - killed_at <= LEASE_TTL_S + SLACK
