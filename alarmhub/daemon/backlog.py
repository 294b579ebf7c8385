"""Which messages may have waited at the broker while alarmhub was away, and since when.

MQTT 3.1.1 carries no broker timestamp: a message's time of receipt is when
alarmhub took it from the broker. After an outage the broker delivers what it
queued for alarmhub's persistent session right after the reconnect, in the order
it was published, so every one of them is "received" at the reconnect. For a
format with a time of its own (native `ts`, Zigbee2MQTT `last_seen`, OwnTracks
`tst`) that is harmless. For one without, a door opened at 23:30 and delivered at
07:05 would be judged at 07:05: daytime, no night alarm (issue 12 item 11).

alarmhub cannot know when each was published. What it knows: not before it lost
the connection (or, at start-up, before the last message it stored), and not
after it was received. Messages received within BACKLOG_WINDOW of a reconnect
whose session the broker kept are marked with that lower bound
(`RawMessage.queued_since`); the rules then treat an alarm window that the span
touches as met (core/rules.py). A live message in those first seconds is marked
too: at worst a night alarm for a door opened just after a night-long outage,
flagged on its timeline with `ts_earliest`, never a missed one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from alarmhub.clock import Clock
from alarmhub.core.model import RawMessage

# A backlog of thousands arrives within a second or two of the reconnect.
BACKLOG_WINDOW = timedelta(seconds=10)


class Backlog:
    def __init__(self, clock: Clock, last_stored: datetime | None) -> None:
        self._clock = clock
        # At start-up the last message stored is when alarmhub was last known alive.
        self._lost_at: datetime | None = last_stored
        self._since: datetime | None = None
        self._until: datetime | None = None

    def disconnected(self) -> None:
        if self._lost_at is None:
            self._lost_at = self._clock.now()

    def connected(self, *, session_present: bool) -> None:
        """The broker delivers a kept session's queue now: mark what arrives in the window."""
        if session_present and self._lost_at is not None:
            self._since = self._lost_at
            self._until = self._clock.now() + BACKLOG_WINDOW
        self._lost_at = None

    def link(self, *, up: bool, session_present: bool) -> None:
        """Told at each CONNACK and each lost link, before any message of the connection.

        The window opened at SUBACK ("connected") until 2026-12-05, but the broker sends
        a kept session's queue right after CONNACK: under load a batch of it could be
        committed before the SUBACK was handled, unmarked, and a door opened at night
        during the outage was judged at its delivery, in the day (docs/reliability.md).
        """
        if up:
            self.connected(session_present=session_present)
        else:
            self.disconnected()

    def mark(self, raws: list[RawMessage]) -> list[RawMessage]:
        since, until = self._since, self._until
        if since is None or until is None:
            return raws
        return [replace(r, queued_since=since) if r.received_at <= until else r for r in raws]
