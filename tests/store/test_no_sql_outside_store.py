"""The store is reached only through alarmhub/store/: no SQL and no SQLite driver elsewhere.

Issue 14: the database used to be reached three ways from two layers (the store,
synchronous account functions, raw SQL in the web). A second store (PostgreSQL)
is a new module under store/ only if nothing outside store/ speaks SQL. This
test reads every module's syntax tree, so a docstring that *mentions* a word
like "select" does not trip it, but a query string or a driver import does.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "alarmhub"
STORE = PACKAGE / "store"
DRIVERS = {"sqlite3", "aiosqlite", "asyncpg", "psycopg", "psycopg2"}
SQL = re.compile(
    r"^\s*(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(TABLE|INDEX|TRIGGER)|DROP\s+TABLE|ALTER\s+TABLE|PRAGMA\s|BEGIN\b|COMMIT\b)",
    re.DOTALL,
)
DB_CALLS = {"execute", "executemany", "executescript"}


def _outside_store() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if STORE not in p.parents)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (prose, not queries)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def offences(source: str) -> list[str]:
    """What in `source` speaks to a database: driver imports, SQL strings, cursor calls."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in DRIVERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in DRIVERS:
            found.append(f"from {node.module} import …")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in prose and SQL.match(node.value):
                found.append(f"SQL on line {node.lineno}: {node.value[:40]!r}")
        elif isinstance(node, ast.JoinedStr):
            # An interpolated part stands for a name or a list of columns: "x".
            text = "".join(
                str(v.value) if isinstance(v, ast.Constant) else "x" for v in node.values
            )
            if SQL.match(text):
                found.append(f"SQL on line {node.lineno}: {text[:40]!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DB_CALLS
        ):
            found.append(f".{node.func.attr}() on line {node.lineno}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import sqlite3",
        "from aiosqlite import connect",
        'Q = "SELECT id FROM alarms"',
        'q = f"SELECT {cols} FROM devices WHERE id = ?"',
        "conn.execute(q)",
        'X = "UPDATE alarms SET state = ?"',
    ],
)
def test_the_check_sees_database_code(source: str) -> None:
    assert offences(source)


def test_the_check_leaves_prose_alone() -> None:
    assert not offences('"""Select the alarms; insert into the queue; delete from view."""')


def test_no_sql_or_driver_outside_the_store() -> None:
    found = {
        str(p.relative_to(PACKAGE.parent)): bad
        for p in _outside_store()
        if (bad := offences(p.read_text(encoding="utf-8")))
    }
    assert found == {}, "database code outside alarmhub/store/: " + repr(found)
