"""Per-device settings (night window, geofence, dose schedule) as JSON, validated.

Stored as one JSON column so that a new setting needs no migration; validated
here, strictly, before it is stored, so the pipeline only ever sees sound data.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alarmhub.core.geo import Circle, Polygon
from alarmhub.core.model import DeviceSettings, ScaipVoice
from alarmhub.core.rules import parse_hhmm


class SettingsInvalidError(ValueError):
    """Device settings that cannot be used; the message names the field."""


def _hhmm(text: str) -> str:
    hours, sep, minutes = text.partition(":")
    if not sep or not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"expected HH:MM, got {text!r}")
    if not (0 <= int(hours) < 24 and 0 <= int(minutes) < 60):
        raise ValueError(f"no such time of day: {text!r}")
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CircleModel(_Strict):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    radius_m: Annotated[float, Field(gt=0, le=100_000)]


class DoseModel(_Strict):
    times: Annotated[list[str], Field(min_length=1, max_length=12)]
    window_min: Annotated[int, Field(ge=5, le=24 * 60)] = 60

    @field_validator("times")
    @classmethod
    def _times(cls, v: list[str]) -> list[str]:
        """As "HH:MM", in order, each once: a schedule is a set of times of day.

        Accepted as given ("20:00", "08:00"; "8:00" beside "08:00"), they were stored,
        and the supervisor's DoseSchedule refused them: that dispenser, and every
        device after it in the batch, went unwatched, and the next start failed.
        """
        return sorted({parse_hhmm(_hhmm(t)).strftime("%H:%M") for t in v})


class VoiceModel(_Strict):
    """SCAIP voice parameters (docs/scaip.md): `mre`, `cre`, `tnu`."""

    mre: Annotated[int, Field(ge=0, le=3)] | None = None
    cre: Annotated[int, Field(ge=1, le=62)] | None = None
    tnu: Annotated[str, Field(pattern=r"^\+?[0-9]{3,20}$")] | None = None

    def voice(self) -> ScaipVoice:
        return ScaipVoice(self.mre, self.cre, self.tnu)


class ScaipModel(VoiceModel):
    inline: bool = False  # the answer in the SIP 200 OK, for devices that expect it there


class SettingsModel(_Strict):
    windows: dict[str, Annotated[list[str], Field(min_length=2, max_length=2)]] = {}
    geofence: CircleModel | None = None
    geofence_polygon: (
        Annotated[list[tuple[float, float]], Field(min_length=3, max_length=500)] | None
    ) = None
    max_accuracy_m: Annotated[float, Field(gt=0, le=10_000)] = 150.0
    dose_schedule: DoseModel | None = None
    scaip: ScaipModel | None = None

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for pair in v.values():
            _hhmm(pair[0])
            _hhmm(pair[1])
        return v


_NO_SETTINGS = DeviceSettings()


def parse_settings(data: dict[str, Any] | str | bytes | None) -> DeviceSettings:
    # Most devices have no settings: skip JSON and pydantic, and share one frozen
    # value (start-up with 1M devices, docs/performance.md).
    if data in (None, "", b"", "{}", b"{}") or (isinstance(data, dict) and not data):
        return _NO_SETTINGS
    try:
        raw = orjson.loads(data) if isinstance(data, str | bytes) else data
        model = SettingsModel.model_validate(raw)
    except orjson.JSONDecodeError as exc:
        raise SettingsInvalidError(f"settings are not JSON: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SettingsInvalidError(
            f"settings.{loc}: {err['msg'].removeprefix('Value error, ')}"
        ) from exc
    if model.geofence is not None and model.geofence_polygon is not None:
        raise SettingsInvalidError("settings: give geofence or geofence_polygon, not both")
    if model.geofence_polygon is not None:
        try:
            Polygon.of(model.geofence_polygon)
        except ValueError as exc:
            raise SettingsInvalidError(f"settings.geofence_polygon: {exc}") from exc
    circle = None
    if model.geofence is not None:
        Circle(model.geofence.lat, model.geofence.lon, model.geofence.radius_m)
        circle = (model.geofence.lat, model.geofence.lon, model.geofence.radius_m)
    return DeviceSettings(
        windows=tuple((name, a, b) for name, (a, b) in sorted(model.windows.items())),
        geofence_circle=circle,
        geofence_polygon=tuple(model.geofence_polygon) if model.geofence_polygon else None,
        max_accuracy_m=model.max_accuracy_m,
        dose_times=tuple(model.dose_schedule.times) if model.dose_schedule else (),
        dose_window_min=model.dose_schedule.window_min if model.dose_schedule else 60,
        scaip_voice=model.scaip.voice() if model.scaip else None,
        scaip_inline=model.scaip.inline if model.scaip else False,
    )


def settings_json(s: DeviceSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.windows:
        out["windows"] = {name: [a, b] for name, a, b in s.windows}
    if s.geofence_circle is not None:
        lat, lon, radius = s.geofence_circle
        out["geofence"] = {"lat": lat, "lon": lon, "radius_m": radius}
    if s.geofence_polygon is not None:
        out["geofence_polygon"] = [list(p) for p in s.geofence_polygon]
    if s.max_accuracy_m != DeviceSettings().max_accuracy_m:
        out["max_accuracy_m"] = s.max_accuracy_m
    if s.dose_times:
        out["dose_schedule"] = {"times": list(s.dose_times), "window_min": s.dose_window_min}
    if s.scaip_voice is not None or s.scaip_inline:
        voice = s.scaip_voice or ScaipVoice()
        scaip = {"mre": voice.mre, "cre": voice.cre, "tnu": voice.tnu, "inline": s.scaip_inline}
        out["scaip"] = {k: v for k, v in scaip.items() if v is not None}
    return out
