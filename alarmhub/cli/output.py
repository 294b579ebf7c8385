"""Everything the CLI prints: tables, JSON, errors, and the exit codes that go with them.

One module so that every command group formats alike: a script that reads
`alarms list --json` reads `devices list --json` the same way, and every error
a person can fix reads `alarmhub: …` on stderr with exit status 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure the person can fix; the message says how (printed by `main`, exit 1)."""


def table(columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Rows as aligned columns, each cell cut at 60 characters; `(none)` for no rows."""
    if not rows:
        print("(none)")
        return
    text = [[("" if r.get(c) is None else str(r.get(c)))[:60] for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for t in text:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))


def print_json(value: Any) -> None:
    """The store's rows as the API writes them (orjson: times as ISO 8601)."""
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def print_plain_json(value: Any, *, ensure_ascii: bool = True) -> None:
    """Already-plain values through the standard library, as the account commands always did."""
    print(json.dumps(value, indent=2, ensure_ascii=ensure_ascii))


def error(message: str, command: str = "alarmhub") -> None:
    """`alarmhub: message` (or `alarmhub simulate: …`) on stderr."""
    print(f"{command}: {message}", file=sys.stderr)


def warn(message: str) -> None:
    """A line on stderr that does not fail the command (warnings, progress)."""
    print(message, file=sys.stderr)
