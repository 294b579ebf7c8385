"""Tenancy rules: who may do what, and which municipalities a caller sees.

A :class:`Scope` is computed once per request from the authenticated user and
handed to every scoped read of a store, which filters by it (SQLite in SQL:
store/sqlite/tenancy.py), so a handler cannot forget to. Pure values, so the
web, the CLI and any store can share them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from alarmhub.core.people import Role, User


class Permission(StrEnum):
    READ_ALARMS = "read_alarms"
    ACT_ON_ALARMS = "act_on_alarms"
    READ_DEVICES = "read_devices"
    MANAGE_DEVICES = "manage_devices"
    READ_SILENCES = "read_silences"
    MANAGE_SILENCES = "manage_silences"
    READ_REPORTS = "read_reports"
    READ_DEAD_LETTERS = "read_dead_letters"
    READ_AUDIT = "read_audit"
    MANAGE_USERS = "manage_users"  # disable/enable users, list/revoke tokens (issue 13 #6)
    # The resident register's national identity numbers (issue 17): never operators.
    MANAGE_RESIDENTS = "manage_residents"


_READ = {Permission.READ_ALARMS, Permission.READ_DEVICES, Permission.READ_SILENCES}
GRANTS: dict[Role, frozenset[Permission]] = {
    # Operators handle alarms; they see devices and silences to explain what they see.
    Role.OPERATOR: frozenset({*_READ, Permission.ACT_ON_ALARMS}),
    # Municipality staff run their registry and statistics; alarms are read-only to them.
    Role.MUNICIPALITY_ADMIN: frozenset(
        {
            *_READ,
            Permission.MANAGE_DEVICES,
            Permission.MANAGE_SILENCES,
            Permission.READ_REPORTS,
            Permission.READ_DEAD_LETTERS,
            Permission.MANAGE_USERS,  # their own operators only: see Scope.manages
            Permission.MANAGE_RESIDENTS,  # their own municipalities' residents only
        }
    ),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Scope:
    """The caller: name, role, and the municipalities it may see (None = all)."""

    user: str
    role: Role
    municipalities: frozenset[str] | None

    @classmethod
    def of(cls, user: User) -> Scope:
        if user.role is Role.ADMIN:
            return cls(user.name, user.role, None)
        return cls(user.name, user.role, frozenset(user.municipalities))

    @classmethod
    def everything(cls, name: str) -> Scope:
        """For the CLI, which has the database file and so already sees everything."""
        return cls(name, Role.ADMIN, None)

    def can(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def granted(self) -> list[Permission]:
        """Everything `can` allows, in `Permission`'s order: what `/api/v1/me` tells the
        pages, so they show a role's controls by the rules the API enforces, not a copy."""
        return [p for p in Permission if self.can(p)]

    def allows(self, municipality: str | None) -> bool:
        if self.municipalities is None:
            return True
        return municipality is not None and municipality in self.municipalities

    def manages(self, user: User) -> bool:
        """May this caller see and lock out `user` (or revoke its tokens)?

        An admin manages everyone. A municipality admin manages operators whose
        municipalities all lie within its own, and nobody of its own role or
        above: disabling a peer, or enabling an admin, would act above its own
        role. Nobody manages themselves through this (no self-lockout, no
        self-service around a lock-out); a user's own tokens are `owns`.
        """
        if user.name == self.user:
            return False
        if self.role is Role.ADMIN:
            return True
        if self.role is not Role.MUNICIPALITY_ADMIN or user.role is not Role.OPERATOR:
            return False
        ms = self.municipalities or frozenset()
        return bool(user.municipalities) and set(user.municipalities) <= ms

    def owns_or_manages(self, user: User) -> bool:
        """For tokens: one's own may be listed and revoked too (a leaked token)."""
        return user.name == self.user or self.manages(user)

    def listing(self) -> list[str]:
        return sorted(self.municipalities) if self.municipalities is not None else []


@dataclass(frozen=True, slots=True)
class AlarmFilter:
    state: str | None = None
    municipality: str | None = None
    priority: int | None = None
    limit: int = 100
    after: tuple[int, str, str] | None = None  # keyset cursor: (priority, raised_at, id)


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    municipality: str | None = None
    active: bool | None = True  # None: active and decommissioned
    kind: str | None = None
    text: str | None = None  # a part of the id or label (ASCII letters in any case)
    limit: int | None = 100  # None only for internal callers
    after: tuple[str, str] | None = None  # keyset cursor: (municipality, id) of the last row
