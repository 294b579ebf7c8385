"""Simulated homes and the devices in them.

A home is a pseudonymous place ("Home 17, flat 3"), never a person: the labels
go into the device registry, where operators see them, so they carry no names.
Device ids follow what real installations use (Zigbee2MQTT's IEEE address, a
pseudonymous OwnTracks user, a serial-like native id) and are derived from the
municipality and home number, so a second run registers the same devices again
instead of piling up new ones.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import time
from enum import StrEnum

from alarmhub.core.model import Device, DeviceKind, DeviceSettings

# Rough centres of a few municipalities (DOMAIN.md); homes are scattered around them.
CENTRES: dict[str, tuple[float, float]] = {
    "0301": (59.9139, 10.7522),  # Oslo
    "4601": (60.3913, 5.3221),  # Bergen
    "5001": (63.4305, 10.3951),  # Trondheim
    "1804": (67.2804, 14.4049),  # Bodø
    "3201": (59.8940, 10.5465),  # Bærum
}
DEFAULT_CENTRE = CENTRES["0301"]
AREAS = 3  # a power cut hits one area: about a third of the homes
DOSE_SLOTS = (time(8, 0), time(12, 0), time(16, 0), time(20, 0))
METRES_PER_DEGREE = 111_320.0


class Wire(StrEnum):
    """The message format a device speaks: one per device profile it exercises."""

    NATIVE = "native"
    Z2M_CONTACT = "zigbee2mqtt-contact"
    Z2M_SOS = "zigbee2mqtt-sos-button"
    Z2M_HEIMAN = "zigbee2mqtt-heiman-button"
    OWNTRACKS = "owntracks"


ZIGBEE = frozenset({Wire.Z2M_CONTACT, Wire.Z2M_SOS, Wire.Z2M_HEIMAN})

# Registered heartbeat intervals (seconds): what supervision expects of each wire.
HEARTBEAT_S = {
    Wire.NATIVE: 300,
    Wire.Z2M_CONTACT: 600,
    Wire.Z2M_SOS: 600,
    Wire.Z2M_HEIMAN: 600,
    Wire.OWNTRACKS: 300,
}
# Devices that run on mains power (with a backup battery and a mobile link):
# they report power.lost instead of going silent in a power cut.
MAINS = frozenset({DeviceKind.MEDICATION_DISPENSER, DeviceKind.FALL_SENSOR})


@dataclass(frozen=True, slots=True)
class SimDevice:
    id: str
    kind: DeviceKind
    wire: Wire
    label: str

    @property
    def profile(self) -> str | None:
        """The Heiman button is not its format's default profile: it is registered by name."""
        return Wire.Z2M_HEIMAN.value if self.wire is Wire.Z2M_HEIMAN else None

    @property
    def heartbeat_s(self) -> int:
        return HEARTBEAT_S[self.wire]

    @property
    def mains(self) -> bool:
        # A native pendant is a base unit on the wall socket plus the worn button.
        return self.kind in MAINS or (
            self.kind is DeviceKind.SAFETY_ALARM and self.wire is Wire.NATIVE
        )


@dataclass(frozen=True, slots=True)
class Home:
    number: int
    flat: int
    area: int
    municipality: str
    lat: float
    lon: float
    zone_radius_m: float  # the safe zone around home for a GPS tracker
    wanders_at_night: bool  # a resident with dementia: night-time door openings
    doses: tuple[time, ...]  # the dispenser's schedule, Europe/Oslo local time
    devices: tuple[SimDevice, ...]

    @property
    def label(self) -> str:
        return f"Home {self.number}, flat {self.flat}"

    @property
    def bridge(self) -> str:
        """The home's Zigbee coordinator: its Zigbee2MQTT account and base topic name."""
        return f"z2m-{self.municipality}-{self.number:04d}"


def build_homes(count: int, municipality: str, seed: int) -> list[Home]:
    """The same seed gives the same homes, devices and schedules."""
    rng = random.Random(f"{seed}:homes")  # noqa: S311 - reproducible by design
    centre = CENTRES.get(municipality, DEFAULT_CENTRE)
    return [_home(rng, number, municipality, centre) for number in range(1, count + 1)]


def _home(rng: random.Random, number: int, municipality: str, centre: tuple[float, float]) -> Home:
    flat = rng.randint(1, 12)
    label = f"Home {number}, flat {flat}"
    devices: list[SimDevice] = []
    pendant = rng.choices([Wire.NATIVE, Wire.Z2M_SOS, Wire.Z2M_HEIMAN], weights=[6, 3, 1], k=1)[0]
    devices.append(
        _device(municipality, number, "pendant", DeviceKind.SAFETY_ALARM, pendant, label)
    )
    has_door = rng.random() < 0.7
    if has_door:
        devices.append(
            _device(municipality, number, "door", DeviceKind.DOOR_SENSOR, Wire.Z2M_CONTACT, label)
        )
    has_tracker = rng.random() < 0.25
    if has_tracker:
        devices.append(
            _device(municipality, number, "tracker", DeviceKind.GPS_TRACKER, Wire.OWNTRACKS, label)
        )
    doses: tuple[time, ...] = ()
    if rng.random() < 0.35:
        devices.append(
            _device(
                municipality,
                number,
                "dispenser",
                DeviceKind.MEDICATION_DISPENSER,
                Wire.NATIVE,
                label,
            )
        )
        doses = tuple(sorted(rng.sample(DOSE_SLOTS, rng.randint(2, 4))))
    if rng.random() < 0.3:
        devices.append(
            _device(municipality, number, "fall", DeviceKind.FALL_SENSOR, Wire.NATIVE, label)
        )
    # Within ~4 km of the centre: a latitude offset is metres / 111 km; a longitude
    # offset shrinks with cos(latitude).
    lat = centre[0] + rng.uniform(-4000, 4000) / METRES_PER_DEGREE
    lon = centre[1] + rng.uniform(-4000, 4000) / (METRES_PER_DEGREE * math.cos(math.radians(lat)))
    return Home(
        number=number,
        flat=flat,
        area=rng.randrange(AREAS),
        municipality=municipality,
        lat=round(lat, 6),
        lon=round(lon, 6),
        zone_radius_m=250.0,
        wanders_at_night=has_door and (has_tracker or rng.random() < 0.3),
        doses=doses,
        devices=tuple(devices),
    )


def _device(
    municipality: str, number: int, role: str, kind: DeviceKind, wire: Wire, home_label: str
) -> SimDevice:
    if wire is Wire.NATIVE:
        device_id = f"{role[:4]}-{municipality}-{number:04d}"
    elif wire is Wire.OWNTRACKS:
        device_id = f"h{municipality}{number:04d}/{role}"
    else:  # Zigbee2MQTT's default friendly name is the IEEE address
        digest = hashlib.blake2b(f"{municipality}:{number}:{role}".encode(), digest_size=8)
        device_id = "0x" + digest.hexdigest()
    return SimDevice(device_id, kind, wire, f"{home_label}: {role}")


def registrations(homes: list[Home]) -> list[Device]:
    """The registry rows for every simulated device (labels without personal data).

    A home's devices share a pseudonymous resident, so a fall inhibits the same
    person's low-battery alarm; a tracker gets its home's safe zone, so wandering
    out of it raises `left_safe_zone`. Dose schedules are not registered: at
    speeds above 1 the simulator replays the past, and the daemon would count
    today's doses as missed.
    """
    return [
        Device(
            d.id,
            d.kind,
            h.municipality,
            d.profile,
            d.heartbeat_s,
            d.label,
            resident=f"r-{h.municipality}-{h.number}",
            settings=DeviceSettings(geofence_circle=(h.lat, h.lon, h.zone_radius_m))
            if d.kind is DeviceKind.GPS_TRACKER
            else DeviceSettings(),
            bridge=h.bridge if d.wire in ZIGBEE else None,
        )
        for h in homes
        for d in h.devices
    ]
