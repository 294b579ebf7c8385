"""SCAIP's fault suite, as MQTT's (test_crash.py, test_faults.py): kill -9, hostile input.

Devices are the simulated ones of alarmhub/sim/scaip_device.py, resending per the standard
(with short intervals here); the daemon is `alarmhub run` in its own process, receiving
SCAIP on ALARMHUB_SCAIP_LISTEN. Counts are read back through the CLI, as an operator would.

Setup is two CLI processes whatever the fleet's size: `devices import` registers the
devices, `devices credentials --from-csv` sets every device's digest credentials.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from alarmhub.dev.mosquitto import LocalBroker, free_port
from alarmhub.sim.scaip_device import Outcome, ResendPolicy, ScaipFleet
from tests.support.helpers import (
    async_wait_until,
    db_count,
    run_cli,
    spawn_daemon,
)

pytestmark = pytest.mark.broker

# The standard's 5-20 s between resends, shortened: the verdict is the same, the test faster.
POLICY = ResendPolicy(
    interval_s=(0.5, 1.0), answer_timeout_s=3.0, give_up_after_s=180.0, t1_s=0.1, t2_s=0.8
)
MUNICIPALITY = "0301"


def cid(i: int) -> str:
    return f"47900{i:05d}"


def password(i: int) -> str:
    return f"password-{i}-{i * 7919 % 1000}"  # 8 characters at least


def register_scaip(db_url: str, ids: list[int], tmp_path: Path) -> None:
    """Register SCAIP devices (one CSV import) and set each one's digest credentials."""
    env = {"ALARMHUB_DATABASE_URL": db_url}
    csv = tmp_path / "scaip-devices.csv"
    csv.write_text(
        "id,kind,municipality,profile\n"
        + "".join(f"{cid(i)},safety_alarm,{MUNICIPALITY},scaip\n" for i in ids)
    )
    result = run_cli(["devices", "import", str(csv)], env)
    assert result.returncode == 0, result.stderr
    passwords = tmp_path / "scaip-credentials.csv"
    passwords.write_text("id,password\n" + "".join(f"{cid(i)},{password(i)}\n" for i in ids))
    result = run_cli(["devices", "credentials", "--from-csv", str(passwords)], env)
    assert result.returncode == 0, result.stderr
    assert db_count(Path(db_url.removeprefix("sqlite:///")), CREDENTIALS) == len(ids)


CREDENTIALS = "SELECT count(*) FROM device_credentials"


def cli_json(args: list[str], db_url: str) -> Any:
    result = run_cli([*args, "--json"], {"ALARMHUB_DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def daemon_env(
    db_url: str, broker: LocalBroker, client_id: str
) -> tuple[dict[str, str], dict[str, int]]:
    udp = free_port(socket.SOCK_DGRAM)
    tcp = free_port(socket.SOCK_STREAM)
    env = {
        "ALARMHUB_DATABASE_URL": db_url,
        "ALARMHUB_MQTT_URL": broker.url,
        "ALARMHUB_MQTT_CLIENT_ID": client_id,
        "ALARMHUB_SCAIP_LISTEN": f"udp://127.0.0.1:{udp},tcp://127.0.0.1:{tcp}",
        # Small batches stretch the burst over many commits, so the kill lands mid-stream.
        "ALARMHUB_MAX_BATCH": "20",
    }
    return env, {"udp": udp, "tcp": tcp}


def stop(daemon: subprocess.Popen[bytes], log: Path) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
    assert daemon.returncode == 0, log.read_text()[-2000:]


async def test_kill_9_mid_burst_of_500_devices_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    n = 500
    db = tmp_path / "alarmhub.db"
    db_url = f"sqlite:///{db}"
    register_scaip(db_url, list(range(n)), tmp_path)
    env, ports = daemon_env(db_url, broker, client_id)
    udp = ports["udp"]
    log = tmp_path / "daemon.log"
    daemon = spawn_daemon(env, log)
    try:
        # No wait for the listener: until it is up, Timer E and the resends cover it, as
        # they cover the restart below.
        async with ScaipFleet(f"udp://127.0.0.1:{udp}", POLICY) as fleet:
            records = [
                fleet.device(cid(i), password(i)).alarm(f"k{i}", stc="0010") for i in range(n)
            ]
            committed = lambda: db_count(db, "SELECT count(*) FROM alarms")  # noqa: E731
            assert await async_wait_until(lambda: committed() >= n // 5, 60), log.read_text()[
                -3000:
            ]
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            killed_at = fleet.now()
            committed_at_kill = committed()
            daemon = spawn_daemon(env, log)
            all_ended = await fleet.wait_all(POLICY.give_up_after_s)
        unanswered = [
            (r.cid, r.ref, r.snus, r.sip_statuses)
            for r in records
            if r.outcome is not Outcome.HANDLED
        ]
        assert all_ended, unanswered[:10]
        assert unanswered == [], f"{len(unanswered)} not answered 0: {unanswered[:10]}"
        assert committed_at_kill < n, "the kill came after the whole burst: the test proved nothing"
        # Some devices' requests really crossed the kill: sent to the killed process, carried
        # by their retransmissions and resends to the new one, answered there (else
        # nothing was tested).
        crossed = [r for r in records if r.started_at < killed_at < r.answers[-1][0]]
        assert len(crossed) >= n // 10, f"only {len(crossed)} requests crossed the kill"
        assert all(r.snus[-1] == 0 for r in records)
        alarms = cli_json(["alarms", "list", "--limit", str(10 * n)], db_url)
        assert len(alarms) == n, f"{len(alarms)} alarms for {n} devices"
        assert sorted(a["device_id"] for a in alarms) == sorted(cid(i) for i in range(n))
        assert db_count(db, "SELECT count(*) FROM timeline WHERE type='raised'") == n
        # Resends of a committed ref were redeliveries: never a dead letter, never a repeat.
        assert db_count(db, "SELECT count(*) FROM alarms WHERE repeat_count != 0") == 0
        assert cli_json(["dead-letters", "list"], db_url) == []
    finally:
        stop(daemon, log)


# Entity expansion in a request that is otherwise plain (its ref readable): refused before
# anything is expanded, and answered with its code to that ref.
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{k} "{("&lol" + (str(k - 1) if k > 1 else "") + ";") * 10}">'.encode()
        for k in range(1, 10)
    )
    + b"]><mrq><ref>bad2</ref><cid>4790000000</cid><dty>0003</dty><stt>&lol9;</stt></mrq>"
)


def mrq(**values: str) -> bytes:
    return b"<mrq>" + b"".join(f"<{k}>{v}</{k}>".encode() for k, v in values.items()) + b"</mrq>"


async def raw_exchange(transport: str, port: int, data: bytes) -> bytes:
    """Send bytes as they are; what comes back before the peer closes or answers (at most 5 s)."""
    if transport == "udp":
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Catch(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, addr: tuple[str | int, ...]) -> None:
                if not got.done():
                    got.set_result(reply)

        sock, _ = await loop.create_datagram_endpoint(Catch, remote_addr=("127.0.0.1", port))
        try:
            sock.sendto(data)
            return await asyncio.wait_for(got, 5)
        except TimeoutError:
            return b""
        finally:
            sock.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65_536), 5)
    except (TimeoutError, ConnectionError):
        return b""
    finally:
        writer.close()


def sip_head(body_len: int, transport: str, extra: bytes = b"") -> bytes:
    return (
        b"MESSAGE sip:alarmhub@127.0.0.1 SIP/2.0\r\n"
        + f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:9;branch=z9hG4bKraw1\r\n".encode()
        + b"From: <sip:4790000000@127.0.0.1>;tag=1\r\nTo: <sip:alarmhub@127.0.0.1>\r\n"
        + b"Call-ID: raw-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: application/scaip+xml\r\n"
        + extra
        + f"Content-Length: {body_len}\r\n\r\n".encode()
    )


def status_of(reply: bytes) -> int | None:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"SIP/2.0 ") else None


# What each hostile request must come to: refused by SIP with its status, or answered by
# SCAIP with its code (`snu`); either way dead-lettered with its reason, except a body over
# SIP's 16 KiB (413: never read, as MAX_BODY bounds what a device can make alarmhub keep).
SIP_REFUSED = {"content_type": 415, "oversized": 413, "forged": 403}
SIP_DEAD_LETTERED = ["unsupported_content_type", "device_mismatch"]  # content_type, forged
SCAIP_REFUSED = {
    "broken": (2, "malformed_xml"),
    "entities": (2, "malformed_xml"),
    "not_mrq": (2, "malformed_xml"),
    "latin1": (2, "malformed_xml"),
    "wrong_data": (3, "bad_value"),
    "no_dty": (7, "missing_field"),
}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_hostile_input_is_refused_or_dead_lettered_and_the_daemon_lives(
    tmp_path: Path, broker: LocalBroker, client_id: str, transport: str
) -> None:
    db = tmp_path / "alarmhub.db"
    db_url = f"sqlite:///{db}"
    register_scaip(db_url, [0, 1], tmp_path)
    env, ports = daemon_env(db_url, broker, client_id)
    port = ports[transport]
    log = tmp_path / "daemon.log"
    daemon = spawn_daemon(env, log)
    policy = ResendPolicy(
        interval_s=(0.3, 0.5), answer_timeout_s=2.0, give_up_after_s=8.0, t1_s=0.1, t2_s=0.8
    )
    me = cid(0)
    try:
        async with ScaipFleet(f"{transport}://127.0.0.1:{port}", policy) as fleet:
            a = fleet.device(me, password(0))
            # The listener is up once a well-formed alarm is answered. Each try gives up
            # after the policy's 8 s, which a daemon starting on a loaded machine can
            # take: tried again (each joins the first as a repeat) within a ceiling.
            for attempt in range(15):
                first = a.alarm(f"ok1r{attempt}")
                assert await first.wait(30), first
                if first.outcome is Outcome.HANDLED:
                    break
            assert first.outcome is Outcome.HANDLED, first
            cases = {
                "broken": a.send("bad1", {}, None, body=b"<mrq><ref>bad1</ref><cid>" + me.encode()),
                "entities": a.send("bad2", {}, None, body=BILLION_LAUGHS),
                "not_mrq": a.send("bad3", {}, None, body=b"<mrs><ref>bad3</ref></mrs>"),
                # Not UTF-8, and no declaration saying otherwise: not well-formed XML.
                "latin1": a.send(
                    "bad10",
                    {},
                    None,
                    body=mrq(ref="bad10", cid=me, dty="0003", stt="Fall på badet")
                    .decode()
                    .encode("latin-1"),
                ),
                "wrong_data": a.send("bad4", {}, None, body=mrq(ref="bad4", cid=me, dty="x")),
                "no_dty": a.send("bad5", {}, None, body=mrq(ref="bad5", cid=me)),
                "content_type": a.send(
                    "bad6",
                    {"ref": "bad6", "cid": me, "dty": "0003"},
                    None,
                    content_type="text/plain",
                ),
                # Device 0's credentials, device 1's cid: a forgery, never device 1's alarm.
                "forged": a.alarm("bad8", cid=cid(1)),
            }
            a.send("bad9", {}, None, body=mrq(cid=me, dty="0003"))
            for name, record in cases.items():
                assert await record.wait(30), (name, record)
            # Last: over TCP a body over the limit closes the connection (its framing can no
            # longer be trusted), which would cut the transactions above short.
            cases["oversized"] = a.send(
                "bad7", {}, None, body=mrq(ref="bad7", cid=me, dty="0003", stt="x" * 20_000)
            )
            assert await cases["oversized"].wait(30), cases["oversized"]
            # Without a ref the answer cannot name one: the device cannot match it to its
            # request; the answer (snu 10, empty ref) reaches it all the same.
            assert await async_wait_until(
                lambda: any(x.snu == 10 and not x.ref for x in fleet.unmatched), 30
            ), fleet.unmatched
            # Bytes that are no SIP request at all, and limits broken below SIP parsing.
            garbage = await raw_exchange(transport, port, b"\x00\xff" * 100 + b"\r\n\r\n")
            assert status_of(garbage) in (None, 400), garbage[:200]
            if transport == "udp":
                huge = 30_000
                reply = await raw_exchange("udp", port, sip_head(huge, "udp") + b"x" * huge)
                assert status_of(reply) == 513, reply[:200]  # a datagram over 24 KiB
            else:
                head = sip_head(0, "tcp", b"X-Filler: " + b"y" * 9_000 + b"\r\n")
                reply = await raw_exchange("tcp", port, head)
                assert status_of(reply) in (413, None), reply[:200]  # header block over 8 KiB
                reply = await raw_exchange("tcp", port, sip_head(40_000, "tcp"))
                assert status_of(reply) == 413, reply[:200]  # a declared body over 16 KiB
            last = a.alarm("ok2")  # still alive and answering after all that
            assert await last.wait(30), last
            assert last.outcome is Outcome.HANDLED, last
        assert daemon.poll() is None, log.read_text()[-3000:]
        outcomes = {
            name: (
                r.outcome and r.outcome.value,
                r.sip_statuses[-1] if r.attempts else None,
                r.snus,
            )
            for name, r in cases.items()
        }
        for name, status in SIP_REFUSED.items():
            assert outcomes[name] == ("sip_refused", status, []), (name, cases[name])
        for name, (snu, _) in SCAIP_REFUSED.items():
            assert outcomes[name] == ("refused", 200, [snu]), (name, cases[name])
        alarms = cli_json(["alarms", "list"], db_url)
        assert sorted(x["device_id"] for x in alarms) == [me]  # ok1r*, joined by ok2 as repeats
        dead = cli_json(["dead-letters", "list"], db_url)
        reasons = sorted(row["reason"] for row in dead)
        expected = sorted(
            [reason for _, reason in SCAIP_REFUSED.values()] + ["missing_field", *SIP_DEAD_LETTERED]
        )
        assert reasons == expected, dead
    finally:
        stop(daemon, log)
