"""The typed dependencies route functions declare instead of writing the same lines out.

A route names what it needs in its signature — the web context, the caller's
scope for one permission, the device, alarm or silence it acts on, an audit
entry builder — and FastAPI resolves each once per request. Each answer that
used to be written out per route (fetch in scope or 404, the audit entry with
the caller's name and address) now has one definition here.

Why the `…_or_404` functions exist beside the `…InScope` dependencies: FastAPI
runs every dependency before it validates the route's own body, so a lookup
that answers 404 as a dependency would answer 404 where a route with a body
answers 422 for a bad body today. Routes without a body take the dependency;
routes with one call the same function after their body is valid.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from alarmhub.core.model import Alarm
from alarmhub.core.people import AuditEntry
from alarmhub.core.suppress import Silence
from alarmhub.core.tenancy import Permission, Scope
from alarmhub.web.auth import require_scope, requires
from alarmhub.web.context import WebContext, web
from alarmhub.web.errors import not_found


async def _context(request: Request) -> WebContext:
    # async: a plain function would be run in FastAPI's thread pool on every request.
    return web(request)


Ctx = Annotated[WebContext, Depends(_context)]

# The caller's scope, after checking its role may do the one thing named (else 403).
ReadAlarms = Annotated[Scope, Depends(requires(Permission.READ_ALARMS))]
ActOnAlarms = Annotated[Scope, Depends(requires(Permission.ACT_ON_ALARMS))]
ReadDevices = Annotated[Scope, Depends(requires(Permission.READ_DEVICES))]
ManageDevices = Annotated[Scope, Depends(requires(Permission.MANAGE_DEVICES))]
ReadSilences = Annotated[Scope, Depends(requires(Permission.READ_SILENCES))]
ManageSilences = Annotated[Scope, Depends(requires(Permission.MANAGE_SILENCES))]
ReadReports = Annotated[Scope, Depends(requires(Permission.READ_REPORTS))]
ReadAudit = Annotated[Scope, Depends(requires(Permission.READ_AUDIT))]
ReadDeadLetters = Annotated[Scope, Depends(requires(Permission.READ_DEAD_LETTERS))]
ManageUsers = Annotated[Scope, Depends(requires(Permission.MANAGE_USERS))]
ManageResidents = Annotated[Scope, Depends(requires(Permission.MANAGE_RESIDENTS))]

AlarmIdPath = Annotated[str, Path(min_length=1, max_length=64)]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]
SilenceIdPath = Annotated[str, Path(min_length=1, max_length=64)]


# --- fetch in the caller's scope, or 404 ----------------------------------------------
# 404 whether it does not exist or belongs to another municipality: see errors.not_found.


async def alarm_or_404(ctx: WebContext, scope: Scope, alarm_id: str) -> Alarm:
    alarm = await ctx.reads.get_alarm(scope, alarm_id)
    if alarm is None:
        raise not_found("alarm")
    return alarm


async def device_or_404(ctx: WebContext, scope: Scope, device_id: str) -> dict[str, Any]:
    device = await ctx.reads.get_device(scope, device_id)
    if device is None:
        raise not_found("device")
    return device


async def silence_or_404(ctx: WebContext, scope: Scope, silence_id: str) -> Silence:
    silence = await ctx.reads.get_silence(scope, silence_id)
    if silence is None:
        raise not_found("silence")
    return silence


async def _readable_alarm(ctx: Ctx, scope: ReadAlarms, alarm_id: AlarmIdPath) -> Alarm:
    return await alarm_or_404(ctx, scope, alarm_id)


async def _readable_device(ctx: Ctx, scope: ReadDevices, device_id: DeviceIdPath) -> dict[str, Any]:
    return await device_or_404(ctx, scope, device_id)


async def _managed_device(
    ctx: Ctx, scope: ManageDevices, device_id: DeviceIdPath
) -> dict[str, Any]:
    return await device_or_404(ctx, scope, device_id)


async def _managed_silence(ctx: Ctx, scope: ManageSilences, silence_id: SilenceIdPath) -> Silence:
    return await silence_or_404(ctx, scope, silence_id)


# The `{alarm_id}` / `{device_id}` / `{silence_id}` of the path, found in the caller's scope.
AlarmInScope = Annotated[Alarm, Depends(_readable_alarm)]
DeviceInScope = Annotated[dict[str, Any], Depends(_readable_device)]
ManagedDevice = Annotated[dict[str, Any], Depends(_managed_device)]
ManagedSilence = Annotated[Silence, Depends(_managed_silence)]


# --- the audit log ------------------------------------------------------------------


class Auditor:
    """Audit entries by the caller, from the caller's address, at the hub's now.

    A change hands :meth:`entry` to the store call that makes it, so both commit in
    one transaction; :meth:`record` writes an entry of something that changes
    nothing else (viewing an alarm).
    """

    def __init__(self, ctx: WebContext, request: Request, scope: Scope) -> None:
        self._ctx = ctx
        self._request = request
        self.user = scope.user

    def entry(
        self,
        action: str,
        *,
        alarm_id: str | None = None,
        device_id: str | None = None,
        municipality: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        return self._ctx.entry(
            self._request,
            self.user,
            action,
            alarm_id=alarm_id,
            device_id=device_id,
            municipality=municipality,
            detail=detail,
        )

    async def record(
        self,
        action: str,
        *,
        alarm_id: str | None = None,
        device_id: str | None = None,
        municipality: str | None = None,
    ) -> None:
        await self._ctx.accounts.audit(
            self.entry(action, alarm_id=alarm_id, device_id=device_id, municipality=municipality),
        )


async def _auditor(
    ctx: Ctx, request: Request, scope: Annotated[Scope, Depends(require_scope)]
) -> Auditor:
    # require_scope is the dependency every permission check builds on: resolved once.
    return Auditor(ctx, request, scope)


Audit = Annotated[Auditor, Depends(_auditor)]
