"""The shell side of suppression's end: silences in force, and releasing what they hid.

The decisions are pure (:mod:`alarmhub.core.suppress`); this service applies
them. A release is written in the same transaction as the change that ended its
cause, under the write gate's lock, and only then put in memory, armed for
escalation (from the release instant) and announced to the queue:

- an operator resolves an inhibiting alarm or an outage incident
  (:meth:`SuppressionKeeper.on_resolved`, called from `daemon/actions.py`);
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
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

import structlog

from alarmhub.clock import Clock
from alarmhub.core import suppress
from alarmhub.core.model import Alarm
from alarmhub.core.people import AuditEntry
from alarmhub.core.views import alarm_json
from alarmhub.daemon.fanout import Broadcaster
from alarmhub.daemon.gate import WriteGate
from alarmhub.daemon.state import HubState
from alarmhub.daemon.waits import wait_set
from alarmhub.store.ports import ReleaseStore, SilenceSource

log = structlog.get_logger("alarmhub.suppression")
POLL_S = 1.0  # at least this often: a silence deleted by another process is noticed


class SuppressionKeeper:
    """Releases keep their order: commit under the gate, then memory, then `arm` and `live`."""

    def __init__(
        self,
        state: HubState,
        reader: SilenceSource,
        store: ReleaseStore,
        gate: WriteGate,
        clock: Clock,
        arm: Callable[[Alarm], None],
        live: Broadcaster,
    ) -> None:
        self._state = state
        self._reader = reader
        self._store = store
        self._gate = gate
        self._clock = clock
        self._arm = arm
        self._live = live
        self._wake = asyncio.Event()

    # --- silences in force ---------------------------------------------------------

    async def reload(self) -> None:
        """Read the silences in force (or to come) again, e.g. after one was created."""
        self._state.silences = tuple(await self._reader.active_silences(self._clock.now()))
        self._wake.set()

    async def end_silence(self, silence_id: str, by: str, *, audit: Sequence[AuditEntry]) -> bool:
        """End a silence now, release its alarms and append `audit`, in one transaction.

        False when there is no such silence in force (already deleted): nothing audited.
        """
        state = self._state
        async with self._gate.lock:

            async def attempt() -> tuple[bool, list[suppress.Release]]:
                # Decided again on reloaded alarms if one changed elsewhere meanwhile.
                now = self._clock.now()
                tag = f"silence:{silence_id}"
                releases = suppress.released_by(
                    tag,
                    suppress.ReleaseReason.SILENCE_DELETED,
                    state.alarms.attached(tag),
                    now,
                    by,
                )
                ended = await self._gate.until_committed(
                    lambda: self._store.end_silence_releasing(
                        silence_id,
                        by,
                        now,
                        [r.alarm for r in releases],
                        [r.entry for r in releases],
                        audit=audit,
                    )
                )
                return ended, releases

            ended, releases = await self._gate.deciding(attempt)
            if not ended:
                return False
            state.silences = tuple(s for s in state.silences if s.id != silence_id)
            releases = self._put(releases)
        self.announce(releases)
        return True

    # --- releases --------------------------------------------------------------------

    def on_resolved(self, alarm: Alarm, now: datetime, actor: str) -> list[suppress.Release]:
        """What an operator's resolution of `alarm` releases; the caller commits it."""
        return suppress.on_resolved(alarm, self._state.alarms.attached, now, actor)

    def _due(self) -> list[suppress.Release]:
        now = self._clock.now()
        index = self._state.alarms
        return suppress.ended_silences(
            index.suppressed_with("silence:"), self._state.silences, now
        ) + suppress.orphaned(
            index.suppressed_with("inhibited:") + index.suppressed_with("incident:"),
            index.get,
            now,
        )

    async def sweep(self) -> list[suppress.Release]:
        """Release every alarm whose silence is no longer in force, or whose cause is gone."""
        # Runs every second: take the write lock (and hold up ingest) only when
        # there is something to release; decided again under the lock.
        if not self._due():
            return []
        async with self._gate.lock:

            async def attempt() -> list[suppress.Release]:
                releases = self._due()
                if releases:
                    await self._gate.until_committed(
                        lambda: self._store.save_alarms(
                            [r.alarm for r in releases], [r.entry for r in releases], audit=()
                        )
                    )
                return releases

            releases = self._put(await self._gate.deciding(attempt))
        self.announce(releases)
        return releases

    def _put(self, releases: Sequence[suppress.Release]) -> list[suppress.Release]:
        """Put committed releases in memory; the releases with their alarms as stored."""
        return [replace(r, alarm=self._state.alarms.committed(r.alarm)) for r in releases]

    def announce(self, releases: Sequence[suppress.Release]) -> None:
        """After the commit: escalate from now, show in the queue, log."""
        for r in releases:
            self._arm(r.alarm)
            self._live.publish("alarm", alarm_json(r.alarm))
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
            now = self._clock.now()
            end = suppress.next_silence_end(self._state.silences, now)
            delay = POLL_S if end is None else min(POLL_S, (end - now).total_seconds())
            self._wake.clear()
            await wait_set(self._wake, delay)
