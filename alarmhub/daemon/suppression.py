"""The shell side of suppression's end: silences in force, and releasing what they hid.

The decisions are pure (:mod:`alarmhub.core.suppress`); this service applies
them. A release is written in the same transaction as the change that ended its
cause, under the hub's write lock, and only then put in memory, armed for
escalation (from the release instant) and announced to the queue:

- an operator resolves an inhibiting alarm or an outage incident
  (:meth:`SuppressionKeeper.on_resolved`, called from `AlarmHub._act`);
- a silence is deleted through the API (:meth:`end_silence`);
- a silence reaches its end time, or disappears from the store because another
  process deleted it: :meth:`run` wakes at the earliest end (and at least once a
  second, for the latter) and :meth:`sweep` releases what it covered. The sweep
  is idempotent and runs at start-up too, so a silence that ended while alarmhub
  was down lets its alarms go on the next start; it also releases alarms whose
  inhibiting alarm or incident is no longer active (stored before releases
  existed, or resolved by another process).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from alarmhub.core import suppress
from alarmhub.core.model import Alarm
from alarmhub.core.people import AuditEntry
from alarmhub.core.views import alarm_json

if TYPE_CHECKING:
    from alarmhub.app import AlarmHub

log = structlog.get_logger("alarmhub.suppression")
POLL_S = 1.0  # at least this often: a silence deleted by another process is noticed


class SuppressionKeeper:
    def __init__(self, hub: AlarmHub) -> None:
        self._hub = hub
        self._wake = asyncio.Event()

    # --- silences in force ---------------------------------------------------------

    async def reload(self) -> None:
        """Read the silences in force (or to come) again, e.g. after one was created."""
        hub = self._hub
        hub.silences = tuple(await hub.reader.active_silences(hub.clock.now()))
        self._wake.set()

    async def end_silence(self, silence_id: str, by: str, *, audit: Sequence[AuditEntry]) -> bool:
        """End a silence now, release its alarms and append `audit`, in one transaction.

        False when there is no such silence in force (already deleted): nothing audited.
        """
        hub = self._hub
        async with hub.write_lock:
            now = hub.clock.now()
            tag = f"silence:{silence_id}"
            releases = suppress.released_by(
                tag,
                suppress.ReleaseReason.SILENCE_DELETED,
                hub.state.alarms.attached(tag),
                now,
                by,
            )
            ended = await hub.until_committed(
                lambda: hub.store.end_silence_releasing(
                    silence_id,
                    by,
                    now,
                    [r.alarm for r in releases],
                    [r.entry for r in releases],
                    audit=audit,
                )
            )
            if not ended:
                return False
            hub.silences = tuple(s for s in hub.silences if s.id != silence_id)
            self._put(releases)
        self.announce(releases)
        return True

    # --- releases --------------------------------------------------------------------

    def on_resolved(self, alarm: Alarm, now: datetime, actor: str) -> list[suppress.Release]:
        """What an operator's resolution of `alarm` releases; the caller commits it."""
        return suppress.on_resolved(alarm, self._hub.state.alarms.attached, now, actor)

    def _due(self) -> list[suppress.Release]:
        hub = self._hub
        now = hub.clock.now()
        index = hub.state.alarms
        return suppress.ended_silences(
            index.suppressed_with("silence:"), hub.silences, now
        ) + suppress.orphaned(
            index.suppressed_with("inhibited:") + index.suppressed_with("incident:"),
            index.get,
            now,
        )

    async def sweep(self) -> list[suppress.Release]:
        """Release every alarm whose silence is no longer in force, or whose cause is gone."""
        hub = self._hub
        # Runs every second: take the write lock (and hold up ingest) only when
        # there is something to release; decided again under the lock.
        if not self._due():
            return []
        async with hub.write_lock:
            releases = self._due()
            if releases:
                await hub.until_committed(
                    lambda: hub.store.save_alarms(
                        [r.alarm for r in releases], [r.entry for r in releases], audit=()
                    )
                )
                self._put(releases)
        self.announce(releases)
        return releases

    def _put(self, releases: Sequence[suppress.Release]) -> None:
        for r in releases:
            self._hub.state.alarms.put(r.alarm)

    def announce(self, releases: Sequence[suppress.Release]) -> None:
        """After the commit: escalate from now, show in the queue, log."""
        hub = self._hub
        for r in releases:
            hub.escalator.arm(r.alarm)
            hub.live.publish("alarm", alarm_json(r.alarm))
            log.info(
                "alarm.released",
                alarm_id=r.alarm.id,
                municipality=r.alarm.municipality,
                kind=r.alarm.kind,
                reason=r.entry.detail["reason"],
                was=r.entry.detail["was"],
            )

    # --- the timer -------------------------------------------------------------------

    async def run(self) -> None:
        """Wake at each silence's end (and every POLL_S) and release what it covered."""
        while True:
            await self.sweep()
            hub = self._hub
            now = hub.clock.now()
            end = suppress.next_silence_end(hub.silences, now)
            delay = POLL_S if end is None else min(POLL_S, (end - now).total_seconds())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(delay, 0.0))
