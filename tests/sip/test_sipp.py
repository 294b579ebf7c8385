"""SIPp plays the SCAIP device against alarmhub's SIP server (issue 16).

Two SIPp instances, because SIPp drops requests with a Call-ID it does not know:
`scaip_message_uac.xml` sends the alarm MESSAGE, answers the 401 with digest and
expects the 200 OK; `scaip_answer_uas.xml`, listening on the device's contact
port, receives the answer as a new MESSAGE and checks `<snu>0</snu>` in it. The
handler here stands in for the SCAIP side: it answers `<mrs>` with the request's
reference and snu 0. Part 2 of issue 16 reuses the scenarios end to end.

SIPp 3.6 answers only the first challenge and only with MD5, so the server offers
MD5 first here (ALARMHUB_SCAIP_DIGEST_ALGORITHMS=MD5,SHA-256, docs/scaip.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
from pathlib import Path

import pytest

from alarmhub.clock import SystemClock
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.ports import InboundMessage, Reply
from tests.sip.support import Credentials, Recorder, running
from tests.support.helpers import async_wait_until

SCENARIOS = Path(__file__).parent / "scenarios"
DEVICE, PASSWORD = "4790012345", "scaip-test-secret"  # as in scaip_message_uac.xml


@pytest.fixture
def sipp() -> str:
    found = shutil.which("sipp")
    if found is None:
        pytest.fail("sipp is not installed: `apt-get install sip-tester` (make test installs it)")
    return found


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bound(port: int) -> bool:
    """True once something (the SIPp UAS) listens on the UDP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _answer(message: InboundMessage) -> Reply:
    found = re.search(rb"<ref>([A-Za-z0-9]{1,16})</ref>", message.body)
    assert found is not None
    return Reply(body=b"<mrs><ref>" + found.group(1) + b"</ref><snu>0</snu></mrs>")


async def _sipp(sipp: str, *args: str, errors: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sipp,
        *args,
        "-i",
        "127.0.0.1",
        "-m",
        "1",
        "-timeout",
        "30s",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(errors),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_sipp_device_sends_an_alarm_with_digest_and_receives_snu_0(
    sipp: str, tmp_path: Path
) -> None:
    metrics = Metrics()
    handler = Recorder(reply=_answer)
    credentials = Credentials(**{DEVICE: PASSWORD})
    contact_port, device_port = _free_udp_port(), _free_udp_port()
    async with running(
        ("udp",),
        handler,
        credentials,
        metrics=metrics,
        clock=SystemClock(),
        digest_algorithms=("MD5", "SHA-256"),
    ) as server:
        uas = await _sipp(
            sipp,
            "-sf",
            str(SCENARIOS / "scaip_answer_uas.xml"),
            "-p",
            str(contact_port),
            errors=tmp_path / "uas.err",
        )
        try:
            assert await async_wait_until(lambda: _bound(contact_port))
            uac = await _sipp(
                sipp,
                f"127.0.0.1:{server.port('udp')}",
                "-sf",
                str(SCENARIOS / "scaip_message_uac.xml"),
                "-p",
                str(device_port),
                "-key",
                "ref",
                "R42",
                "-key",
                "contact_port",
                str(contact_port),
                errors=tmp_path / "uac.err",
            )
            uac_rc = await asyncio.wait_for(uac.wait(), 60)
            uas_rc = await asyncio.wait_for(uas.wait(), 60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                uas.kill()
        errors = "".join(
            p.read_text(errors="replace") for p in tmp_path.glob("*.err") if p.exists()
        )
        assert (uac_rc, uas_rc) == (0, 0), errors
        assert await async_wait_until(
            lambda: (
                metrics.registry.get_sample_value(
                    "alarmhub_scaip_answers_total", {"outcome": "delivered"}
                )
                == 1
            )
        )
    [message] = handler.messages
    assert message.user == DEVICE
    assert b"<ref>R42</ref>" in message.body
    assert message.contact == f"sip:{DEVICE}@127.0.0.1:{contact_port}"
