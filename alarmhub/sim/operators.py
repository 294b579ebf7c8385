"""What a simulated response-centre operator does with an alarm, and when: a pure policy.

`respond(kind, priority, rng, operators)` returns a :class:`Response`: who takes
the alarm and the actions they will take, each at a delay after the alarm was
raised. No clock and no I/O: the demo's operator loop
(:mod:`alarmhub.sim.staff`) carries a plan out through the HTTP API, and the
seeded history (:mod:`alarmhub.sim.history`) writes the same plans as past
timelines, so the history and the live demo behave alike.

The numbers are a plausible busy centre, not measurements: critical alarms
(P1: a pendant press, a fall) are acknowledged within seconds, nearly always
inside the 60 s target of config/rules.toml, technical ones within minutes.
Person alarms are talked through, and a share of them gets a responder sent
from home care, who reaches the home 4-15 minutes later. Every plan resolves
the alarm before the P1 policy's 30-minute "acknowledged but not resolved"
reminder, so a simulated operator never leaves an alarm to come back.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from alarmhub.core.actions import Action

SIMULATED_PREFIX = "simulated-operator-"
NOTE_PREFIX = "Simulated operator: "

# Seconds from raised to acknowledged, per priority: (fastest, most likely, slowest)
# at a load of 1. The slowest P1 just misses its 60 s target now and then.
ACK_S: dict[int, tuple[float, float, float]] = {
    1: (4.0, 12.0, 65.0),
    2: (8.0, 25.0, 120.0),
    3: (15.0, 45.0, 240.0),
    4: (20.0, 90.0, 420.0),
}
# Alarms about a person: talked through on the phone, a responder sent when needed.
DISPATCH_SHARE: dict[str, float] = {
    "button": 0.35,
    "fall": 0.8,
    "left_safe_zone": 0.5,
    "door_open_night": 0.3,
}
CALL_S = (30.0, 150.0)  # acknowledged -> decided (dispatch or resolve)
TRAVEL_S = (240.0, 900.0)  # dispatched -> the responder is on site
ON_SITE_S = (60.0, 360.0)  # on site -> resolved
TECHNICAL_S = (60.0, 600.0)  # acknowledged -> a technical alarm is resolved
LOAD_MAX = 3.0

# Outcomes as the operator page offers them (web/static/js/actions.js).
PERSON_OUTCOMES = (("false_alarm", 0.55), ("helped", 0.45))
TECHNICAL_OUTCOME = "technical"
NOTES: dict[str, str] = {
    "false_alarm": "called the resident; pressed by mistake, all well.",
    "helped": "talked with the resident; helped on the phone.",
    "dispatched": "asked home care to go.",
    "on_site_helped": "home care on site; resident helped.",
    "technical": "technical alarm passed to the device service.",
}


@dataclass(frozen=True, slots=True)
class Step:
    after_s: float  # seconds after the alarm was raised
    action: Action
    outcome: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Response:
    operator: str
    steps: tuple[Step, ...]


def operator_names(count: int) -> list[str]:
    """User names that say what they are wherever an actor is shown: queue, timeline, audit."""
    return [f"{SIMULATED_PREFIX}{i}" for i in range(1, count + 1)]


def is_person_alarm(kind: str) -> bool:
    return kind in DISPATCH_SHARE


def respond(
    kind: str,
    priority: int,
    rng: random.Random,
    operators: Sequence[str],
    load: float = 1.0,
) -> Response:
    """The plan for one alarm. `load` > 1 slows acknowledgement (a busy night, a short shift)."""
    if not operators:
        raise ValueError("no operators to respond")
    load = min(max(load, 1.0), LOAD_MAX)
    operator = rng.choice(list(operators))
    lo, mode, hi = ACK_S.get(priority, ACK_S[4])
    ack = rng.triangular(lo, hi, mode) * load
    steps = [Step(ack, Action.ACKNOWLEDGE)]
    if not is_person_alarm(kind):
        done = ack + rng.uniform(*TECHNICAL_S)
        steps.append(Step(done, Action.RESOLVE, TECHNICAL_OUTCOME, _note(TECHNICAL_OUTCOME)))
        return Response(operator, tuple(steps))
    decided = ack + rng.uniform(*CALL_S)
    if rng.random() < DISPATCH_SHARE[kind]:
        on_site = decided + rng.uniform(*TRAVEL_S)
        steps += [
            Step(decided, Action.DISPATCH, note=_note("dispatched")),
            Step(on_site, Action.ON_SITE),
            Step(
                on_site + rng.uniform(*ON_SITE_S),
                Action.RESOLVE,
                "helped",
                _note("on_site_helped"),
            ),
        ]
    else:
        outcome = _weighted(rng, PERSON_OUTCOMES)
        steps.append(Step(decided, Action.RESOLVE, outcome, _note(outcome)))
    return Response(operator, tuple(steps))


def scaled(response: Response, speed: float) -> Response:
    """The same plan run `speed` times faster (tests, impatient demos)."""
    steps = tuple(Step(s.after_s / speed, s.action, s.outcome, s.note) for s in response.steps)
    return Response(response.operator, steps)


def _note(key: str) -> str:
    return NOTE_PREFIX + NOTES[key]


def _weighted(rng: random.Random, choices: Sequence[tuple[str, float]]) -> str:
    names = [c[0] for c in choices]
    weights = [c[1] for c in choices]
    return rng.choices(names, weights)[0]
