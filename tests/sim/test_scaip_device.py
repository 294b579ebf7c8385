"""The simulated SCAIP device against a minimal receiver written apart from it.

The peer (tests/support/scaip_peer.py) checks the digest itself, so a pass here means a
receiver that implements RFC 8760 accepts the device's credentials. Every assertion is
about what was sent and answered (refs, snu sequences, algorithms, branches), never how
long it took: resend intervals are short only to keep the file fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from alarmhub.sim.scaip_device import Outcome, ResendPolicy, ScaipFleet
from tests.support.scaip_peer import ScaipPeer

FAST = ResendPolicy(
    interval_s=(0.05, 0.1), answer_timeout_s=0.5, give_up_after_s=15, t1_s=0.05, t2_s=0.4
)
CID = "4790012345"
PASSWORD = "correct horse"


@pytest.fixture
async def peers() -> AsyncIterator[list[ScaipPeer]]:
    made: list[ScaipPeer] = []
    yield made
    for p in made:
        p.close()


async def start(peers: list[ScaipPeer], kind: str = "udp", **options) -> tuple[ScaipPeer, str]:
    peer = ScaipPeer(passwords={CID: PASSWORD}, **options)
    peers.append(peer)
    port = await peer.start(kind)
    return peer, f"{kind}://127.0.0.1:{port}"


@pytest.mark.parametrize("kind", ["udp", "tcp"])
async def test_held_twice_the_device_resends_the_same_ref_until_handled(peers, kind) -> None:
    peer, target = await start(peers, kind, script=[4, 4, 0])
    async with ScaipFleet(target, FAST) as fleet:
        record = fleet.device(CID, PASSWORD).alarm("A1", stc="0010")
        assert await record.wait(30), record
    assert record.snus == [4, 4, 0]
    assert record.outcome is Outcome.HANDLED
    assert [a.sip_status for a in record.attempts] == [200, 200, 200]
    # The same request three times: one ref, the same body, each in its own transaction.
    assert [a.ref for a in peer.accepted] == ["A1", "A1", "A1"]
    assert len({a.body for a in peer.accepted}) == 1
    assert len({a.call_id for a in peer.accepted}) == 3
    assert b"<stc>0010</stc>" in peer.accepted[0].body
    # The strongest algorithm offered, and the peer verified it with the password.
    assert {a.algorithm for a in peer.accepted} == {"SHA-256"}
    assert {a.user for a in peer.accepted} == {CID}
    assert peer.refused == []
    assert peer.answers_acked == 3  # the device answered each <mrs> MESSAGE 200 OK
    # The voice parameters of the final answer are read.
    final = record.answers[-1][1]
    assert (final.mre, final.cre, final.tnu, final.via) == (1, 61, "+4722000000", "message")
    # Ended: nothing resends (the session's task is done, not merely quiet).
    assert all(t.done() for t in fleet.devices[CID]._tasks.values())


async def test_md5_only_receiver_gets_md5(peers) -> None:
    peer, target = await start(peers, algorithms=("MD5",))
    async with ScaipFleet(target, FAST) as fleet:
        record = fleet.device(CID, PASSWORD).alarm("M1")
        assert await record.wait(30)
    assert record.outcome is Outcome.HANDLED
    assert [a.algorithm for a in peer.accepted] == ["MD5"]
    assert record.attempts[0].algorithm == "MD5"


async def test_stale_nonce_is_answered_once_more_with_the_new_nonce(peers) -> None:
    peer, target = await start(peers, stale_once=True)
    async with ScaipFleet(target, FAST) as fleet:
        record = fleet.device(CID, PASSWORD).alarm("S1")
        assert await record.wait(30)
    assert record.outcome is Outcome.HANDLED
    # Unauthenticated → challenge; credentials → stale challenge; new credentials → 200.
    assert record.attempts[0].auth_rounds == 3
    assert len(peer.accepted) == 1


async def test_wrong_password_is_refused_and_the_session_ends(peers) -> None:
    peer, target = await start(peers)
    async with ScaipFleet(target, FAST) as fleet:
        record = fleet.device(CID, "wrong").alarm("W1")
        assert await record.wait(30)
    assert record.outcome is Outcome.SIP_REFUSED
    assert record.sip_statuses == [403]
    assert peer.accepted == []
    assert peer.refused == [403]


async def test_the_nonce_is_reused_for_the_next_request(peers) -> None:
    """After one challenge a device sends credentials at once (nc = 2): one round trip."""
    peer, target = await start(peers)
    async with ScaipFleet(target, FAST) as fleet:
        pendant = fleet.device(CID, PASSWORD)
        first = pendant.alarm("N1")
        assert await first.wait(30)
        second = pendant.alarm("N2")
        assert await second.wait(30)
    assert first.attempts[0].auth_rounds == 2
    assert second.attempts[0].auth_rounds == 1
    assert len(peer.accepted) == 2


async def test_an_unanswered_request_is_resent_after_the_answer_timeout(peers) -> None:
    peer, target = await start(peers, silent=True)
    policy = ResendPolicy(
        interval_s=(0.05, 0.1), answer_timeout_s=0.2, give_up_after_s=1.5, t1_s=0.05, t2_s=0.4
    )
    async with ScaipFleet(target, policy) as fleet:
        record = fleet.device(CID, PASSWORD).alarm("T1")
        assert await record.wait(30)
    assert record.outcome is Outcome.GAVE_UP
    assert record.snus == []
    assert len(peer.accepted) >= 2  # resent while unanswered …
    assert {a.ref for a in peer.accepted} == {"T1"}  # … always the same ref
    assert len({a.body for a in peer.accepted}) == 1


async def test_udp_retransmits_a_request_without_response_in_the_same_transaction(peers) -> None:
    peer, target = await start(peers, drop_first_datagram=True)
    async with ScaipFleet(target, FAST) as fleet:
        record = fleet.device(CID, PASSWORD).alarm("R1")
        assert await record.wait(30)
    assert record.outcome is Outcome.HANDLED
    # Timer E: the same bytes (same branch) again; the peer ignored each branch's first copy.
    assert all(n >= 2 for n in peer.seen_branches.values())
    assert len(record.attempts) == 1


async def test_inline_answer_in_the_200_ok(peers) -> None:
    peer, target = await start(peers, inline=True, script=[4, 0])
    async with ScaipFleet(target, FAST) as fleet:
        record = fleet.device(CID, PASSWORD).alarm("I1")
        assert await record.wait(30)
    assert record.snus == [4, 0]
    assert {a.via for _, a in record.answers} == {"inline"}
    assert len(peer.accepted) == 2


async def test_a_retransmitted_answer_is_counted_once(peers) -> None:
    peer, target = await start(peers, answer_twice=True, script=[4, 0])
    async with ScaipFleet(target, FAST) as fleet:
        record = fleet.device(CID, PASSWORD).alarm("D1")
        assert await record.wait(30)
        assert await asyncio.wait_for(_until(lambda: peer.answers_acked >= 4), 10)
    assert record.snus == [4, 0]


async def test_heartbeat_update_and_reset_carry_their_type_and_the_same_ref(peers) -> None:
    peer, target = await start(peers, hbi=60)
    async with ScaipFleet(target, FAST) as fleet:
        pendant = fleet.device(CID, PASSWORD, dty="0005")
        beat = pendant.heartbeat("H1")
        assert await beat.wait(30)
        pendant.alarm("F1", stc="0009")
        assert await pendant.records["F1"].wait(30)
        pendant.update("F1", lte="kitchen")
        assert await pendant.records["F1"].wait(30)
        reset = pendant.reset("F1")
        assert await reset.wait(30)
    assert beat.answers[-1][1].hbi == 60
    bodies = {a.body for a in peer.accepted}
    beat_body = next(b for b in bodies if b"<ref>H1</ref>" in b)
    assert b"<mty>PI</mty>" in beat_body
    assert b"<hbo>001</hbo>" in beat_body
    f1 = [a.body for a in peer.accepted if a.ref == "F1"]
    assert len(f1) == 3
    assert b"<mty>" not in f1[0]
    # The update repeats the alarm's mandatory values; the reset names the same ref.
    assert b"<mty>IN</mty>" in f1[1]
    assert b"<cid>4790012345</cid><dty>0005</dty>" in f1[1]
    assert b"<lte>kitchen</lte>" in f1[1]
    assert b"<mty>RE</mty>" in f1[2]
    assert reset.snus == [0, 0, 0]  # one history per ref: alarm, update, reset


async def test_five_hundred_devices_share_one_socket(peers) -> None:
    n = 500
    peer = ScaipPeer(passwords={f"47900{i:05d}": f"pw{i}" for i in range(n)}, script=[4, 0])
    peers.append(peer)
    port = await peer.start("udp")
    async with ScaipFleet(f"udp://127.0.0.1:{port}", FAST) as fleet:
        for i in range(n):
            fleet.device(f"47900{i:05d}", f"pw{i}").alarm(f"r{i}")
        assert await fleet.wait_all(60)
        records = fleet.records()
    assert len(records) == n
    assert {r.outcome for r in records} == {Outcome.HANDLED}
    # Each held once, then handled. A HOLD lost on the way (the peer sends 500 answer
    # datagrams at once and, unlike a real receiver, never retransmits them) shows up as
    # a resend the peer answers 0: the resend is the standard's cure for exactly that.
    assert all(r.snus[-1] == 0 and set(r.snus) <= {4, 0} for r in records)
    assert all(len(r.attempts) >= 2 for r in records)  # a resend after the HOLD (or a loss)
    assert len({a.user for a in peer.accepted}) == n
    assert fleet.unmatched == []


async def _until(check) -> bool:
    while not check():
        await asyncio.sleep(0.01)
    return True
