"""Load device profiles from ``devices/*/profile.toml`` into frozen core types.

Everything a profile can get wrong is checked here, once, with the file and the
key named in the error: a mistyped profile must stop start-up (or a reload), not
quietly mis-decode a resident's alarm later. The pydantic models are only the
file's shape; the decoder sees the frozen :mod:`alarmhub.core.profile` types.
"""

from __future__ import annotations

import math
import os
import string
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
)

from alarmhub import builtin
from alarmhub.core.decode import Catalog
from alarmhub.core.model import INTERNAL_EVENTS, DeviceKind, EventType
from alarmhub.core.profile import Condition, Mapping, Op, Profile, TimestampUnit, TopicPattern

ENV_DEVICES_DIR = "ALARMHUB_DEVICES_DIR"
PROFILE_FILE = "profile.toml"

_TEXT_FIELDS = frozenset({"dose_id", "code", "note"})
# The fields a mapping may fill, per event type. It mirrors decode.validate_fields
# (a test checks every entry survives it): a misspelt field is a load error here
# instead of a value the decoder silently drops.
EVENT_FIELDS: dict[EventType, frozenset[str]] = dict.fromkeys(EventType, _TEXT_FIELDS) | {
    EventType.LOCATION: _TEXT_FIELDS | {"lat", "lon", "accuracy_m", "battery_pct"},
    EventType.BATTERY_LOW: _TEXT_FIELDS | {"battery_pct"},
}
_REQUIRED_FIELDS: dict[EventType, tuple[str, ...]] = {EventType.LOCATION: ("lat", "lon")}

_OPS = ", ".join(op.value for op in Op)
_NATIVE_ONLY_ABSENT = (
    "map", "message_id", "timestamp", "fallback", "unrecognised_action", "first_match",
)  # fmt: skip


class ProfileError(Exception):
    """A profile file that cannot be used, with the exact key at fault.

    The three parts are attributes so that a reload endpoint can show them in a
    form; ``str()`` is the one line an operator reads in the log.
    """

    def __init__(self, path: Path, key_path: str, message: str) -> None:
        super().__init__(path, key_path, message)
        self.path = path
        self.key_path = key_path
        self.message = message

    def __str__(self) -> str:
        where = _display(self.path)
        if self.key_path:
            return f"{where}: {self.key_path}: {self.message}"
        return f"{where}: {self.message}"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TimestampSpec(_Frozen):
    path: StrictStr = Field(min_length=1)
    unit: TimestampUnit = TimestampUnit.RFC3339


class _MapSpec(_Frozen):
    # Conditions are checked by hand below: a union of scalars and operator tables
    # gives pydantic errors that name union members instead of the user's key.
    when: dict[str, Any]
    event: EventType
    fields: dict[str, StrictStr] = Field(default_factory=dict)


class _ProfileSpec(_Frozen):
    name: StrictStr = Field(min_length=1)
    format: StrictStr = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    kinds: list[DeviceKind] = Field(min_length=1)
    topic: StrictStr = Field(min_length=1)
    device_id: StrictStr = "{device_id}"
    default: StrictBool = False
    native: StrictBool = False
    message_id: list[StrictStr] | None = None
    timestamp: _TimestampSpec | None = None
    fallback: EventType | None = None
    unrecognised_action: StrictStr | None = None
    first_match: StrictBool = False
    description: StrictStr = ""
    mappings: list[_MapSpec] | None = Field(default=None, alias="map")


def default_profiles_dir() -> Path:
    """The built-in profiles, unless ``ALARMHUB_DEVICES_DIR`` points elsewhere.

    Built in: the package's own copy when installed, the repository's ``devices/``
    in a checkout (:mod:`alarmhub.builtin`). The environment wins so that a
    deployment can ship its own vetted profiles without editing the installed package.
    """
    override = os.environ.get(ENV_DEVICES_DIR, "").strip()
    if override:
        return Path(override)
    return builtin.devices_dir()


def load_catalog(directory: Path) -> Catalog:
    return Catalog(load_profiles(directory))


def load_profiles(directory: Path) -> list[Profile]:
    """Read every ``<directory>/*/profile.toml``; all of them load, or none does.

    Checks that span files (one default per format and kind, topics that two
    formats would both claim) are made here, so a reload is all-or-nothing.
    """
    if not directory.is_dir():
        raise ProfileError(directory, "", "is not a directory of device profiles")
    profiles: list[Profile] = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        if folder.name.startswith((".", "_")):
            continue
        path = folder / PROFILE_FILE
        if not path.is_file():
            # A misspelt file name would otherwise drop a whole device family silently.
            raise ProfileError(path, "", "missing: every folder under devices/ is a profile")
        profile = load_profile(path)
        _check_against_others(path, profile, profiles)
        profiles.append(profile)
    if not profiles:
        raise ProfileError(directory, "", f"holds no */{PROFILE_FILE}")
    return profiles


def load_profile(path: Path) -> Profile:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(path, "", f"cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(path, "", f"is not valid TOML: {exc}") from exc
    try:
        spec = _ProfileSpec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(path, exc) from None
    if spec.name != path.parent.name:
        raise ProfileError(path, "name", f"must equal its folder name '{path.parent.name}'")
    return _to_profile(path, spec, data)


def _to_profile(path: Path, spec: _ProfileSpec, data: dict[str, Any]) -> Profile:
    topic = _topic(path, spec.topic, spec.device_id)
    if spec.native:
        for key in _NATIVE_ONLY_ABSENT:
            if key in data:
                raise ProfileError(
                    path, key, "a native profile is decoded by the native schema: remove it"
                )
        return Profile(
            name=spec.name,
            format=spec.format,
            kinds=tuple(spec.kinds),
            topic=topic,
            default=spec.default,
            native=True,
            description=spec.description,
        )
    specs = spec.mappings or []
    if spec.fallback in INTERNAL_EVENTS:
        raise ProfileError(path, "fallback", f"{spec.fallback} is raised by alarmhub itself")
    if not specs and spec.fallback is None:
        raise ProfileError(path, "map", "a vendor profile needs at least one [[map]] or a fallback")
    for i, msg_path in enumerate(spec.message_id or []):
        _check_path(path, f"message_id[{i}]", msg_path)
    if spec.timestamp is not None:
        _check_path(path, "timestamp.path", spec.timestamp.path)
    if spec.unrecognised_action is not None:
        _check_path(path, "unrecognised_action", spec.unrecognised_action)
        if spec.kinds != [DeviceKind.SAFETY_ALARM]:
            # The press it raises is a call for help: only a safety alarm's button means that.
            raise ProfileError(
                path, "unrecognised_action", 'only a profile for kinds = ["safety_alarm"]'
            )
    return Profile(
        name=spec.name,
        format=spec.format,
        kinds=tuple(spec.kinds),
        topic=topic,
        default=spec.default,
        mappings=tuple(_mapping(path, i, m) for i, m in enumerate(specs)),
        message_id=tuple(spec.message_id or ()),
        timestamp_path=spec.timestamp.path if spec.timestamp else None,
        timestamp_unit=spec.timestamp.unit if spec.timestamp else TimestampUnit.RFC3339,
        fallback=spec.fallback,
        unrecognised_action=spec.unrecognised_action,
        first_match=spec.first_match,
        description=spec.description,
    )


def _topic(path: Path, topic: str, device_id: str) -> TopicPattern:
    levels = tuple(topic.split("/"))
    names = _placeholders(path, topic, levels)
    _check_template(path, device_id, names)
    return TopicPattern(levels=levels, device_id=device_id)


def _placeholders(path: Path, topic: str, levels: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for level in levels:
        if not level or "+" in level or "#" in level or topic.startswith("$"):
            raise ProfileError(
                path, "topic", "expected levels without '+', '#', a leading '$' or empty levels"
            )
        if "{" in level or "}" in level:
            name = level[1:-1]
            if not (level.startswith("{") and level.endswith("}") and name.isidentifier()):
                raise ProfileError(
                    path, "topic", f"level '{level}': a placeholder must be a whole level, {{name}}"
                )
            if name in names:
                raise ProfileError(path, "topic", f"placeholder {{{name}}} appears twice")
            names.append(name)
    if not names:
        raise ProfileError(path, "topic", "needs at least one {placeholder} for the device id")
    return names


def _check_template(path: Path, device_id: str, names: list[str]) -> None:
    used: list[str] = []
    try:
        parsed = list(string.Formatter().parse(device_id))
    except ValueError as exc:
        raise ProfileError(path, "device_id", f"is not a valid template: {exc}") from None
    for literal, field, spec, conversion in parsed:
        if "{" in literal or "}" in literal:
            raise ProfileError(path, "device_id", "literal braces are not allowed")
        if field is None:
            continue
        if spec or conversion or field not in names:
            raise ProfileError(
                path,
                "device_id",
                f"'{{{field}}}' is not one of the topic's placeholders ({', '.join(names)})",
            )
        used.append(field)
    if not used:
        raise ProfileError(path, "device_id", "must use at least one topic placeholder")


def _mapping(path: Path, index: int, spec: _MapSpec) -> Mapping:
    where = f"map[{index}]"
    if not spec.when:
        raise ProfileError(path, f"{where}.when", "needs at least one condition")
    if spec.event in INTERNAL_EVENTS:
        raise ProfileError(path, f"{where}.event", f"{spec.event} is raised by alarmhub itself")
    conditions = tuple(
        _condition(path, f"{where}.when.{key}", key, value) for key, value in spec.when.items()
    )
    allowed = EVENT_FIELDS[spec.event]
    for name, source in spec.fields.items():
        if name not in allowed:
            raise ProfileError(
                path,
                f"{where}.fields.{name}",
                f"event {spec.event} has no field '{name}' (it has: {', '.join(sorted(allowed))})",
            )
        _check_path(path, f"{where}.fields.{name}", source)
    missing = [f for f in _REQUIRED_FIELDS.get(spec.event, ()) if f not in spec.fields]
    if missing:
        raise ProfileError(
            path, f"{where}.fields", f"event {spec.event} needs {', '.join(missing)}"
        )
    return Mapping(conditions=conditions, event=spec.event, fields=tuple(spec.fields.items()))


def _condition(path: Path, where: str, key: str, value: Any) -> Condition:
    _check_path(path, where, key)
    if _is_scalar(value):
        return Condition(key, Op.EQ, value)
    if not isinstance(value, dict) or len(value) != 1:
        raise ProfileError(
            path,
            where,
            "expected a string, number or boolean to compare with, "
            f"or a table with exactly one of {_OPS}",
        )
    ((op_name, operand),) = value.items()
    try:
        op = Op(op_name)
    except ValueError:
        raise ProfileError(
            path, f"{where}.{op_name}", f"unknown operator; expected one of {_OPS}"
        ) from None
    at = f"{where}.{op_name}"
    if op in (Op.EQ, Op.NE) and not _is_scalar(operand):
        raise ProfileError(path, at, "expected a string, number or boolean")
    if op in (Op.LT, Op.LE, Op.GT, Op.GE) and not _is_number(operand):
        raise ProfileError(path, at, "expected a finite number")
    if op is Op.PRESENT and not isinstance(operand, bool):
        raise ProfileError(path, at, "expected true or false")
    if op is Op.IN:
        if not isinstance(operand, list) or not operand or not all(map(_is_scalar, operand)):
            raise ProfileError(
                path, at, "expected a non-empty list of strings, numbers or booleans"
            )
        operand = tuple(operand)
    return Condition(key, op, operand)


def _check_path(path: Path, where: str, payload_path: str) -> None:
    if not payload_path or any(not part for part in payload_path.split(".")):
        raise ProfileError(path, where, "expected a payload path like 'a' or 'a.b'")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    # NaN never equals anything, so a condition comparing with it could never hold.
    return isinstance(value, str | bool) or _is_number(value)


def _check_against_others(path: Path, profile: Profile, others: list[Profile]) -> None:
    for other in others:
        if profile.default and other.default and profile.format == other.format:
            shared = [k.value for k in profile.kinds if k in other.kinds]
            if shared:
                raise ProfileError(
                    path,
                    "default",
                    f"profile {other.name} is already the default {profile.format} profile "
                    f"for {', '.join(shared)}",
                )
        same_route = (profile.format, profile.topic) == (other.format, other.topic)
        if not same_route and _overlap(profile.topic.levels, other.topic.levels):
            # The catalogue routes a topic by its first matching pattern: two different
            # patterns that can match the same topic would make routing depend on order.
            raise ProfileError(
                path,
                "topic",
                f"overlaps the topic of profile {other.name} ({'/'.join(other.topic.levels)}) "
                "with a different format or device id",
            )


def _overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y or x.startswith("{") or y.startswith("{") for x, y in zip(a, b, strict=True))


def _first_error(path: Path, exc: ValidationError) -> ProfileError:
    error = exc.errors()[0]
    key_path = _key_path(error["loc"])
    if error["type"] == "extra_forbidden":
        return ProfileError(path, key_path, "unknown key")
    if error["type"] == "missing":
        return ProfileError(path, key_path, "required key is missing")
    message = str(error["msg"])
    if message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    got = repr(error.get("input"))
    return ProfileError(path, key_path, f"{message}; got {got[:60]}")


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)
