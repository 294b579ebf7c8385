"""What a stranger or a broken device can make the SIP layer spend: memory, slots, log lines.

Findings of the second review of 2026-12-06 (docs/reliability.md): the transaction
table copied on every request, TCP connections held by a byte a second, a log line
per failed request and a traceback (with no answer) for a broken Via or a non-ASCII
digest response, and XML alarms refused before anyone knew who sent them.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from sipmessage import Response
from structlog.testing import capture_logs

from alarmhub.clock import FakeClock, SystemClock
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.server import SipLimits
from alarmhub.sip.transactions import ServerTransactions
from tests.sip.support import (
    DEVICE,
    MRQ,
    PASSWORD,
    Credentials,
    Recorder,
    authorization,
    request,
    running,
    stream_peer,
    udp_peer,
)
from tests.support.helpers import async_wait_until, sample


def test_a_request_does_not_copy_the_transaction_table() -> None:
    """With 20,000 answered transactions still within Timer J, one more `begin` used to
    copy the whole table (a list of 20,000 keys, 160 KB): the loop handled 7x fewer
    requests. Now it looks at the expired entries only. Memory, not time, is measured."""
    now = [0.0]
    table = ServerTransactions(lambda: now[0])
    for i in range(20_000):
        key = (f"b{i}", "127.0.0.1:5060", f"c{i}", 1, "MESSAGE", "udp", "127.0.0.1", 5060)
        table.begin(key)
        table.answered(key, b"SIP/2.0 200 OK\r\n\r\n")
    new = ("new", "127.0.0.1:5060", "c", 1, "MESSAGE", "udp", "127.0.0.1", 5060)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        table.begin(new)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000  # bytes: a list of the table's keys alone is 160,000
    # Expiry still works: past Timer J every answered entry goes, the pending one stays.
    now[0] = 33.0
    table.begin(("x", "h", "c", 1, "MESSAGE", "udp", "127.0.0.1", 1))
    assert len(table) == 2


async def test_a_tcp_message_trickled_a_byte_at_a_time_is_cut_off() -> None:
    """Any byte restarted the idle timer: five peers sending a byte a second held every
    connection slot. A message must now be complete within its deadline; a genuine
    device's connection, idle between messages, stays open (it authenticated: a
    connection that never does is closed after 30 s too, tests/sip/test_sip_slots.py)."""
    clock = FakeClock(datetime(2026, 12, 6, tzinfo=UTC))
    metrics = Metrics()
    limits = SipLimits(idle_timeout_s=180.0, message_deadline_s=30.0)
    async with running(
        ("tcp",),
        Recorder(),
        Credentials(**{DEVICE: PASSWORD}),
        metrics=metrics,
        clock=clock,
        limits=limits,
    ) as server:
        port = server.port("tcp")
        async with stream_peer(port) as good:
            first = request(port=port, transport="TCP", local_port=good.port)
            again = request(
                port=port,
                transport="TCP",
                local_port=good.port,
                cseq=2,
                authorization=authorization(await good.ask(first), first),
            )
            assert (await good.ask(again)).code == 200
            slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
            head = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n"
            slow_w.write(head[:10])
            assert await async_wait_until(
                lambda: any(c.framer.buffer for c in server.connections._open)
            )
            clock.advance(timedelta(seconds=31))
            slow_w.write(head[10:11])  # still trickling: used to restart its timer
            good.send(b"\r\n\r\n")  # a keep-alive
            assert await asyncio.wait_for(slow_r.read(4096), 10) == b""  # closed by the server
            options = request("OPTIONS", port=port, transport="TCP", body=b"")
            assert (await good.ask(options)).code == 200
            slow_w.close()
    assert sample(metrics, "alarmhub_sip_dropped_total", reason="slow") == 1


async def test_failures_are_logged_once_a_minute_per_peer_and_broken_headers_get_400() -> None:
    metrics = Metrics()
    async with running(
        ("udp",),
        Recorder(),
        Credentials(**{DEVICE: PASSWORD}),
        metrics=metrics,
        clock=SystemClock(),
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as peer:
            first = await peer.ask(request(port=port))
            wrong = authorization(first, request(port=port), password="not-the-password")
            with capture_logs() as logs:
                for _ in range(50):
                    assert (await peer.ask(request(port=port, authorization=wrong))).code == 403
                non_ascii = wrong.split('response="')[0] + 'response="\u00e9\u00e9"'
                odd = await peer.ask(request(port=port, authorization=non_ascii))
                peer.send(bytes(request(port=port)).replace(b"Via: SIP/2.0/UDP", b"Via: xx"))
                bad_via = await peer.next()
    events = [e["event"] for e in logs]
    assert events.count("sip.auth_failed") == 1
    assert "sip.request_failed" not in events
    assert odd.code == 401  # malformed credentials: challenged, as before
    assert isinstance(bad_via, Response)
    assert bad_via.code == 400
    assert sample(metrics, "alarmhub_scaip_digest_failures_total", reason="wrong_password") == 50


async def test_every_content_type_reaches_the_scaip_side_after_auth_with_its_type() -> None:
    """A type other than XML was answered 415 by the SIP layer, which never handed the body
    over: nothing kept it (no dead letter, no count). Every authenticated MESSAGE is handed
    over now with its type, for the SCAIP side to keep and refuse (tests/sip/test_scaip_e2e.py
    shows the dead letter); a request without a Content-Type is handed over as ""."""
    handler = Recorder()
    async with running(
        ("udp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=Metrics(), clock=SystemClock()
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as peer:
            codes = {}
            for content_type in ("text/xml", "application/xml", "text/plain", None):
                args: dict[str, Any] = {"port": port, "content_type": content_type}
                first = request(**args)
                challenge = await peer.ask(first)
                assert challenge.code == 401  # who is asking comes first
                again = request(**args, authorization=authorization(challenge, first))
                codes[content_type] = (await peer.ask(again)).code
    assert set(codes.values()) == {200}  # the Recorder's answer: the SCAIP side decides
    handed = [(m.user, m.content_type, m.body) for m in handler.messages]
    types = ["text/xml", "application/xml", "text/plain", ""]
    assert handed == [(DEVICE, t, MRQ) for t in types]


async def test_connections_refused_for_what_they_sent_are_logged_once_a_minute_per_address() -> (
    None
):
    """Each TCP connection sending a header block over the limit logged
    `sip.connection_refused`: a peer opening them in a loop wrote a line per connection."""
    metrics = Metrics()
    async with running(
        ("tcp",),
        Recorder(),
        Credentials(**{DEVICE: PASSWORD}),
        metrics=metrics,
        clock=SystemClock(),
    ) as server:
        port = server.port("tcp")
        with capture_logs() as logs:
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"OPTIONS sip:x SIP/2.0\r\nX-Filler: " + b"y" * 9_000)
                await writer.drain()
                await asyncio.wait_for(reader.read(), 30)  # until the server closes it
                writer.close()
                await writer.wait_closed()
    assert sample(metrics, "alarmhub_sip_dropped_total", reason="oversized") == 20
    refused = [e for e in logs if e["event"] == "sip.connection_refused"]
    assert len(refused) == 1, refused
    assert refused[0]["reason"] == "oversized"
