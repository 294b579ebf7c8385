"""Who may hold a TCP/TLS connection slot: devices that authenticated, before strangers.

The receiver's port faces the internet (safety alarms come over mobile networks), and
there are `max_connections` slots. Before this module a slot went to whoever connected
first and was kept for the idle timeout, or for ever by an OPTIONS a minute (answered
without authentication): one address holding every slot refused every genuine device,
and so every TCP/TLS alarm, for as long as it liked.

A per-address cap of connections would be the usual answer and is wrong here: behind
carrier-grade NAT, or a fleet's private APN, hundreds of genuine devices share one
public address. What sets a device apart is not its address but that it proves who it
is: a connection on which a request passed digest authentication is *a device's*; any
other accepted connection is *a stranger's*. So:

1. **A stranger gives its slot up to a newcomer.** When the table is full, a new
   connection takes the slot of a stranger, which is closed (`evicted`): the oldest
   stranger of the address holding the most strangers (ties: the oldest of all). A
   device's connection is never taken; when every slot is a device's (or alarmhub's
   own, made to deliver an answer), the newcomer is closed (`connections`), as before.
   Choosing the address holding the most strangers, rather than the oldest stranger of
   all, matters against a peer that reconnects fast: its new connections take its own
   old ones' slots, never the slot of a device elsewhere still on its way to
   authenticating (a round trip or two on 4G); and no number needs tuning for a NAT,
   since nothing is taken while there is room. A device behind the same address as such
   a peer competes with it; it needs its slot only for the round trip of a challenge.
2. **A stranger has `auth_deadline_s` (30 s) from its opening to authenticate** a
   request, else it is closed (`unauthenticated`); OPTIONS, CRLF keep-alives and
   challenged or refused requests do not extend it. A genuine device authenticates
   with its first MESSAGE or REGISTER, a round trip after connecting; one that opens a
   connection and only pings it is closed and connects again to send its alarm, as
   after the idle timeout. While the store cannot read credentials (503) a device
   cannot authenticate either: its connection is closed after 30 s and it reconnects.
3. **One device's credentials protect at most `per_device` (4) connections.** The
   credentials of one pendant, read out of it, must not protect every slot: when a
   device authenticates on one more, the one it authenticated on longest ago counts as
   a stranger again (from then on: it may be evicted, and is closed 30 s later) unless
   another device authenticated there too (a gateway's or a fleet's shared connection).
   A genuine device holds one connection, two while a lost one is timing out.

This class only keeps the books (no I/O, time as an argument, connections as opaque
keys); `transport.Connections` closes what it names.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


@dataclass(slots=True)
class _Slot:
    address: str
    since: float  # when it opened, or became a stranger again
    devices: set[str] = field(default_factory=set)  # who authenticated on it
    own: bool = False  # alarmhub's own connection to a device's contact


@dataclass(frozen=True, slots=True)
class Admission(Generic[C]):
    admitted: bool
    evicted: C | None = None  # the stranger closed to make room for it
    evicted_address: str = ""


@dataclass(frozen=True, slots=True)
class Demotion(Generic[C]):
    conn: C  # a connection the device no longer protects
    stranger: bool  # no other device protects it either


class Slots(Generic[C]):
    """The books of the connection slots (see the module's docstring).

    A flood makes every admission an eviction, so each step is O(log n) whatever the
    number of addresses: strangers are kept per address and all together in order of
    age (OrderedDicts: a plain dict used as a queue slows down as its head is deleted),
    and the address to take from is the top of a heap of (most strangers, oldest
    first) whose stale entries are skipped when met and dropped when they outnumber
    the live ones. Scanning every address instead cost 2.3 ms per admission with 2,000
    addresses holding the slots (a botnet); this costs 38 us, 29 us with one address
    (a microbenchmark of `admit` on the shared 2-core VM).
    """

    def __init__(self, capacity: int, *, per_device: int = 4) -> None:
        if capacity < 1 or per_device < 1:
            raise ValueError("capacity and per_device must be at least 1")
        self._capacity = capacity
        self._per_device = per_device
        self._held: dict[C, _Slot] = {}
        self._strangers: dict[str, OrderedDict[C, None]] = {}  # by address, oldest first
        self._by_age: OrderedDict[C, None] = OrderedDict()  # every stranger, oldest first
        # (-strangers, oldest one's since, address): the top is the address to take from
        # when the entry is still true of it.
        self._heap: list[tuple[int, float, str]] = []
        # Each device's connections, least recently authenticated first.
        self._devices: dict[str, OrderedDict[C, None]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, conn: object) -> bool:
        return conn in self._held

    def strangers(self, address: str | None = None) -> int:
        """How many strangers hold slots (of `address`, or of all)."""
        if address is not None:
            return len(self._strangers.get(address, ()))
        return len(self._by_age)

    def admit(self, conn: C, address: str, now: float) -> Admission[C]:
        """Give an accepted connection a slot, taking a stranger's when the table is full."""
        evicted: C | None = None
        evicted_address = ""
        if len(self._held) >= self._capacity:
            evicted = self._victim()
            if evicted is None:
                return Admission(admitted=False)
            evicted_address = self._held[evicted].address
            self.release(evicted)
        self._held[conn] = _Slot(address, now)
        self._add_stranger(conn, address)
        return Admission(admitted=True, evicted=evicted, evicted_address=evicted_address)

    def own(self, conn: C, address: str, now: float) -> None:
        """alarmhub's own connection: counted, never evicted, no deadline."""
        self._held[conn] = _Slot(address, now, own=True)

    def authenticated(self, conn: C, device: str, now: float) -> Demotion[C] | None:
        """`device` authenticated a request on `conn`; a connection it stops protecting."""
        slot = self._held.get(conn)
        if slot is None:
            return None  # closed meanwhile, or never given a slot
        if not slot.devices and not slot.own:
            self._forget_stranger(conn, slot.address)
        slot.devices.add(device)
        held = self._devices.setdefault(device, OrderedDict())
        held[conn] = None
        held.move_to_end(conn)  # the most recently authenticated last
        if len(held) <= self._per_device:
            return None
        oldest, _ = held.popitem(last=False)
        old = self._held[oldest]
        old.devices.discard(device)
        stranger = not old.devices and not old.own
        if stranger:
            old.since = now
            self._add_stranger(oldest, old.address)
        return Demotion(oldest, stranger)

    def overdue(self, now: float, deadline_s: float) -> list[C]:
        """The strangers that have held a slot for `deadline_s` or more (not released)."""
        late: list[C] = []
        for conn in self._by_age:  # oldest first: stop at the first in time
            if self._held[conn].since > now - deadline_s:
                break
            late.append(conn)
        return late

    def release(self, conn: C) -> None:
        """`conn` is closed (or about to be): its slot is free."""
        slot = self._held.pop(conn, None)
        if slot is None:
            return
        if not slot.devices and not slot.own:
            self._forget_stranger(conn, slot.address)
        for device in slot.devices:
            held = self._devices.get(device)
            if held is not None:
                held.pop(conn, None)
                if not held:
                    del self._devices[device]

    def _victim(self) -> C | None:
        """The oldest stranger of the address holding the most (ties: the oldest of all)."""
        heap = self._heap
        while heap:
            count, since, address = heap[0]
            held = self._strangers.get(address)
            if held and (count, since) == self._rank(held):
                return next(iter(held))
            heapq.heappop(heap)  # stale: the address changed since
        return None

    def _rank(self, held: OrderedDict[C, None]) -> tuple[int, float]:
        return -len(held), self._held[next(iter(held))].since

    def _add_stranger(self, conn: C, address: str) -> None:
        self._strangers.setdefault(address, OrderedDict())[conn] = None
        self._by_age[conn] = None
        self._ranked(address)

    def _forget_stranger(self, conn: C, address: str) -> None:
        self._by_age.pop(conn, None)
        held = self._strangers.get(address)
        if held is not None:
            held.pop(conn, None)
            if not held:
                del self._strangers[address]
            self._ranked(address)

    def _ranked(self, address: str) -> None:
        """Push the address's new rank; rebuild the heap when stale entries dominate."""
        if len(self._heap) > 2 * len(self._strangers) + 64:
            self._heap = [(*self._rank(h), a) for a, h in self._strangers.items()]
            heapq.heapify(self._heap)
            return
        held = self._strangers.get(address)
        if held:
            heapq.heappush(self._heap, (*self._rank(held), address))
