"""deploy/prometheus: promtool accepts the config and rules, and the alerts' unit tests pass.

The unit tests (alarmhub.rules.test.yml) are themselves checked: every alert must have a
case where it fires and one where it must stay quiet, and breaking any alert's expression
must make `promtool test rules` fail -- so no alert is covered by a test that cannot fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
RULES = DEPLOY / "alarmhub.rules.yml"
RULE_TESTS = DEPLOY / "alarmhub.rules.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

ALERTS = {
    "AlarmhubDown",
    "AlarmhubBrokerDisconnected",
    "AlarmhubNoIntakeOwner",
    "AlarmhubOldestUnacknowledgedAlarm",
    "AlarmhubQueueGrowing",
    "AlarmhubSLABreaches",
    "AlarmhubEscalationExhausted",
    "AlarmhubDeadLettersRising",
    "AlarmhubStoreNotWritable",
    "AlarmhubJournalRefusals",
    "AlarmhubJournalExportPending",
    "AlarmhubJournalHeld",
    "AlarmhubManyDevicesOffline",
    "AlarmhubOwnerStalled",
    "AlarmhubDecisionRefused",
    "AlarmhubScaipNotListening",
    "AlarmhubScaipConnectionsRefused",
    "AlarmhubScaipAuthFailures",
    "AlarmhubScaipAnswersUndelivered",
    "AlarmhubScaipRequestsFailed",
}


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        # `make test` installs it (scripts/system-packages): missing is a broken setup.
        pytest.fail(
            "promtool is not installed: `apt-get install prometheus` (make test installs it)"
        )
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


# A rule's `expr:`: one line, or a block (`expr: |`) whose lines are indented deeper.
EXPR = re.compile(r"(?m)^(?P<indent>[ \t]+)expr: (?P<expr>.*(?:\n(?P=indent)[ \t]+\S.*)*)")


def expr_text(raw: str) -> str:
    """The expression as PromQL reads it: a block's lines joined, its `|` dropped."""
    lines = re.sub(r"^[|>][-+]?", "", raw).splitlines()
    return " ".join(line.strip() for line in lines if line.strip())


def alert_blocks(text: str) -> dict[str, str]:
    """Alert name -> its block of YAML text, up to the next rule."""
    parts = re.split(r"(?m)^(?=[ \t]*- alert: )", text)
    blocks = {}
    for part in parts[1:]:
        name = re.match(r"\s*- alert: (\w+)", part)
        assert name
        blocks[name[1]] = part
    return blocks


def test_promtool_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_target_is_alarmhubs_metrics_endpoint() -> None:
    text = (DEPLOY / "prometheus.yml").read_text()
    assert re.search(r"job_name: alarmhub\b", text)
    assert re.search(r"metrics_path: /metrics\s*$", text, flags=re.MULTILINE)
    assert '"127.0.0.1:8080"' in text
    assert re.search(r"^\s+- alarmhub\.rules\.yml\s*$", text, flags=re.MULTILINE)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_are_the_planned_set_with_severity_summary_and_runbook() -> None:
    blocks = alert_blocks(RULES.read_text())
    assert set(blocks) == ALERTS
    for name, block in blocks.items():
        assert re.search(r"severity: (critical|warning)\b", block), name
        assert re.search(r"summary: \".+\"", block), name
        link = re.search(r'runbook_url: "docs/operations\.md#([\w-]+)"', block)
        assert link, name
        assert link[1] == name.lower(), name


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_runbook_link_has_a_section_in_operations_md() -> None:
    anchors = github_anchors(OPERATIONS.read_text())
    links = set(re.findall(r"docs/operations\.md#([\w-]+)", RULES.read_text()))
    assert links
    assert links - anchors == set()


def test_links_into_operations_md_resolve() -> None:
    anchors = github_anchors(OPERATIONS.read_text())
    own = re.findall(r"\]\(#([\w-]+)\)", OPERATIONS.read_text())
    from_metrics = re.findall(
        r"operations\.md#([\w-]+)", (ROOT / "docs" / "metrics.md").read_text()
    )
    assert own
    assert set(own + from_metrics) - anchors == set()


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    text = RULE_TESTS.read_text()
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:(.*)", text)
    firing = {name for name, rest in cases if rest.strip() == ""}
    quiet = {name for name, rest in cases if rest.strip() == "[]"}
    assert firing == ALERTS
    assert quiet == ALERTS


def test_an_expression_over_several_lines_is_read_and_replaced_whole() -> None:
    block = (
        "      - alert: A\n"
        "        expr: |\n"
        "          up == 0\n"
        "          unless on(job) x == 1\n"
        "        for: 1m\n"
    )
    match = EXPR.search(block)
    assert match
    assert expr_text(match["expr"]) == "up == 0 unless on(job) x == 1"
    replaced = EXPR.sub(r"\g<indent>expr: vector(1) == 2", block)
    assert replaced == "      - alert: A\n        expr: vector(1) == 2\n        for: 1m\n"


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_breaking_an_alert_breaks_its_unit_test(tmp_path: Path, alert: str) -> None:
    """Replace one alert's expression with one that never fires: promtool must notice."""
    text = RULES.read_text()
    block = alert_blocks(text)[alert]
    broken_block, n = EXPR.subn(r"\g<indent>expr: vector(1) == 2", block, count=1)
    assert n == 1
    (tmp_path / RULES.name).write_text(text.replace(block, broken_block))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0, f"{alert}: unit tests still pass with a dead expression"
    assert f"alertname: {alert}" in result.stdout + result.stderr
