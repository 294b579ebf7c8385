"""SQLite on Pythons newer than CI's: positional placeholders only, and every connection closed.

Python's sqlite3 warns from 3.12, and refuses from 3.14, a numbered (`?1`) or named
(`:name`) placeholder bound from a sequence. The store binds tuples everywhere, so such
a placeholder in any of its queries would, on a newer Python, refuse that query: the
devices' `last_seen_at` update once used `?1`..`?4`, and every batch's commit failed on
Python 3.12 under the tests (warnings are errors there) and would on 3.14 in service.
CI runs Python 3.11, whose sqlite3 says nothing, so this test reads the queries instead.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "alarmhub"
DRIVERS = {"sqlite3", "aiosqlite"}
# A numbered (?1), named (:name, @name) or Tcl-style ($name) SQLite parameter.
NOT_POSITIONAL = re.compile(r"\?\d|(?<![\w:]):[A-Za-z_]\w*|@[A-Za-z_]\w*|\$[A-Za-z_]\w*")
# What makes a string a query rather than prose or a log line.
QUERY = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|VALUES|WHERE)\b")


def _sqlite_modules() -> list[Path]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            if DRIVERS & set(names):
                out.append(path)
                break
    return out


def _queries(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and QUERY.search(node.value)
        and "?" in node.value
    ]


def test_the_sqlite_store_is_found_and_has_queries() -> None:
    """The scan below reads what it should: the modules that speak to SQLite, and in
    them the queries (a scan that found nothing would pass whatever they held)."""
    modules = _sqlite_modules()
    assert PACKAGE / "store" / "sqlite" / "batch_rows.py" in modules
    assert all("postgres" not in p.parts for p in modules)
    assert sum(len(_queries(p)) for p in modules) > 50


def test_no_sqlite_query_uses_a_numbered_or_named_placeholder() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {m.group()!r} in {text[:60]!r}"
        for path in _sqlite_modules()
        for line, text in _queries(path)
        for m in NOT_POSITIONAL.finditer(text)
    ]
    assert not found, "bind by position (`?`) only:\n" + "\n".join(found)


def test_the_check_sees_the_placeholders_it_forbids() -> None:
    """The pattern itself: the forms Python 3.14 refuses from a sequence match, and what
    a query legitimately holds (a `?`, a time format, a JSON path, a cast) does not."""
    bad = ["id = ?1", "id = :id", "id = @id", "id = $id"]
    good = ["id = ?", "strftime('%H:%M:%S', ?)", "json_extract(x, '$.a')", "x::text"]
    assert all(NOT_POSITIONAL.search(s) for s in bad)
    assert not any(NOT_POSITIONAL.search(s) for s in good)


def _is_connect(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "connect"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "sqlite3"
    )


def _unclosed_connects(tree: ast.AST) -> list[int]:
    """Lines where a `sqlite3.connect(...)` is used so that nothing closes it: as a `with`
    item (the connection's context manager commits, it does not close), called on at
    once (`sqlite3.connect(db).execute(...)`), or kept in a name that the function never
    closes (`.close()`, `closing(...)`) nor hands on (`return`, `yield`)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.With | ast.AsyncWith):
            lines += [i.context_expr.lineno for i in node.items if _is_connect(i.context_expr)]
        elif isinstance(node, ast.Attribute) and _is_connect(node.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines += _kept_open_in(node)
    return sorted(lines)


def _kept_open_in(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[int]:
    """Connections `fn` assigns to a name it never closes nor returns."""
    handled: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "close":
                handled |= {func.value.id} if isinstance(func.value, ast.Name) else set()
            elif isinstance(func, ast.Name) and func.id == "closing":
                handled |= {a.id for a in node.args if isinstance(a, ast.Name)}
        elif isinstance(node, ast.Return | ast.Yield) and isinstance(node.value, ast.Name):
            handled.add(node.value.id)
    return [
        node.lineno
        for node in ast.walk(fn)
        if isinstance(node, ast.Assign)
        and _is_connect(node.value)
        and any(not isinstance(t, ast.Name) or t.id not in handled for t in node.targets)
    ]


def test_no_sqlite_connection_is_left_for_the_collector_to_close() -> None:
    """From Python 3.13 a connection the collector closes is a ResourceWarning, an error
    under this suite's `filterwarnings`, raised in whichever test runs then (8 tests failed
    on 3.13.0 for connections other tests had left open). CI runs 3.13 too, but the warning
    names whichever test ran next, and 3.11 says nothing: the source is read, and names the
    line. Tests use `tests.support.helpers.sqlite_at` or `db_rows`."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for root in (PACKAGE, PACKAGE.parent / "tests", PACKAGE.parent / "bench")
        for path in sorted(root.rglob("*.py"))
        for line in _unclosed_connects(ast.parse(path.read_text()))
    ]
    assert not found, "close the connection (sqlite_at, db_rows, closing()):\n" + "\n".join(found)


def test_the_connection_check_sees_each_form() -> None:
    src = "with sqlite3.connect(db) as c:\n    pass\nsqlite3.connect(db).execute('x')\n"
    assert _unclosed_connects(ast.parse(src)) == [1, 3]
    closed = "with closing(sqlite3.connect(db)) as c:\n    pass\n"
    assert _unclosed_connects(ast.parse(closed)) == []
    # Kept in a name: closed, or handed on, by the function; else left to the collector
    # (tests/store/test_binding.py did so, once per parameter, before 2026-12-07).
    kept = "def f():\n    c = sqlite3.connect(db)\n    c.execute('x')\n"
    assert _unclosed_connects(ast.parse(kept)) == [2]
    for ending in ("c.close()", "return c", "yield c", "with closing(c):\n        pass"):
        src = f"def f():\n    c = sqlite3.connect(db)\n    {ending}\n"
        assert _unclosed_connects(ast.parse(src)) == [], ending
