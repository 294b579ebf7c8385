"""The column names and row shapes both stores share, whatever their SQL dialect.

SQLite (store/sqlite/) and PostgreSQL (store/postgres/) keep the same tables with
the same columns, and the API and the CLI list the same keys from either. Defined
once here, so neither store imports the other's modules and a column added to one
cannot be forgotten in the other's listings.
"""

from __future__ import annotations

import operator
from dataclasses import fields as dc_fields
from typing import Any, Protocol

from alarmhub.core.device_settings import parse_settings
from alarmhub.core.model import Alarm, Device, DeviceKind


class Row(Protocol):
    """A row read by position: a tuple from sqlite3, a Record from asyncpg."""

    def __getitem__(self, index: int, /) -> Any: ...


ALARM_COLUMNS = [f.name for f in dc_fields(Alarm)]
TIME_COLUMNS = frozenset(
    {
        "raised_at",
        "last_seen_at",
        "acknowledged_at",
        "dispatched_at",
        "on_site_at",
        "resolved_at",
        "escalation_from",
        "escalation_exhausted_at",
        "clearing_at",
        "scheduled_at",
        "trigger_ts",
    }
)
_ALARM_VALUES = operator.attrgetter(*ALARM_COLUMNS)
_PRIORITY, _STATE, _REV = (ALARM_COLUMNS.index(c) for c in ("priority", "state", "rev"))


def alarm_values(alarm: Alarm) -> list[Any]:
    """An alarm's ALARM_COLUMNS values as both stores' upserts bind them, times left as
    they are: the priority and state as their values, at the revision after its own.

    One attrgetter call for the 33 columns, then three fixed up: a storm writes a row
    per new alarm, and a getattr with a name test per column cost 3 x as much (issue 18).
    """
    out = list(_ALARM_VALUES(alarm))
    out[_PRIORITY] = int(out[_PRIORITY])
    out[_STATE] = out[_STATE].value
    out[_REV] += 1
    return out


# The fields of a dead letter as the CLI and the API show it.
DEAD_LETTER_KEYS = (
    "seq",
    "received_at",
    "topic",
    "device_id",
    "municipality",
    "msg_id",
    "reason",
    "detail",
)

# The devices table once: DEVICE_COLUMNS build a Device (device_from_row reads
# them by position), DEVICE_KEYS add the registry's own times for listings.
DEVICE_COLUMNS = (
    "id",
    "kind",
    "municipality",
    "profile",
    "heartbeat_interval_s",
    "label",
    "active",
    "resident",
    "settings",
    "bridge",
)
DEVICE_KEYS = (*DEVICE_COLUMNS, "registered_at", "last_seen_at", "sip_credentials")
# The select list of DEVICE_KEYS from `devices` for listings (the same SQL in both stores).
# `sip_credentials`: NULL (none), 'set', or 'set_before_move' when they were set in
# another municipality than the device's: it moved since, and whoever there knows the
# password can still speak as the device until the new municipality sets them again.
DEVICE_LISTING = ", ".join(DEVICE_KEYS[:-1]) + (
    ", (SELECT CASE WHEN c.municipality = devices.municipality THEN 'set' "
    "ELSE 'set_before_move' END FROM device_credentials c WHERE c.device_id = devices.id) "
    "AS sip_credentials"
)
# The written devices whose credentials were set in another municipality (a move),
# read inside the registration's transaction; `{ids}` is the store's list of ids.
CREDENTIALS_SET_ELSEWHERE = (
    "SELECT c.device_id FROM device_credentials c JOIN devices d ON d.id = c.device_id "
    "WHERE c.device_id IN ({ids}) "
    "AND (c.municipality IS NULL OR c.municipality <> d.municipality) ORDER BY c.device_id"
)
# What a registration may change of a registered device (the id is the key).
DEVICE_UPDATABLE = (*DEVICE_COLUMNS[1:], "updated_at")
# A kept resident stays only while the device stays in its municipality: references
# are per municipality, and in another one the same "r-17" is another person.
_KEPT_RESIDENT = (
    "resident = CASE WHEN devices.municipality = excluded.municipality THEN devices.resident END"
)


def device_upsert_set(keep: frozenset[str]) -> str:
    """The SET list of a registration's upsert (SQLite and PostgreSQL alike).

    Columns in `keep` stay as stored, except a resident on a device that moves to
    another municipality: it is cleared (the import's file did not name one).
    """
    sets = [f"{c} = excluded.{c}" for c in DEVICE_UPDATABLE if c not in keep]
    if "resident" in keep:
        sets.append(_KEPT_RESIDENT)
    return ", ".join(sets)


AUDIT_KEYS = (
    "id",
    "at",
    "actor",
    "action",
    "alarm_id",
    "device_id",
    "municipality",
    "address",
    "detail",
)

SILENCE_KEYS = (
    "id",
    "municipality",
    "device_id",
    "starts_at",
    "ends_at",
    "reason",
    "created_by",
    "created_at",
    "include_priority_1",
)


# Device's fields are DEVICE_COLUMNS in the same order: device_from_row passes them by
# position (keywords cost ~1 µs a device, a second of the start-up with 1 M devices).
if Device.__slots__ != DEVICE_COLUMNS:  # pragma: no cover - a field added to one only
    raise ImportError("Device's fields and DEVICE_COLUMNS differ: keep them in one order")
_KINDS = {kind.value: kind for kind in DeviceKind}  # DeviceKind(text) costs ~0.8 µs


def device_from_row(row: Row) -> Device:
    """A row of DEVICE_COLUMNS (by position) as the one Device type."""
    kind = _KINDS.get(row[1]) or DeviceKind(row[1])  # an unknown kind raises as it did
    return Device(
        row[0],
        kind,
        row[2],
        row[3],
        row[4],
        row[5],
        bool(row[6]),
        row[7],
        parse_settings(row[8]),
        row[9],
    )


# A report's time to acknowledge: the alarm's first acknowledgement, from its timeline.
# `alarms.acknowledged_at` is the latest (an acknowledgement reminder puts the alarm back
# in the queue, a repeat press re-alerts it, and the next acknowledgement is timed from
# then), so a 20 s answer reminded after 30 min and resolved read as 1,880 s. The same
# SQL in both stores; the column where no entry says it (rows older than the timeline).
FIRST_ACKNOWLEDGED = (
    "COALESCE((SELECT min(t.at) FROM timeline t WHERE t.alarm_id = alarms.id "
    "AND t.type = 'acknowledged'), acknowledged_at)"
)
