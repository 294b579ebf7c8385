"""Non-INVITE server transactions (RFC 3261 §17.2.2): a retransmission is answered, not redone.

A device resends its MESSAGE over UDP (Timer E) until it hears a final response.
Each request is keyed by its top Via (branch and sent-by), Call-ID and CSeq, and by
the transport and address it came from: a copy comes from where the original came
from, and another device that reuses the same identifiers (by chance or on purpose)
starts a transaction of its own instead of getting the first device's answer
(RFC 3261 §17.2.3 matches on sent-by for the same reason). A copy that comes
while the first is still being handled is absorbed, and a copy that comes after
gets the same final response again, for Timer J (32 s) after it was sent. So the
handler sees each request once, however many copies the network delivers.

Bounded: at most `limit` transactions are remembered; past it the oldest is
forgotten first (a copy of that one would be handled again, which the receiver's
dedup by (cid, ref) absorbs). Expiry costs only what expires: answered entries are
queued in the order they were answered, all kept for the same Timer J, so the
expired ones are at the queue's front and `begin` looks at those alone (it used to
copy the whole table on every request: 20,000 entries made the loop 7x slower).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from sipmessage import Request

TIMER_J_S = 32.0  # 64 * T1: how long a final response is kept for retransmissions
DEFAULT_LIMIT = 20_000

# (branch, sent-by, Call-ID, CSeq number, CSeq method, transport, source host, source port)
Key = tuple[str, str, str, int, str, str, str, int]


class Seen(Enum):
    NEW = "new"  # handle it
    PENDING = "pending"  # a copy of one being handled: absorb it
    ANSWERED = "answered"  # a copy of one answered: send `response` again


@dataclass
class _Entry:
    response: bytes | None
    expires: float


def key_of(request: Request, transport: str, source: tuple[str, int]) -> Key:
    """The transaction of `request` from `source`; ValueError when its Via cannot be read."""
    vias = request.via
    if not vias:
        raise ValueError("no Via")
    top = vias[0]
    branch = top.parameters.get("branch") or ""
    sent_by = f"{top.host}:{top.port or ''}".lower()
    cseq = request.cseq
    return (branch, sent_by, request.call_id, cseq.sequence, cseq.method, transport, *source)


class ServerTransactions:
    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        keep_s: float = TIMER_J_S,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self._now = monotonic
        self._keep = keep_s
        self._limit = limit
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        # (expiry, key) of each answered entry, in answering order = expiry order.
        self._expiries: deque[tuple[float, Key]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, key: Key) -> tuple[Seen, bytes | None]:
        """Whether `key` is new, being handled, or answered (with the answer to resend)."""
        self._expire()
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = _Entry(None, float("inf"))
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)
            return Seen.NEW, None
        if entry.response is None:
            return Seen.PENDING, None
        return Seen.ANSWERED, entry.response

    def answered(self, key: Key, response: bytes) -> None:
        """The final response sent for `key`: kept for Timer J for its retransmissions."""
        expires = self._now() + self._keep
        self._entries[key] = _Entry(response, expires)
        self._entries.move_to_end(key)
        self._expiries.append((expires, key))

    def abandon(self, key: Key) -> None:
        """Forget a transaction that got no final response (the handler was cancelled)."""
        self._entries.pop(key, None)

    def _expire(self) -> None:
        now = self._now()
        queue = self._expiries
        while queue and queue[0][0] <= now:
            expires, key = queue.popleft()
            entry = self._entries.get(key)
            # Gone already (over the limit, abandoned) or answered again since: not this one.
            if entry is not None and entry.expires == expires:
                del self._entries[key]
        # The limit evicts from the table but not from the queue; keep the queue bounded too.
        while len(queue) > 2 * self._limit:
            queue.popleft()
