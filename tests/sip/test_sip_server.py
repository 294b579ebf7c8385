"""The SCAIP receiver's SIP layer against a device on loopback, over UDP, TCP and TLS.

A trivial handler stands in for the SCAIP side (part 2 of issue 16): it records each
message and answers what the test tells it. Each test asserts what a device sees
(the status, the headers, the answer MESSAGE) and what the server counted.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sipmessage import Request, Response
from structlog.testing import capture_logs

from alarmhub.clock import FakeClock, SystemClock
from alarmhub.core.digest import MD5, NONCE_LIFETIME_S, SHA256
from alarmhub.core.sipcodes import SipListen
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.ports import InboundMessage, Reply
from alarmhub.sip.server import UDP_RCVBUF_BYTES, SipLimits, SipServer, server_tls
from alarmhub.sip.wire import MAX_BODY
from tests.sip.support import (
    DEVICE,
    MRQ,
    PASSWORD,
    SCAIP,
    Credentials,
    Recorder,
    authorization,
    challenges,
    ok_to,
    request,
    running,
    self_signed,
    stream_peer,
    udp_peer,
)
from tests.support.helpers import async_wait_until, sample

MRS = b"<mrs><ref>R1</ref><snu>0</snu></mrs>"


async def authenticated(peer, req_args: dict, algorithm: str = MD5, **auth) -> Response:
    """Send a request, answer its 401 as a device does, return the final response."""
    first = request(**req_args)
    challenge = await peer.ask(first)
    assert challenge.code == 401
    again = request(
        **req_args,
        cseq=2,
        authorization=authorization(challenge, first, algorithm=algorithm, **auth),
    )
    return await peer.ask(again)


async def test_md5_over_udp_challenges_then_hands_the_message_over() -> None:
    metrics, handler = Metrics(), Recorder()
    async with running(
        ("udp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=metrics, clock=SystemClock()
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as peer:
            first = request(port=port, contact=f"<sip:{DEVICE}@127.0.0.1:{peer.port}>")
            challenge = await peer.ask(first)
            assert challenge.code == 401
            offered = challenges(challenge)
            # Two challenges, SHA-256 first (RFC 8760), qop auth (auth-int when asked
            # for: ALARMHUB_SCAIP_DIGEST_AUTH_INT), never Basic.
            assert [c.parameters["algorithm"] for c in offered] == [SHA256, MD5]
            assert all(c.scheme == "Digest" and c.parameters["qop"] == "auth" for c in offered)
            assert all(c.parameters["realm"] == "alarmhub" for c in offered)
            assert handler.messages == []

            auth = authorization(challenge, first, algorithm=MD5)
            second = request(
                port=port,
                contact=f"<sip:{DEVICE}@127.0.0.1:{peer.port}>",
                cseq=2,
                authorization=auth,
            )
            final = await peer.ask(second)
    assert final.code == 200
    [message] = handler.messages
    assert message.user == DEVICE
    assert message.body == MRQ
    assert message.transport == "udp"
    assert message.contact == f"sip:{DEVICE}@127.0.0.1:{peer.port}"
    assert message.source == ("127.0.0.1", peer.port)
    assert message.call_id == second.call_id
    assert sample(metrics, "alarmhub_sip_responses_total", status="401") == 1
    assert sample(metrics, "alarmhub_sip_responses_total", status="200") == 1
    # The first, unauthenticated request is the normal first step, not a failure.
    assert (
        sum(
            sample(metrics, "alarmhub_scaip_digest_failures_total", reason=r)
            for r in ("malformed", "wrong_password")
        )
        == 0
    )


async def test_sha256_over_tcp() -> None:
    metrics, handler = Metrics(), Recorder()
    async with running(
        ("tcp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=metrics, clock=SystemClock()
    ) as server:
        port = server.port("tcp")
        async with stream_peer(port) as peer:
            final = await authenticated(peer, {"port": port, "transport": "TCP"}, algorithm=SHA256)
    assert final.code == 200
    assert [m.transport for m in handler.messages] == ["tcp"]


async def test_tls_with_the_answer_inline_in_the_200(tmp_path: Path) -> None:
    crt, key = self_signed(tmp_path)
    client = ssl.create_default_context(cafile=str(crt))
    metrics = Metrics()
    handler = Recorder(reply=lambda m: Reply(body=MRS, inline=True))
    async with running(
        ("tls",),
        handler,
        Credentials(**{DEVICE: PASSWORD}),
        metrics=metrics,
        clock=SystemClock(),
        tls=server_tls(crt, key),
    ) as server:
        port = server.port("tls")
        async with stream_peer(port, tls=client) as peer:
            final = await authenticated(peer, {"port": port, "transport": "TLS"}, algorithm=SHA256)
    assert final.code == 200
    assert final.body == MRS
    assert final.headers["Content-Type"] == SCAIP
    assert [m.transport for m in handler.messages] == ["tls"]
    assert sample(metrics, "alarmhub_sip_connections", transport="tls") == 0


@pytest.mark.parametrize(
    ("who", "password", "reason"),
    [(DEVICE, "not-the-Secret-42", "wrong_password"), ("4790099999", PASSWORD, "unknown_user")],
)
async def test_wrong_password_and_unknown_user_get_the_same_403(who, password, reason) -> None:
    metrics, handler = Metrics(), Recorder()
    async with running(
        ("udp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=metrics, clock=SystemClock()
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as peer:
            with capture_logs() as logs:
                final = await authenticated(
                    peer, {"port": port, "user": who}, user=who, password=password
                )
    assert (final.code, final.phrase) == (403, "Forbidden")
    assert final.headers.get("WWW-Authenticate") is None
    assert handler.messages == []
    assert sample(metrics, "alarmhub_scaip_digest_failures_total", reason=reason) == 1
    [failed] = [e for e in logs if e["event"] == "sip.auth_failed"]
    assert failed["reason"] == reason
    assert failed["user"] == who
    # Nothing of the password or the digest response is logged.
    text = repr(logs)
    assert password not in text
    assert "response" not in failed


async def test_an_expired_nonce_is_challenged_again_as_stale() -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    metrics, handler = Metrics(), Recorder()
    async with running(
        ("udp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=metrics, clock=clock
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as peer:
            first = request(port=port)
            challenge = await peer.ask(first)
            clock.advance(timedelta(seconds=NONCE_LIFETIME_S + 1))
            late = await peer.ask(
                request(port=port, cseq=2, authorization=authorization(challenge, first))
            )
    assert late.code == 401
    assert all(c.parameters.get("stale") == "true" for c in challenges(late))
    assert sample(metrics, "alarmhub_scaip_digest_failures_total", reason="stale") == 1
    assert handler.messages == []


async def test_a_nonce_of_a_previous_process_is_challenged_again_as_stale() -> None:
    """After a restart every device's reused nonce is unknown: stale, not a wrong password.

    Without `stale=true` a device that had just answered the old process's challenge
    takes the new 401 for wrong credentials and gives up (the kill -9 fault test found it).
    """
    metrics, handler = Metrics(), Recorder()
    creds = Credentials(**{DEVICE: PASSWORD})
    async with running(("udp",), handler, creds, metrics=Metrics(), clock=SystemClock()) as before:
        port = before.port("udp")
        async with udp_peer(port) as peer:
            first = request(port=port)
            old_challenge = await peer.ask(first)
    async with running(("udp",), handler, creds, metrics=metrics, clock=SystemClock()) as after:
        port = after.port("udp")
        async with udp_peer(port) as peer:
            again = request(port=port, cseq=2, authorization=authorization(old_challenge, first))
            reply = await peer.ask(again)
            assert reply.code == 401
            assert all(c.parameters.get("stale") == "true" for c in challenges(reply))
            final = await peer.ask(
                request(port=port, cseq=3, authorization=authorization(reply, again))
            )
    assert final.code == 200
    assert sample(metrics, "alarmhub_scaip_digest_failures_total", reason="bad_nonce") == 1
    assert len(handler.messages) == 1


def scaip_side(message: InboundMessage) -> Reply:
    """As the SCAIP side answers (daemon/scaip.py): a type it does not take is 415 with
    `Accept`, once the body is kept as a dead letter."""
    if message.content_type == SCAIP:
        return Reply()
    return Reply(415, headers=(("Accept", SCAIP),))


async def test_wrong_method_content_type_and_size_get_their_errors() -> None:
    metrics, handler = Metrics(), Recorder(reply=scaip_side)
    async with running(
        ("udp", "tcp"),
        handler,
        Credentials(**{DEVICE: PASSWORD}),
        metrics=metrics,
        clock=SystemClock(),
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as peer:
            invite = await peer.ask(request("INVITE", port=port, body=b""))
            assert invite.code == 405
            assert "MESSAGE" in invite.headers["Allow"]
            options = await peer.ask(request("OPTIONS", port=port, body=b""))
            assert options.code == 200
            # Handed over after authentication, so that the refusal has a device's name,
            # and with its type: the SCAIP side keeps the body as a dead letter before it
            # answers 415 (the SIP layer used to answer 415 itself and lose the body).
            args = {"port": port, "content_type": "Text/Plain", "local_port": peer.port}
            wrong_type = await authenticated(peer, args)
            assert wrong_type.code == 415
            assert wrong_type.headers["Accept"] == SCAIP  # the handler's headers, sent
            [refused] = handler.messages
            assert (refused.user, refused.content_type, refused.body) == (DEVICE, "text/plain", MRQ)
            handler.messages.clear()
            big = await peer.ask(request(port=port, body=b"x" * (MAX_BODY + 1)))
            assert big.code == 413
            huge = await peer.ask(request(port=port, body=b"x" * 40_000))
            assert huge.code == 513
            peer.send(bytes(request(port=port)).replace(b"CSeq: 1 MESSAGE", b"CSeq: one MESSAGE"))
            broken = await peer.next()
            assert isinstance(broken, Response)
            assert broken.code == 400
            peer.send(b"\x00\x01 not SIP at all")
            # Dropped, counted, and the server still answers the next request.
            assert (await peer.ask(request("OPTIONS", port=port, body=b""))).code == 200
        tcp = server.port("tcp")
        async with stream_peer(tcp) as conn:
            head = request(port=tcp, transport="TCP", body=b"")
            raw = bytes(head).replace(b"Content-Length: 0", b"Content-Length: 999999")
            conn.send(raw)
            too_big = await conn.next()
            assert isinstance(too_big, Response)
            assert too_big.code == 413
            await asyncio.wait_for(conn.closed.wait(), 5)  # and the connection is closed
    assert handler.messages == []
    assert sample(metrics, "alarmhub_sip_dropped_total", reason="unparseable") == 1
    assert sample(metrics, "alarmhub_sip_dropped_total", reason="oversized") == 1


async def test_a_retransmission_is_absorbed_and_answered_the_same() -> None:
    metrics = Metrics()
    gate = asyncio.Event()
    handler = Recorder(gate=gate)
    async with running(
        ("udp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=metrics, clock=SystemClock()
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as peer:
            first = request(port=port)
            challenge = await peer.ask(first)
            req = request(port=port, cseq=2, authorization=authorization(challenge, first))
            for _ in range(3):  # a device's Timer E while the handler commits
                peer.send(bytes(req))
            assert await async_wait_until(lambda: len(handler.messages) == 1)
            gate.set()
            final = await peer.next()
            peer.send(bytes(req))  # after the answer: the same answer again
            again = await peer.next()
            await asyncio.sleep(0)
    assert isinstance(final, Response)
    assert final.code == 200
    assert peer.raw[-1] == peer.raw[-2]  # byte for byte, the same To tag
    assert isinstance(again, Response)
    assert len(handler.messages) == 1
    assert peer.inbox.empty()


async def test_the_answer_goes_as_a_new_message_to_the_contact_and_is_resent_until_answered() -> (
    None
):
    metrics = Metrics()
    handler = Recorder(reply=lambda m: Reply(body=MRS))
    limits = SipLimits(answer_t1_s=0.05)
    async with running(
        ("udp",),
        handler,
        Credentials(**{DEVICE: PASSWORD}),
        metrics=metrics,
        clock=SystemClock(),
        limits=limits,
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as device, udp_peer(port) as contact:
            args = {"port": port, "contact": f"<sip:{DEVICE}@127.0.0.1:{contact.port}>"}
            final = await authenticated(device, args)
            assert final.code == 200
            assert final.body == b""
            answer = await contact.next()
            again = await contact.next()  # Timer E: resent while unanswered
            assert isinstance(answer, Request)
            assert isinstance(again, Request)
            assert again.call_id == answer.call_id
            contact.reply_to(ok_to(answer), ("127.0.0.1", port))
            assert await async_wait_until(
                lambda: sample(metrics, "alarmhub_scaip_answers_total", outcome="delivered") == 1
            )
    assert answer.method == "MESSAGE"
    assert answer.body == MRS
    assert answer.headers["Content-Type"] == SCAIP
    assert answer.cseq.sequence == 1
    assert answer.call_id != final.call_id  # a new request, not part of the device's
    assert DEVICE in answer.headers["To"]


async def test_a_registered_contact_receives_the_answer_when_the_message_names_none() -> None:
    metrics = Metrics()
    handler = Recorder(reply=lambda m: Reply(body=MRS))
    async with running(
        ("tcp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=metrics, clock=SystemClock()
    ) as server:
        port = server.port("tcp")
        async with stream_peer(port) as device:
            contact = f"<sip:{DEVICE}@127.0.0.1:{device.port};transport=tcp>"
            registered = await authenticated(
                device,
                {
                    "method": "REGISTER",
                    "port": port,
                    "transport": "TCP",
                    "body": b"",
                    "contact": contact,
                    "extra": [("Expires", "600")],
                },
            )
            assert registered.code == 200
            assert "expires=600" in registered.headers["Contact"]
            final = await authenticated(device, {"port": port, "transport": "TCP"})
            assert final.code == 200
            answer = await device.next()  # on the device's own connection
            assert isinstance(answer, Request)
            device.send(ok_to(answer))
            assert await async_wait_until(
                lambda: sample(metrics, "alarmhub_scaip_answers_total", outcome="delivered") == 1
            )
    assert handler.messages[0].contact == f"sip:{DEVICE}@127.0.0.1:{device.port};transport=tcp"
    assert answer.body == MRS


async def test_tcp_connections_are_limited_and_closed_when_idle() -> None:
    """The slot of a device's connection (one that authenticated; a stranger's goes to a
    newcomer, tests/sip/test_sip_slots.py) is kept until it is idle past the timeout."""
    metrics, clock = Metrics(), FakeClock(datetime(2026, 12, 6, tzinfo=UTC))
    limits = SipLimits(max_connections=1, idle_timeout_s=180.0)
    creds = Credentials(**{DEVICE: PASSWORD})
    async with running(
        ("tcp",), Recorder(), creds, metrics=metrics, clock=clock, limits=limits
    ) as server:
        port = server.port("tcp")
        async with stream_peer(port) as first:
            args = {"port": port, "transport": "TCP", "local_port": first.port}
            assert (await authenticated(first, args)).code == 200
            async with stream_peer(port) as second:
                await asyncio.wait_for(second.closed.wait(), 5)  # over the limit: closed at once
            clock.advance(timedelta(seconds=181))
            await asyncio.wait_for(first.closed.wait(), 5)  # idle past the timeout
    assert sample(metrics, "alarmhub_sip_dropped_total", reason="connections") == 1
    assert sample(metrics, "alarmhub_sip_dropped_total", reason="idle") == 1


async def test_the_udp_listener_asks_for_a_large_receive_buffer() -> None:
    """A fleet's burst must not overflow the kernel's default buffer (about 208 KiB)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    cap = int(Path("/proc/sys/net/core/rmem_max").read_text()) * 2  # Linux doubles, caps
    creds = Credentials()
    async with running(
        ("udp",), Recorder(), creds, metrics=Metrics(), clock=SystemClock()
    ) as server:
        [endpoint] = server._udp
        assert endpoint.transport is not None
        sock = endpoint.transport.get_extra_info("socket")
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert got == min(2 * UDP_RCVBUF_BYTES, cap)
    assert got > default or cap <= default


async def test_the_listening_gauge_is_1_while_the_receiver_listens() -> None:
    """`alarmhub_sip_listening{transport}`, which AlarmhubScaipNotListening reads: 0 for each
    configured transport until its listener is open (a standby's all along), 1 while it is,
    0 once closed; no series for a transport not configured, so a hub without SCAIP (or
    without TLS) has nothing to alert on."""
    metrics = Metrics()
    server = SipServer(
        [SipListen("udp", "127.0.0.1", 0), SipListen("tcp", "127.0.0.1", 0)],
        credentials=Credentials(),
        handler=Recorder(),
        clock=SystemClock(),
        metrics=metrics,
    )

    def listening() -> list[float | None]:
        get = metrics.registry.get_sample_value
        return [get("alarmhub_sip_listening", {"transport": t}) for t in ("udp", "tcp", "tls")]

    assert listening() == [0, 0, None]
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 5)
    assert listening() == [1, 1, None]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert listening() == [0, 0, None]


@pytest.mark.parametrize("kind", ["tcp", "tls"])
async def test_a_stop_with_connections_open_closes_them_and_ends(kind: str, tmp_path: Path) -> None:
    """The receiver stops while devices keep their connections open (an owner's term ending,
    the daemon stopping): it closes them and ends. From Python 3.12 `Server.wait_closed()`
    waits for every connection the server accepted, so waiting for it before closing them
    (as the receiver once did) never ended: a stop, and with it a daemon's shutdown or an
    owner's handover, hung for as long as a device held its connection."""
    tls = tls_client = None
    if kind == "tls":
        cert, key = self_signed(tmp_path)
        tls = server_tls(cert, key)
        tls_client = ssl.create_default_context(cafile=str(cert))
    metrics, clock = Metrics(), FakeClock(datetime(2026, 12, 7, tzinfo=UTC))
    creds = Credentials(**{DEVICE: PASSWORD})
    server = SipServer(
        [SipListen(kind, "127.0.0.1", 0)],  # type: ignore[arg-type]
        credentials=creds,
        handler=Recorder(),
        clock=clock,
        metrics=metrics,
        tls=tls,
    )
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 5)
    port = server.port(kind)
    async with stream_peer(port, tls_client) as device, stream_peer(port, tls_client) as other:
        transport = "TLS" if kind == "tls" else "TCP"
        args = {"port": port, "transport": transport, "local_port": device.port}
        assert (await authenticated(device, args)).code == 200
        task.cancel()
        # Ended, not hung: a hang shows as this wait's TimeoutError.
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
        await asyncio.wait_for(device.closed.wait(), 5)
        await asyncio.wait_for(other.closed.wait(), 5)
