"""`/api/v1` for municipality staff and admins: devices, silences, reports, audit, me.

Every read is a scoped query from `web.tenancy`; every change by a person is
written to the audit log with the caller's address.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from alarmhub.cli.main import (
    CommandError,
    device_from_values,
    import_audit,
    known_profile,
    parse_device_csv,
    preserved_columns,
)
from alarmhub.config.device_settings import SettingsInvalidError
from alarmhub.config.profiles import bridge_missing
from alarmhub.core import reports
from alarmhub.core.decode import Catalog
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.moves import move_errors
from alarmhub.core.people import AuditEntry, Role
from alarmhub.core.suppress import Silence, silence_end
from alarmhub.core.tenancy import DeviceFilter, Permission, Scope
from alarmhub.store.sqlite import accounts, tenancy
from alarmhub.store.sqlite.device_moves import IdTakenError, MoveRefusedError
from alarmhub.web.auth import Principal, require_principal, requires
from alarmhub.web.context import WebContext, client_address, web
from alarmhub.web.errors import ApiError, forbidden, not_found, responses
from alarmhub.web.models import (
    AuditOut,
    DeadLetterOut,
    DeviceIn,
    DeviceOut,
    DevicePatch,
    ImportResult,
    Me,
    Municipality,
    ReportOut,
    SilenceIn,
    SilenceOut,
)
from alarmhub.web.paging import (
    DEVICE_PAGE,
    MAX_CURSOR,
    MAX_DEVICE_PAGE,
    PAGE_HEADERS,
    decode_device_cursor,
    encode_device_cursor,
)

OSLO = ZoneInfo("Europe/Oslo")
# Days a report may name; outside them the conversion to UTC would overflow.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]
SilenceIdPath = Annotated[str, Path(min_length=1, max_length=64)]


ReadDevices = Annotated[Scope, Depends(requires(Permission.READ_DEVICES))]
ManageDevices = Annotated[Scope, Depends(requires(Permission.MANAGE_DEVICES))]
ReadSilences = Annotated[Scope, Depends(requires(Permission.READ_SILENCES))]
ManageSilences = Annotated[Scope, Depends(requires(Permission.MANAGE_SILENCES))]
ReadReports = Annotated[Scope, Depends(requires(Permission.READ_REPORTS))]
ReadAudit = Annotated[Scope, Depends(requires(Permission.READ_AUDIT))]
ReadDeadLetters = Annotated[Scope, Depends(requires(Permission.READ_DEAD_LETTERS))]

_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "header `id,kind,municipality` and any of "
        "`heartbeat_interval,label,profile,resident,settings,bridge`",
    }
}


def _checked_device(body: DeviceIn | dict[str, Any], catalog: Catalog | None = None) -> Device:
    """The registry's checks (cli.device_from_values, one definition), as a 422.

    With `catalog`, a named profile must exist (cli.known_profile): given when
    the caller sets the profile, not when decommissioning a device as stored.
    """
    try:
        device = device_from_values(body.model_dump() if isinstance(body, DeviceIn) else body)
        return known_profile(catalog, device)
    except (CommandError, SettingsInvalidError) as exc:
        raise ApiError(422, "validation", str(exc)) from None


def _bridged(catalog: Catalog, device: Device) -> Device:
    """The device, or a 422 if its Zigbee2MQTT profile needs a bridge it lacks (finding 9)."""
    problem = bridge_missing(catalog, device)
    if problem is not None:
        raise ApiError(422, "validation", problem)
    return device


async def _register(ctx: WebContext, device: Device, entry: AuditEntry) -> DeviceOut:
    try:
        await ctx.hub.register_devices([device], audit=[entry])
    except MoveRefusedError as exc:
        # Its open alarms would stay in the old queue and its next press join them
        # there (issue 12 item 9): resolve them first. The caller manages the device
        # in its current municipality, so the alarms named are theirs to see.
        [refused] = exc.refused
        raise ApiError(
            409, "device_has_open_alarms", refused.message(), alarms=list(refused.alarm_ids)
        ) from None
    stored = await ctx.db(tenancy.get_device, Scope.everything("system"), device.id)
    return DeviceOut.model_validate(stored)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), OSLO)


def router() -> APIRouter:  # noqa: C901, PLR0915 - one flat list of routes reads best
    # The full prefix here, not at include time: metrics label routes by this path.
    r = APIRouter(prefix="/api/v1", responses=responses(401, 403, 422))

    # --- me and audit ---------------------------------------------------------

    @r.get("/me", response_model=Me, tags=["auth"])
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> Me:
        """Who the caller is: name, role and municipalities (the pages read this)."""
        u = principal.user
        return Me(
            name=u.name,
            role=u.role.value,
            municipalities=list(u.municipalities),
            all_municipalities=u.role is Role.ADMIN,
        )

    @r.get("/audit", response_model=list[AuditOut], tags=["admin"])
    async def audit(
        request: Request,
        scope: ReadAudit,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[AuditOut]:
        """The audit log, newest first (admins only)."""
        del scope
        rows = await web(request).db(accounts.list_audit, limit)
        return [AuditOut.model_validate(x) for x in rows]

    @r.get("/dead-letters", response_model=list[DeadLetterOut], tags=["devices"])
    async def dead_letters(
        request: Request,
        scope: ReadDeadLetters,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[DeadLetterOut]:
        """Messages that could not be used, newest first (payloads are not shown)."""
        rows = await web(request).db(tenancy.dead_letters, scope, limit)
        return [DeadLetterOut.model_validate(x) for x in rows]

    # --- devices ----------------------------------------------------------------

    @r.get(
        "/devices",
        response_model=list[DeviceOut],
        tags=["devices"],
        responses={200: {"headers": PAGE_HEADERS}},
    )
    async def list_devices(
        request: Request,
        response: Response,
        scope: ReadDevices,
        municipality: Municipality | None = None,
        include_inactive: bool = False,
        active: bool | None = None,
        kind: DeviceKind | None = None,
        q: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_DEVICE_PAGE)] = DEVICE_PAGE,
        cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
    ) -> list[DeviceOut]:
        """Devices in the caller's municipalities, by municipality and id, a page at a time.

        At most `limit` devices; when there are more, the `Link` header (`rel="next"`)
        and `X-Next-Cursor` say how to get the next page. `active` (true/false) picks
        active or decommissioned devices and overrides `include_inactive`; `q` matches
        a part of the id or label.
        """
        after = decode_device_cursor(cursor) if cursor else None
        f = DeviceFilter(
            municipality,
            active=active if active is not None else (None if include_inactive else True),
            kind=kind.value if kind is not None else None,
            text=q or None,
            limit=limit + 1,
            after=after,
        )
        rows = await web(request).db(tenancy.page_devices, scope, f)
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_device_cursor(last["municipality"], last["id"])
            query = urlencode(
                [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
                + [("cursor", next_cursor)]
            )
            response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
            response.headers["X-Next-Cursor"] = next_cursor
        return [DeviceOut.model_validate(x) for x in rows[:limit]]

    @r.post(
        "/devices",
        response_model=DeviceOut,
        status_code=201,
        tags=["devices"],
        responses=responses(400, 409, 413),
    )
    async def create_device(request: Request, scope: ManageDevices, body: DeviceIn) -> DeviceOut:
        """Register a device in one of the caller's municipalities."""
        ctx = web(request)
        if not scope.allows(body.municipality):
            raise forbidden("you may not register devices in that municipality")
        device = _bridged(ctx.hub.catalog, _checked_device(body, ctx.hub.catalog))
        entry = ctx.entry(
            request,
            scope.user,
            "device.created",
            device_id=device.id,
            municipality=device.municipality,
        )
        # Checked and inserted in one transaction, with its audit row: two tenants
        # creating the same new id at once cannot both succeed.
        if not await ctx.hub.register_new_device(device, audit=[entry]):
            raise ApiError(409, "device_exists", "that device id is already registered")
        stored = await ctx.db(tenancy.get_device, Scope.everything("system"), device.id)
        return DeviceOut.model_validate(stored)

    @r.post(
        "/devices/import",
        response_model=ImportResult,
        tags=["devices"],
        openapi_extra=_CSV_BODY,
        responses=responses(400, 409, 413),
    )
    async def import_devices(request: Request, scope: ManageDevices) -> ImportResult:
        """Register or update devices from CSV, all or nothing; errors name each row."""
        ctx = web(request)
        try:
            text = (await request.body()).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "the CSV is not UTF-8") from None
        devices, errors = parse_device_csv(text, ctx.hub.catalog)
        errors = errors or [
            e for e in (bridge_missing(ctx.hub.catalog, d) for d in devices) if e is not None
        ]
        if not errors:
            errors = [
                f"device {d.id}: you may not register devices in that municipality"
                for d in devices
                if not scope.allows(d.municipality)
            ]
        if not devices and not errors:
            errors = ["the CSV has no rows"]
        if errors:
            raise ApiError(
                422,
                "import_rejected",
                f"nothing imported: {len(errors)} row error(s)",
                rows=errors,
            )
        entries = import_audit(scope.user, ctx.hub.clock.now(), client_address(request), devices)
        try:
            # An id registered in a municipality the caller does not manage is
            # refused inside the write's own transaction (issue 13 item 5): checked
            # before it, two imports of one new id could both pass and both write.
            await ctx.hub.register_devices(
                devices,
                keep=preserved_columns(text),
                audit=entries,
                existing_in=scope.municipalities,
            )
        except IdTakenError as exc:
            # Numbered as the parser numbers rows (header line 1): see move_errors.
            line = {d.id: n for n, d in enumerate(devices, start=2)}
            rows = [f"line {line[i]}: device {i}: that device id is not available" for i in exc.ids]
            raise ApiError(
                422,
                "import_rejected",
                f"nothing imported: {len(rows)} row error(s)",
                rows=rows,
            ) from None
        except MoveRefusedError as exc:
            raise ApiError(
                409,
                "device_has_open_alarms",
                f"nothing imported: {len(exc.refused)} device(s) have open alarms",
                rows=move_errors(devices, exc.refused),
                alarms=[a for r in exc.refused for a in r.alarm_ids],
            ) from None
        return ImportResult(imported=len(devices))

    @r.get(
        "/devices/{device_id}",
        response_model=DeviceOut,
        tags=["devices"],
        responses=responses(404),
    )
    async def get_device(
        request: Request, scope: ReadDevices, device_id: DeviceIdPath
    ) -> DeviceOut:
        found = await web(request).db(tenancy.get_device, scope, device_id)
        if found is None:
            raise not_found("device")
        return DeviceOut.model_validate(found)

    @r.patch(
        "/devices/{device_id}",
        response_model=DeviceOut,
        tags=["devices"],
        responses=responses(400, 404, 409, 413),
    )
    async def patch_device(
        request: Request, scope: ManageDevices, device_id: DeviceIdPath, body: DevicePatch
    ) -> DeviceOut:
        """Change a device; moving it needs the target municipality in scope too."""
        ctx = web(request)
        found = await ctx.db(tenancy.get_device, scope, device_id)
        if found is None:
            raise not_found("device")
        changes = body.model_dump(exclude_unset=True)
        for required in ("kind", "municipality", "active"):
            if required in changes and changes[required] is None:
                raise ApiError(
                    422,
                    "validation",
                    f"body.{required}: may not be null",
                    fields=[{"field": f"body.{required}", "message": "may not be null"}],
                )
        merged = {**found, **changes}
        if not scope.allows(merged["municipality"]):
            raise forbidden("you may not move devices to that municipality")
        entry = ctx.entry(
            request,
            scope.user,
            "device.changed",
            device_id=device_id,
            municipality=found["municipality"],
            detail={
                "fields": sorted(changes),
                "moved_to": changes.get("municipality")
                if changes.get("municipality") != found["municipality"]
                else None,
            },
        )
        catalog = ctx.hub.catalog if "profile" in changes else None
        device = _bridged(ctx.hub.catalog, _checked_device(merged, catalog))
        return await _register(ctx, device, entry)

    @r.delete(
        "/devices/{device_id}",
        response_model=DeviceOut,
        tags=["devices"],
        responses=responses(404),
    )
    async def decommission_device(
        request: Request, scope: ManageDevices, device_id: DeviceIdPath
    ) -> DeviceOut:
        """Decommission: the device's messages are refused from now on; history stays."""
        ctx = web(request)
        found = await ctx.db(tenancy.get_device, scope, device_id)
        if found is None:
            raise not_found("device")
        entry = ctx.entry(
            request,
            scope.user,
            "device.decommissioned",
            device_id=device_id,
            municipality=found["municipality"],
        )
        return await _register(ctx, _checked_device({**found, "active": False}), entry)

    # --- silences ---------------------------------------------------------------

    @r.get("/silences", response_model=list[SilenceOut], tags=["silences"])
    async def list_silences(
        request: Request, scope: ReadSilences, include_ended: bool = False
    ) -> list[SilenceOut]:
        """Silences in the caller's municipalities, newest start first."""
        ctx = web(request)
        rows = await ctx.db(tenancy.list_silences, scope, ctx.hub.clock.now(), include_ended)
        return [_silence_out(s) for s in rows]

    @r.post(
        "/silences",
        response_model=SilenceOut,
        status_code=201,
        tags=["silences"],
        responses=responses(400, 413),
    )
    async def create_silence(
        request: Request, scope: ManageSilences, body: SilenceIn
    ) -> SilenceOut:
        """Silence one device, or (device_id null) every device of a municipality."""
        ctx = web(request)
        if not scope.allows(body.municipality):
            raise forbidden("you may not silence devices in that municipality")
        if body.device_id is not None:
            device = await ctx.db(tenancy.get_device, scope, body.device_id)
            if device is None or device["municipality"] != body.municipality:
                raise ApiError(
                    422,
                    "validation",
                    "body.device_id: no such device in that municipality",
                    fields=[
                        {
                            "field": "body.device_id",
                            "message": "no such device in that municipality",
                        }
                    ],
                )
        now = ctx.hub.clock.now()
        limit = ctx.hub.rules.municipality_silence_max
        ends = silence_end(body.device_id, body.starts_at, body.ends_at, limit)
        if isinstance(ends, str):
            raise ApiError(
                422, "validation", f"body.ends_at: {ends}",
                fields=[{"field": "body.ends_at", "message": ends}],
            )  # fmt: skip
        silence = Silence(
            id="sil_" + secrets.token_hex(8),
            municipality=body.municipality,
            device_id=body.device_id,
            starts_at=body.starts_at,
            ends_at=ends,
            reason=body.reason,
            created_by=scope.user,
            created_at=now,
            include_priority_1=body.include_priority_1,
        )
        entry = ctx.entry(
            request,
            scope.user,
            "silence.created",
            device_id=body.device_id,
            municipality=body.municipality,
            detail={
                "silence_id": silence.id,
                "municipality_wide": silence.municipality_wide,
                "include_priority_1": silence.include_priority_1,
                "starts_at": accounts.ts(silence.starts_at),
                "ends_at": accounts.ts(silence.ends_at),
            },
        )
        await ctx.db(accounts.insert_silence, silence, [entry])
        # In force at once, not at the next registry refresh.
        await ctx.hub.suppression.reload()
        return _silence_out(silence)

    @r.delete(
        "/silences/{silence_id}",
        status_code=204,
        response_class=Response,
        tags=["silences"],
        responses={204: {"description": "Ended; the record stays"}, **responses(404)},
    )
    async def delete_silence(
        request: Request, scope: ManageSilences, silence_id: SilenceIdPath
    ) -> Response:
        """End a silence now; who set and ended it stays on record."""
        ctx = web(request)
        found = await ctx.db(tenancy.get_silence, scope, silence_id)
        if found is None:
            raise not_found("silence")
        # Ended and its alarms released in one transaction (issue 12 item 2).
        entry = ctx.entry(
            request,
            scope.user,
            "silence.ended",
            device_id=found.device_id,
            municipality=found.municipality,
            detail={"silence_id": silence_id},
        )
        await ctx.hub.suppression.end_silence(silence_id, scope.user, audit=[entry])
        return Response(status_code=204)

    # --- reports ----------------------------------------------------------------

    @r.get(
        "/reports/response-times",
        response_model=ReportOut,
        tags=["reports"],
        responses=responses(404),
    )
    async def response_times(
        request: Request,
        scope: ReadReports,
        municipality: Municipality | None = None,
        since: Annotated[date | None, Query(alias="from", ge=FIRST_DAY, le=LAST_DAY)] = None,
        until: Annotated[date | None, Query(alias="to", ge=FIRST_DAY, le=LAST_DAY)] = None,
    ) -> ReportOut:
        """Time to acknowledge, reach and resolve, per priority and kind; SLA compliance.

        `from` and `to` are whole days in Europe/Oslo, both included, at most
        `max_report_days` apart (422 beyond). Without `to` the report ends today;
        without `from` it starts `max_report_days` days before its end. `since`
        and `until` in the answer are the days used.
        """
        ctx = web(request)
        if municipality is not None and not scope.allows(municipality):
            raise not_found("municipality")
        if since is not None and until is not None and until < since:
            raise ApiError(
                422,
                "validation",
                "query.to: before `from`",
                fields=[{"field": "query.to", "message": "before `from`"}],
            )
        now = ctx.hub.clock.now()
        max_days = ctx.hub.settings.max_report_days
        days = reports.report_days(since, until, now.astimezone(OSLO).date(), max_days)
        if isinstance(days, str):
            raise ApiError(
                422, "validation", f"query.from: {days}",
                fields=[{"field": "query.from", "message": days}],
            )  # fmt: skip
        first, last = days
        start, end = _day_start(first), _day_start(last + timedelta(days=1))
        rows = await ctx.db(tenancy.response_rows, scope, municipality, start, end)
        groups = reports.response_times(rows, sla_targets(ctx), now)
        return ReportOut.model_validate(
            {
                "municipality": municipality,
                "since": first,
                "until": last,
                "groups": [asdict(g) for g in groups],
            }
        )

    return r


def sla_targets(ctx: WebContext) -> dict[int, timedelta]:
    return {int(p): t for p, t in ctx.hub.rules.sla_ack.items()}


def _silence_out(s: Silence) -> SilenceOut:
    return SilenceOut(
        id=s.id,
        municipality=s.municipality,
        device_id=s.device_id,
        starts_at=accounts.ts(s.starts_at) or "",
        ends_at=accounts.ts(s.ends_at) or "",
        reason=s.reason,
        created_by=s.created_by,
        created_at=accounts.ts(s.created_at) or "",
        include_priority_1=s.include_priority_1,
    )
