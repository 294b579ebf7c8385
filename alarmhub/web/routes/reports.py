"""`/api/v1/reports/response-times`: time to acknowledge, reach and resolve; SLA compliance.

The figures are computed by `core.reports` from the scoped rows of
`store.ports.ScopedReads.response_rows`; days are whole days in Europe/Oslo.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from alarmhub.core import reports
from alarmhub.core.registry import Municipality
from alarmhub.web.context import WebContext
from alarmhub.web.deps import Ctx, ReadReports
from alarmhub.web.errors import ApiError, not_found, responses
from alarmhub.web.models import ReportOut

OSLO = ZoneInfo("Europe/Oslo")
# Days a report may name; outside them the conversion to UTC would overflow.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), OSLO)


def sla_targets(ctx: WebContext) -> dict[int, timedelta]:
    return {int(p): t for p, t in ctx.hub.rules.sla_ack.items()}


def _validation(field: str, message: str) -> ApiError:
    return ApiError(
        422, "validation", f"{field}: {message}", fields=[{"field": field, "message": message}]
    )


async def response_times(
    ctx: Ctx,
    scope: ReadReports,
    municipality: Municipality | None = None,
    since: Annotated[date | None, Query(alias="from", ge=FIRST_DAY, le=LAST_DAY)] = None,
    until: Annotated[date | None, Query(alias="to", ge=FIRST_DAY, le=LAST_DAY)] = None,
) -> ReportOut:
    """Time to acknowledge, reach and resolve, per priority and kind; SLA compliance.

    `from` and `to` are whole days in Europe/Oslo, both included, at most
    `max_report_days` apart (422 beyond). Without `to` the report ends today;
    without `from` it starts `max_report_days` days before its end. `since`
    and `until` in the answer are the days used. `daily`: time to the first
    acknowledgement per priority and Oslo day raised, the reports page's chart.
    """
    if municipality is not None and not scope.allows(municipality):
        raise not_found("municipality")
    if since is not None and until is not None and until < since:
        raise _validation("query.to", "before `from`")
    now = ctx.hub.clock.now()
    max_days = ctx.hub.settings.max_report_days
    days = reports.report_days(since, until, now.astimezone(OSLO).date(), max_days)
    if isinstance(days, str):
        raise _validation("query.from", days)
    first, last = days
    start, end = _day_start(first), _day_start(last + timedelta(days=1))
    rows = await ctx.reads.response_rows(scope, municipality, start, end)
    groups = reports.response_times(rows, sla_targets(ctx), now)
    return ReportOut.model_validate(
        {
            "municipality": municipality,
            "since": first,
            "until": last,
            "groups": [asdict(g) for g in groups],
            "daily": [asdict(d) for d in reports.daily_acknowledge(rows, OSLO)],
        }
    )


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", responses=responses(401, 403, 422), tags=["reports"])
    r.add_api_route(
        "/reports/response-times",
        response_times,
        response_model=ReportOut,
        responses=responses(404),
    )
    return r
