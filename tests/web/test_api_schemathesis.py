"""Property-based API testing with schemathesis against `/api/v1/openapi.json`.

The daemon runs as a real process (`alarmhub run`) so that schemathesis's
blocking HTTP client and the server do not share an event loop. Bounded by
the amount of work, not by the clock: at most 50 examples per operation (hypothesis's
max_examples, derandomized, no shrinking), positive and negative (schema-violating)
data, so a slow machine runs the same cases, only for longer. Authenticated as admin;
checks: no 5xx, every status documented, content type, headers and body conform to
the document.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from alarmhub.clock import SystemClock
from alarmhub.core.people import Role
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite import accounts
from tests.support.helpers import register, spawn_daemon

pytestmark = pytest.mark.broker

MAX_EXAMPLES = 50
# An endless stream: no response ever completes, so it cannot be checked this way
# (tests/web/test_api_stream.py covers it).
SKIP = {("GET", "/api/v1/alarms/stream")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_schemathesis_finds_no_server_error_or_schema_mismatch(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("osl-1", "safety_alarm", "0301")], tmp_path)
    with accounts.connect(db) as conn:
        accounts.create_user(
            conn, "root", Role.ADMIN, [], accounts.hash_password("x" * 16), SystemClock().now(), ()
        )
        token = accounts.create_token(conn, "root", SystemClock().now(), None, ())
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn_daemon(
        {
            "ALARMHUB_DATABASE_URL": f"sqlite:///{db}",
            "ALARMHUB_MQTT_URL": broker.url,
            "ALARMHUB_MQTT_CLIENT_ID": client_id,
            "ALARMHUB_HTTP_LISTEN": f"127.0.0.1:{port}",
        },
        tmp_path / "daemon.log",
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.1)
        schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
        auth = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        cases = 0
        operations = 0
        for result in schema.get_all_operations():
            op = result.ok()  # type: ignore[union-attr]  # an Err raises in ok()
            if (op.method.upper(), op.path) in SKIP:
                continue
            operations += 1
            strategy = st.one_of(
                op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)
            )

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                nonlocal cases
                cases += 1
                case.call_and_validate(base_url=base, headers=auth, checks=CHECKS, timeout=10)

            run()
        print(
            f"schemathesis: {cases} cases over {operations} operations in {time.monotonic() - started:.1f} s"
        )
        assert operations >= 20
        assert cases >= operations * 5
    finally:
        proc.terminate()
        proc.wait(20)
