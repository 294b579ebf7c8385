"""`/api/v1/residents…`: the resident register, for municipality administrators (issue 17).

A resident's national identity number is set, shown masked, and removed here, by
an administrator of the resident's municipality (or an admin); operators see a
number only masked, on an alarm's detail. Every read of a number writes an audit
row in the read's own transaction, and every change its row in the change's. A
number is never echoed back whole, and no error message repeats it: a wrong one
is answered with why (core/national_id.py), not with what was sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from alarmhub.core.national_id import Invalid, parse_national_id
from alarmhub.core.people import AuditEntry
from alarmhub.core.registry import Municipality
from alarmhub.core.tenancy import Scope
from alarmhub.store.accounts import ts
from alarmhub.store.residents import ResidentEntry, SealedRow
from alarmhub.store.sealing import KeyMissingError
from alarmhub.web.deps import Audit, Ctx, ManageResidents
from alarmhub.web.errors import ApiError, forbidden, not_found, responses
from alarmhub.web.models import ResidentIn, ResidentOut

ResidentPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
MunicipalityQuery = Annotated[Municipality, Query(description="the resident's municipality")]


def _out(e: ResidentEntry) -> ResidentOut:
    return ResidentOut(
        municipality=e.municipality,
        resident=e.resident,
        national_id=e.national_id,
        key_id=e.key_id,
        updated_at=ts(e.updated_at) or "",
        updated_by=e.updated_by,
    )


def _check(scope: Scope, municipality: str) -> None:
    if not scope.allows(municipality):
        raise forbidden("you may not manage residents of that municipality")


async def list_residents(
    ctx: Ctx, scope: ManageResidents, municipality: MunicipalityQuery, audit: Audit
) -> list[ResidentOut]:
    """The municipality's register, each number masked; the listing is audited."""
    _check(scope, municipality)

    def entries(rows: Sequence[SealedRow]) -> list[AuditEntry]:
        return [
            audit.entry(
                "resident.national_ids_listed",
                municipality=municipality,
                detail={"residents": [r.resident for r in rows], "shown": "masked"},
            )
        ]

    return [_out(e) for e in await ctx.hub.residents.listing(municipality, entries)]


async def get_resident(
    ctx: Ctx,
    scope: ManageResidents,
    resident: ResidentPath,
    municipality: MunicipalityQuery,
    audit: Audit,
) -> ResidentOut:
    """One resident's entry, the number masked; audited."""
    if not scope.allows(municipality):
        raise not_found("resident")
    entry = audit.entry(
        "resident.national_id_viewed",
        municipality=municipality,
        detail={"resident": resident, "shown": "masked"},
    )
    found = await ctx.hub.residents.entry(municipality, resident, [entry])
    if found is None:
        raise not_found("resident")
    return _out(found)


async def put_resident(
    ctx: Ctx,
    scope: ManageResidents,
    resident: ResidentPath,
    body: ResidentIn,
    audit: Audit,
    response: Response,
) -> ResidentOut:
    """Set (or replace) a resident's national identity number: 201 new, 200 replaced."""
    _check(scope, body.municipality)
    nid = parse_national_id(body.national_id)
    if isinstance(nid, Invalid):
        message = f"national_id: {nid.reason}"
        raise ApiError(
            422, "validation", message, fields=[{"field": "body.national_id", "message": message}]
        )
    entry = audit.entry(
        "resident.national_id_set",
        municipality=body.municipality,
        detail={"resident": resident, "kind": nid.kind.value, "synthetic": nid.synthetic},
    )
    try:
        stored, created = await ctx.hub.residents.set_national_id(
            body.municipality, resident, nid, scope.user, [entry]
        )
    except KeyMissingError as exc:
        raise ApiError(409, "resident_key_missing", str(exc)) from None
    response.status_code = 201 if created else 200
    return _out(stored)


async def delete_resident(
    ctx: Ctx,
    scope: ManageResidents,
    resident: ResidentPath,
    municipality: MunicipalityQuery,
    audit: Audit,
) -> Response:
    """Remove a resident's number: its alarms are then not journalled."""
    if not scope.allows(municipality):
        raise not_found("resident")
    entry = audit.entry(
        "resident.national_id_removed", municipality=municipality, detail={"resident": resident}
    )
    if not await ctx.hub.residents.remove(municipality, resident, [entry]):
        raise not_found("resident")
    return Response(status_code=204)


def router() -> APIRouter:
    r = APIRouter(
        prefix="/api/v1/residents", tags=["residents"], responses=responses(401, 403, 422)
    )
    r.add_api_route("", list_residents, response_model=list[ResidentOut])
    r.add_api_route(
        "/{resident}", get_resident, response_model=ResidentOut, responses=responses(404)
    )
    r.add_api_route(
        "/{resident}",
        put_resident,
        methods=["PUT"],
        response_model=ResidentOut,
        responses={
            **responses(400, 409, 413),
            201: {"description": "Registered (a new resident)"},
        },
    )
    r.add_api_route(
        "/{resident}",
        delete_resident,
        methods=["DELETE"],
        status_code=204,
        response_class=Response,
        responses=responses(404),
    )
    return r
