"""Response-time statistics: how fast alarms were acknowledged, reached and resolved.

Pure functions over plain rows, so the arithmetic is tested as tables of
values; the scoped query that produces the rows lives in `alarmhub.store.sqlite.tenancy`.

Percentiles use the nearest-rank method (the value at rank ceil(p/100 * n)),
which always returns a time that was actually measured; the median is the
conventional middle (mean of the two middle values for an even count).

SLA compliance is the share of alarms acknowledged within their priority's
target among those whose outcome is *decided* at `now`: acknowledged, or
unacknowledged past their target. An alarm raised a moment ago and not yet
acknowledged counts neither way.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any


@dataclass(frozen=True, slots=True)
class ResponseRow:
    kind: str
    priority: int
    raised_at: datetime
    acknowledged_at: datetime | None = None
    on_site_at: datetime | None = None
    resolved_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    count: int
    median_s: float | None
    p90_s: float | None
    p99_s: float | None


@dataclass(frozen=True, slots=True)
class GroupReport:
    priority: int
    kind: str
    alarms: int
    acknowledge: Stats
    on_site: Stats
    resolve: Stats
    sla_target_s: float | None
    sla_decided: int
    sla_met: int
    sla_compliance: float | None  # 0..1, None without a target or a decided alarm


@dataclass(frozen=True, slots=True)
class DailyReport:
    """Time to acknowledge on one local day, for one priority: the reports page's chart."""

    priority: int
    day: date
    acknowledge: Stats


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    if not sorted_values:
        raise ValueError("percentile of nothing")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def stats(values: Iterable[float]) -> Stats:
    ordered = sorted(values)
    if not ordered:
        return Stats(0, None, None, None)
    return Stats(
        len(ordered),
        float(statistics.median(ordered)),
        percentile(ordered, 90),
        percentile(ordered, 99),
    )


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


def response_times(
    rows: Iterable[ResponseRow],
    sla_ack: Mapping[int, timedelta],
    now: datetime,
) -> list[GroupReport]:
    """One report per (priority, alarm kind), most urgent first."""
    groups: dict[tuple[int, str], list[ResponseRow]] = {}
    for row in rows:
        groups.setdefault((row.priority, row.kind), []).append(row)
    out: list[GroupReport] = []
    for (priority, kind), members in sorted(groups.items()):
        ack = [s for r in members if (s := _seconds(r.raised_at, r.acknowledged_at)) is not None]
        site = [s for r in members if (s := _seconds(r.raised_at, r.on_site_at)) is not None]
        done = [s for r in members if (s := _seconds(r.raised_at, r.resolved_at)) is not None]
        target = sla_ack.get(priority)
        decided = met = 0
        if target is not None:
            for r in members:
                if r.acknowledged_at is not None:
                    decided += 1
                    met += r.acknowledged_at - r.raised_at <= target
                elif now - r.raised_at > target:
                    decided += 1
        out.append(
            GroupReport(
                priority=priority,
                kind=kind,
                alarms=len(members),
                acknowledge=stats(ack),
                on_site=stats(site),
                resolve=stats(done),
                sla_target_s=target.total_seconds() if target is not None else None,
                sla_decided=decided,
                sla_met=met,
                sla_compliance=(met / decided) if decided else None,
            )
        )
    return out


def daily_acknowledge(rows: Iterable[ResponseRow], zone: tzinfo) -> list[DailyReport]:
    """Time to acknowledge per priority and per day the alarm was raised, in `zone`.

    The chart beside the report's table. The page used to work it out from the
    alarms list itself: at most 20 pages of 500, oldest first, so past 10,000
    alarms of a priority a recent range drew nothing; and from `acknowledged_at`,
    the latest answer, where the table uses the first (found in review,
    2026-12-06). From the report's own rows both agree. Days without an
    acknowledged alarm are left out; the page draws them as gaps.
    """
    groups: dict[tuple[int, date], list[float]] = {}
    for row in rows:
        if row.acknowledged_at is None:
            continue
        key = (row.priority, row.raised_at.astimezone(zone).date())
        groups.setdefault(key, []).append((row.acknowledged_at - row.raised_at).total_seconds())
    return [DailyReport(p, day, stats(values)) for (p, day), values in sorted(groups.items())]


def flat(report: GroupReport) -> dict[str, Any]:
    """One flat row (for CSV and the table): nested stats become prefixed columns."""
    row: dict[str, Any] = {
        "priority": report.priority,
        "kind": report.kind,
        "alarms": report.alarms,
    }
    for name in ("acknowledge", "on_site", "resolve"):
        for key, value in asdict(getattr(report, name)).items():
            row[f"{name}_{key}"] = value
    row["sla_target_s"] = report.sla_target_s
    row["sla_met"] = report.sla_met
    row["sla_decided"] = report.sla_decided
    row["sla_compliance"] = report.sla_compliance
    return row


def to_csv(reports: list[GroupReport]) -> str:
    rows = [flat(r) for r in reports]
    buf = io.StringIO()
    columns = list(flat(reports[0]).keys()) if reports else ["priority", "kind", "alarms"]
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def to_table(reports: list[GroupReport]) -> str:
    if not reports:
        return "(no alarms in the period)"
    columns = [
        "priority",
        "kind",
        "alarms",
        "acknowledge_median_s",
        "acknowledge_p90_s",
        "acknowledge_p99_s",
        "on_site_median_s",
        "resolve_median_s",
        "sla_compliance",
    ]
    text = []
    for r in reports:
        row = flat(r)
        cells = []
        for c in columns:
            v = row[c]
            if v is None:
                cells.append("-")
            elif c == "sla_compliance":
                cells.append(f"{v * 100:.1f} %")
            elif isinstance(v, float):
                cells.append(f"{v:.1f}")
            else:
                cells.append(str(v))
        text.append(cells)
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in text]
    return "\n".join(lines)


def report_days(
    since: date | None, until: date | None, today: date, max_days: int
) -> tuple[date, date] | str:
    """The days (first, last; both included) a report covers, or why it may not.

    A report reads and sorts every alarm of its range in one request, so the range
    is bounded (issue 13 item 3): at most `max_days`. An open end is filled in
    rather than refused: no `until` ends the report today (or on `since`, if that
    is later), no `since` starts it `max_days` days before its end. `today` is an
    argument: the caller reads the clock once.
    """
    last = until if until is not None else max(today, since or today)
    first = since if since is not None else last - timedelta(days=max_days - 1)
    if last < first:
        return "the last day is before the first"
    days = (last - first).days + 1
    if days > max_days:
        return (
            f"{first}..{last} is {days} days; a report may span at most {max_days} days "
            "(max_report_days): ask for a shorter range, or several"
        )
    return first, last
