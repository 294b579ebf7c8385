"""How the SQLite store binds None, payloads and the model's enums: not by CPython's slow path.

CPython's sqlite3 binds an exact `str`, `int`, `float` or `bytearray` directly.
Anything else, `None`, `bytes` and every `StrEnum` member included, first goes
through the adapter protocol: a (type, protocol) key is built, looked up in
`sqlite3.adapters`, and on a miss `__adapt__` and `__conform__` are looked up before
the value is bound as it is. All of it holds the GIL. An alarm row carries about 18
NULLs, an inbox row a `Verdict`, its payload as `bytes` and a few NULLs. Measured on
the issue 18 machine: a `None` cost 0.51 us to bind against 0.18 for a text (0.23
with the adapter below), a `StrEnum` 0.70 (0.37), `bytes` 0.79 (0.43), and an alarm
row's UPSERT 16-18 us of CPU against 10.

An adapter found in the registry is called instead of the lookups. `{}.get` returns
None for any value, so None is still bound as NULL; an enum is bound as its value,
the text it was bound as before (a `StrEnum` member is a `str`); `bytes.__bytes__`
hands back the same object, bound as the same blob. The registry is the process's:
registered once on import of this package, which every SQLite path imports.
PostgreSQL (asyncpg) does not use it. tests/store/test_binding.py holds the stored
values and their SQLite types to what the unadapted path stored.
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable
from enum import Enum
from typing import Any

from alarmhub.core.dedup import Identity
from alarmhub.core.model import (
    AlarmState,
    DeviceKind,
    EventType,
    RejectReason,
    TimelineType,
    TsSource,
    Verdict,
)

# The enums the store's rows carry as members (others are bound as `.value` already).
BOUND_ENUMS: tuple[type[Enum], ...] = (
    Verdict,
    RejectReason,
    Identity,
    AlarmState,
    DeviceKind,
    EventType,
    TimelineType,
    TsSource,
)

_NO_ADAPTERS: dict[object, None] = {}
_NULL = _NO_ADAPTERS.get  # a C call: None for any value, so a NULL stays NULL
_VALUE: Callable[[Any], Any] = operator.attrgetter("_value_")


def register() -> None:
    """Register the adapters; idempotent (a later registration replaces the same one)."""
    sqlite3.register_adapter(type(None), _NULL)
    sqlite3.register_adapter(bytes, bytes.__bytes__)
    for enum in BOUND_ENUMS:
        sqlite3.register_adapter(enum, _VALUE)
