"""Device profiles as frozen core types: how one vendor format maps onto alarmhub events.

Profiles are data (TOML files under ``devices/``), loaded and validated once by
:mod:`alarmhub.config.profiles`. This module holds only the resulting types and the
pure matching logic, so that adding a vendor format never touches the pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from alarmhub.core.model import DeviceKind, EventType


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    IN = "in"
    PRESENT = "present"


@dataclass(frozen=True, slots=True)
class Condition:
    path: str
    op: Op
    value: Any

    def holds(self, payload: dict[str, Any]) -> bool:
        found, actual = lookup(payload, self.path)
        if self.op is Op.PRESENT:
            return found is bool(self.value)
        if not found:
            return False
        if self.op is Op.EQ:
            # bool is an int in Python: `True == 1` must not match a numeric 1.
            return type(actual) is type(self.value) and actual == self.value
        if self.op is Op.NE:
            return not (type(actual) is type(self.value) and actual == self.value)
        if self.op is Op.IN:
            return any(type(actual) is type(v) and actual == v for v in self.value)
        if not _is_number(actual):
            return False
        if self.op is Op.LT:
            return bool(actual < self.value)
        if self.op is Op.LE:
            return bool(actual <= self.value)
        if self.op is Op.GT:
            return bool(actual > self.value)
        return bool(actual >= self.value)


@dataclass(frozen=True, slots=True)
class Mapping:
    """When every condition holds, the message yields `event` with the listed fields."""

    conditions: tuple[Condition, ...]
    event: EventType
    fields: tuple[tuple[str, str], ...] = ()  # (alarmhub field, payload path)

    def matches(self, payload: dict[str, Any]) -> bool:
        return all(c.holds(payload) for c in self.conditions)


class TimestampUnit(StrEnum):
    RFC3339 = "rfc3339"
    EPOCH_S = "epoch_s"
    EPOCH_MS = "epoch_ms"


# The placeholder naming the bridge a message came through (Zigbee2MQTT's per-bridge
# base topic `zigbee2mqtt/<bridge>`): the broker lets each bridge account write only
# under its own name, so this level is who sent the message, not what it claims.
BRIDGE_PLACEHOLDER = "bridge"


@dataclass(frozen=True, slots=True)
class TopicPattern:
    """A topic with `{name}` placeholders, each matching exactly one level."""

    levels: tuple[str, ...]
    device_id: str  # template over the placeholders, e.g. "{user}/{device}"
    # Compiled once from the two above: every message is routed through match().
    _literals: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)
    _names: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)
    _whole: int | None = field(init=False, repr=False, compare=False)
    _bridge: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(
            (i, lvl[1:-1])
            for i, lvl in enumerate(self.levels)
            if lvl.startswith("{") and lvl.endswith("}")
        )
        placeholders = {i for i, _ in names}
        literals = tuple((i, lvl) for i, lvl in enumerate(self.levels) if i not in placeholders)
        # The common template "{device}": the id is that one level as it is.
        whole = next((i for i, name in names if self.device_id == f"{{{name}}}"), None)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_literals", literals)
        object.__setattr__(self, "_whole", whole)
        bridge = next((i for i, name in names if name == BRIDGE_PLACEHOLDER), None)
        object.__setattr__(self, "_bridge", bridge)

    @property
    def bridged(self) -> bool:
        """Whether the topic names the bridge its messages come through."""
        return self._bridge is not None

    def bridge(self, topic_levels: list[str]) -> str | None:
        """The bridge level of a topic this pattern matched, or None when it has none."""
        return None if self._bridge is None else topic_levels[self._bridge]

    def match(self, topic_levels: list[str]) -> str | None:
        if len(topic_levels) != len(self.levels):
            return None
        for i, literal in self._literals:
            if topic_levels[i] != literal:
                return None
        for i, _name in self._names:
            if not topic_levels[i]:
                return None
        if self._whole is not None:
            return topic_levels[self._whole]
        return self.device_id.format_map({name: topic_levels[i] for i, name in self._names})

    def subscription(self) -> str:
        """The MQTT filter that covers this pattern: placeholders become `+`."""
        return "/".join("+" if lvl.startswith("{") else lvl for lvl in self.levels)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    format: str  # the wire family ("native", "zigbee2mqtt", "owntracks")
    kinds: tuple[DeviceKind, ...]
    topic: TopicPattern
    default: bool = False  # default profile of its format for each of its kinds
    native: bool = False  # decoded by the native protocol's schema, not by mappings
    mappings: tuple[Mapping, ...] = ()
    message_id: tuple[str, ...] = ()  # payload paths that identify a message, first found wins
    timestamp_path: str | None = None
    timestamp_unit: TimestampUnit = TimestampUnit.RFC3339
    fallback: EventType | None = None  # when no mapping matches (e.g. a plain status report)
    # Payload path of a button's action. A message carrying an action that no matching
    # mapping tests is a press alarmhub cannot read: it raises a button alarm instead
    # of passing for a heartbeat (issue 12 item 13).
    unrecognised_action: str | None = None
    # Only the first mapping that matches makes an event: a format whose message carries
    # one status code (SCAIP) is read as an ordered table, like a firewall's rules.
    first_match: bool = False
    description: str = ""


def lookup(payload: dict[str, Any], path: str) -> tuple[bool, Any]:
    """Follow a dotted path into nested JSON objects."""
    current: Any = payload
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return False, None
        current = current[part]
    return True, current


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not (isinstance(value, float) and math.isnan(value))
