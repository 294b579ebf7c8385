"""`alarmhub run`'s process-wide settings, made before the daemon's loop starts."""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from alarmhub.cli import run as run_cli
from alarmhub.settings import Settings


def test_the_daemon_process_collects_with_its_own_thresholds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storm's young collections (issue 18) are tuned for the daemon's process only."""
    seen: list[tuple[int, int, int]] = []

    def fake_run(main: Coroutine[Any, Any, None]) -> None:
        seen.append(gc.get_threshold())
        main.close()

    before = gc.get_threshold()
    monkeypatch.setattr(asyncio, "run", fake_run)
    try:
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}")
        assert run_cli.cmd_run(settings, argparse.Namespace()) == 0
    finally:
        gc.set_threshold(*before)
    assert seen == [run_cli.GC_THRESHOLDS]
    assert run_cli.GC_THRESHOLDS != (700, 10, 10)
