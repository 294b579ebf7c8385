"""The SIP layer against a device behind NAT, a store that cannot answer, and a replayed header.

Findings of the second review of 2026-12-06 (docs/reliability.md), each on a real
SipServer on 127.0.0.1 with raw UDP/TCP sockets as the device and as the attacker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sipmessage import Request, Response
from structlog.testing import capture_logs

from alarmhub.clock import FakeClock, SystemClock
from alarmhub.core.digest import MD5, digest_response, ha1
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.ports import Reply
from alarmhub.sip.server import SipLimits
from tests.sip.support import (
    DEVICE,
    MRQ,
    PASSWORD,
    REALM,
    Credentials,
    Recorder,
    authorization,
    challenges,
    ok_to,
    request,
    running,
    stream_peer,
    udp_peer,
)
from tests.support.helpers import async_wait_until, sample

MRS = b"<mrs><ref>R1</ref><snu>0</snu></mrs>"


async def _challenged(peer, **args) -> tuple[Request, Response]:
    first = request(**args)
    challenge = await peer.ask(first)
    assert challenge.code == 401
    return first, challenge


async def test_behind_nat_the_answer_message_goes_to_the_source_address() -> None:
    """The Contact names the device's private address (127.0.0.2 here, where nothing
    listens); its datagrams come from the NAT's binding (the test socket): the answer
    MESSAGE must go there, to the source address and port, like the 200 OK."""
    metrics = Metrics()
    handler = Recorder(reply=lambda m: Reply(body=MRS))
    async with running(
        ("udp",),
        handler,
        Credentials(**{DEVICE: PASSWORD}),
        metrics=metrics,
        clock=SystemClock(),
        limits=SipLimits(answer_t1_s=0.1),
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as device:
            contact = f"<sip:{DEVICE}@127.0.0.2:{device.port}>"
            args: dict[str, Any] = {"port": port, "local_port": device.port, "contact": contact}
            first, challenge = await _challenged(device, **args)
            again = request(**args, cseq=2, authorization=authorization(challenge, first))
            final = await device.ask(again)
            answer = await device.next(10)  # the old code sent it to 127.0.0.2: never here
            assert isinstance(answer, Request)
            device.reply_to(ok_to(answer), ("127.0.0.1", port))
            assert await async_wait_until(
                lambda: sample(metrics, "alarmhub_scaip_answers_total", outcome="delivered") == 1
            )
    assert final.code == 200
    assert answer.method == "MESSAGE"
    assert answer.body == MRS
    assert str(answer.uri) == f"sip:{DEVICE}@127.0.0.2:{device.port}"  # still its Contact


async def test_a_response_tells_the_device_where_it_is_seen_from_rport() -> None:
    """RFC 3581: an empty `rport` in the Via is filled with the source port, with
    `received`, so a device behind NAT learns its binding."""
    async with running(
        ("udp",), Recorder(), Credentials(), metrics=Metrics(), clock=SystemClock()
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as device:
            options = request("OPTIONS", port=port, body=b"", local_port=5999)
            raw = bytes(options).replace(b";branch=", b";rport;branch=", 1)
            device.send(raw.replace(b"127.0.0.1:5999", b"10.1.2.3:5999", 1))
            reply = await device.next()
    assert isinstance(reply, Response)
    via = reply.headers.getlist("Via")[0]
    assert f"rport={device.port}" in via
    assert "received=127.0.0.1" in via


async def test_a_credentials_store_that_fails_is_answered_503_with_retry_after() -> None:
    """The lookup raising (the store down) was an exception with no answer at all, a
    traceback per datagram; now 503 + Retry-After (the SIP layer's HOLD), said once."""
    looked_up: list[str] = []

    async def failing(device_id: str):
        looked_up.append(device_id)
        raise RuntimeError("disk I/O error")

    metrics, handler = Metrics(), Recorder()
    with capture_logs() as logs:
        async with running(
            ("udp", "tcp"), handler, failing, metrics=metrics, clock=SystemClock()
        ) as server:
            answers: list[Response] = []
            for kind in ("udp", "tcp"):
                port = server.port(kind)
                peer_cm = udp_peer(port) if kind == "udp" else stream_peer(port)
                async with peer_cm as peer:
                    args: dict[str, Any] = {
                        "port": port,
                        "transport": kind.upper(),
                        "local_port": peer.port,
                    }
                    first, challenge = await _challenged(peer, **args)
                    again = request(**args, cseq=2, authorization=authorization(challenge, first))
                    answers.append(await peer.ask(again, timeout=10))
                    if kind == "udp":  # a retransmission: the same 503, no second lookup
                        answers.append(await peer.ask(again, timeout=10))
    assert [a.code for a in answers] == [503, 503, 503]
    assert all(a.headers["Retry-After"] == "5" for a in answers)
    assert len(looked_up) == 2
    assert handler.messages == []
    events = [e["event"] for e in logs]
    assert "sip.request_failed" not in events
    assert events.count("sip.credentials_unavailable") == 1


async def test_a_captured_authorization_does_not_authenticate_another_request() -> None:
    """Replayed from another socket with another body, the header of a request already
    accepted is refused 401 stale=true; the device's own retransmission is still answered
    from the transaction layer."""
    handler = Recorder()
    async with running(
        ("udp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=Metrics(), clock=SystemClock()
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as device, udp_peer(port) as attacker:
            first, challenge = await _challenged(device, port=port, local_port=device.port)
            genuine = request(
                port=port,
                local_port=device.port,
                cseq=2,
                call_id=first.call_id,
                authorization=authorization(challenge, first),
            )
            ok = await device.ask(genuine)
            again = await device.ask(genuine)  # a retransmission: answered, not refused
            captured = genuine.headers["Authorization"]
            forged = request(
                port=port,
                local_port=attacker.port,
                body=MRQ.replace(b"<dty>3</dty>", b"<dty>3</dty><mty>RE</mty>"),
                authorization=captured,
            )
            refused = await attacker.ask(forged)
            # The genuine device answers the fresh nonce without its user.
            fresh = request(
                port=port, local_port=device.port, authorization=authorization(refused, forged)
            )
            retried = await device.ask(fresh)
    assert (ok.code, again.code) == (200, 200)
    assert refused.code == 401
    assert all(c.parameters.get("stale") == "true" for c in challenges(refused))
    assert retried.code == 200
    assert [m.body for m in handler.messages] == [MRQ, MRQ]  # the forged body never got in


async def test_a_replayed_register_does_not_move_the_binding() -> None:
    async with running(
        ("udp",),
        Recorder(),
        Credentials(**{DEVICE: PASSWORD}),
        metrics=Metrics(),
        clock=SystemClock(),
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as device, udp_peer(port) as attacker:
            mine = f"<sip:{DEVICE}@127.0.0.1:{device.port}>;expires=3600"
            args: dict[str, Any] = {
                "method": "REGISTER",
                "port": port,
                "body": b"",
                "contact": mine,
            }
            first, challenge = await _challenged(device, **args, local_port=device.port)
            auth = authorization(challenge, first)
            ok = await device.ask(
                request(**args, local_port=device.port, cseq=2, authorization=auth)
            )
            theirs = f"<sip:{DEVICE}@127.0.0.1:{attacker.port}>;expires=3600"
            replay = request(
                "REGISTER", port=port, body=b"", local_port=attacker.port, contact=theirs,
                authorization=auth,
            )  # fmt: skip
            refused = await attacker.ask(replay)
    assert ok.code == 200
    assert refused.code == 401
    assert server.registrar.contact_of(DEVICE) == f"sip:{DEVICE}@127.0.0.1:{device.port}"


async def test_the_digest_uri_must_name_this_server() -> None:
    """A header computed for another server's URI is 400 (RFC 7616 §3.4.6)."""
    handler = Recorder()
    async with running(
        ("udp",), handler, Credentials(**{DEVICE: PASSWORD}), metrics=Metrics(), clock=SystemClock()
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as device:
            _, challenge = await _challenged(device, port=port, local_port=device.port)
            elsewhere = request(port=port + 1 if port < 65535 else port - 1, local_port=device.port)
            auth = authorization(challenge, elsewhere)
            reply = await device.ask(request(port=port, local_port=device.port, authorization=auth))
    assert reply.code == 400
    assert handler.messages == []


async def test_with_auth_int_the_body_is_signed() -> None:
    """A device that picks qop=auth-int (offered when asked for): a header moved onto another
    body is 403."""
    handler = Recorder()
    async with running(
        ("udp",),
        handler,
        Credentials(**{DEVICE: PASSWORD}),
        metrics=Metrics(),
        clock=SystemClock(),
        digest_auth_int=True,
    ) as server:
        port = server.port("udp")
        async with udp_peer(port) as device:
            first, challenge = await _challenged(device, port=port, local_port=device.port)
            [md5] = [c for c in challenges(challenge) if c.parameters["algorithm"] == MD5]
            assert "auth-int" in md5.parameters["qop"].split(",")
            nonce, uri = md5.parameters["nonce"], str(first.uri)

            def signed(body: bytes, nc: str) -> str:
                answer = digest_response(
                    MD5, ha1(MD5, DEVICE, REALM, PASSWORD), "MESSAGE", uri, nonce,
                    qop="auth-int", nc=nc, cnonce="c0ffee", body=body,
                )  # fmt: skip
                return (
                    f'Digest username="{DEVICE}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
                    f'response="{answer}", algorithm=MD5, qop=auth-int, nc={nc}, cnonce="c0ffee"'
                )

            ok = await device.ask(
                request(port=port, local_port=device.port, authorization=signed(MRQ, "00000001"))
            )
            other = MRQ.replace(b"R1", b"R2")
            moved = request(
                port=port, local_port=device.port, body=other, authorization=signed(MRQ, "00000002")
            )
            refused = await device.ask(moved)
    assert ok.code == 200
    assert refused.code == 403
    assert [m.body for m in handler.messages] == [MRQ]


async def test_another_device_reusing_the_identifiers_is_its_own_transaction() -> None:
    """Device B sending with A's branch, Call-ID and CSeq got A's cached answer (and
    was never handled): the key now holds the source address and the Via's sent-by."""
    other = "4790099999"
    handler = Recorder()
    creds = Credentials(**{DEVICE: PASSWORD, other: PASSWORD})
    async with running(("udp",), handler, creds, metrics=Metrics(), clock=SystemClock()) as server:
        port = server.port("udp")
        same: dict[str, Any] = {"port": port, "call_id": "1@192.168.1.10"}
        async with udp_peer(port) as a, udp_peer(port) as b:
            qa = request(**same, local_port=a.port, branch="z9hG4bK1", cseq=1)
            ra = await a.ask(qa)
            qb = request(**same, user=other, local_port=b.port, branch="z9hG4bK1", cseq=1)
            rb = await b.ask(qb)
            qa2 = request(
                **same, local_port=a.port, branch="z9hG4bK2", cseq=2,
                authorization=authorization(ra, qa),
            )  # fmt: skip
            assert (await a.ask(qa2)).code == 200
            body_b = MRQ.replace(DEVICE.encode(), other.encode())
            qb2 = request(
                **same, user=other, body=body_b, local_port=b.port, branch="z9hG4bK2", cseq=2,
                authorization=authorization(rb, qb, user=other),
            )  # fmt: skip
            assert (await b.ask(qb2)).code == 200
    assert [m.user for m in handler.messages] == [DEVICE, other]
    assert handler.messages[1].body == body_b


async def test_devices_challenged_in_the_same_instant_each_get_their_own_nonce() -> None:
    """A burst of devices challenged within one millisecond got one nonce; with the
    nonce-count table the second device's first count was taken for a replay (the
    kill -9 fault test's 500-device fleet found it)."""
    other = "4790099999"
    handler = Recorder()
    clock = FakeClock(datetime(2026, 12, 6, tzinfo=UTC))  # not moving: the same instant
    creds = Credentials(**{DEVICE: PASSWORD, other: PASSWORD})
    async with running(("udp",), handler, creds, metrics=Metrics(), clock=clock) as server:
        port = server.port("udp")
        async with udp_peer(port) as a, udp_peer(port) as b:
            qa, ra = await _challenged(a, port=port, local_port=a.port)
            qb, rb = await _challenged(b, port=port, local_port=b.port, user=other)
            body_b = MRQ.replace(DEVICE.encode(), other.encode())
            final_a = await a.ask(
                request(port=port, local_port=a.port, authorization=authorization(ra, qa))
            )
            final_b = await b.ask(
                request(
                    port=port, local_port=b.port, user=other, body=body_b,
                    authorization=authorization(rb, qb, user=other),
                )
            )  # fmt: skip
    assert (final_a.code, final_b.code) == (200, 200)
    assert [m.user for m in handler.messages] == [DEVICE, other]


async def test_another_device_using_a_nonce_does_not_use_up_its_counts() -> None:
    """Nonce counts are kept per (username, nonce): device B, shown A's nonce, answering it
    with its own credentials and a high count, pushed A's counts out of the window when
    they were kept per nonce, and A's next request was refused 401 stale."""
    other = "4790099999"
    handler = Recorder()
    creds = Credentials(**{DEVICE: PASSWORD, other: PASSWORD})
    async with running(("udp",), handler, creds, metrics=Metrics(), clock=SystemClock()) as server:
        port = server.port("udp")
        async with udp_peer(port) as a, udp_peer(port) as b:
            qa, ra = await _challenged(a, port=port, local_port=a.port)
            body_b = MRQ.replace(DEVICE.encode(), other.encode())
            qb = request(port=port, local_port=b.port, user=other, body=body_b)
            far = authorization(ra, qb, user=other, nc="00000100")  # A's nonce, count 256
            b_reply = await b.ask(
                request(port=port, local_port=b.port, user=other, body=body_b, authorization=far)
            )
            a_reply = await a.ask(
                request(port=port, local_port=a.port, authorization=authorization(ra, qa))
            )
    assert b_reply.code == 200
    assert a_reply.code == 200
    assert [m.user for m in handler.messages] == [other, DEVICE]
