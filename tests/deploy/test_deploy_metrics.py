"""Dashboards, alerts and docs name only metrics and labels alarmhub really exports.

The reference is the exposition of `alarmhub.observability.metrics.Metrics()` itself (prometheus_client
adds `_total` to counters and `_bucket/_sum/_count` to histograms), plus the series
Prometheus makes (`up`) and the planned `alarmhub_devices_offline{municipality}` gauge.
A renamed metric or label in alarmhub.observability.metrics makes these tests fail instead of leaving an
empty panel or an alert that can never fire.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from alarmhub.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "alarmhub.json"
RULES = ROOT / "deploy" / "prometheus" / "alarmhub.rules.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"

TARGET_LABELS = {"job", "instance"}  # added by Prometheus at scrape time
PLANNED = {"alarmhub_devices_offline": {"municipality"}}
PROMETHEUS_MADE = {"up": set[str]()}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


@cache
def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from what Metrics() really exposes.

    Names and types come from the exposition text. Labels come from the metric objects,
    because a family whose label values are not known in advance (HTTP routes) has no
    sample, only its HELP and TYPE lines, until the first request.
    """
    metrics = Metrics()
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    labels = {
        w._name: set(w._labelnames)
        for w in vars(metrics).values()
        if isinstance(w, MetricWrapperBase)
    }
    assert set(labels) == set(families), "every metric in the registry is a Metrics attribute"
    samples: dict[str, set[str]] = {}
    for name, kind in families.items():
        for suffix in SUFFIXES[kind]:
            samples[name + suffix] = labels[name] | ({"le"} if suffix == "_bucket" else set())
    return samples


def known() -> dict[str, set[str]]:
    return {**exported(), **PLANNED, **PROMETHEUS_MADE}


def test_the_reference_is_not_empty() -> None:
    names = exported()
    assert "alarmhub_messages_received_total" in names
    assert "alarmhub_time_to_acknowledge_seconds_bucket" in names
    assert names["alarmhub_alarms_raised_total"] == {"kind", "priority"}


def metric_uses(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """Metric names with the labels matched on them, and the labels grouped by."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    grouping: set[str] = set()
    for words in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        grouping |= {w.strip() for w in words.split(",") if w.strip()}
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    uses: dict[str, set[str]] = {}
    for name, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        uses.setdefault(name, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    bare = re.sub(r"\{[^}]*\}", " ", expr)
    for name in re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare):
        if name.lower() not in PROMQL_WORDS:
            uses.setdefault(name, set())
    return uses, grouping


def check_expr(expr: str) -> list[str]:
    names = known()
    uses, grouping = metric_uses(expr)
    problems: list[str] = []
    if not uses:
        problems.append(f"names no metric: {expr}")
    available = set(TARGET_LABELS)
    for name, labels in uses.items():
        if name not in names:
            problems.append(f"unknown metric {name!r} in: {expr}")
            continue
        available |= names[name]
        extra = labels - names[name] - TARGET_LABELS
        if extra:
            problems.append(f"{name} has no label {sorted(extra)} in: {expr}")
    missing = grouping - available
    if missing:
        problems.append(f"groups by labels {sorted(missing)} that no metric has in: {expr}")
    return problems


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(alarmhub_messages_received[5m])", "unknown metric 'alarmhub_messages_received'"),
        ('alarmhub_alarms_open{municipality="0301"}', "has no label ['municipality']"),
        ("sum by (reason) (alarmhub_devices)", "groups by labels ['reason']"),
        ("histogram_quantile(0.9, rate(alarmhub_commit_seconds[5m]))", "unknown metric"),
    ],
)
def test_the_checker_catches_wrong_names(expr: str, problem: str) -> None:
    problems = check_expr(expr)
    assert any(problem in p for p in problems), problems


def test_the_checker_accepts_right_names() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le, priority) "
        '(rate(alarmhub_time_to_acknowledge_seconds_bucket{instance=~"$instance"}[1h])))'
    )
    assert check_expr(expr) == []


# --- Grafana ---------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_is_importable() -> None:
    d = dashboard()
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", d["uid"])
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(d):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    boxes = [(p["title"], p["gridPos"]) for p in panels(dashboard())]
    for i, (title_a, a) in enumerate(boxes):
        assert a["x"] + a["w"] <= 24, title_a
        for title_b, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]
            )  # fmt: skip
            assert apart, f"{title_a!r} overlaps {title_b!r}"


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]


def test_every_dashboard_query_names_exported_metrics_and_labels() -> None:
    problems = [p for expr in dashboard_exprs() for p in check_expr(expr)]
    assert problems == []


def test_dashboard_covers_the_catalogue() -> None:
    """Every exported metric family appears on some panel."""
    used: set[str] = set()
    for expr in dashboard_exprs():
        used |= set(metric_uses(expr)[0])
    suffix = r"_(total|bucket|sum|count|created)$"
    families = {re.sub(suffix, "", n) for n in exported()}
    used_families = {re.sub(suffix, "", n) for n in used}
    assert families - used_families == set()


# --- Alert rules -----------------------------------------------------------------------------


def rule_exprs(text: str) -> dict[str, str]:
    """Alert name -> its expression, whole: one line, or a block (`expr: |`) of several."""
    found = re.findall(r"- alert: (\w+)\n([ \t]+)expr: (.*(?:\n\2[ \t]+\S.*)*)", text)
    assert found, "no alerts found in the rules file"
    exprs = {}
    for name, _indent, raw in found:
        lines = re.sub(r"^[|>][-+]?", "", raw).splitlines()
        exprs[name] = " ".join(line.strip() for line in lines if line.strip())
    return exprs


def test_an_expression_over_several_lines_is_checked_whole() -> None:
    text = (
        "  - alert: A\n"
        "    expr: |\n"
        "      up == 0\n"
        "      unless on(job) alarmhub_no_such_metric == 1\n"
        "    for: 1m\n"
    )
    exprs = rule_exprs(text)
    assert exprs == {"A": "up == 0 unless on(job) alarmhub_no_such_metric == 1"}
    assert any("alarmhub_no_such_metric" in p for p in check_expr(exprs["A"]))


def test_every_alert_names_exported_metrics_and_labels() -> None:
    problems = [p for expr in rule_exprs(RULES.read_text()).values() for p in check_expr(expr)]
    assert problems == []


# --- docs/metrics.md -------------------------------------------------------------------------


def test_metrics_doc_lists_every_exported_metric_by_its_exported_name() -> None:
    doc = METRICS_DOC.read_text()
    listed = set(re.findall(r"^\| `(alarmhub_\w+)`", doc, flags=re.MULTILINE))
    families = {n for n in exported() if not n.endswith(("_created", "_bucket", "_sum", "_count"))}
    histograms = {n.removesuffix("_bucket") for n in exported() if n.endswith("_bucket")}
    assert listed >= families | histograms | set(PLANNED)
    assert listed - (families | histograms | set(PLANNED)) == set(), (
        "documents a metric that does not exist"
    )
