"""What every request handler needs from the daemon, as one typed object.

The web reaches the database only through the ports of store/ports.py, handed
over by the daemon (:attr:`DaemonPort.directory`): scoped reads, accounts and
access. The SQLite implementation runs each call on a short-lived connection in a
worker thread: never on the ingest writer's connection, and never blocking the
event loop that also carries MQTT ingest.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request

from alarmhub.core.people import AuditEntry
from alarmhub.core.tenancy import Scope
from alarmhub.store.ports import Access, Accounts, ScopedReads
from alarmhub.web.errors import ApiError

if TYPE_CHECKING:
    from alarmhub.web.ports import DaemonPort

MAX_TRACKED_KEYS = 10_000  # (user name, address) pairs with live failure counts


class LoginLimiter:
    """Slows down password guessing for one (user name, client address); locks nobody out.

    Only failed logins count: a successful login clears its pair's count, so a busy
    operator who logs in many times a shift is never slowed. The key is the pair, so
    someone guessing kari's password from another address does not slow kari down at
    her own desk. After `free` failures each further attempt of the pair must wait
    `base_s`, then twice that, and so on up to `max_wait_s`: guessing becomes slow,
    and a person who mistyped a few times waits seconds, at worst `max_wait_s`.
    A pair with no failure for `forget_s` is forgotten.

    Memory is bounded by `max_keys`, and a live count is never evicted to make room:
    evicting the oldest (as this once did) let a flood of junk user names reset the
    count of the name being guessed. When the table is full of live counts, pairs
    without one share their address's overflow count, so filling the table first and
    then guessing under a fresh pair is slowed as well. Per address, not one count for
    all: a single overflow count was driven by whoever filled the table, and every
    operator logging in afresh, from any desk, waited behind the attacker's guesses
    (found in review, 2026-12-06). The overflow counts are bounded too
    (`max_keys // 10` addresses); beyond them one shared count remains, so only an
    attacker with that many addresses reaches the old behaviour. Time is an argument
    (monotonic seconds), read by the caller from the hub's clock.
    """

    def __init__(
        self,
        *,
        free: int = 5,
        base_s: float = 1.0,
        max_wait_s: float = 60.0,
        forget_s: float = 15 * 60.0,
        max_keys: int | None = None,
    ) -> None:
        self.free = free
        self.base_s = base_s
        self.max_wait_s = max_wait_s
        self.forget_s = forget_s
        self.max_keys = MAX_TRACKED_KEYS if max_keys is None else max_keys
        self.max_overflow = max(1, self.max_keys // 10)
        # key -> (failures, monotonic time of the last failure)
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}
        # address -> (failures, last): pairs that found the table full; "" is shared
        self._overflow: dict[str, tuple[int, float]] = {}

    @staticmethod
    def key(username: str, address: str) -> tuple[str, str]:
        return (username.casefold(), address)

    def wait(self, key: tuple[str, str], now: float) -> float | None:
        """Seconds this pair must still wait before its password is checked, or None."""
        entry = self._live(self._failures, key, now)
        if entry is None and self._full(now):
            entry = self._live(self._overflow, self._overflow_key(key[1], now), now)
        if entry is None:
            return None
        failures, last = entry
        if failures < self.free:
            return None
        delay = min(self.max_wait_s, self.base_s * 2.0 ** (failures - self.free))
        remaining = last + delay - now
        return remaining if remaining > 0 else None

    def failed(self, key: tuple[str, str], now: float) -> None:
        """Count one failed login of the pair (only after its password was checked)."""
        if key not in self._failures and self._full(now):
            # Never evict a live count: the pair's address counts instead.
            _count(self._overflow, self._overflow_key(key[1], now), now, self.forget_s)
            return
        _count(self._failures, key, now, self.forget_s)

    def succeeded(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures) + len(self._overflow)

    def _full(self, now: float) -> bool:
        if len(self._failures) < self.max_keys:
            return False
        _forget_expired(self._failures, now, self.forget_s)
        return len(self._failures) >= self.max_keys

    def _overflow_key(self, address: str, now: float) -> str:
        """The address's own overflow count while there is room for it, else the shared."""
        if address in self._overflow or len(self._overflow) < self.max_overflow:
            return address
        _forget_expired(self._overflow, now, self.forget_s)
        return address if len(self._overflow) < self.max_overflow else ""

    def _live(
        self, table: dict[_K, tuple[int, float]], key: _K, now: float
    ) -> tuple[int, float] | None:
        entry = table.get(key)
        if entry is not None and now - entry[1] >= self.forget_s:
            del table[key]
            return None
        return entry


_K = TypeVar("_K")


def _count(table: dict[_K, tuple[int, float]], key: _K, now: float, forget_s: float) -> None:
    entry = table.get(key)
    failures = entry[0] if entry is not None and now - entry[1] < forget_s else 0
    table[key] = (failures + 1, now)


def _forget_expired(table: dict[_K, tuple[int, float]], now: float, forget_s: float) -> None:
    # O(n) over at most max_keys small tuples, only when the table is full.
    for key in [k for k, (_, last) in table.items() if now - last >= forget_s]:
        del table[key]


# What a refused client is told to wait: streams of closed tabs end within the
# keep-alive interval, and a page that reloads sooner than this only adds load.
RETRY_AFTER_S = 30


@dataclass(eq=False)
class StreamSlot:
    """One open stream's slot; `ended` is set when a newer stream of the same page took it."""

    scope: Scope
    page: str | None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    released: bool = False
    wake: Callable[[], None] | None = None  # ends its listener's wait (web/sse.py)

    def end(self) -> None:
        self.ended.set()
        if self.wake is not None:
            self.wake()


class StreamSlots:
    """Live-stream slots per user, per municipality and in all; `web.streams` says why.

    Per municipality: one municipality's users (a municipality admin may create
    operators, each with `per_user` streams) must not take every slot of the server,
    which would leave the response centre's operators and other municipalities'
    with a page that no longer updates (promise 3: no municipality changes how
    another's alarms are handled). A stream counts against each municipality its
    caller may see; an admin's (every municipality) against none, but the total.

    A page names its stream (`page`, the `stream_id` query parameter): a new stream of
    the same user and page replaces the old one at once. The page replaces a stream it
    has not heard from (web/static/js/live.js), and the old one, whose peer vanished
    without a word, held its slot until TCP gave up, minutes later: five replacements
    and the page was refused 429 and stayed disconnected (found in review, 2026-12-06).
    """

    def __init__(self, per_user: int = 5, total: int = 200, per_municipality: int = 50) -> None:
        self.per_user = per_user
        self.total = total
        self.per_municipality = per_municipality
        self._by_user: Counter[str] = Counter()
        self._by_municipality: Counter[str] = Counter()
        self._pages: dict[tuple[str, str], StreamSlot] = {}
        self.open = 0

    def refusal(self, scope: Scope) -> str | None:
        """Why `scope` may not open another stream now, or None when a slot is free."""
        user = scope.user
        if self._by_user[user] >= self.per_user:
            return (
                f"you already have {self._by_user[user]} live streams open, the most one user "
                f"may have (max_streams_per_user); close a tab or window showing the alarm "
                f"queue, or retry in {RETRY_AFTER_S} s"
            )
        full = sorted(
            m
            for m in scope.municipalities or ()
            if self._by_municipality[m] >= self.per_municipality
        )
        if full:
            return (
                f"{self.per_municipality} live streams are open for municipality {full[0]}, "
                f"the most one municipality may have (max_streams_per_municipality); close a "
                f"tab or window showing the alarm queue, or retry in {RETRY_AFTER_S} s, and "
                "tell the administrator if this persists"
            )
        if self.open >= self.total:
            return (
                f"the server has {self.open} live streams open, the most it allows "
                f"(max_streams); retry in {RETRY_AFTER_S} s, and tell the administrator "
                "if this persists"
            )
        return None

    def take(self, scope: Scope, page: str | None = None) -> StreamSlot:
        """Take a slot for `scope`, or raise 429 with Retry-After naming the limit reached.

        The same user's stream of the same `page` is ended first, and its slot given back.
        """
        if page is not None:
            earlier = self._pages.get((scope.user, page))
            if earlier is not None:
                earlier.end()
                self.give_back(earlier)
        reason = self.refusal(scope)
        if reason is not None:
            raise ApiError(
                429, "too_many_streams", reason, headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        slot = StreamSlot(scope, page)
        self._by_user[scope.user] += 1
        for m in scope.municipalities or ():
            self._by_municipality[m] += 1
        self.open += 1
        if page is not None:
            self._pages[(scope.user, page)] = slot
        return slot

    def give_back(self, slot: StreamSlot) -> None:
        """Once per slot: by the response's end, or earlier by its page's next stream."""
        if slot.released:
            return
        slot.released = True
        scope = slot.scope
        _drop(self._by_user, scope.user)
        for m in scope.municipalities or ():
            _drop(self._by_municipality, m)
        self.open -= 1
        if slot.page is not None and self._pages.get((scope.user, slot.page)) is slot:
            del self._pages[(scope.user, slot.page)]

    def held_by(self, user: str) -> int:
        return self._by_user[user]

    def held_for(self, municipality: str) -> int:
        return self._by_municipality[municipality]


def _drop(counts: Counter[str], key: str) -> None:
    """One fewer; memory follows the open streams, not every user or municipality seen."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


@dataclass
class WebContext:
    hub: DaemonPort
    reads: ScopedReads
    accounts: Accounts
    access: Access
    login_limiter: LoginLimiter = field(default_factory=LoginLimiter)
    streams: StreamSlots = field(default_factory=StreamSlots)

    async def audit(
        self,
        request: Request,
        actor: str,
        action: str,
        *,
        alarm_id: str | None = None,
        device_id: str | None = None,
        municipality: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record something that changes nothing else: a login, a logout, a view.

        A change is never audited through here: its entry (:meth:`entry`) goes to
        the store function making the change, which commits both together.
        """
        await self.accounts.audit(
            self.entry(
                request,
                actor,
                action,
                alarm_id=alarm_id,
                device_id=device_id,
                municipality=municipality,
                detail=detail,
            ),
        )

    def entry(
        self,
        request: Request,
        actor: str,
        action: str,
        *,
        alarm_id: str | None = None,
        device_id: str | None = None,
        municipality: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """The audit entry of a change, for the store call that makes it."""
        return AuditEntry(
            actor=actor,
            action=action,
            at=self.hub.clock.now(),
            address=client_address(request),
            alarm_id=alarm_id,
            device_id=device_id,
            municipality=municipality,
            detail=detail,
        )


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def web(request: Request) -> WebContext:
    ctx = request.app.state.web
    assert isinstance(ctx, WebContext)
    return ctx
