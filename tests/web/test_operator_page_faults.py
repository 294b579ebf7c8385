"""What an operator sees on the queue page when things go wrong (docs/operator-guide.md,
"When the queue is not live"), in a real headless Chromium behind a proxy the test
controls (tests/support/operator_page.py), against the whole hub and a real Mosquitto.

Promise 1 covers the page too: an alarm that is stored but never shown, or shown in a
state it no longer has, under a page that looks alive, is lost to the operator. Each
test breaks one thing the way networks and servers break, then waits — with a ceiling,
never a sleep — for the page to say so and to show the alarm raised meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import async_wait_until
from tests.support.operator_page import CEILING_MS, operator_page

pytestmark = [pytest.mark.broker, pytest.mark.timeout(150)]


async def test_a_queue_read_cut_mid_answer_is_shown_and_retried_not_frozen(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """The stream drops (a blip: every connection reset); on reconnect the page reads the
    whole queue again, and that answer is cut one byte into its body. The read threw,
    left the page `loading` for good, and every later change — a P1 fall — was buffered
    and never shown, no read ever ran again, and the badge said "Live" throughout."""
    async with operator_page(tmp_path, broker, client_id) as op:
        await op.record_connection()
        op.proxy.truncate(b"state=acknowledged")
        op.proxy.reset()
        assert await async_wait_until(lambda: op.proxy.truncated == 1, 30)
        # The stream is back, the read failed: said, not hidden behind "Live".
        await op.wait_shown("banner:stale")
        await op.raise_alarm("fall-1", "f1", "fall.detected")
        await op.row("fall-1").wait_for(timeout=CEILING_MS)
        await op.page.wait_for_selector("#offline", state="hidden", timeout=CEILING_MS)
        assert await op.conn_state() == "live"
        assert op.problems == []
