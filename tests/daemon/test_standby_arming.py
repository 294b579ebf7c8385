"""A standby keeps no escalation deadlines, and takes them all up when it becomes the owner.

Only an owner's term runs the escalator's loop, the one thing that takes deadlines
off its heap. A standby armed every alarm its follower heard of (and every one its
API and registry touched), so its heap grew by an entry or more per alarm for as
long as it stayed a standby. The verdicts are what the standby has armed (the
escalator's `next_due`) after following the owner's alarms, and that the same
alarms are armed once it owns.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from alarmhub.app import AlarmHub
from alarmhub.core.model import Device, DeviceKind
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.settings import Settings
from tests.daemon.test_instances import FAILOVER_S, WAIT, register
from tests.support.helpers import Publisher, async_wait_until, hub_settings, native

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

N = 20


async def test_a_standby_arms_nothing_and_its_term_arms_every_active_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    devices = [Device(f"pend-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(N)]
    await register(pg_url, devices)
    pub = Publisher(broker.port)

    def settings(instance: str) -> Settings:
        return hub_settings(
            tmp_path,
            broker.url,
            client_id,
            database_url=pg_url,
            instance_id=instance,
            failover_s=FAILOVER_S,
        )

    try:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(AlarmHub(settings("inst-a"), serve_http=False))
            b = await stack.enter_async_context(AlarmHub(settings("inst-b"), serve_http=False))
            assert (a.owns, b.owns) == (["intake"], [])
            assert a.ingest is not None
            assert await a.ingest.wait_connected(WAIT)
            pub.publish_many(native(d.id, f"m-{d.id}", "button.pressed") for d in devices)
            # The standby follows the owner's new alarms (shown on its page)...
            assert await async_wait_until(lambda: len(b.state.alarms) == N, WAIT)
            follower = b.follower
            assert follower is not None
            assert await async_wait_until(lambda: follower.applied >= N, WAIT)
            # ...and arms none of them: its escalator does not run.
            assert b.escalator.next_due() is None
            # The owner has each alarm's step 2 (after 60 s) armed.
            assert a.escalator.next_due() is not None
            # A clean stop of the owner: the standby's term arms every active alarm.
            await a.__aexit__(None, None, None)
            stack.pop_all()
            stack.push_async_callback(b.__aexit__, None, None, None)
            assert await async_wait_until(lambda: b.owns == ["intake"], WAIT)
            assert b.escalator.next_due() is not None
            armed = b.escalator._armed  # which alarms, not how many heap entries
            assert set(armed) == set(b.state.alarms.by_id)
    finally:
        pub.close()
