"""A private PostgreSQL server of a test's own: initdb in a temp dir, pg_ctl on a free port.

For tests that stop the database under a running instance (an outage, a
restart): the shared server at 127.0.0.1:5432 must not be stopped. Trust auth,
loopback only, its socket in its own directory. Run as root (this machine's
tests are), PostgreSQL refuses to start, so the server then runs as the
`postgres` user through `runuser`. `stop()` is `-m immediate` by default: the
server dies as on a crash or power cut and recovers from its WAL at the next
start, the case a failover must survive.

A primary and its streaming standby (issue 15, PostgreSQL with high availability):
`PgServer(settings=primary_settings())` makes a primary whose COMMIT waits for a
synchronous standby, `PgStandby(primary)` a standby cloned from it with
`pg_basebackup -R`, `standby.promote()` the failover, and `multi_host_url(...)` the
URL alarmhub is given, naming both with `target_session_attrs=read-write`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from alarmhub.dev.mosquitto import free_port

BIN = Path(os.environ.get("ALARMHUB_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_CTL = Path("/usr/local/bin/pg_ctl") if Path("/usr/local/bin/pg_ctl").exists() else BIN / "pg_ctl"
RUN_AS = "postgres"


class PgServer:
    """`with PgServer() as pg:` — started; `pg.url(db)`, `pg.stop()`, `pg.start()`."""

    def __init__(self, port: int | None = None, settings: Mapping[str, str] | None = None) -> None:
        self.port = port or free_port()
        # Server settings given on pg_ctl's command line (`-c name=value`), not written
        # to the data directory: a standby cloned from this one does not inherit them.
        self.settings = dict(settings or {})
        self._root = Path(tempfile.mkdtemp(prefix="alarmhub-pg-"))
        self.data = self._root / "data"
        self.log = self._root / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self._root, RUN_AS)
            self._root.chmod(0o700)
        self._create()

    def _create(self) -> None:
        self._run(
            [
                str(BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )

    def _run(self, argv: list[str]) -> None:
        if self._as_root:
            argv = ["runuser", "-u", RUN_AS, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{argv}: {result.stderr}{result.stdout}\n{log[-2000:]}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        self._run(
            [
                str(PG_CTL),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, mode: str = "immediate") -> None:
        self._run([str(PG_CTL), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError):
                self.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        _t: type[BaseException] | None,
        _e: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()


def primary_settings(standby_name: str = "standby1") -> dict[str, str]:
    """A primary whose COMMIT returns only once the standby has the commit record.

    What alarmhub needs for an acknowledged alarm to survive the primary's loss: it
    acknowledges after its COMMIT returned, so the commit must be on the standby by
    then (`synchronous_commit = on`, the standby named in `synchronous_standby_names`).
    """
    return {
        "wal_level": "replica",
        "synchronous_commit": "on",
        # One name is "FIRST 1 (name)": a single value needs no quoting through pg_ctl -o.
        "synchronous_standby_names": standby_name,
    }


class PgStandby(PgServer):
    """A streaming-replication standby of `primary`, cloned with `pg_basebackup -R`.

    `-R` writes `primary_conninfo` and `standby.signal`; `cluster_name` is the name
    the standby reports to the primary (its `application_name`), the one
    :func:`primary_settings` makes synchronous. The primary must be running.
    """

    def __init__(self, primary: PgServer, name: str = "standby1", port: int | None = None) -> None:
        self.primary = primary
        super().__init__(port, settings={"cluster_name": name})

    def _create(self) -> None:
        self._run(
            [
                str(BIN / "pg_basebackup"),
                "-D",
                str(self.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary.port),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "--no-sync",
            ]
        )

    def promote(self) -> None:
        """End recovery: from now on this server accepts writes (a failover's last step)."""
        self._run([str(PG_CTL), "-D", str(self.data), "-w", "-t", "60", "promote"])


def multi_host_url(servers: Sequence[PgServer], database: str = "postgres") -> str:
    """One URL naming every server; a connection goes to whichever accepts writes."""
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"
