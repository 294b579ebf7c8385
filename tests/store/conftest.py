"""The `backend` fixture: the Directory port on each store (tests/store/directory_backends.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.store.directory_backends import (
    Backend,
    norwegian_database,
    postgres_backend,
    sqlite_backend,
)
from tests.support.postgres import scratch_database


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-nb", marks=pytest.mark.postgres),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The directory on each store; postgres-nb is a database that sorts text as nb_NO."""
    if request.param == "sqlite":
        async with sqlite_backend(tmp_path) as b:
            yield b
        return
    database = scratch_database() if request.param == "postgres" else norwegian_database()
    async with database as url, postgres_backend(url) as b:
        yield b
