"""Who acts on alarmhub and the trace they leave: roles, users, audit entries.

Plain values, shared by every layer that names a person: the web and the CLI
authenticate one, the tenancy rules scope by one, and each store (SQLite today,
a PostgreSQL one next) persists them. Defined here, once, so no layer has to
import a store to say who someone is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from alarmhub.core.model import Device


class Role(StrEnum):
    OPERATOR = "operator"
    MUNICIPALITY_ADMIN = "municipality_admin"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    municipalities: tuple[str, ...]
    active: bool = True


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    at: datetime
    address: str | None = None
    alarm_id: str | None = None
    device_id: str | None = None
    municipality: str | None = None
    detail: dict[str, Any] | None = None


def import_audit(
    actor: str, now: datetime, address: str | None, devices: Sequence[Device]
) -> list[AuditEntry]:
    """One `device.imported` entry per municipality of an import, with its count.

    Beside AuditEntry because the API's and the CLI's imports both write it, and
    neither may import the other (issue 14).
    """
    return [
        AuditEntry(
            actor,
            "device.imported",
            now,
            address=address,
            municipality=m,
            detail={"count": sum(d.municipality == m for d in devices)},
        )
        for m in sorted({d.municipality for d in devices})
    ]
