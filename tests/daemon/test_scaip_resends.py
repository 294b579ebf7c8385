"""The answer to a SCAIP resend, and when a resend is a new alarm (real Mosquitto, SQLite).

A resend of a committed request is a redelivery: it raises nothing, so its answer must be
built from the alarm its stored copy raised, whoever awaited that commit and whether or
not alarmhub restarted since. And a `ref` the device uses again once that alarm was
resolved (its counter restarted) is a new call for help, not a resend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alarmhub.core.actions import Action
from alarmhub.core.scaip import Answer, Snu
from alarmhub.daemon.scaip import HeldRequests
from alarmhub.dev.mosquitto import LocalBroker
from tests.daemon.test_scaip_daemon import (
    CID,
    OTHER,
    answer,
    inbound,
    mrq,
    running,
    scaip_device,
    sqlite_count,
)
from tests.support.helpers import REPO, async_wait_until, db_rows, failing_commits

pytestmark = pytest.mark.broker

VOICE = {"scaip": {"mre": 1, "cre": 62, "tnu": "+4722000000"}}
HANDLED = {"snu": "0", "mre": "1", "cre": "62", "tnu": "+4722000000"}


def answered(tmp_path: Path) -> list[dict[str, Any]]:
    """The `answered` timeline entries: what alarmhub records it sent."""
    rows = db_rows(
        tmp_path / "alarmhub.db",
        "SELECT detail FROM timeline WHERE type = 'answered' ORDER BY rowid",
    )
    return [json.loads(detail) for (detail,) in rows]


def sent(reply: dict[str, str]) -> dict[str, Any]:
    """An answer as the timeline writes it (integers where the wire has digits)."""
    return {k: (v if k in ("ref", "tnu") else int(v)) for k, v in reply.items()}


async def test_the_resend_after_a_hold_carries_the_voice_parameters(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """The request held while the store failed commits with nobody awaiting it; the
    device's resend is a redelivery. Its `snu=0` carried no `mre`/`cre`/`tnu` (the resident
    got no voice call) while the timeline recorded that they were sent."""
    async with running(tmp_path, broker, client_id, scaip_hold_after_s=0.3) as hub:
        await hub.register_new_device(scaip_device(settings=VOICE), audit=())
        failing = failing_commits(hub.store)  # until cleared
        assert answer(await hub.scaip(inbound(mrq("V1"))))["snu"] == "4"
        failing.clear()
        assert await async_wait_until(
            lambda: sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1, 15
        )
        resend = answer(await hub.scaip(inbound(mrq("V1"))))
        assert resend == {"ref": "V1", **HANDLED}
        assert answered(tmp_path) == [sent(resend)]


async def test_the_resend_after_a_restart_carries_the_voice_parameters(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """After a restart nothing is in memory: the alarm is the stored copy's."""
    async with running(tmp_path, broker, client_id) as hub:
        await hub.register_new_device(scaip_device(settings=VOICE), audit=())
        first = answer(await hub.scaip(inbound(mrq("R1"))))
        assert first == {"ref": "R1", **HANDLED}
    async with running(tmp_path, broker, client_id) as hub:
        # The device did not hear the answer (it left as the process stopped): it resends.
        again = answer(await hub.scaip(inbound(mrq("R1"))))
        assert again == first
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1
        assert answered(tmp_path) == [sent(first)]


HOLD_RULES = """
[municipalities.0301.scaip]
answer = "hold_until_taken"
"""


def hold_rules(tmp_path: Path) -> Path:
    """The shipped rules with every SCAIP alarm answered `hold_until_taken`."""
    rules = tmp_path / "rules.toml"
    rules.write_text((REPO / "config" / "rules.toml").read_text() + HOLD_RULES)
    return rules


async def test_held_after_a_restart_the_resend_is_answered_about_its_own_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Under hold_until_taken the device's newest active alarm stood in for a resend's
    after a restart; a status request (a test, no alarm of its own) resent then was
    held behind another alarm (in one process too). Each resend is now answered about
    its own stored copy."""
    rules = hold_rules(tmp_path)
    async with running(tmp_path, broker, client_id, rules=rules) as hub:
        await hub.register_new_device(scaip_device(settings=VOICE), audit=())
        assert answer(await hub.scaip(inbound(mrq("W1"))))["snu"] == "4"
        assert answer(await hub.scaip(inbound(mrq("T1", "<stc>0102</stc>"))))["snu"] == "0"
    async with running(tmp_path, broker, client_id, rules=rules) as hub:
        assert answer(await hub.scaip(inbound(mrq("T1", "<stc>0102</stc>")))) == {
            "ref": "T1",
            "snu": "0",
        }
        assert answer(await hub.scaip(inbound(mrq("W1"))))["snu"] == "4"
        [alarm_id] = [a.id for a in hub.state.alarms.by_id.values() if a.kind == "button"]
        await hub.act(alarm_id, Action.ACKNOWLEDGE, "op-1", audit=())
        taken = answer(await hub.scaip(inbound(mrq("W1"))))
        assert taken == {"ref": "W1", **HANDLED}
        # Recorded on taking it, without a ref: whichever request the device resends next.
        assert answered(tmp_path)[-1] == {k: v for k, v in sent(taken).items() if k != "ref"}


async def test_a_ref_used_again_after_its_alarm_was_resolved_is_a_new_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """A pendant whose ref counter restarts (a battery change) sends byte-identical
    requests: the press after its first alarm was resolved was answered "handled" and
    dropped as a redelivery for 24 h. A resend while the alarm is active still is one."""
    async with running(tmp_path, broker, client_id) as hub:
        await hub.register_new_device(scaip_device(settings=VOICE), audit=())
        assert answer(await hub.scaip(inbound(mrq("1"))))["snu"] == "0"
        assert answer(await hub.scaip(inbound(mrq("1"))))["snu"] == "0"  # a resend
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1
        [first] = list(hub.state.alarms.by_id)
        await hub.act(first, Action.RESOLVE, "op-1", outcome="false_alarm", audit=())
        again = answer(await hub.scaip(inbound(mrq("1"))))
        assert again == {"ref": "1", **HANDLED}
        rows = db_rows(tmp_path / "alarmhub.db", "SELECT id, state FROM alarms ORDER BY rowid")
        assert [state for _, state in rows] == ["resolved", "open"]
        [(identity,)] = db_rows(
            tmp_path / "alarmhub.db",
            "SELECT identity FROM inbox WHERE msg_id = '1' ORDER BY seq DESC LIMIT 1",
        )
        assert identity == "alarm_resolved"
        # Its own resends are redeliveries of the new alarm.
        assert answer(await hub.scaip(inbound(mrq("1")))) == again
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 2


async def test_a_resend_after_a_fast_resolve_under_hold_is_answered_not_a_new_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Under hold_until_taken the device resends its request until it hears `snu=0`. An
    operator who took and resolved the alarm between two resends made the next resend
    (the same `ref`, the same bytes) a second alarm: dedup took it for a ref counter
    restart. It is the same request, still unanswered: a redelivery, answered 0 with the
    voice parameters. Once it has heard 0 the device's session is over, and the same
    bytes again, like a new `ref`, are a new alarm."""
    rules = hold_rules(tmp_path)
    async with running(tmp_path, broker, client_id, rules=rules) as hub:
        await hub.register_new_device(scaip_device(settings=VOICE), audit=())
        assert answer(await hub.scaip(inbound(mrq("F1"))))["snu"] == "4"
        assert answer(await hub.scaip(inbound(mrq("F1"))))["snu"] == "4"  # the device polls
        [alarm_id] = list(hub.state.alarms.by_id)
        await hub.act(alarm_id, Action.ACKNOWLEDGE, "op-1", audit=())
        await hub.act(alarm_id, Action.RESOLVE, "op-1", outcome="false_alarm", audit=())
        resend = answer(await hub.scaip(inbound(mrq("F1"))))
        assert resend == {"ref": "F1", **HANDLED}
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1
        assert sqlite_count(tmp_path, "SELECT count(*) FROM inbox") == 1
        assert answered(tmp_path) == [
            {"ref": "F1", "snu": 4},
            {k: v for k, v in sent(resend).items() if k != "ref"},
        ]
        # F1 again, now that the device heard 0 for it (its counter restarted), is a new
        # call for help: held behind a new alarm.
        assert answer(await hub.scaip(inbound(mrq("F1"))))["snu"] == "4"
        rows = db_rows(tmp_path / "alarmhub.db", "SELECT state FROM alarms ORDER BY rowid")
        assert [state for (state,) in rows] == ["resolved", "open"]
        # A new request is a new message: it joins that open alarm, held too.
        assert answer(await hub.scaip(inbound(mrq("F2"))))["snu"] == "4"
        rows = db_rows(tmp_path / "alarmhub.db", "SELECT msg_id, identity FROM inbox ORDER BY seq")
        assert rows == [("F1", None), ("F1", "alarm_resolved"), ("F2", None)]


def test_a_hold_marks_its_request_as_resent_only_while_the_device_can_still_resend() -> None:
    """What the intake tells ingest: a HOLD marks (device, ref) for a minute from the
    last HOLD; a 0 ends it; a device that stopped resending is forgotten, so a press
    after its `ref` counter restarted is judged by its bytes again."""
    held = HeldRequests(within_s=60, limit=2)
    held.answered(CID, Answer("F1", Snu.HOLD), now=0)
    assert held.resending(CID, "F1", now=59)
    assert not held.resending(CID, "F2", now=59)
    assert not held.resending(OTHER, "F1", now=59)
    held.answered(CID, Answer("F1", Snu.HOLD), now=59)  # the device polls again
    assert held.resending(CID, "F1", now=110)
    assert not held.resending(CID, "F1", now=120)  # it gave up
    held.answered(CID, Answer("F1", Snu.HANDLED), now=111)  # the session is over
    assert not held.resending(CID, "F1", now=112)
    for n, ref in enumerate(("A", "B", "C")):
        held.answered(CID, Answer(ref, Snu.HOLD), now=200 + n)
    assert [held.resending(CID, r, now=203) for r in "ABC"] == [False, True, True]
