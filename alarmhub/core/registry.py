"""The device registry's checks: one definition for the API, the CLI and CSV import.

A device reaches the registry three ways: `POST /api/v1/devices` (and its
change and decommission), `alarmhub devices register` and a CSV file through
either. All three validate here (issue 13 item 5), so a row the API refuses
the CLI refuses with the same message. Pure: the callers read the file, the
request and the profile catalogue; these functions only judge values.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alarmhub.core.bridges import BRIDGE_ID_PATTERN, valid_bridge
from alarmhub.core.decode import Catalog, valid_id
from alarmhub.core.device_settings import SettingsInvalidError, parse_settings
from alarmhub.core.model import Device, DeviceKind

MUNICIPALITY_DIGITS = 4

Municipality = Annotated[str, Field(pattern=r"^[0-9]{4}$", examples=["0301"])]
DeviceId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^+#\s]+$")]
# A bridge id is its MQTT username and a topic level (core/bridges.py says why).
BridgeId = Annotated[str, Field(pattern=BRIDGE_ID_PATTERN, examples=["z2m-0301-a"])]
# A pseudonymous reference, never a name: alarms of one resident inhibit each other.
Resident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
# Validated by alarmhub.core.device_settings (night window, geofence, dose schedule);
# see docs/api.md.
DeviceSettingsIn = Annotated[
    dict[str, Any],
    Field(
        examples=[
            {
                "windows": {"night": ["23:00", "06:00"]},
                "geofence": {"lat": 59.91, "lon": 10.75, "radius_m": 500},
                "dose_schedule": {"times": ["08:00", "20:00"], "window_min": 60},
            }
        ]
    ),
]


class RegistryError(ValueError):
    """A device the registry refuses; the message names the field and how to fix it."""


# A new device as the API's body and every CSV row give it. No docstring: it would
# become the schema's description in the OpenAPI document.
class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: DeviceId
    kind: DeviceKind
    municipality: Municipality
    heartbeat_interval_s: Annotated[int, Field(ge=10, le=7 * 24 * 3600)] | None = None
    label: Annotated[str, Field(max_length=200)] | None = None
    profile: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    resident: Resident | None = None
    settings: DeviceSettingsIn | None = None
    bridge: BridgeId | None = Field(
        default=None,
        description="the Zigbee2MQTT bridge (MQTT account and base topic "
        "`zigbee2mqtt/<bridge>`) a Zigbee device is paired with; its messages are "
        "refused (`wrong_bridge`) through any other bridge, and through every bridge "
        "while this is null",
    )


def unknown_profile(catalog: Catalog, device: Device) -> str | None:
    """Why a device's named profile is refused, or None (issue 13 item 5).

    A device naming a profile the catalogue does not have can decode nothing:
    every press of it would be a dead letter. Refused at registration, by the
    API and by CSV import alike.
    """
    if device.profile is None or device.profile in catalog.profiles:
        return None
    return f"profile {device.profile!r} is not one of: {', '.join(sorted(catalog.profiles))}"


def profile_guess(catalog: Catalog, device: Device) -> str | None:
    """A warning when a device without a profile is decoded by a guess, or None.

    A device registered without `--profile` is decoded by its format's default
    profile for its kind. Where a format has several profiles for that kind
    (Zigbee2MQTT buttons: the Tuya SOS default and the Heiman), the default is
    a guess: a Heiman button registered without its profile had every press
    stored as a heartbeat (issue 12 item 13). The registry cannot know the
    device's format from its id, so the warning names each format where the
    choice is a guess.
    """
    if device.profile is not None:
        return None
    warnings: list[str] = []
    formats = sorted({p.format for p in catalog.profiles.values() if not p.native})
    for fmt in formats:
        names = sorted(
            p.name for p in catalog.profiles.values() if p.format == fmt and device.kind in p.kinds
        )
        chosen = catalog.profile_for(fmt, device)
        if len(names) < 2 or chosen is None:
            continue
        others = ", ".join(n for n in names if n != chosen.name)
        warnings.append(
            f"warning: {device.id} is registered without --profile: if it is a {fmt} device, "
            f"it is decoded as {chosen.name} (the default for {device.kind}), a guess; "
            f"other {fmt} profiles for {device.kind}: {others}. "
            "Register it again with --profile NAME if it is one of those."
        )
    return "\n".join(warnings) or None


def bridge_missing(catalog: Catalog, device: Device) -> str | None:
    """Why a device cannot be registered without a bridge, or None (issue 13 item 9).

    A device whose profile reads a bridged topic (Zigbee2MQTT) has every message
    refused as `wrong_bridge` while no bridge is recorded: better to refuse the
    registration now than to find out from a dead letter after a press.
    """
    if device.bridge is not None or device.profile is None:
        return None
    profile = catalog.profiles.get(device.profile)
    if profile is None or not profile.topic.bridged:
        return None
    return (
        f"{device.id}: profile {profile.name} is a {profile.format} profile: give the bridge "
        "the device is paired with (--bridge, or the `bridge` field/column); without one, "
        "its messages are refused as wrong_bridge"
    )


def bridge_unknown(catalog: Catalog, device: Device) -> str | None:
    """A warning for a device that may be a bridged (Zigbee) device but has no bridge."""
    if device.bridge is not None or device.profile is not None:
        return None
    formats = sorted(
        {p.format for p in catalog.profiles.values() if p.topic.bridged and device.kind in p.kinds}
    )
    if not formats:
        return None
    return (
        f"warning: {device.id} has no --bridge: if it is a {' or '.join(formats)} device, "
        "every message it sends is refused as wrong_bridge until its bridge is registered"
    )


def _device(
    id_: str,
    kind: str,
    municipality: str,
    interval: str | int | None,
    label: str | None,
    profile: str | None = None,
    bridge: str | None = None,
) -> Device:
    if not valid_id(id_) or any(c in id_ for c in "+#"):
        raise RegistryError(
            f"device id {id_!r} is not valid: 1-128 printable characters, no + or #"
        )
    try:
        device_kind = DeviceKind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in DeviceKind)
        raise RegistryError(f"kind {kind!r} is not one of: {kinds}") from None
    if len(municipality) != MUNICIPALITY_DIGITS or not municipality.isdigit():
        raise RegistryError(
            f"municipality {municipality!r} must be a four-digit kommunenummer, e.g. 0301"
        )
    seconds: int | None = None
    if interval not in (None, ""):
        try:
            seconds = int(interval)
        except ValueError:
            raise RegistryError(
                f"heartbeat interval {interval!r} is not a whole number of seconds"
            ) from None
        if not 10 <= seconds <= 7 * 24 * 3600:
            raise RegistryError("heartbeat interval must be between 10 s and 7 days")
    if bridge and not valid_bridge(bridge):
        raise RegistryError(
            f"bridge {bridge!r} is not valid: 1-64 letters, digits, '.', '_' or '-' "
            "(it is an MQTT username and a topic level)"
        )
    return Device(
        id_,
        device_kind,
        municipality,
        profile or None,
        seconds,
        label or None,
        bridge=bridge or None,
    )


def device_from_values(v: Mapping[str, Any]) -> Device:
    """A device from already-typed values: the registry's checks, then its settings.

    The API's create, change and decommission and every CSV row end here.
    Raises RegistryError or SettingsInvalidError with a message for a person.
    """
    kind = v["kind"].value if isinstance(v["kind"], DeviceKind) else str(v["kind"])
    return replace(
        _device(
            v["id"],
            kind,
            v["municipality"],
            v["heartbeat_interval_s"],
            v["label"],
            v["profile"],
            v.get("bridge"),
        ),
        active=bool(v.get("active", True)),
        resident=v.get("resident"),
        settings=parse_settings(v.get("settings")),
    )


def known_profile(catalog: Catalog | None, device: Device) -> Device:
    """The device, or RegistryError if it names a profile the catalogue lacks.

    No catalogue (a broken profile folder, which `rules check` and the daemon
    report): nothing to check against.
    """
    problem = None if catalog is None else unknown_profile(catalog, device)
    if problem is not None:
        raise RegistryError(problem)
    return device


def validated_device(values: Mapping[str, Any], catalog: Catalog | None) -> Device:
    """A new device from untyped input, validated exactly as `POST /api/v1/devices` is.

    One definition for both (issue 13 item 5): the API's body model (bounded
    label and profile, a pseudonymous resident, settings an object), then
    :func:`device_from_values`. Raises RegistryError naming the first bad field.
    """
    # The registry's own checks first, only for their messages (the kinds listed,
    # "four-digit kommunenummer"); a row must pass both either way.
    _device(
        str(values.get("id", "")),
        str(values.get("kind", "")),
        str(values.get("municipality", "")),
        values.get("heartbeat_interval_s"),
        None,
        None,
        values.get("bridge") or None,
    )
    try:
        body = DeviceIn.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "row"
        raise RegistryError(f"{field}: {err['msg']}") from None
    try:
        device = device_from_values(body.model_dump())
    except SettingsInvalidError as exc:
        raise RegistryError(str(exc)) from None
    return known_profile(catalog, device)


REQUIRED_COLUMNS = ("id", "kind", "municipality")
OPTIONAL_COLUMNS = ("heartbeat_interval", "label", "profile", "resident", "settings", "bridge")
# Columns an import leaves alone on existing devices when the file does not have them,
# so re-importing a plain id,kind,municipality list never wipes a geofence or unpairs
# a Zigbee device from its bridge.
PRESERVABLE = frozenset({"resident", "settings", "bridge"})


def preserved_columns(text: str) -> frozenset[str]:
    header = next(csv.reader(text.splitlines()[:1]), [])
    return PRESERVABLE - {h.strip() for h in header}


def parse_device_csv(text: str, catalog: Catalog | None = None) -> tuple[list[Device], list[str]]:
    """Parse a registry CSV; return the devices and every row's error (all or nothing).

    Each row is validated as `POST /api/v1/devices` validates its body
    (:func:`validated_device`), its profile against `catalog` when given.
    """
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return [], [f"header: missing column(s) {', '.join(missing)} (need id,kind,municipality)"]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        return [], [f"header: unknown column(s) {', '.join(unknown)}"]
    devices: list[Device] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for line_no, row in enumerate(reader, start=2):
        try:
            device = validated_device(_csv_values(row), catalog)
        except RegistryError as exc:
            errors.append(f"line {line_no}: {exc}")
            continue
        if device.id in seen:
            errors.append(f"line {line_no}: device {device.id} already on line {seen[device.id]}")
            continue
        seen[device.id] = line_no
        devices.append(device)
    return devices, errors


def _csv_values(row: Mapping[str, str | None]) -> dict[str, Any]:
    """A CSV row as the API's device body: blanks absent, the settings cell as JSON."""
    columns = {"heartbeat_interval": "heartbeat_interval_s"}
    values: dict[str, Any] = {}
    for column in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
        cell = (row.get(column) or "").strip()
        if cell or column in REQUIRED_COLUMNS:
            values[columns.get(column, column)] = cell
    if "settings" in values:
        try:
            values["settings"] = orjson.loads(values["settings"])
        except orjson.JSONDecodeError as exc:
            raise RegistryError(f"settings are not JSON: {exc}") from None
    return values
