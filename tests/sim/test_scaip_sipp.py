"""The simulated SCAIP device against SIPp (Debian `sip-tester`) playing the receiver.

SIPp is a SIP implementation the device's code has never seen: it parses the device's
MESSAGE, and in the digest scenario checks the credentials with its own `verifyauth`.
The scenarios are in tests/sim/sipp/ (docs/scaip.md, "Testing with a simulated device").
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from alarmhub.sim.scaip_device import Outcome, ResendPolicy, ScaipFleet

SCENARIOS = Path(__file__).parent / "sipp"
CID = "4790012345"
# No sleep while SIPp starts: until it listens, Timer E retransmits the request.
POLICY = ResendPolicy(
    interval_s=(0.2, 0.3), answer_timeout_s=2, give_up_after_s=20, t1_s=0.1, t2_s=0.4
)


@pytest.fixture(autouse=True)
def _sipp_installed() -> None:
    if shutil.which("sipp") is None:  # as the broker fixture does: installed by make test
        pytest.fail("sipp is not installed: `apt-get install sip-tester` (scripts/system-packages)")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sipp(tmp_path: Path, scenario: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """One SIPp call as the receiver; its traces land in tmp_path."""
    return subprocess.Popen(
        [
            "sipp",
            *("-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port)),
            *("-t", "u1", "-m", "1", "-nostdin", "-trace_err", "-timeout", "30s"),
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen[bytes], tmp_path: Path) -> int:
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for log in tmp_path.glob("*_errors.log"):
            print(log.read_text())


async def test_sipp_answers_inline_and_the_device_records_handled(tmp_path: Path) -> None:
    port = free_udp_port()
    proc = sipp(tmp_path, "receiver_inline.xml", port)
    try:
        async with ScaipFleet(f"udp://127.0.0.1:{port}", POLICY) as fleet:
            record = fleet.device(CID, "unused").alarm("SIPP1", stc="0010")
            assert await record.wait(30), record
    finally:
        status = finish(proc, tmp_path)
    assert status == 0  # SIPp's call succeeded: it matched the ref and the content type
    assert record.snus == [0]
    assert record.outcome is Outcome.HANDLED
    answer = record.answers[0][1]
    assert (answer.ref, answer.via, answer.mre, answer.cre) == ("SIPP1", "inline", 1, 61)


@pytest.mark.parametrize(("password", "outcome"), [("s3cret", "handled"), ("wrong", "refused")])
async def test_sipp_verifies_the_device_digest(tmp_path: Path, password: str, outcome: str) -> None:
    port = free_udp_port()
    proc = sipp(
        tmp_path, "receiver_digest.xml", port, "-set", "user", CID, "-set", "pass", "s3cret"
    )
    try:
        async with ScaipFleet(f"udp://127.0.0.1:{port}", POLICY) as fleet:
            record = fleet.device(CID, password).alarm("SIPP2")
            assert await record.wait(30), record
    finally:
        status = finish(proc, tmp_path)
    assert status == 0
    assert record.attempts[0].algorithm == "MD5"
    assert record.attempts[0].auth_rounds == 2  # challenged once, then credentials
    if outcome == "handled":
        assert record.snus == [0]
        assert record.outcome is Outcome.HANDLED
    else:
        assert record.sip_statuses == [403]
        assert record.outcome is Outcome.SIP_REFUSED
