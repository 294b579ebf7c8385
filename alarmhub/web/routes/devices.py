"""`/api/v1/devices…` and `/api/v1/dead-letters`: the registry of a municipality's devices.

Every read is a scoped query of `store.ports.ScopedReads`; every change by a person is
written to the audit log with the caller's address, in the change's own
transaction. The registry's checks are the CLI's (one definition, in
`core.registry`), answered here as 422.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from alarmhub.core.bridges import bridge_errors
from alarmhub.core.decode import Catalog
from alarmhub.core.device_settings import SettingsInvalidError
from alarmhub.core.digest import credentials_for, password_problem
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.moves import move_errors, resident_left_behind
from alarmhub.core.people import AuditEntry, import_audit
from alarmhub.core.registry import (
    DeviceIn,
    Municipality,
    RegistryError,
    bridge_missing,
    device_from_values,
    known_profile,
    parse_device_csv,
    preserved_columns,
)
from alarmhub.core.tenancy import DeviceFilter, Scope
from alarmhub.store.errors import (
    BridgeTakenError,
    BridgeUnassignedError,
    IdTakenError,
    MoveRefusedError,
)
from alarmhub.web.context import WebContext, client_address
from alarmhub.web.deps import (
    Audit,
    Ctx,
    DeviceIdPath,
    DeviceInScope,
    ManagedDevice,
    ManageDevices,
    ReadDeadLetters,
    ReadDevices,
    device_or_404,
)
from alarmhub.web.errors import ApiError, forbidden, not_found, responses
from alarmhub.web.models import (
    CredentialsIn,
    DeadLetterOut,
    DeviceOut,
    DevicePatch,
    ImportResult,
)
from alarmhub.web.paging import (
    DEVICE_PAGE,
    MAX_CURSOR,
    MAX_DEVICE_PAGE,
    PAGE_HEADERS,
    decode_device_cursor,
    encode_device_cursor,
)

_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "header `id,kind,municipality` and any of "
        "`heartbeat_interval,label,profile,resident,settings,bridge`",
    }
}


def _checked_device(body: DeviceIn | dict[str, Any], catalog: Catalog | None = None) -> Device:
    """The registry's checks (device_from_values, one definition), as a 422.

    With `catalog`, a named profile must exist (known_profile): given when
    the caller sets the profile, not when decommissioning a device as stored.
    """
    try:
        device = device_from_values(body.model_dump() if isinstance(body, DeviceIn) else body)
        return known_profile(catalog, device)
    except (RegistryError, SettingsInvalidError) as exc:
        raise ApiError(422, "validation", str(exc)) from None


def _bridged(catalog: Catalog, device: Device) -> Device:
    """The device, or a 422 if its Zigbee2MQTT profile needs a bridge it lacks (finding 9)."""
    problem = bridge_missing(catalog, device)
    if problem is not None:
        raise ApiError(422, "validation", problem)
    return device


def _bridge_taken(exc: BridgeTakenError) -> ApiError:
    """409: the device's bridge serves another municipality (core/bridges.py)."""
    [taken] = exc.taken
    return ApiError(409, "bridge_taken", taken.message(), bridge=taken.bridge)


def _bridge_unassigned(exc: BridgeUnassignedError) -> ApiError:
    """409: the first device on a bridge no system admin has assigned (core/bridges.py)."""
    first = exc.unassigned[0]
    return ApiError(409, "bridge_unassigned", first.message(), bridge=first.bridge)


def _system(scope: Scope) -> bool:
    """A system admin's write may open a bridge nobody assigned, and so assigns it."""
    return scope.municipalities is None


async def _stored(ctx: WebContext, device_id: str) -> DeviceOut:
    stored = await ctx.reads.get_device(Scope.everything("system"), device_id)
    return DeviceOut.model_validate(stored)


async def _register(
    ctx: WebContext, device: Device, entry: AuditEntry, *, was_in: str, system: bool = False
) -> DeviceOut:
    """Write a change to one device; `was_in`: the municipality it was read in.

    A change is made from the device as read, so it must land only where it was
    read: checked inside the write's transaction. Otherwise a device moved to
    another municipality between the read and the write would be written back,
    moved home again and its new owners' changes undone, by someone who no longer
    manages it (promise 3).
    """
    try:
        await ctx.hub.register_devices(
            [device],
            audit=[entry],
            existing_in=frozenset({was_in}),
            assign_bridges=system,
        )
    except IdTakenError:
        raise ApiError(
            409,
            "device_moved",
            f"device {device.id} was moved to another municipality while this change was "
            "made: nothing was changed; read it again",
        ) from None
    except MoveRefusedError as exc:
        # Its open alarms would stay in the old queue and its next press join them
        # there (issue 12 item 9): resolve them first. The caller manages the device
        # in its current municipality, so the alarms named are theirs to see.
        [refused] = exc.refused
        raise ApiError(
            409, "device_has_open_alarms", refused.message(), alarms=list(refused.alarm_ids)
        ) from None
    except BridgeTakenError as exc:
        raise _bridge_taken(exc) from None
    except BridgeUnassignedError as exc:
        raise _bridge_unassigned(exc) from None
    return await _stored(ctx, device.id)


async def dead_letters(
    ctx: Ctx,
    scope: ReadDeadLetters,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    """Messages that could not be used, newest first (payloads are not shown)."""
    rows = await ctx.reads.dead_letters(scope, limit)
    return [DeadLetterOut.model_validate(x) for x in rows]


async def list_devices(
    request: Request,
    response: Response,
    ctx: Ctx,
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
    rows = await ctx.reads.page_devices(scope, f)
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


async def create_device(ctx: Ctx, scope: ManageDevices, body: DeviceIn, audit: Audit) -> DeviceOut:
    """Register a device in one of the caller's municipalities."""
    if not scope.allows(body.municipality):
        raise forbidden("you may not register devices in that municipality")
    device = _bridged(ctx.hub.catalog, _checked_device(body, ctx.hub.catalog))
    entry = audit.entry("device.created", device_id=device.id, municipality=device.municipality)
    # Checked and inserted in one transaction, with its audit row: two tenants
    # creating the same new id, or devices on the same new bridge, at once cannot
    # both succeed.
    try:
        created = await ctx.hub.register_new_device(
            device, audit=[entry], assign_bridges=_system(scope)
        )
    except BridgeTakenError as exc:
        raise _bridge_taken(exc) from None
    except BridgeUnassignedError as exc:
        raise _bridge_unassigned(exc) from None
    if not created:
        raise ApiError(409, "device_exists", "that device id is already registered")
    return await _stored(ctx, device.id)


def _import_rejected(rows: list[str]) -> ApiError:
    return ApiError(
        422, "import_rejected", f"nothing imported: {len(rows)} row error(s)", rows=rows
    )


def _import_errors(
    catalog: Catalog, scope: Scope, devices: list[Device], errors: list[str]
) -> list[str]:
    """The rows' errors: parse errors, else missing bridges, else municipalities out of scope."""
    errors = errors or [e for e in (bridge_missing(catalog, d) for d in devices) if e is not None]
    if not errors:
        errors = [
            f"device {d.id}: you may not register devices in that municipality"
            for d in devices
            if not scope.allows(d.municipality)
        ]
    if not devices and not errors:
        errors = ["the CSV has no rows"]
    return errors


async def import_devices(request: Request, ctx: Ctx, scope: ManageDevices) -> ImportResult:
    """Register or update devices from CSV, all or nothing; errors name each row."""
    try:
        text = (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the CSV is not UTF-8") from None
    devices, errors = parse_device_csv(text, ctx.hub.catalog)
    errors = _import_errors(ctx.hub.catalog, scope, devices, errors)
    if errors:
        raise _import_rejected(errors)
    entries = import_audit(scope.user, ctx.hub.clock.now(), client_address(request), devices)
    try:
        # An id registered in a municipality the caller does not manage is
        # refused inside the write's own transaction (issue 13 item 5): checked
        # before it, two imports of one new id could both pass and both write.
        stale = await ctx.hub.register_devices(
            devices,
            keep=preserved_columns(text),
            audit=entries,
            existing_in=scope.municipalities,
            assign_bridges=_system(scope),
        )
    except IdTakenError as exc:
        # Numbered as the parser numbers rows (header line 1): see move_errors.
        line = {d.id: n for n, d in enumerate(devices, start=2)}
        raise _import_rejected(
            [f"line {line[i]}: device {i}: that device id is not available" for i in exc.ids]
        ) from None
    except MoveRefusedError as exc:
        raise ApiError(
            409,
            "device_has_open_alarms",
            f"nothing imported: {len(exc.refused)} device(s) have open alarms",
            rows=move_errors(devices, exc.refused),
            alarms=[a for r in exc.refused for a in r.alarm_ids],
        ) from None
    except BridgeTakenError as exc:
        raise ApiError(
            409,
            "bridge_taken",
            f"nothing imported: {len(exc.taken)} device(s) on another municipality's bridge",
            rows=bridge_errors(devices, exc.taken),
        ) from None
    except BridgeUnassignedError as exc:
        raise ApiError(
            409,
            "bridge_unassigned",
            f"nothing imported: {len(exc.unassigned)} device(s) on a bridge not assigned "
            "to a municipality",
            rows=bridge_errors(devices, exc.unassigned),
        ) from None
    # Moved devices whose SIP password is still the one their old municipality set:
    # kept (their alarms must not be refused), so say loudly that it wants setting.
    return ImportResult(imported=len(devices), rotate_credentials=stale or None)


async def get_device(device: DeviceInScope) -> DeviceOut:
    return DeviceOut.model_validate(device)


def _not_null(changes: dict[str, Any]) -> None:
    for required in ("kind", "municipality", "active"):
        if required in changes and changes[required] is None:
            raise ApiError(
                422,
                "validation",
                f"body.{required}: may not be null",
                fields=[{"field": f"body.{required}", "message": "may not be null"}],
            )


async def patch_device(
    ctx: Ctx, scope: ManageDevices, device_id: DeviceIdPath, body: DevicePatch, audit: Audit
) -> DeviceOut:
    """Change a device; moving it needs the target municipality in scope too."""
    # Looked up after the body is valid: see web.deps on why not as a dependency.
    found = await device_or_404(ctx, scope, device_id)
    changes = body.model_dump(exclude_unset=True)
    _not_null(changes)
    merged = {**found, **changes}
    if not scope.allows(merged["municipality"]):
        raise forbidden("you may not move devices to that municipality")
    detail: dict[str, Any] = {
        "fields": sorted(changes),
        "moved_to": changes.get("municipality")
        if changes.get("municipality") != found["municipality"]
        else None,
    }
    cleared = resident_left_behind(found, changes)
    if cleared is not None:  # another person's reference in the new municipality
        merged["resident"] = None
        detail["resident_cleared"] = cleared
    entry = audit.entry(
        "device.changed", device_id=device_id, municipality=found["municipality"], detail=detail
    )
    catalog = ctx.hub.catalog if "profile" in changes else None
    device = _bridged(ctx.hub.catalog, _checked_device(merged, catalog))
    return await _register(ctx, device, entry, was_in=found["municipality"], system=_system(scope))


async def decommission_device(ctx: Ctx, found: ManagedDevice, audit: Audit) -> DeviceOut:
    """Decommission: the device's messages are refused from now on; history stays."""
    entry = audit.entry(
        "device.decommissioned", device_id=found["id"], municipality=found["municipality"]
    )
    device = _checked_device({**found, "active": False})
    return await _register(ctx, device, entry, was_in=found["municipality"])


async def set_credentials(
    ctx: Ctx, scope: ManageDevices, device_id: DeviceIdPath, body: CredentialsIn, audit: Audit
) -> Response:
    """Set a SCAIP device's SIP digest credentials in the configured realm (issue 16).

    Stored as HA1 for MD5 and SHA-256, never the password, which is not echoed,
    logged or audited. Audited as `device.credentials_set` in the same transaction.
    """
    found = await device_or_404(ctx, scope, device_id)
    password = body.password.get_secret_value()
    problem = password_problem(password)
    if problem is not None:
        raise ApiError(422, "validation", f"body.password: {problem}")
    realm = ctx.hub.settings.scaip_realm
    creds = credentials_for(device_id, realm, password)
    entry = audit.entry(
        "device.credentials_set",
        device_id=device_id,
        municipality=found["municipality"],
        detail={"realm": realm},
    )
    now = ctx.hub.clock.now()
    # Checked again inside the write's transaction: the device may have moved meanwhile.
    if not await ctx.hub.directory.set_device_credentials(scope, creds, now, [entry]):
        raise not_found("device")
    return Response(status_code=204)


def router() -> APIRouter:
    # The full prefix here, not at include time: metrics label routes by this path.
    r = APIRouter(prefix="/api/v1", responses=responses(401, 403, 422), tags=["devices"])
    r.add_api_route("/dead-letters", dead_letters, response_model=list[DeadLetterOut])
    r.add_api_route(
        "/devices",
        list_devices,
        response_model=list[DeviceOut],
        responses={200: {"headers": PAGE_HEADERS}},
    )
    r.add_api_route(
        "/devices",
        create_device,
        methods=["POST"],
        response_model=DeviceOut,
        status_code=201,
        responses=responses(400, 409, 413),
    )
    r.add_api_route(
        "/devices/import",
        import_devices,
        methods=["POST"],
        response_model=ImportResult,
        response_model_exclude_none=True,
        openapi_extra=_CSV_BODY,
        responses=responses(400, 409, 413),
    )
    one = "/devices/{device_id}"
    r.add_api_route(one, get_device, response_model=DeviceOut, responses=responses(404))
    r.add_api_route(
        one,
        patch_device,
        methods=["PATCH"],
        response_model=DeviceOut,
        responses=responses(400, 404, 409, 413),
    )
    r.add_api_route(
        one + "/credentials",
        set_credentials,
        methods=["PUT"],
        status_code=204,
        response_class=Response,
        responses=responses(400, 404, 413),
    )
    r.add_api_route(
        one,
        decommission_device,
        methods=["DELETE"],
        response_model=DeviceOut,
        responses=responses(404, 409),
    )
    return r
