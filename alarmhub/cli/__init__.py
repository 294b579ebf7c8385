"""The `alarmhub` command: one module per command group, `main` is the entry point.

`main` is re-exported here because pyproject's console script names
`alarmhub.cli:main`, and installed scripts must keep working unchanged.
"""

from alarmhub.cli.main import main

__all__ = ["main"]
