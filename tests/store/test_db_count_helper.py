"""The tests' `db_count` (tests/support/helpers.py) cannot hide a query that cannot run.

It answered 0 for any SQLite error, so `count(*) FROM dead_letters` (no such table: dead
letters are inbox rows with verdict 'rejected') made `== 0` an assertion that never
failed. It still answers 0 while a starting daemon has not created its schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alarmhub.store.sqlite.migrations import migrate
from tests.support.helpers import db_count


def test_a_missing_table_is_an_error_once_the_schema_is_there(tmp_path: Path) -> None:
    db = tmp_path / "alarmhub.db"
    conn = sqlite3.connect(db)
    migrate(conn)
    conn.commit()
    conn.close()
    assert db_count(db, "SELECT count(*) FROM inbox WHERE verdict = 'rejected'") == 0
    with pytest.raises(sqlite3.OperationalError, match="dead_letters"):
        db_count(db, "SELECT count(*) FROM dead_letters")


def test_before_the_schema_exists_the_count_is_0(tmp_path: Path) -> None:
    assert db_count(tmp_path / "alarmhub.db", "SELECT count(*) FROM inbox") == 0
