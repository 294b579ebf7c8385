"""Hostile input to the loaders people write by hand: rules files, device settings, CSV.

Each loader must answer any input with its own error type and a message that
names where the problem is - never another exception (a crash at start or on
SIGHUP) and never silent acceptance of a broken structure. Cases run are
counted per property and printed at the end of the module (`pytest -s`).
Hostile device traffic end to end (a device speaking for another device or
another municipality) is at the bottom, through the real broker.
"""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alarmhub.app import AlarmHub
from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import RulesError, parse_rules
from alarmhub.core.decode import DecodeLimits, decode
from alarmhub.core.device_settings import SettingsInvalidError, parse_settings
from alarmhub.core.model import Decoded, Device, DeviceKind, RawMessage, Rejected, RejectReason
from alarmhub.core.registry import parse_device_csv
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    native,
    register,
)

REPO = Path(__file__).resolve().parents[2]
REAL_RULES = (REPO / "config" / "rules.toml").read_text()
EXAMPLES = 400
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RAN: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nfuzz cases run: {dict(RAN)} (total {sum(RAN.values())})")


# --- values: the wrong types, huge numbers, NaN, unicode ------------------------------

NASTY_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63, -(2**63) - 1, 10**30]),
    st.floats(),  # NaN and infinities included
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "NaN",
            "inf",
            "25:99",
            "07:00",
            "22:00",
            "Europe/Oslo",
            "Mars/Olympus",
            "\u202e0301",
            "0301",
            "p1",
            "p9",
            "operator_queue",
            "button.pressed",
            "safety_alarm",
            "outside",
            "x" * 300,
            "\x00",
            "é",
            "😀",
        ]
    ),
)
NASTY = st.recursive(
    NASTY_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

# The real schema's keys, so the fuzzer reaches the validators past "unknown key".
TOP_KEYS = [
    "timezone",
    "sla_ack_s",
    "heard_resolves",
    "offline_after_misses",
    "windows",
    "policies",
    "targets",
    "storm",
    "municipalities",
    "rules",
]
RULE_KEYS = [
    "name",
    "event",
    "device_kind",
    "alarm",
    "priority",
    "between",
    "zone",
    "resolves",
    "flap_window_s",
    "policy",
]
POLICY_KEYS = ["steps", "repeat", "from_previous", "ack_timeout_s", "round_interval_s"]
STEP_KEYS = ["after_s", "target", "level"]


def shaped(keys: list[str], value: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), value, max_size=len(keys))


STEPS = st.lists(shaped(STEP_KEYS, NASTY), max_size=3)
POLICIES = st.dictionaries(
    st.sampled_from(["p1", "p2", "x", "é"]),
    shaped(POLICY_KEYS, st.one_of(NASTY, STEPS)),
    max_size=2,
)
RULES = st.lists(shaped(RULE_KEYS, NASTY), max_size=3)
STRUCTURES = st.fixed_dictionaries(
    {},
    optional={
        "timezone": NASTY,
        "sla_ack_s": st.one_of(NASTY, st.dictionaries(st.sampled_from(["p1", "p5", "x"]), NASTY)),
        "heard_resolves": NASTY,
        "offline_after_misses": NASTY,
        "windows": st.one_of(
            NASTY, st.dictionaries(st.text(max_size=5), st.lists(NASTY, max_size=3))
        ),
        "policies": st.one_of(NASTY, POLICIES),
        "targets": st.one_of(
            NASTY, st.dictionaries(st.text(max_size=5), shaped(["mqtt", "webhook"], NASTY))
        ),
        "storm": st.one_of(NASTY, shaped(["kinds", "threshold", "window_s", "priority"], NASTY)),
        "municipalities": st.one_of(
            NASTY,
            st.dictionaries(
                st.sampled_from(["0301", "4601", "301", "abcd", "03010"]),
                shaped(["windows", "policies", "rules"], st.one_of(NASTY, RULES, POLICIES)),
            ),
        ),
        "rules": st.one_of(NASTY, RULES),
    },
)


def toml_value(v: Any) -> str:
    """Render a value as TOML text (NaN and inf are legal TOML floats)."""
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return (
            '"'
            + "".join(
                c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                for c in v
                if ord(c) < 0x10000 and not 0xD800 <= ord(c) <= 0xDFFF
            )
            + '"'
        )
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    rendered = {toml_value(str(k)): x for k, x in v.items()}  # keys that render alike: keep one
    return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in rendered.items()) + "}"


def to_toml(data: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {toml_value(v)}" for k, v in data.items()) + "\n"


def check_rules_error(text: str) -> None:
    try:
        parse_rules(text, "fuzz.toml")
    except RulesError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith("fuzz.toml: "), message
    assert len(message) > len("fuzz.toml: "), message


@FUZZ
@given(text=st.text(max_size=300))
def test_rules_arbitrary_text(text: str) -> None:
    RAN["rules: arbitrary text"] += 1
    check_rules_error(text)


TOMLISH = st.lists(
    st.sampled_from(
        [
            "[rules]",
            "[[rules]]",
            "[policies.p1]",
            "[targets.x]",
            "[storm]",
            "[windows]",
            '[municipalities."0301"]',
            '[[municipalities."0301".rules]]',
            "rules = []",
            'name = "x"',
            'event = "button.pressed"',
            "priority = 1",
            "priority = 99",
            'between = ["22:00"]',
            'between = "night"',
            "steps = []",
            "repeat = 1e999",
            "after_s = -1",
            'target = "nobody"',
            "level = nan",
            "timezone = 3",
            'alarm = "Button!"',
            'zone = "uncertain"',
            "threshold = 1",
            "= =",
            "[[",
            'webhook = "ftp://x"',
            "offline_after_misses = 0",
            "heard_resolves = [1]",
        ]
    ),
    max_size=12,
).map("\n".join)


@FUZZ
@given(text=TOMLISH)
def test_rules_tomlish_lines(text: str) -> None:
    RAN["rules: toml-ish lines"] += 1
    check_rules_error(text)


@FUZZ
@given(data=STRUCTURES)
def test_rules_structures_from_the_schema(data: dict[str, Any]) -> None:
    RAN["rules: schema-shaped structures"] += 1
    text = to_toml(data)
    tomllib.loads(text)  # the generator writes valid TOML: the loader sees the structure
    check_rules_error(text)


@FUZZ
@given(
    key=st.sampled_from(
        [
            "priority",
            "flap_window_s",
            "after_s",
            "level",
            "repeat",
            "offline_after_misses",
            "threshold",
            "window_s",
            "ack_timeout_s",
        ]
    ),
    value=st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "1e999",
            str(2**64),
            str(-(2**63)),
            "0",
            '"1"',
            "[]",
            "{}",
            "true",
            "1.5",
        ]
    ),
)
def test_rules_real_file_with_one_value_made_hostile(key: str, value: str) -> None:
    RAN["rules: real file, one value hostile"] += 1
    lines = REAL_RULES.splitlines()
    text = "\n".join(
        (line.split("=")[0] + f"= {value}") if line.strip().startswith(f"{key} =") else line
        for line in lines
    )
    text = text.replace("after_s = 60,", f"after_s = {value},") if key == "after_s" else text
    check_rules_error(text)


def test_rules_errors_name_the_location() -> None:
    # The first rule is the pendant's press (its name, event and alarm pin which one).
    first = 'name = "pendant pressed"\nevent = "button.pressed"\nalarm = "button"\npriority = '
    assert REAL_RULES.count(first + "1\n") == 1
    bad = REAL_RULES.replace(first + "1\n", first + '"high"\n', 1)
    with pytest.raises(RulesError, match=r"^r\.toml: rules\[0\]\.priority"):
        parse_rules(bad, "r.toml")
    with pytest.raises(RulesError, match=r"policies\.p1\.steps\[1\]\.target"):
        parse_rules(
            REAL_RULES.replace(
                'target = "supervisor", level = 2 },', 'target = "nobody", level = 2 },', 1
            ),
            "r.toml",
        )
    parse_rules(REAL_RULES, "r.toml")  # the real file itself loads


# --- device settings (JSON) -------------------------------------------------------

SETTINGS_KEYS = ["windows", "geofence", "geofence_polygon", "max_accuracy_m", "dose_schedule"]
SETTINGS = st.one_of(
    shaped(
        SETTINGS_KEYS,
        st.one_of(
            NASTY,
            shaped(["lat", "lon", "radius_m"], NASTY),
            shaped(["times", "window_min"], st.one_of(NASTY, st.lists(NASTY_SCALARS, max_size=13))),
            st.lists(st.tuples(st.floats(), st.floats()), max_size=6),
            st.dictionaries(st.text(max_size=5), st.lists(NASTY_SCALARS, max_size=3), max_size=2),
        ),
    ),
    NASTY,
)


def check_settings(value: Any) -> None:
    try:
        parse_settings(value)
    except SettingsInvalidError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith("settings"), message


@FUZZ
@given(value=SETTINGS)
def test_device_settings_structures(value: Any) -> None:
    RAN["settings: structures"] += 1
    if isinstance(value, dict) or value is None:
        check_settings(value)
    # ... and the same as stored JSON text (NaN as the bare token orjson would refuse)
    import json  # noqa: PLC0415

    check_settings(json.dumps(value, allow_nan=True))


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_device_settings_arbitrary_text(text: str | bytes) -> None:
    RAN["settings: arbitrary text"] += 1
    check_settings(text)


# --- the registry CSV -------------------------------------------------------------

CSV_CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "safety_alarm",
            "gps_tracker",
            "door_sensor",
            "0301",
            "4601",
            "301",
            "60",
            "-5",
            "1e9",
            "NaN",
            "a+b",
            "a#b",
            "a/b",
            "\u202e",
            '"',
            '""',
            ",",
            "\r",
            "\n",
            "x" * 200,
            "native",
            "0",
            str(2**70),
        ]
    ),
)
HEADERS = st.one_of(
    st.just(["id", "kind", "municipality"]),
    st.just(["id", "kind", "municipality", "heartbeat_interval", "label", "profile"]),
    st.lists(
        st.sampled_from(
            ["id", "kind", "municipality", "heartbeat_interval", "label", "profile", "ID", "x", ""]
        ),
        max_size=7,
    ),
)


@FUZZ
@given(header=HEADERS, rows=st.lists(st.lists(CSV_CELLS, max_size=7), max_size=6))
def test_device_csv(header: list[str], rows: list[list[str]]) -> None:
    RAN["csv: header and rows"] += 1
    text = "\n".join(",".join(r) for r in [header, *rows])
    devices, errors = parse_device_csv(text)  # with any error, `devices import` imports nothing
    for e in errors:
        assert e.startswith(("line ", "header:")), e
    for d in devices:
        assert d.id, d
        assert not any(c in d.id for c in "+#"), d.id
        assert len(d.municipality) == 4, d
        assert d.municipality.isdigit(), d


@FUZZ
@given(text=st.text(max_size=300))
def test_device_csv_arbitrary_text(text: str) -> None:
    RAN["csv: arbitrary text"] += 1
    devices, errors = parse_device_csv(text)
    assert all(e.startswith(("line ", "header:")) for e in errors), errors
    assert all(len(d.municipality) == 4 for d in devices), devices


# --- topic injection: wildcards and separators in device ids (real profiles) ----------

_CATALOG = load_catalog(REPO / "devices")
_REGISTRY = {
    "osl-1": Device("osl-1", DeviceKind.SAFETY_ALARM, "0301", bridge="z2m-0301-a"),
    "brg-1": Device("brg-1", DeviceKind.SAFETY_ALARM, "4601", bridge="z2m-4601-a"),
    "ola/phone": Device("ola/phone", DeviceKind.GPS_TRACKER, "0301"),
}
_AT = datetime(2026, 11, 25, 10, 0, 5, tzinfo=UTC)
_PAYLOAD = b'{"id":"m1","ts":"2026-11-25T10:00:00Z","type":"button.pressed"}'


@FUZZ
@given(
    base=st.sampled_from(["osl-1", "brg-1", "ola/phone", ""]),
    inject=st.lists(
        st.sampled_from(["+", "#", "/", "//", "\x00", "/brg-1", "$SYS", " ", "\u202e"]),
        min_size=1,
        max_size=3,
    ),
    where=st.integers(min_value=0, max_value=12),
    shape=st.sampled_from(
        [
            "alarmhub/v1/{}/events",
            "owntracks/{}",
            "zigbee2mqtt/{}",
            "zigbee2mqtt/z2m-0301-a/{}",
            "{}",
        ]
    ),
)
def test_topic_injection_never_reaches_another_device(
    base: str, inject: list[str], where: int, shape: str
) -> None:
    RAN["decode: topic injection"] += 1
    device_id = base[:where] + "".join(inject) + base[where:]
    topic = shape.format(device_id)
    result = decode(RawMessage(topic, _PAYLOAD, _AT), _REGISTRY, _CATALOG, DecodeLimits())
    if isinstance(result, Decoded):
        # Only a topic that names a registered device exactly may decode, as that device.
        routed = _CATALOG.route(topic)
        assert routed is not None
        assert routed[1] == result.device.id
        assert result.device.id in _REGISTRY
        # ... and only through that device's own bridge (issue 13 item 9).
        assert routed.bridge in (None, result.device.bridge)
    else:
        assert isinstance(result.reason, RejectReason)


@pytest.mark.parametrize("claim", [{"device": "brg-1"}, {"municipality": "4601"}])
def test_a_claim_mismatch_keeps_the_message_id_for_the_receipt(claim: dict[str, str]) -> None:
    payload = orjson.dumps(
        {"id": "m1", "ts": "2026-11-25T10:00:00Z", "type": "button.pressed", **claim}
    )
    result = decode(
        RawMessage("alarmhub/v1/osl-1/events", payload, _AT), _REGISTRY, _CATALOG, DecodeLimits()
    )
    assert isinstance(result, Rejected)
    assert result.reason in (RejectReason.DEVICE_MISMATCH, RejectReason.MUNICIPALITY_MISMATCH)
    assert result.msg_id == "m1"


# --- a device speaking for another device or municipality, end to end ---------------


@pytest.mark.broker
async def test_device_claiming_another_device_or_municipality_is_dead_lettered(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(
        f"sqlite:///{db}",
        [("osl-1", "safety_alarm", "0301"), ("brg-1", "safety_alarm", "4601")],
        tmp_path,
    )
    pub = Publisher(broker.port, f"{client_id}-pub")
    try:
        async with AlarmHub(hub_settings(tmp_path, broker.url, client_id), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("brg-1", "b-own", "button.pressed"))
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM alarms") == 1, 10
            )
            claims: list[tuple[str, dict[str, object]]] = [
                ("h1", {"device": "brg-1"}),
                ("h2", {"municipality": "4601"}),
                ("h3", {"device": "brg-1", "municipality": "4601"}),
                ("h4", {"municipality": 4601}),
                ("h5", {"device": ["brg-1"]}),
            ]
            hostile = [
                (
                    "alarmhub/v1/osl-1/events",
                    orjson.dumps(
                        {"id": mid, "ts": "2026-11-25T10:00:00Z", "type": "button.pressed", **claim}
                    ),
                )
                for mid, claim in claims
            ]
            pub.publish_many(hostile)
            pub.publish(*native("osl-1", "after", "heartbeat"))
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 7, 10
            )
        # (The claim is checked before the id is read: such a dead letter has no msg_id.)
        rejected = db_rows(
            db,
            "SELECT json_extract(payload, '$.id') AS m, reason, device_id, "
            "municipality FROM inbox WHERE verdict='rejected' ORDER BY m",
        )
        assert [r[0] for r in rejected] == ["h1", "h2", "h3", "h4", "h5"]
        assert {r[1] for r in rejected} <= {"device_mismatch", "municipality_mismatch"}
        # The dead letters belong to the sender's registered municipality, not the claimed one.
        assert {(r[2], r[3]) for r in rejected} == {("osl-1", "0301")}
        # Bergen's alarm saw none of it; Oslo got no alarm from the hostile messages.
        assert db_rows(db, "SELECT device_id, municipality, repeat_count FROM alarms") == [
            ("brg-1", "4601", 0)
        ]
        assert (
            db_count(
                db,
                "SELECT count(*) FROM timeline t JOIN alarms a ON a.id = t.alarm_id "
                "WHERE a.device_id='brg-1' AND t.type != 'raised' AND t.type != 'escalated'",
            )
            == 0
        )
    finally:
        pub.close()
