"""`alarmhub users …`, `alarmhub tokens …`, `alarmhub audit …`, `alarmhub report …`."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    del sub  # filled in by the accounts work (issue 4)


__all__ = ["add_commands", "argparse"]
