"""One daemon per SQLite file: a second `alarmhub run` on the same file is refused.

On SQLite the daemon owns the single-owner work from start to stop without asking
anyone (daemon/leadership.py `SoleOwnership`): nothing in the database says that
another process already does. Two daemons on one file both connected to the broker
with the service's client id and took the session from each other several times a
second, both fired every escalation step (each notification twice), and each kept
its own memory of the alarms, so an acknowledgement through one was overwritten by
the other's next decision. Several instances need PostgreSQL (docs/scaling.md).

The guard is an exclusive ``flock`` on a file beside the database (``<file>.lock``),
held for as long as the daemon's stores are open. The kernel drops it when the
process ends in any way (kill -9 included), so a stale lock never blocks a restart.
It is a file of its own, never the database: SQLite locks the database file with
POSIX locks, which a process loses when it closes *any* descriptor of that file.
Only the daemon takes it; the CLI's commands (`db migrate`, `devices import`, …)
open the database beside a running daemon as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from alarmhub.store.errors import StoreInUseError


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@contextlib.contextmanager
def held_by_this_instance(database: Path, instance_id: str) -> Iterator[None]:
    """Hold the file's daemon lock; StoreInUseError when another daemon holds it."""
    path = lock_path(database.resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            raise StoreInUseError(
                f"{database} is in use by another alarmhub ({holder or 'unknown'}): "
                "one SQLite file serves one instance; several instances share a "
                "PostgreSQL database (docs/scaling.md)"
            ) from None
        # Who holds it, for the refusal above and for whoever looks at the file.
        note = f"instance {instance_id}, pid {os.getpid()} on {socket.gethostname()}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race)
