"""`alarmhub` — the command line: run the daemon, manage devices, read the queue.

Every command except `run` reads or writes the database directly, so it works
whether or not the daemon is running (SQLite in WAL mode with a busy timeout).
Exit status: 0 success, 1 the command failed, 2 a bad setting or argument.

This module only builds the parser from each command group's `add_parser` and
dispatches; the groups live one per module and print through cli/output.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from alarmhub.cli import (
    alarms,
    audit,
    bridges,
    cluster,
    db_commands,
    dead_letters,
    devices,
    journal,
    report,
    residents,
    rules,
    run,
    simulate,
    tokens,
    users,
)
from alarmhub.cli.output import EXIT_FAILED, EXIT_USAGE, CommandError, error
from alarmhub.config.profiles import ProfileError
from alarmhub.config.rules import RulesError
from alarmhub.core.registry import RegistryError
from alarmhub.observability.logs import configure_logging
from alarmhub.settings import SettingsError, load_settings

# In the order `alarmhub --help` lists them.
GROUPS = (
    run,
    devices,
    bridges,
    alarms,
    dead_letters,
    users,
    tokens,
    audit,
    residents,
    report,
    journal,
    simulate,
    rules,
    db_commands,
    cluster,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = load_settings(Path(args.config) if args.config else None)
    except SettingsError as exc:
        error(str(exc))
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    try:
        result: int = args.func(settings, args)
    except (CommandError, RegistryError, RulesError, ProfileError) as exc:
        error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alarmhub", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", help="settings file (default: $ALARMHUB_CONFIG or config/alarmhub.toml)"
    )
    sub = p.add_subparsers(title="commands")
    for group in GROUPS:
        group.add_parser(sub)
    return p
