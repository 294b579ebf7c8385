"""Indexes over the active alarms, and a batch's working overlay on them.

:class:`AlarmIndex` is the daemon's in-memory view of what the store holds
(active alarms plus recently auto-resolved ones, for flap detection). The
pipeline never changes it: it works on a :class:`Working` overlay that shadows
the alarms a batch has touched, and the shell applies the batch's alarms to the
index only after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from alarmhub.core.model import Alarm, amended

# (device id, alarm kind), or (device id, alarm kind, scheduled instant in ISO 8601
# UTC) for an alarm about one scheduled occurrence: each missed dose is an alarm of
# its own (issue 12 item 17, Alarm.scheduled_at).
AlarmKey = tuple[str, str] | tuple[str, str, str]
# A resident reference means something only inside its municipality: "r-17" of
# 4601 and "r-17" of 0301 are two people, and one's alarms must never inhibit
# the other's (issue 12 item 1).
ResidentKey = tuple[str, str]  # (municipality, resident)
# How many stored ids outside memory the index remembers (AlarmIndex.learn_taken):
# learnt one refused write at a time, so a few at most in practice.
TAKEN_MAX = 10_000


def alarm_key(device_id: str, kind: str, scheduled_at: datetime | None = None) -> AlarmKey:
    """The key an alarm is found by: per scheduled occurrence when it has one."""
    if scheduled_at is None:
        return (device_id, kind)
    return (device_id, kind, scheduled_at.astimezone(UTC).isoformat())


def key_of(alarm: Alarm) -> AlarmKey:
    return alarm_key(alarm.device_id, alarm.kind, alarm.scheduled_at)


class AlarmIndex:
    def __init__(self) -> None:
        self.by_key: dict[AlarmKey, Alarm] = {}
        self.by_id: dict[str, Alarm] = {}
        self._resolved: dict[AlarmKey, Alarm] = {}
        self._by_resident: dict[ResidentKey, set[str]] = {}
        # (municipality, kind) -> ids: the storm check looks at a few kinds of one
        # municipality, and must not walk every active alarm for each new one.
        self._by_municipality: dict[tuple[str, str], set[str]] = {}
        self._by_tag: dict[str, set[str]] = {}
        # Ids the store holds that memory does not (alarms resolved long ago), learnt
        # when the store refused to write over one: see taken().
        self._taken: dict[str, None] = {}

    # --- queries (the pipeline's view) -----------------------------------

    def active(self, key: AlarmKey) -> Alarm | None:
        return self.by_key.get(key)

    def get(self, alarm_id: str) -> Alarm | None:
        return self.by_id.get(alarm_id)

    def recently_resolved(self, key: AlarmKey) -> Alarm | None:
        return self._resolved.get(key)

    def taken(self, alarm_id: str) -> bool:
        """Is an alarm with this id already stored (active here, or learnt)?

        A new alarm's id derives from its message (judge.alarm_id). A device that
        reuses a message id after that message's inbox row was pruned (a counter
        started over with new batteries) is new to dedup, and its alarm would get
        the old alarm's id: the store refuses to write over it, and deciding again
        the same way would be refused for ever, holding every later message.
        """
        return alarm_id in self.by_id or alarm_id in self._taken

    def learn_taken(self, alarm_id: str) -> None:
        """Remember a stored id memory does not hold (after the store refused a write)."""
        self._taken[alarm_id] = None
        if len(self._taken) > TAKEN_MAX:
            del self._taken[next(iter(self._taken))]

    def for_resident(self, municipality: str, resident: str) -> list[Alarm]:
        """Active alarms of one resident: the reference is looked up within its municipality."""
        return [self.by_id[i] for i in self._by_resident.get((municipality, resident), ())]

    def for_municipality(self, municipality: str, kinds: Iterable[str]) -> list[Alarm]:
        """Active alarms of these kinds in one municipality."""
        return [
            self.by_id[i]
            for kind in kinds
            for i in self._by_municipality.get((municipality, kind), ())
        ]

    def attached(self, tag: str) -> list[Alarm]:
        """Active alarms whose `suppressed_by` is `tag` (e.g. "incident:<id>")."""
        return [self.by_id[i] for i in self._by_tag.get(tag, ())]

    def suppressed_with(self, prefix: str) -> list[Alarm]:
        """Active alarms whose `suppressed_by` starts with `prefix` (e.g. "silence:").

        Walks the tags, not the alarms: there are few silences at a time.
        """
        return [
            self.by_id[i] for t, ids in self._by_tag.items() if t.startswith(prefix) for i in ids
        ]

    # --- changes (the shell, after commit) -----------------------------------

    def put(self, alarm: Alarm) -> None:
        old = self.by_id.get(alarm.id)
        if old is not None:
            self._unindex(old)
        key = key_of(alarm)
        if alarm.is_active:
            if _newest(self.by_key.get(key), alarm):
                self.by_key[key] = alarm
            self.by_id[alarm.id] = alarm
            self._resolved.pop(key, None)
            if alarm.resident:
                key = (alarm.municipality, alarm.resident)
                self._by_resident.setdefault(key, set()).add(alarm.id)
            self._by_municipality.setdefault((alarm.municipality, alarm.kind), set()).add(alarm.id)
            if alarm.suppressed_by:
                self._by_tag.setdefault(alarm.suppressed_by, set()).add(alarm.id)
            return
        if self.by_key.get(key) is not None and self.by_key[key].id == alarm.id:
            del self.by_key[key]
        if alarm.outcome == "auto":
            self._resolved[key] = alarm

    def committed(self, alarm: Alarm) -> Alarm:
        """Put an alarm the store has just written, at its new revision; that alarm.

        The store wrote the row at `rev + 1` (Alarm.rev): the next write must name it.
        """
        stored = amended(alarm, rev=alarm.rev + 1)
        self.put(stored)
        return stored

    def _unindex(self, alarm: Alarm) -> None:
        self.by_id.pop(alarm.id, None)
        if alarm.resident is not None:
            _discard(self._by_resident, (alarm.municipality, alarm.resident), alarm.id)
        _discard(self._by_municipality, (alarm.municipality, alarm.kind), alarm.id)
        if alarm.suppressed_by is not None:
            _discard(self._by_tag, alarm.suppressed_by, alarm.id)

    def load(self, alarms: Iterable[Alarm]) -> None:
        for alarm in alarms:
            self.put(alarm)

    def forget_resolved_before(self, cutoff: datetime) -> None:
        """Drop auto-resolved alarms older than the flap window: they can no longer reopen."""
        stale = [k for k, a in self._resolved.items() if a.resolved_at and a.resolved_at < cutoff]
        for key in stale:
            del self._resolved[key]

    def __len__(self) -> int:
        return len(self.by_id)


def _newest(current: Alarm | None, alarm: Alarm) -> bool:
    """Whether `alarm` becomes the one its (device, kind) key finds.

    Two alarms of one device and kind can be active at once (issue 12 item 4: a
    trigger never joins one older than the merge age, or one whose suppression has
    ended): the key finds the newest, and a change to the older one (acknowledged,
    resolved) must not make the next press find it again.
    """
    if alarm.superseded_by is not None:
        # Set aside for a newer alarm: the key finds it only until that one is put.
        return current is None or current.id == alarm.id
    return (
        current is None
        or current.id == alarm.id
        or not current.is_active
        or current.superseded_by is not None
        or current.raised_at <= alarm.raised_at
    )


def _discard(index: dict[Any, set[str]], key: object, alarm_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(alarm_id)
        if not ids:
            del index[key]


class Working:
    """A batch's view: the index, shadowed by the alarms this batch changed."""

    def __init__(self, base: AlarmIndex) -> None:
        self.base = base
        self.changed: dict[str, Alarm] = {}
        self._changed_keys: dict[AlarmKey, str] = {}

    def put(self, alarm: Alarm) -> None:
        self.changed[alarm.id] = alarm
        key = key_of(alarm)
        if _newest(self.current(key), alarm):
            self._changed_keys[key] = alarm.id

    def current(self, key: AlarmKey) -> Alarm | None:
        """The batch's newest alarm of this device and kind, active or just resolved."""
        if key in self._changed_keys:
            return self.changed[self._changed_keys[key]]
        return self.base.active(key)

    def get(self, alarm_id: str) -> Alarm | None:
        return self.changed.get(alarm_id) or self.base.get(alarm_id)

    def recently_resolved(self, key: AlarmKey) -> Alarm | None:
        return self.base.recently_resolved(key)

    def taken(self, alarm_id: str) -> bool:
        return alarm_id in self.changed or self.base.taken(alarm_id)

    def for_resident(self, municipality: str, resident: str) -> list[Alarm]:
        return self._merge(
            self.base.for_resident(municipality, resident),
            lambda a: a.resident == resident and a.municipality == municipality,
        )

    def for_municipality(self, municipality: str, kinds: Iterable[str]) -> list[Alarm]:
        wanted = frozenset(kinds)
        return self._merge(
            self.base.for_municipality(municipality, wanted),
            lambda a: a.municipality == municipality and a.kind in wanted,
        )

    def attached(self, tag: str) -> list[Alarm]:
        return self._merge(self.base.attached(tag), lambda a: a.suppressed_by == tag)

    def _merge(self, base: list[Alarm], wanted: Callable[[Alarm], bool]) -> list[Alarm]:
        out = [self.changed.get(a.id, a) for a in base]
        out = [a for a in out if a.is_active and wanted(a)]
        seen = {a.id for a in out}
        out.extend(
            a for a in self.changed.values() if a.id not in seen and a.is_active and wanted(a)
        )
        return out
