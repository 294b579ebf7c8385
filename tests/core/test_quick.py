"""quick_init (core/quick.py) builds exactly what the dataclass's own __init__ builds."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

from alarmhub.core.escalation import Deadline, EscalationDecision
from alarmhub.core.judge import Decision
from alarmhub.core.model import Alarm, Decoded, Device, Event, RawMessage, TimelineEntry
from alarmhub.core.quick import quick_init
from alarmhub.store.ports import DecidedRow, Notification

DECORATED = [Device, RawMessage, Event, Decoded, Alarm, TimelineEntry, Decision, Deadline,
             EscalationDecision, Notification, DecidedRow]  # fmt: skip


def _slots(obj: object) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def _both(cls: type[Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    ours = cls(*args, **kwargs)
    theirs = object.__new__(cls)
    cls.__dataclass_init__(theirs, *args, **kwargs)
    return ours, theirs


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_the_same_parameters_as_the_dataclass_init(cls: type[Any]) -> None:
    ours = inspect.signature(cls.__init__).parameters
    theirs = inspect.signature(cls.__dataclass_init__).parameters
    assert list(ours) == list(theirs)
    for name, p in ours.items():
        q = theirs[name]
        assert p.kind == q.kind, name
        # dataclasses' own marker for a default_factory is private: both say "<factory>".
        assert repr(p.default) == repr(q.default), name


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_every_field_set_as_the_dataclass_init_sets_it(cls: type[Any]) -> None:
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]  # fmt: skip
    given = {f.name: object() for f in fields}
    # Every field given, by keyword and by position: each slot holds exactly that object.
    ours, theirs = _both(cls, **given)
    assert _slots(ours) == _slots(theirs) == given
    positional = [given[f.name] for f in fields]
    ours, theirs = _both(cls, *positional)
    assert _slots(ours) == _slots(theirs) == given
    # Only the required ones: the defaults, and a fresh value from each factory.
    only = {f.name: given[f.name] for f in required}
    ours, theirs = _both(cls, **only)
    assert _slots(ours) == _slots(theirs)
    again = cls(**only)
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(ours, f.name) == f.default_factory()
            assert getattr(ours, f.name) is not getattr(again, f.name), f.name
    # Still frozen.
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(ours, fields[0].name, 1)


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_a_missing_or_unknown_argument_is_a_type_error(cls: type[Any]) -> None:
    with pytest.raises(TypeError):
        cls()
    given = {f.name: object() for f in dataclasses.fields(cls)}
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(**given, not_a_field=1)


def test_keyword_only_fields_and_post_init() -> None:
    seen: list[object] = []

    @quick_init
    @dataclass(frozen=True, slots=True)
    class Sample:
        a: int
        b: list[int] = field(default_factory=list)
        c: str = field(default="x", kw_only=True)

        def __post_init__(self) -> None:
            seen.append(self)

    s = Sample(1, c="y")
    assert (s.a, s.b, s.c) == (1, [], "y")
    assert seen == [s]
    with pytest.raises(TypeError):
        Sample(1, [2], "y")  # type: ignore[call-arg]


def test_only_frozen_slotted_dataclasses_are_taken() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    for cls in (Mutable, NoSlots, int):
        with pytest.raises(TypeError, match="not a frozen, slotted dataclass"):
            quick_init(cls)


def test_an_init_false_field_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Derived:
        a: int
        b: int = field(default=0, init=False)

    with pytest.raises(TypeError, match="not a plain init field"):
        quick_init(Derived)
