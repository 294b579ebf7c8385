"""`alarmhub simulate …`: realistic device traffic through the device profiles."""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    del sub  # filled in by the simulator work (issue 5)
