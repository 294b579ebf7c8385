"""The journal note's author as the store reads it (issue 17), on both stores.

`hpr_of` is the read the delivery worker (on the reader's store) and `alarmhub journal
export` make for the resolving user; the number is set through the directory
(test_directory_accounts.py). Here: the column the migrations added, read back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alarmhub.store.accounts import ts
from tests.store.conftest import OpenedStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_hpr_of_reads_the_user_records_number(opened: OpenedStore) -> None:
    created = ts(NOW) if opened.kind == "sqlite" else NOW
    for name, hpr in (("kari", "1234567"), ("ola", None)):
        await opened.rows(
            "INSERT INTO users (name, role, municipalities, password_hash, created_at, hpr) "
            "VALUES (?, 'operator', '[\"0301\"]', 'h', ?, ?)",
            name,
            created,
            hpr,
        )
    store = opened.store
    assert await store.hpr_of("kari") == "1234567"
    assert await store.hpr_of("ola") is None  # a user without one
    assert await store.hpr_of("nobody") is None
    assert await store.hpr_of("") is None  # an alarm resolved by nobody
    assert await store.hpr_of("ka\x00ri") is None  # never an error a name could cause
