"""Who acts on alarmhub and the trace they leave: roles, users, audit entries.

Plain values, shared by every layer that names a person: the web and the CLI
authenticate one, the tenancy rules scope by one, and each store (SQLite today,
a PostgreSQL one next) persists them. Defined here, once, so no layer has to
import a store to say who someone is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


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
