"""The hub's timed loops, which the scenario suite runs itself in virtual time.

Each background loop of the daemon that decides something because time passed
(an escalation deadline, a silent device, a silence's end) is a :class:`Timer`
here: the loop the daemon runs as a task is switched off for the scenario, and
the harness calls its `step` at every instant where any timer may have work,
in order of time. A loop left running would act at some real moment the
scenario cannot see, and its expectations would depend on the machine's speed.

A new loop of that kind (a new task the hub starts that reads the
clock) needs an entry in :func:`timers`: the loop to switch off, one step, and
the earliest instant it may have work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from alarmhub.app import AlarmHub
from alarmhub.core.suppress import next_silence_end
from alarmhub.daemon.escalator import Escalator
from alarmhub.daemon.registry import Registry
from alarmhub.daemon.supervisor import STEP_S, Supervision
from alarmhub.daemon.suppression import SuppressionKeeper


@dataclass(frozen=True)
class Timer:
    name: str
    loop: tuple[type, str]  # (class, method) the hub runs as a task: switched off
    step: Callable[[AlarmHub], Awaitable[Any]]  # one tick now; truthy when it did something
    next_due: Callable[[AlarmHub], datetime | None]  # the earliest instant it may have work


async def _escalate(hub: AlarmHub) -> bool:
    due = hub.escalator.next_due()
    if due is None or due > hub.clock.now():
        return False
    await hub.escalator.fire_due()
    return True


def _supervision_due(hub: AlarmHub) -> datetime | None:
    due = hub.supervision.next_due()
    # Overdue strictly after the deadline; the daemon's step runs every STEP_S.
    return None if due is None else due + timedelta(seconds=STEP_S)


async def _refresh(hub: AlarmHub) -> bool:
    await hub.refresh_registry()
    return False  # runs at every stop; never a reason to run another round


def _never(_hub: AlarmHub) -> None:
    return None


async def _sweep_silences(hub: AlarmHub) -> bool:
    return bool(await hub.suppression.sweep())


def timers() -> list[Timer]:
    """The timed loops, in the order they run at one instant."""
    return [
        Timer("registry", (Registry, "run"), _refresh, _never),
        # A silence that ends releases what it hid, at its end (issue 12 item 8).
        Timer(
            "silences",
            (SuppressionKeeper, "run"),
            _sweep_silences,
            lambda hub: next_silence_end(hub.silences, hub.clock.now()),
        ),
        Timer("escalator", (Escalator, "run"), _escalate, lambda hub: hub.escalator.next_due()),
        Timer(
            "supervision",
            (Supervision, "run"),
            lambda hub: hub.supervision.step(),
            _supervision_due,
        ),
    ]
