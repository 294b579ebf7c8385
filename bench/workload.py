"""The bench's pure parts: the device registry, the message mix, percentiles, the summary.

No I/O here, so tests/system/test_bench_smoke.py can check the mix without a broker.
The mix is deterministic for a given seed and prefix: every run publishes the
same kinds of messages in the same order, with message ids unique to the run
(so a second run on the same database is not deduplicated away).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from alarmhub.core.model import Device, DeviceKind

MUNICIPALITIES = ("0301", "4601", "5001", "1804", "3201")
HEARTBEAT_S = 300  # supervised; 3 misses = 15 min, longer than any phase: nobody goes offline

# Shares of the mix, in percent. Alarms are rare, as in the field; repeats are
# exact re-sends of an earlier message (a device retry or a QoS 1 redelivery).
MIX = (
    ("heartbeat", 61.0),
    ("location", 25.0),
    ("door", 6.0),
    ("battery.low", 2.0),
    ("alarm", 2.0),  # button.pressed and fall.detected
    ("repeat", 3.0),
    ("bad", 1.0),  # malformed JSON, or a device nobody registered
)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    ref: str | None  # the device's message id when a receipt is expected for it
    category: str
    device_id: str


def registry(
    n: int, *, prefix: str = "bench", heartbeat_s: int | None = HEARTBEAT_S
) -> list[Device]:
    """`n` devices: half pendants, a quarter GPS trackers, the rest door and fall sensors."""
    kinds = (
        [DeviceKind.SAFETY_ALARM] * 10
        + [DeviceKind.GPS_TRACKER] * 5
        + [DeviceKind.DOOR_SENSOR] * 3
        + [DeviceKind.FALL_SENSOR] * 2
    )
    return [
        Device(
            id=f"{prefix}-{i:07d}",
            kind=kinds[i % len(kinds)],
            municipality=MUNICIPALITIES[i % len(MUNICIPALITIES)],
            heartbeat_interval_s=heartbeat_s,
        )
        for i in range(n)
    ]


def press_devices(n: int, *, prefix: str = "press") -> list[Device]:
    """Pendants that each press once in the latency phase: every press raises a new alarm."""
    return [
        Device(
            id=f"{prefix}-{i:07d}",
            kind=DeviceKind.SAFETY_ALARM,
            municipality=MUNICIPALITIES[i % len(MUNICIPALITIES)],
            heartbeat_interval_s=HEARTBEAT_S,
        )
        for i in range(n)
    ]


def _ts(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _native(msg_id: str, etype: str, at: datetime, **fields: object) -> bytes:
    body = {"id": msg_id, "ts": _ts(at), "type": etype, "fw": "2.4.1", **fields}
    return orjson.dumps(body)


def messages(
    n: int,
    devices: Sequence[Device],
    *,
    run_id: str,
    start: datetime,
    seed: int = 6,
    presses: Sequence[Device] = (),
) -> Iterator[Message]:
    """`n` messages in the mix above. With `presses`, every alarm uses a fresh pendant."""
    rng = random.Random(seed)
    by_kind: dict[DeviceKind, list[Device]] = {}
    for d in devices:
        by_kind.setdefault(d.kind, []).append(d)
    cats = [c for c, _ in MIX]
    weights = [w for _, w in MIX]
    recent: list[Message] = []
    press_i = 0
    for i in range(n):
        at = start + timedelta(milliseconds=i)
        msg_id = f"{run_id}-{i}"
        cat = rng.choices(cats, weights)[0]
        if cat == "repeat" and recent:
            original = recent[rng.randrange(len(recent))]
            # The same bytes again: the receipt's ref is the original's, already timed.
            yield Message(original.topic, original.payload, None, "repeat", original.device_id)
            continue
        if cat == "repeat":
            cat = "heartbeat"
        if cat == "bad":
            d = devices[rng.randrange(len(devices))]
            if i % 2:
                yield Message(f"alarmhub/v1/{d.id}/events", b'{"id": "x", "ts":', None, cat, d.id)
            else:
                ghost = f"ghost-{run_id}-{i}"
                payload = _native(msg_id, "heartbeat", at)
                yield Message(f"alarmhub/v1/{ghost}/events", payload, None, cat, ghost)
            continue
        if cat == "alarm" and presses:
            d = presses[press_i % len(presses)]
            press_i += 1
            etype = "button.pressed"
        elif cat == "alarm":
            pool = by_kind.get(DeviceKind.FALL_SENSOR) if i % 4 == 0 else None
            pool = pool or by_kind.get(DeviceKind.SAFETY_ALARM) or list(devices)
            d = pool[rng.randrange(len(pool))]
            etype = "fall.detected" if d.kind is DeviceKind.FALL_SENSOR else "button.pressed"
        elif cat == "location" and by_kind.get(DeviceKind.GPS_TRACKER):
            pool = by_kind[DeviceKind.GPS_TRACKER]
            d = pool[rng.randrange(len(pool))]
            etype = "location"
        elif cat == "door" and by_kind.get(DeviceKind.DOOR_SENSOR):
            pool = by_kind[DeviceKind.DOOR_SENSOR]
            d = pool[rng.randrange(len(pool))]
            etype = "door.opened" if i % 2 else "door.closed"
        else:
            d = devices[rng.randrange(len(devices))]
            etype = "battery.low" if cat == "battery.low" else "heartbeat"
            cat = "battery.low" if cat == "battery.low" else "heartbeat"
        if etype == "location":
            payload = _native(
                msg_id,
                etype,
                at,
                lat=round(59.91 + rng.uniform(-0.01, 0.01), 6),
                lon=round(10.75 + rng.uniform(-0.01, 0.01), 6),
                accuracy_m=15.0,
            )
        elif etype == "battery.low":
            payload = _native(msg_id, etype, at, battery_pct=rng.randint(3, 15))
        else:
            payload = _native(msg_id, etype, at)
        msg = Message(f"alarmhub/v1/{d.id}/events", payload, msg_id, cat, d.id)
        recent.append(msg)
        if len(recent) > 500:
            recent.pop(0)
        yield msg


def storm(pendants: Sequence[Device], *, run_id: str, start: datetime) -> list[Message]:
    """One button press from each pendant: every message opens a new alarm (a power cut's
    recovery burst, the backlog after a restart)."""
    return [
        Message(
            f"alarmhub/v1/{d.id}/events",
            _native(f"{run_id}-{i}", "button.pressed", start + timedelta(milliseconds=i)),
            f"{run_id}-{i}",
            "alarm",
            d.id,
        )
        for i, d in enumerate(pendants)
    ]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    mid = len(present) // 2
    return present[mid] if len(present) % 2 else (present[mid - 1] + present[mid]) / 2


def spread(values: Sequence[float | None], digits: int = 1) -> str:
    """min-max of the runs, for saying how noisy a median is; `digits` as the figure's own
    (a ratio of 0.58 printed with one digit read as 0.6, its target)."""
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    return f"{min(present):,.{digits}f}-{max(present):,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def round_or_none(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)
