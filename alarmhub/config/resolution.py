"""The rules file's `[resolution.<alarm kind>]` lists, parsed strictly into core types.

    [resolution.default]               # every alarm kind without a list of its own
    causes = [{ code = "fall", text = "Fall" }, …]
    actions = [{ code = "talked", text = "Samtale via alarmen" }, …]

    [resolution.button]                # only for `button` alarms
    causes = […]
    actions = […]

A kind must be one some rule raises (or the outage incident, or
`unregistered_device`): a list for a misspelt kind would silently never be
offered. Codes are unique within a list. Without `[resolution.default]` the
built-in default of core/resolution.py applies.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alarmhub.core.resolution import DEFAULT_KEY, Choice, Choices, Resolutions

Code = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class ChoiceModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Code
    text: Annotated[str, Field(min_length=1, max_length=120)]


def _unique(v: list[ChoiceModel]) -> list[ChoiceModel]:
    codes = [c.code for c in v]
    doubles = sorted({c for c in codes if codes.count(c) > 1})
    if doubles:
        raise ValueError(f"codes must be unique; given more than once: {', '.join(doubles)}")
    return v


class ResolutionModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    causes: Annotated[list[ChoiceModel], Field(min_length=1, max_length=40)]
    actions: Annotated[list[ChoiceModel], Field(min_length=1, max_length=40)]

    _causes = field_validator("causes")(_unique)
    _actions = field_validator("actions")(_unique)


def unknown_kinds(lists: dict[str, ResolutionModel], kinds: set[str]) -> list[str]:
    """The keys of `[resolution]` that are neither `default` nor an alarm kind raised."""
    return sorted(k for k in lists if k != DEFAULT_KEY and k not in kinds)


def _choices(m: ResolutionModel) -> Choices:
    return Choices(
        causes=tuple(Choice(c.code, c.text) for c in m.causes),
        actions=tuple(Choice(c.code, c.text) for c in m.actions),
    )


def resolutions(lists: dict[str, ResolutionModel]) -> Resolutions:
    default = lists.get(DEFAULT_KEY)
    kinds = {k: _choices(m) for k, m in lists.items() if k != DEFAULT_KEY}
    if default is None:
        return Resolutions(kinds=MappingProxyType(kinds))
    return Resolutions(_choices(default), MappingProxyType(kinds))
