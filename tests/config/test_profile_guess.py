"""Issue 12 item 13 in the profiles: `unrecognised_action`, and the registry's warning.

A Heiman button registered without `--profile` was decoded by the Tuya SOS
default, and every press was stored as a heartbeat. The decoder now raises an
alarm for an action it cannot read (tests/core/test_decode_partial.py); here: the
profile key loads only where it makes sense, the shipped button profiles use
it, and `devices register` says when a device's profile is a guess.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alarmhub.config.profiles import ProfileError, load_catalog, load_profiles
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.registry import profile_guess
from tests.support.helpers import run_cli

DEVICES = Path(__file__).resolve().parents[2] / "devices"

BUTTON = """\
name = "b"
format = "zigbee2mqtt"
kinds = ["safety_alarm"]
topic = "zigbee2mqtt/{device_id}"
fallback = "heartbeat"
unrecognised_action = "action"

[[map]]
when = { action = "emergency" }
event = "button.pressed"
"""


def _write(root: Path, text: str, folder: str = "b") -> None:
    path = root / folder / "profile.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_unrecognised_action_loads_on_a_button_profile(tmp_path: Path) -> None:
    _write(tmp_path, BUTTON)
    (profile,) = load_profiles(tmp_path)
    assert profile.unrecognised_action == "action"


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (('kinds = ["safety_alarm"]', 'kinds = ["door_sensor"]'), "unrecognised_action",
         "only a profile for kinds"),
        (('unrecognised_action = "action"', 'unrecognised_action = "a..b"'),
         "unrecognised_action", "payload path"),
        (('unrecognised_action = "action"', "unrecognised_action = 5"), "unrecognised_action",
         "string"),
    ],
)  # fmt: skip
def test_unrecognised_action_is_checked(
    tmp_path: Path, change: tuple[str, str], key: str, message: str
) -> None:
    _write(tmp_path, BUTTON.replace(*change))
    with pytest.raises(ProfileError, match=message) as caught:
        load_profiles(tmp_path)
    assert caught.value.key_path == key


def test_a_native_profile_has_no_unrecognised_action(tmp_path: Path) -> None:
    native = (
        'name = "b"\nformat = "native"\nnative = true\nkinds = ["safety_alarm"]\n'
        'topic = "alarmhub/v1/{device_id}/events"\nunrecognised_action = "action"\n'
    )
    _write(tmp_path, native)
    with pytest.raises(ProfileError, match="native schema") as caught:
        load_profiles(tmp_path)
    assert caught.value.key_path == "unrecognised_action"


def test_every_shipped_button_profile_raises_on_an_unread_action() -> None:
    catalog = load_catalog(DEVICES)
    buttons = [
        p for p in catalog.profiles.values() if not p.native and DeviceKind.SAFETY_ALARM in p.kinds
    ]
    assert buttons
    # SCAIP's "action" is its status code (devices/scaip/profile.toml).
    assert {p.name: p.unrecognised_action for p in buttons} == {
        p.name: "stc" if p.format == "scaip" else "action" for p in buttons
    }


GUESSES = [
    # (kind, profile given, warns, names in the warning)
    ("safety_alarm", None, True, ["zigbee2mqtt-sos-button", "zigbee2mqtt-heiman-button"]),
    ("safety_alarm", "zigbee2mqtt-heiman-button", False, []),
    ("door_sensor", None, False, []),  # one Zigbee2MQTT contact profile: no guess
    ("gps_tracker", None, False, []),
]


@pytest.mark.parametrize(("kind", "profile", "warns", "names"), GUESSES)
def test_profile_guess(kind: str, profile: str | None, warns: bool, names: list[str]) -> None:
    device = Device("btn-1", DeviceKind(kind), "0301", profile=profile)
    warning = profile_guess(load_catalog(DEVICES), device)
    assert (warning is not None) == warns
    for name in names:
        assert warning is not None
        assert name in warning
    if warning is not None:
        assert "--profile" in warning


def test_devices_register_warns_when_the_profile_is_a_guess(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'alarmhub.db'}"}
    args = ["devices", "register", "--kind", "safety_alarm", "--municipality", "0301"]
    guessed = run_cli([*args, "--id", "0x0015bc001e00a1b2"], env)
    assert guessed.returncode == 0, guessed.stderr
    assert "zigbee2mqtt-heiman-button" in guessed.stderr
    assert "a guess" in guessed.stderr
    named = run_cli(
        [*args, "--id", "0x1", "--profile", "zigbee2mqtt-heiman-button", "--bridge", "z2m-0301-a"],
        env,
    )
    assert named.returncode == 0, named.stderr
    assert "guess" not in named.stderr
