"""The books of the TCP/TLS connection slots (alarmhub/sip/slots.py), alone.

Connections are plain names and time an argument; tests/sip/test_sip_slots.py shows
the same rules with a real server and sockets.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from alarmhub.sip.slots import Admission, Demotion, Slots


def test_the_slot_taken_is_the_oldest_strangers_of_the_address_holding_most() -> None:
    slots: Slots[str] = Slots(4)
    for conn, address, at in [("d", "a", 0), ("s1", "b", 1), ("s2", "b", 2), ("t", "c", 3)]:
        assert slots.admit(conn, address, at).admitted
    assert slots.authenticated("d", "4790012345", 4) is None
    assert slots.admit("n1", "a", 5) == Admission(True, "s1", "b")  # b holds 2 strangers
    assert slots.admit("n2", "a", 6) == Admission(True, "s2", "b")  # 1 each: the oldest of all
    assert slots.admit("n3", "a", 7) == Admission(True, "n1", "a")  # a holds 2: its own
    assert slots.admit("n4", "c", 8) == Admission(True, "n2", "a")
    assert slots.strangers() == 3
    assert slots.strangers("a") == 1
    assert "d" in slots


def test_a_full_table_of_devices_and_own_connections_refuses_a_newcomer() -> None:
    slots: Slots[str] = Slots(2)
    slots.own("ours", "10.0.0.9", 0)
    assert slots.admit("d", "a", 0).admitted
    slots.authenticated("d", "4790012345", 0)
    assert slots.admit("n", "a", 1) == Admission(admitted=False)
    assert slots.overdue(1000, 30) == []  # neither has a deadline
    slots.release("d")
    assert slots.admit("n", "a", 2).admitted


def test_overdue_strangers_by_their_opening_or_their_demotion() -> None:
    slots: Slots[str] = Slots(10, per_device=1)
    for conn, at in [("c1", 0), ("c2", 10), ("c3", 20)]:
        slots.admit(conn, "a", at)
    assert slots.overdue(40, 30) == ["c1", "c2"]
    slots.authenticated("c1", "dev", 41)
    assert slots.authenticated("c2", "dev", 42) == Demotion("c1", stranger=True)
    assert slots.overdue(60, 30) == ["c3"]  # c1 a stranger again since 42
    assert slots.overdue(72, 30) == ["c3", "c1"]
    slots.authenticated("c3", "gateway", 73)
    assert slots.authenticated("c3", "dev", 74) == Demotion("c2", stranger=True)
    slots.authenticated("c2", "dev", 75)  # demoting c3 leaves it the gateway's
    assert slots.overdue(1000, 30) == ["c1"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["admit", "auth", "release", "sweep"]), st.integers(0, 50)),
        max_size=120,
    )
)
def test_no_device_connection_is_taken_while_a_stranger_holds_a_slot(
    steps: list[tuple[str, int]],
) -> None:
    capacity, per_device = 5, 2
    slots: Slots[int] = Slots(capacity, per_device=per_device)
    held: dict[int, set[str]] = {}  # the model: each held connection's devices
    for now, (op, n) in enumerate(steps):
        if op == "admit":
            strangers = [c for c, devs in held.items() if not devs]
            got = slots.admit(now, f"10.0.0.{n % 3}", now)
            assert got.admitted == (len(held) < capacity or bool(strangers))
            if got.evicted is not None:
                assert got.evicted in strangers
                del held[got.evicted]
            if got.admitted:
                held[now] = set()
        elif op == "auth" and held:
            conn = sorted(held)[n % len(held)]
            device = f"d{n % 3}"
            held[conn].add(device)
            demoted = slots.authenticated(conn, device, now)
            if demoted is not None:
                held[demoted.conn].discard(device)
                assert demoted.stranger == (not held[demoted.conn])
            assert sum(device in devs for devs in held.values()) <= per_device
        elif op == "release" and held:
            conn = sorted(held)[n % len(held)]
            slots.release(conn)
            del held[conn]
        elif op == "sweep":
            for conn in slots.overdue(now, 10):
                assert not held[conn]
                slots.release(conn)
                del held[conn]
        assert len(slots) == len(held) <= capacity
        assert slots.strangers() == sum(not devs for devs in held.values())
