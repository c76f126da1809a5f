"""The in-memory session registry (F-045, F-053, F-140, F-236), timers on Trio's mock clock."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from aero_relay.relay.manager import (
    InMemorySessionRegistry,
    SessionAlreadyActiveError,
    SessionLease,
    SessionRegistryError,
    TooManySessionsError,
    lease_key,
)


async def test_keys_follow_original_format() -> None:
    """F-236: "sid:<sid>" for keyed sessions, "id:<hex>" otherwise; whitespace sids are significant."""
    reg = InMemorySessionRegistry(0)
    keyed = await reg.acquire("abc", kind="udp_ws")
    anon = await reg.acquire("", kind="udp_ws")
    spaced = await reg.acquire(" ", kind="udp_ws")
    assert keyed.key == "sid:abc"
    assert anon.key == f"id:{anon.session_id}"
    assert spaced.key == "sid: "
    assert len(anon.session_id) == 32 and int(anon.session_id, 16) >= 0


async def test_one_live_session_per_sid_until_released() -> None:
    reg = InMemorySessionRegistry(0)
    lease = await reg.acquire("s", kind="webrtc")
    with pytest.raises(SessionAlreadyActiveError):
        await reg.acquire("s", kind="udp_ws")
    await reg.release(lease)
    await reg.release(lease)  # idempotent
    again = await reg.acquire("s", kind="udp_ws")
    assert again.session_id != lease.session_id


async def test_anonymous_sessions_are_not_unique() -> None:
    reg = InMemorySessionRegistry(0)
    leases = [await reg.acquire("", kind="udp_ws") for _ in range(5)]
    assert len({lease.session_id for lease in leases}) == 5


async def test_max_sessions_counts_every_kind() -> None:
    """F-140: reservations, WebRTC and /udp sessions share MAX_SESSIONS."""
    reg = InMemorySessionRegistry(2)
    await reg.reserve("", 60)
    await reg.acquire("", kind="webrtc")
    with pytest.raises(TooManySessionsError):
        await reg.acquire("", kind="udp_ws")


async def test_already_active_checked_before_too_many() -> None:
    reg = InMemorySessionRegistry(1)
    await reg.acquire("dup", kind="webrtc")
    with pytest.raises(SessionAlreadyActiveError):
        await reg.acquire("dup", kind="webrtc")
    with pytest.raises(TooManySessionsError):
        await reg.acquire("other", kind="webrtc")


async def test_session_id_collisions_are_retried() -> None:
    """F-140: never collide with a live session (up to 3 tries)."""
    ids = itertools.chain([b"\x01" * 16, b"\x01" * 16, b"\x02" * 16])
    reg = InMemorySessionRegistry(0, rand=lambda n: next(ids))
    first = await reg.acquire("", kind="udp_ws")
    second = await reg.acquire("", kind="udp_ws")
    assert first.session_id == "01" * 16
    assert second.session_id == "02" * 16


async def test_session_id_exhaustion_is_an_error() -> None:
    reg = InMemorySessionRegistry(0, rand=lambda n: b"\x07" * n)
    await reg.acquire("", kind="udp_ws")
    with pytest.raises(SessionRegistryError):
        await reg.acquire("", kind="udp_ws")


async def test_reservation_expires_exactly_at_ttl(autojump_clock: trio.testing.MockClock) -> None:
    """F-053: the reservation releases the slot and the sid after SESSION_PREALLOC_TTL."""
    expired: list[SessionLease] = []
    reg = InMemorySessionRegistry(1, on_reservation_expired=expired.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(reg.run)
        start = trio.current_time()
        lease = await reg.reserve("sid-1", 60.0)
        await trio.sleep(59.999)
        assert reg.active_count() == 1
        with pytest.raises(SessionAlreadyActiveError):
            await reg.acquire("sid-1", kind="webrtc")
        await trio.sleep(0.002)
        assert reg.active_count() == 0
        assert lease.released and expired == [lease]
        assert trio.current_time() - start == pytest.approx(60.001)
        await reg.acquire("sid-1", kind="webrtc")
        nursery.cancel_scope.cancel()


async def test_earlier_reservation_wakes_the_timer(autojump_clock: trio.testing.MockClock) -> None:
    reg = InMemorySessionRegistry(0)
    async with trio.open_nursery() as nursery:
        await nursery.start(reg.run)
        long = await reg.reserve("", 100.0)
        short = await reg.reserve("", 1.0)
        await trio.sleep(1.5)
        assert short.released and not long.released
        nursery.cancel_scope.cancel()


async def test_released_reservation_is_not_expired_again(autojump_clock: trio.testing.MockClock) -> None:
    expired: list[SessionLease] = []
    reg = InMemorySessionRegistry(0, on_reservation_expired=expired.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(reg.run)
        lease = await reg.reserve("x", 5.0)
        await reg.release(lease)
        await trio.sleep(10)
        assert expired == []
        nursery.cancel_scope.cancel()


async def test_release_all_reservations_keeps_live_sessions() -> None:
    """F-053: server close drops reservations."""
    reg = InMemorySessionRegistry(0)
    live = await reg.acquire("live", kind="webrtc")
    res = await reg.reserve("r", 60)
    await reg.release_all_reservations()
    assert res.released and not live.released
    assert reg.active_count() == 1


def test_lease_key_helper() -> None:
    assert lease_key("", "ab") == "id:ab"
    assert lease_key("s", "ab") == "sid:s"
