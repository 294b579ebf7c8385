"""The SQLite store binds None and the model's enums through registered adapters
(store/sqlite/binding.py): the same stored values as CPython's own path, which is
slow for anything but an exact str, int, float or bytes (issue 18)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from enum import StrEnum

import pytest

import alarmhub.store.sqlite  # noqa: F401  (registers the adapters)
from alarmhub.core.dedup import Identity
from alarmhub.core.model import RejectReason, Verdict
from alarmhub.store.sqlite.binding import BOUND_ENUMS, register


def _key(kind: type) -> tuple[type, type]:
    return (kind, sqlite3.PrepareProtocol)


def test_none_and_the_bound_enums_are_registered() -> None:
    assert _key(type(None)) in sqlite3.adapters
    assert _key(bytes) in sqlite3.adapters
    for enum in BOUND_ENUMS:
        assert _key(enum) in sqlite3.adapters, enum


def test_every_member_of_a_bound_enum_is_a_str_bound_as_its_value() -> None:
    for enum in BOUND_ENUMS:
        assert issubclass(enum, StrEnum), enum
        for member in enum:
            assert sqlite3.adapters[_key(enum)](member) == member.value
            assert type(sqlite3.adapters[_key(enum)](member)) is str


@pytest.mark.parametrize(
    "value",
    [
        None,
        Verdict.NEW,
        RejectReason.UNKNOWN_DEVICE,
        Identity.ID_REUSED,
        "text",
        7,
        1.5,
        b"{}",
        b"",
    ],
)
def test_stored_as_before(value: object) -> None:
    """What a column holds and its SQLite type are what the unadapted path stored."""
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (v)")
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        conn.executemany("INSERT INTO t VALUES (?)", [(value,), (value,)])
        rows = conn.execute("SELECT v, typeof(v) FROM t").fetchall()
    types = {type(None): "null", int: "integer", float: "real", bytes: "blob"}
    expected_type = types.get(type(value), "text")
    expected = value.value if isinstance(value, StrEnum) else value
    assert rows == [(expected, expected_type)] * 3
    assert all(type(v) is type(expected) for v, _ in rows)


def test_register_is_idempotent() -> None:
    before = dict(sqlite3.adapters)
    register()
    assert dict(sqlite3.adapters) == before
