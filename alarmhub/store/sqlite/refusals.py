"""SQLite's refusals as the StoreError the daemon's callers catch and retry.

SQLite refuses a call when the file is locked past busy_timeout, the disk is full,
an I/O fails or the schema was changed under it (a table renamed or dropped by
another process). Each is an `aiosqlite.Error` (sqlite3's own classes). The
daemon's long-running tasks (the journal worker, the notifier, the registry's
refresh, ingest's device lookup, the escalator's load) catch StoreError and try
again on their next turn; anything else out of them ends the daemon's TaskGroup,
and MQTT and SIP intake with it. The writes always went through
`SqliteStore._in_writer_thread`, which converted; the reads on the connection
itself (`due_journal`, `devices_changed_since`, `get_devices`, `fired_keys`, …) did
not. :func:`refusals_as_store_errors` converts at the store's edge, for every public
coroutine of a store class at once, so a read added later is covered too.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiosqlite

from alarmhub.store.errors import StoreError

C = TypeVar("C", bound=type)


@contextlib.contextmanager
def as_store_error() -> Iterator[None]:
    """SQLite's refusal (locked, full, I/O, schema) raised as StoreError, its cause kept."""
    try:
        yield
    except aiosqlite.Error as exc:
        raise StoreError(str(exc)) from exc


def refusals_as_store_errors(cls: C) -> C:
    """Wrap every public coroutine method of `cls` and its mixins in :func:`as_store_error`.

    Private helpers (`_in_writer_thread`, `_rollback`) are left as they are: they
    run inside a public method, which converts. Class methods (`open`) too: a
    store that cannot be opened at start is the start's failure, said as it is.
    """
    seen: set[str] = set()
    for klass in cls.__mro__[:-1]:  # without `object`
        for name, attr in vars(klass).items():
            if name in seen or name.startswith("_"):
                continue
            seen.add(name)  # the first in the MRO is the one in force
            if inspect.iscoroutinefunction(attr):
                setattr(cls, name, _converting(attr))
    return cls


def _converting(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def converted(*args: Any, **kwargs: Any) -> Any:
        with as_store_error():
            return await fn(*args, **kwargs)

    return converted
