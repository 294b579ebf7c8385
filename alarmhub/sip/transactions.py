"""Non-INVITE server transactions (RFC 3261 §17.2.2): a retransmission is answered, not redone.

A device resends its MESSAGE over UDP (Timer E) until it hears a final response.
Each request is keyed by its top Via branch, Call-ID and CSeq; a copy that comes
while the first is still being handled is absorbed, and a copy that comes after
gets the same final response again, for Timer J (32 s) after it was sent. So the
handler sees each request once, however many copies the network delivers.

Bounded: at most `limit` transactions are remembered; past it the oldest is
forgotten first (a copy of that one would be handled again, which the receiver's
dedup by (cid, ref) absorbs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from sipmessage import Request

TIMER_J_S = 32.0  # 64 * T1: how long a final response is kept for retransmissions
DEFAULT_LIMIT = 20_000

Key = tuple[str, str, int, str]


class Seen(Enum):
    NEW = "new"  # handle it
    PENDING = "pending"  # a copy of one being handled: absorb it
    ANSWERED = "answered"  # a copy of one answered: send `response` again


@dataclass
class _Entry:
    response: bytes | None
    expires: float


def key_of(request: Request) -> Key:
    vias = request.via
    branch = (vias[0].parameters.get("branch") if vias else None) or ""
    cseq = request.cseq
    return (branch, request.call_id, cseq.sequence, cseq.method)


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
        self._entries[key] = _Entry(response, self._now() + self._keep)
        self._entries.move_to_end(key)

    def abandon(self, key: Key) -> None:
        """Forget a transaction that got no final response (the handler was cancelled)."""
        self._entries.pop(key, None)

    def _expire(self) -> None:
        now = self._now()
        # Answered entries move to the end as they are answered, so the expired ones
        # are at the front, behind at most the pending ones still being handled.
        for key in list(self._entries):
            entry = self._entries[key]
            if entry.expires > now:
                if entry.response is not None:
                    break
                continue
            del self._entries[key]
