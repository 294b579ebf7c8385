"""Every sample of every profile decodes as its file says; broken profiles fail loudly.

Samples are found by globbing, so a new folder under devices/ is tested without
touching this file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alarmhub.config.profiles import (
    ENV_DEVICES_DIR,
    EVENT_FIELDS,
    ProfileError,
    default_profiles_dir,
    load_catalog,
    load_profiles,
)
from alarmhub.core.decode import Catalog, DecodeLimits, decode, validate_fields
from alarmhub.core.model import (
    INTERNAL_EVENTS,
    Decoded,
    Device,
    DeviceKind,
    EventType,
    RawMessage,
    Rejected,
)
from alarmhub.core.profile import Condition, Mapping, Op

DEVICES = Path(__file__).resolve().parents[2] / "devices"
SAMPLES = sorted(DEVICES.glob("*/samples/*.json"))
# One fixed time of receipt: a sample that needs another says so in "received_at".
RECEIVED_AT = datetime(2025, 11, 23, 12, 13, 30, tzinfo=UTC)
SAMPLE_KEYS = {
    "note", "topic", "payload", "payload_text", "payload_hex", "device", "received_at",
    "expect", "expect_rejected", "expect_dropped", "msg_id",
}  # fmt: skip


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(DEVICES)


def _raw(sample: dict[str, Any]) -> RawMessage:
    if "payload" in sample:
        payload = json.dumps(sample["payload"], separators=(",", ":")).encode()
    elif "payload_text" in sample:
        payload = sample["payload_text"].encode()
    else:
        payload = bytes.fromhex(sample["payload_hex"])
    received = sample.get("received_at")
    at = datetime.fromisoformat(received) if received else RECEIVED_AT
    return RawMessage(sample["topic"], payload, at)


def _device(spec: dict[str, Any] | None) -> dict[str, Device]:
    if spec is None:
        return {}
    device = Device(**{**spec, "kind": DeviceKind(spec["kind"])})
    return {device.id: device}


def test_samples_exist_for_every_profile() -> None:
    folders = {p.parent.name for p in DEVICES.glob("*/profile.toml")}
    with_samples = {p.parent.parent.name for p in SAMPLES}
    assert folders == with_samples
    assert len(folders) >= 5


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_sample_decodes_as_expected(path: Path, catalog: Catalog) -> None:
    sample = json.loads(path.read_text(encoding="utf-8"))
    assert set(sample) <= SAMPLE_KEYS, f"unknown keys {set(sample) - SAMPLE_KEYS}"
    assert len({"payload", "payload_text", "payload_hex"} & set(sample)) == 1
    assert ("expect" in sample) != ("expect_rejected" in sample)
    # By convention a name starting with "bad-" is a sample that must be rejected.
    assert path.stem.startswith("bad-") == ("expect_rejected" in sample)
    registry = _device(sample["device"])

    result = decode(_raw(sample), registry, catalog, DecodeLimits())

    if "expect_rejected" in sample:
        assert isinstance(result, Rejected), result
        assert result.reason == sample["expect_rejected"], result.detail
        return
    assert isinstance(result, Decoded), result
    # The sample must exercise the profile of the folder it lives in.
    routed = catalog.route(sample["topic"])
    assert routed is not None
    chosen = catalog.profile_for(routed[0], result.device)
    assert chosen is not None
    assert chosen.name == path.parent.parent.name
    got = [{"type": e.type.value, "fields": e.fields} for e in result.events]
    assert got == [{"type": x["type"], "fields": x["fields"]} for x in sample["expect"]]
    for event, want in zip(result.events, sample["expect"], strict=True):
        assert event.device_id == sample["device"]["id"]
        assert event.msg_id == result.msg_id
        if "ts" in want:
            assert event.ts.isoformat() == want["ts"]
        # Where the time came from, and the skew when it was clamped (issue 12 item 11).
        assert event.ts_source == want.get("ts_source", event.ts_source)
        assert event.clock_skew_s == want.get("clock_skew_s")
    # A field that fails is left out and named; the rest of the message is used (item 10).
    assert [d.field for d in result.dropped] == sample.get("expect_dropped", [])
    if "msg_id" in sample:
        assert result.msg_id == sample["msg_id"]


def test_native_samples_cover_every_event_type() -> None:
    seen: set[str] = set()
    for path in DEVICES.glob("native/samples/*.json"):
        sample = json.loads(path.read_text(encoding="utf-8"))
        seen.update(x["type"] for x in sample.get("expect", []))
    # Every type a device may send; alarmhub's own (device.silent, dose.overdue) are refused.
    assert seen == {t.value for t in EventType if t not in INTERNAL_EVENTS}


def test_catalog_subscribes_to_each_format_once(catalog: Catalog) -> None:
    assert catalog.subscriptions() == ["alarmhub/v1/+/events", "owntracks/+/+", "zigbee2mqtt/+/+"]


def test_contact_profile_converts_to_core_types(catalog: Catalog) -> None:
    contact = catalog.profiles["zigbee2mqtt-contact"]
    assert contact.mappings[0] == Mapping(
        (Condition("contact", Op.EQ, value=False),), EventType.DOOR_OPENED
    )
    assert contact.mappings[3] == Mapping(
        (Condition("battery", Op.LT, 15),), EventType.BATTERY_LOW, (("battery_pct", "battery"),)
    )
    heiman = catalog.profiles["zigbee2mqtt-heiman-button"]
    assert heiman.mappings[0].conditions == (
        Condition("action", Op.IN, ("single", "double", "hold")),
    )
    assert not heiman.default
    assert catalog.profiles["native"].native


@pytest.mark.parametrize("etype", list(EventType))
def test_event_fields_mirror_the_decoder(etype: EventType) -> None:
    numeric = {"lat": 59.9, "lon": 10.7, "accuracy_m": 10, "battery_pct": 50}
    candidates = numeric | {"dose_id": "d1", "code": "c", "note": "n"}
    kept = validate_fields(etype, candidates)
    assert isinstance(kept, dict)
    assert set(kept) == EVENT_FIELDS[etype]


def test_default_dir_is_the_repository_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DEVICES_DIR, raising=False)
    assert default_profiles_dir() == DEVICES


def test_default_dir_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_DEVICES_DIR, str(tmp_path))
    assert default_profiles_dir() == tmp_path


# ---- loader errors ---------------------------------------------------------------

VALID = """\
name = "p"
format = "zigbee2mqtt"
kinds = ["door_sensor"]
topic = "zigbee2mqtt/{device_id}"
fallback = "heartbeat"
"""
MAP = """
[[map]]
when = { contact = false }
event = "door.opened"
"""


def _write(root: Path, text: str, folder: str = "p") -> Path:
    path = root / folder / "profile.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_minimal_profile_loads(tmp_path: Path) -> None:
    _write(tmp_path, VALID + MAP)
    (profile,) = load_profiles(tmp_path)
    assert profile.name == "p"
    assert profile.kinds == (DeviceKind.DOOR_SENSOR,)
    assert profile.fallback is EventType.HEARTBEAT
    assert profile.topic.subscription() == "zigbee2mqtt/+"


ERRORS = [
    # (what, profile text, key path, words of the message)
    ("unknown top-level key", VALID + 'colour = "red"\n', "colour", "unknown key"),
    ("unknown key in a map", VALID + MAP + 'evnt = "x"\n', "map[0].evnt", "unknown key"),
    ("missing key", VALID.replace('topic = "zigbee2mqtt/{device_id}"\n', ""), "topic", "missing"),
    ("wrong type", VALID + 'default = "yes"\n', "default", "expected a valid boolean"),
    ("unknown kind", VALID.replace('"door_sensor"', '"pendant"'), "kinds[0]", "expected"),
    ("no kinds", VALID.replace('["door_sensor"]', "[]"), "kinds", "at least 1"),
    ("unknown event name", VALID + MAP.replace("door.opened", "door.open"), "map[0].event",
     "'door.opened'"),
    ("unknown fallback", VALID.replace('"heartbeat"', '"alive"'), "fallback", "expected"),
    ("alarmhub's own event as a mapping", VALID + MAP.replace("door.opened", "device.silent"),
     "map[0].event", "raised by alarmhub itself"),
    ("alarmhub's own event as the fallback", VALID.replace('"heartbeat"', '"dose.overdue"'),
     "fallback", "raised by alarmhub itself"),
    ("bad timestamp unit", VALID + 'timestamp = { path = "t", unit = "epoch_us" }\n',
     "timestamp.unit", "epoch_ms"),
    ("empty message id path", VALID + 'message_id = ["a..b"]\n', "message_id[0]", "payload path"),
    ("list as a condition", VALID + MAP.replace("contact = false", "contact = [1]"),
     "map[0].when.contact", "expected a string, number or boolean"),
    ("two operators", VALID + MAP.replace("contact = false", "battery = { lt = 1, gt = 2 }"),
     "map[0].when.battery", "exactly one of"),
    ("unknown operator", VALID + MAP.replace("contact = false", "battery = { below = 15 }"),
     "map[0].when.battery.below", "unknown operator"),
    ("lt with a string", VALID + MAP.replace("contact = false", 'battery = { lt = "15" }'),
     "map[0].when.battery.lt", "finite number"),
    ("lt with nan", VALID + MAP.replace("contact = false", "battery = { lt = nan }"),
     "map[0].when.battery.lt", "finite number"),
    ("empty in", VALID + MAP.replace("contact = false", "action = { in = [] }"),
     "map[0].when.action.in", "non-empty list"),
    ("present with a string", VALID + MAP.replace("contact = false", 'a = { present = "y" }'),
     "map[0].when.a.present", "true or false"),
    ("no conditions", VALID + MAP.replace("contact = false", ""), "map[0].when", "at least one"),
    ("field the event lacks", VALID + MAP + 'fields = { battery_pct = "battery" }\n',
     "map[0].fields.battery_pct", "door.opened has no field"),
    ("location without lat", VALID + MAP.replace("door.opened", "location")
     + 'fields = { lon = "lon" }\n', "map[0].fields", "needs lat"),
    ("wildcard in topic", VALID.replace("zigbee2mqtt/{device_id}", "zigbee2mqtt/+"), "topic",
     "'+'"),
    ("partial placeholder", VALID.replace("zigbee2mqtt/{device_id}", "z/dev-{device_id}"),
     "topic", "whole level"),
    ("no placeholder", VALID.replace("zigbee2mqtt/{device_id}", "zigbee2mqtt/door"), "topic",
     "at least one {placeholder}"),
    ("template names a missing placeholder",
     VALID.replace("zigbee2mqtt/{device_id}", "owntracks/{user}/{device}"), "device_id",
     "'{device_id}' is not one of the topic's placeholders (user, device)"),
    ("native with mappings", VALID.replace('fallback = "heartbeat"\n', "native = true\n") + MAP,
     "map", "native"),
    ("vendor without mappings or fallback", VALID.replace('fallback = "heartbeat"\n', ""), "map",
     "at least one [[map]] or a fallback"),
    ("name differs from folder", VALID.replace('name = "p"', 'name = "q"'), "name", "folder"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key_path", "words"), [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])  # fmt: skip
def test_profile_errors_name_the_key(tmp_path: Path, text: str, key_path: str, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profiles(tmp_path)
    assert caught.value.path == path
    assert caught.value.key_path == key_path
    assert words in caught.value.message


def test_profile_error_is_one_line_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = VALID + MAP + MAP.replace("contact = false", "contact = { lt = true }")
    _write(tmp_path / "devices", text, folder="zigbee2mqtt-contact")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProfileError) as caught:
        load_profiles(Path("devices"))
    assert str(caught.value) == (
        "devices/zigbee2mqtt-contact/profile.toml: name: must equal its folder name "
        "'zigbee2mqtt-contact'"
    )
    fixed = text.replace('name = "p"', 'name = "zigbee2mqtt-contact"')
    _write(tmp_path / "devices", fixed, folder="zigbee2mqtt-contact")
    with pytest.raises(ProfileError) as caught:
        load_profiles(Path("devices"))
    assert str(caught.value) == (
        "devices/zigbee2mqtt-contact/profile.toml: map[1].when.contact.lt: expected a finite number"
    )


def test_invalid_toml_is_a_profile_error(tmp_path: Path) -> None:
    _write(tmp_path, VALID + "kinds = [\n")
    with pytest.raises(ProfileError, match="is not valid TOML") as caught:
        load_profiles(tmp_path)
    assert caught.value.key_path == ""


def test_two_defaults_for_one_format_and_kind(tmp_path: Path) -> None:
    _write(tmp_path, VALID.replace('name = "p"', 'name = "a"') + "default = true\n", "a")
    _write(tmp_path, VALID.replace('name = "p"', 'name = "b"') + "default = true\n", "b")
    with pytest.raises(ProfileError, match="already the default") as caught:
        load_profiles(tmp_path)
    assert (caught.value.path.parent.name, caught.value.key_path) == ("b", "default")


def test_defaults_for_different_kinds_coexist(tmp_path: Path) -> None:
    _write(tmp_path, VALID.replace('name = "p"', 'name = "a"') + "default = true\n", "a")
    other = VALID.replace('name = "p"', 'name = "b"').replace("door_sensor", "safety_alarm")
    _write(tmp_path, other + "default = true\n", "b")
    assert [p.name for p in load_profiles(tmp_path)] == ["a", "b"]


def test_topics_two_formats_would_both_claim(tmp_path: Path) -> None:
    _write(tmp_path, VALID.replace('name = "p"', 'name = "a"'), "a")
    other = VALID.replace('name = "p"', 'name = "b"').replace('"zigbee2mqtt"', '"other"')
    _write(tmp_path, other.replace("zigbee2mqtt/{device_id}", "{device_id}/state"), "b")
    with pytest.raises(ProfileError, match="overlaps the topic of profile a") as caught:
        load_profiles(tmp_path)
    assert caught.value.key_path == "topic"


def test_a_folder_without_profile_toml(tmp_path: Path) -> None:
    _write(tmp_path, VALID)
    (tmp_path / "q" / "samples").mkdir(parents=True)
    with pytest.raises(ProfileError, match="every folder under devices/ is a profile"):
        load_profiles(tmp_path)


def test_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="holds no"):
        load_profiles(tmp_path)
