"""A SCAIP device's digest credentials (issue 16), on both stores through the Directory port.

What is stored is what digest needs and no more: HA1 per algorithm and the realm,
never the password. A write is scoped (a municipality admin sets credentials for
its own devices only; another municipality's device is answered as unknown, and
nothing is written) and audited in the same transaction.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from alarmhub.core.digest import MD5, SHA256, credentials_for, ha1
from alarmhub.core.people import Role
from alarmhub.core.tenancy import Scope
from tests.store.directory_backends import ALL, NOW, OSLO, Backend, entry

PASSWORD = "correct horse battery staple"


async def test_credentials_are_stored_as_ha1_and_read_back(backend: Backend) -> None:
    await backend.device("4790012345", "0301", NOW - timedelta(days=1))
    creds = credentials_for("4790012345", "alarmhub", PASSWORD)
    d = backend.directory

    assert await d.device_credentials("4790012345") is None
    assert await d.set_device_credentials(ALL, creds, NOW, [entry("device.credentials_set")])
    assert await d.device_credentials("4790012345") == creds
    assert creds.ha1_md5 == ha1(MD5, "4790012345", "alarmhub", PASSWORD)
    assert creds.ha1_sha256 == ha1(SHA256, "4790012345", "alarmhub", PASSWORD)
    # Nothing of the password itself is anywhere in the table.
    dump = str(
        await backend.scalar("SELECT ha1_md5 || ha1_sha256 || realm FROM device_credentials")
    )
    assert PASSWORD not in dump
    assert "horse" not in dump

    # Set again (a new password, another realm): replaced, one row.
    again = credentials_for("4790012345", "centre", "another")
    assert await d.set_device_credentials(ALL, again, NOW, [])
    assert await d.device_credentials("4790012345") == again
    assert await backend.scalar("SELECT count(*) FROM device_credentials") == 1


async def test_a_write_is_scoped_and_audited_in_its_transaction(backend: Backend) -> None:
    await backend.device("osl-1", "0301", NOW - timedelta(days=1))
    await backend.device("brg-1", "4601", NOW - timedelta(days=1))
    d = backend.directory
    before = await backend.scalar("SELECT count(*) FROM audit")
    admin_oslo = Scope("mia", Role.MUNICIPALITY_ADMIN, frozenset({"0301"}))

    # Another municipality's device, or none at all: refused, nothing written.
    brg = credentials_for("brg-1", "alarmhub", PASSWORD)
    assert not await d.set_device_credentials(admin_oslo, brg, NOW, [entry("x")])
    assert not await d.set_device_credentials(
        ALL, credentials_for("ghost", "alarmhub", PASSWORD), NOW, [entry("x")]
    )
    assert await d.device_credentials("brg-1") is None
    assert await backend.scalar("SELECT count(*) FROM audit") == before

    osl = credentials_for("osl-1", "alarmhub", PASSWORD)
    assert await d.set_device_credentials(OSLO, osl, NOW, [entry("device.credentials_set")])
    assert await backend.scalar("SELECT count(*) FROM audit") == before + 1

    # The audit insert fails: the credentials are not changed either.
    await backend.fail_audit("device.credentials_set")
    try:
        changed = credentials_for("osl-1", "alarmhub", "new password")
        with pytest.raises(Exception, match="injected fault"):
            await d.set_device_credentials(ALL, changed, NOW, [entry("device.credentials_set")])
    finally:
        await backend.heal_audit()
    assert await d.device_credentials("osl-1") == osl


async def test_an_id_no_row_can_match_is_unknown(backend: Backend) -> None:
    d = backend.directory
    assert await d.device_credentials("nul\x00id") is None
    assert await d.device_credentials("") is None
