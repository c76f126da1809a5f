"""Session registry: MAX_SESSIONS, one live session per JWT `sid`, `/session` reservations.

Every relay session (a `/session` reservation, a WebRTC peer, a `/udp` WebSocket) holds one
`SessionLease` from the registry for its whole life (F-140, F-045, F-053, F-236). The registry
is an interface so that a shared store (Redis, a later issue) can replace the in-memory
implementation without touching callers; every method that may do I/O is async.

Callers release leases from `finally` blocks under a shielded cancel scope, so a cancelled
session always frees its slot and its sid.
"""

from __future__ import annotations

import abc
import heapq
import os
from collections.abc import Callable

import attrs
import trio

__all__ = [
    "InMemorySessionRegistry",
    "RegistryUnavailableError",
    "SessionAlreadyActiveError",
    "SessionLease",
    "SessionRegistry",
    "TooManySessionsError",
    "new_session_id",
]


class SessionRegistryError(Exception):
    """Base class of registry refusals; `code` and `message` are the client-facing error."""

    code = "internal_error"
    message = "internal error"


class SessionAlreadyActiveError(SessionRegistryError):
    """F-045/F-046: another live session holds this JWT sid."""

    code = "session_already_active"
    message = "session already active"


class TooManySessionsError(SessionRegistryError):
    """F-140/F-046: MAX_SESSIONS reached."""

    code = "too_many_sessions"
    message = "too many sessions"


class RegistryUnavailableError(SessionRegistryError):
    """The shared registry cannot be reached; new sessions are refused, live ones keep running."""

    code = "registry_unavailable"
    message = "session registry unavailable"


def new_session_id(rand: Callable[[int], bytes] = os.urandom) -> str:
    """F-140: 16 random bytes as 32 lowercase hex."""
    return rand(16).hex()


@attrs.define(eq=False)
class SessionLease:
    """One live session's hold on the registry (a MAX_SESSIONS slot, and the sid lock if keyed)."""

    session_id: str
    key: str  # F-236: "sid:<sid>" for JWT sessions, "id:<hex>" otherwise
    sid: str
    kind: str  # "reservation", "udp_ws", "webrtc"
    expires_at: float | None = None  # reservations only (trio clock)
    released: bool = False


def lease_key(sid: str, session_id: str) -> str:
    # Whitespace-only sids are significant (not trimmed); only "" means "no sid" (F-236).
    return f"sid:{sid}" if sid != "" else f"id:{session_id}"


class SessionRegistry(abc.ABC):
    """The interface every registry backend implements."""

    @abc.abstractmethod
    async def acquire(self, sid: str, *, kind: str) -> SessionLease:
        """Take a slot (and the sid lock when sid != ""); raise a SessionRegistryError."""

    @abc.abstractmethod
    async def reserve(self, sid: str, ttl: float) -> SessionLease:
        """A `/session` reservation that releases itself after `ttl` seconds (F-053)."""

    @abc.abstractmethod
    async def release(self, lease: SessionLease) -> None:
        """Free the slot and the sid lock. Idempotent."""

    @abc.abstractmethod
    def active_count(self) -> int:
        """Sessions currently holding a slot (as seen by this process)."""

    @abc.abstractmethod
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background maintenance (reservation expiry, heartbeats); runs until cancelled."""

    @abc.abstractmethod
    async def release_all_reservations(self) -> None:
        """Shutdown: drop every reservation (F-053 'Server Close closes all reservations')."""


class InMemorySessionRegistry(SessionRegistry):
    """The embedded default: one process, state in dicts, expiry on Trio timers."""

    def __init__(
        self,
        max_sessions: int,
        *,
        rand: Callable[[int], bytes] = os.urandom,
        on_reservation_expired: Callable[[SessionLease], None] | None = None,
    ) -> None:
        self._max = max_sessions
        self._rand = rand
        self._by_key: dict[str, SessionLease] = {}
        self._ids: set[str] = set()
        self._expiry: list[tuple[float, int, SessionLease]] = []
        self._seq = 0
        self._wakeup = trio.Event()
        self._on_expired = on_reservation_expired

    def _new_id(self) -> str:
        for _ in range(3):
            candidate = new_session_id(self._rand)
            if candidate not in self._ids:
                return candidate
        raise SessionRegistryError("failed to allocate a unique session id")

    def _acquire_now(self, sid: str, kind: str) -> SessionLease:
        # F-045: session_already_active is checked before too_many_sessions.
        if sid != "" and f"sid:{sid}" in self._by_key:
            raise SessionAlreadyActiveError
        if self._max > 0 and len(self._by_key) >= self._max:
            raise TooManySessionsError
        session_id = self._new_id()
        lease = SessionLease(session_id=session_id, key=lease_key(sid, session_id), sid=sid, kind=kind)
        self._by_key[lease.key] = lease
        self._ids.add(session_id)
        return lease

    async def acquire(self, sid: str, *, kind: str) -> SessionLease:
        return self._acquire_now(sid, kind)

    async def reserve(self, sid: str, ttl: float) -> SessionLease:
        lease = self._acquire_now(sid, "reservation")
        lease.expires_at = trio.current_time() + ttl
        self._seq += 1
        heapq.heappush(self._expiry, (lease.expires_at, self._seq, lease))
        if self._expiry[0][2] is lease:
            self._wakeup.set()
        return lease

    def _release_now(self, lease: SessionLease) -> None:
        if lease.released:
            return
        lease.released = True
        if self._by_key.get(lease.key) is lease:
            del self._by_key[lease.key]
        self._ids.discard(lease.session_id)

    async def release(self, lease: SessionLease) -> None:
        self._release_now(lease)

    def active_count(self) -> int:
        return len(self._by_key)

    def _expire_due(self, now: float) -> None:
        while self._expiry and (self._expiry[0][2].released or self._expiry[0][0] <= now):
            _, _, lease = heapq.heappop(self._expiry)
            if not lease.released:
                self._release_now(lease)
                if self._on_expired is not None:
                    self._on_expired(lease)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._expire_due(trio.current_time())
            self._wakeup = trio.Event()
            deadline = self._expiry[0][0] if self._expiry else float("inf")
            with trio.move_on_at(deadline):
                await self._wakeup.wait()

    async def release_all_reservations(self) -> None:
        for _, _, lease in self._expiry:
            self._release_now(lease)
        self._expiry.clear()
