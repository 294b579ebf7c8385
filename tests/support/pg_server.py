"""A private PostgreSQL server of a test's own, started with pg_ctl on a free port.

For tests that stop and start the server (issue 15: "PostgreSQL going away"), which
the shared server at 127.0.0.1:5432 must never be. initdb and the server refuse to
run as root, so they run as the `postgres` user, in a directory it owns under /tmp
(a test's tmp_path is not reachable for that user). Removed when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alarmhub.dev.mosquitto import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_CTL = Path("/usr/local/bin/pg_ctl")


class PrivatePostgres:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N"
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        log = str(self.base / "server.log")
        self._run(str(PG_CTL), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown that cuts every client; `immediate`: as a crash."""
        self._run(str(PG_CTL), "-D", str(self.data), "-m", mode, "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    base = Path(tempfile.mkdtemp(prefix="alarmhub-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    server = PrivatePostgres(base)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running: left stopped
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
