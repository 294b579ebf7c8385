"""A silence of a whole municipality is visible above the operators' queue (issue 12 item 8).

In a real headless Chromium against the whole hub: an operator of 0301 sees 0301's
municipality-wide silence, its end and whether priority 1 is spared; 4601's silence
is not shown to them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from alarmhub.app import AlarmHub
from alarmhub.core.suppress import Silence
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite import accounts
from tests.support.helpers import hub_settings, register, sqlite_at
from tests.web.test_web_e2e import CHROMIUM, CHROMIUM_ARGS, create_user, login

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


async def test_the_queue_shows_a_municipality_silence_in_force(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `apt-get install chromium chromium-driver`")
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-1", "safety_alarm", "0301")], tmp_path)
    create_user(f"sqlite:///{db}", "kari", "operator", ["0301"])
    now = datetime.now(UTC)
    with sqlite_at(db) as conn:
        for sid, m, reason in [
            ("sil_a", "0301", "mobile network work"),
            ("sil_b", "4601", "Bergen-only"),
        ]:
            accounts.insert_silence(
                conn,
                Silence(
                    sid,
                    m,
                    now - timedelta(minutes=5),
                    now + timedelta(hours=2),
                    reason=reason,
                    created_by="madm",
                    created_at=now,
                ),
                (),
            )
    async with (
        AlarmHub(hub_settings(tmp_path, broker.url, client_id)) as hub,
        async_playwright() as pw,
    ):
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, timezone_id="Europe/Oslo", locale="nb-NO",
        )  # fmt: skip
        page = context.pages[0] if context.pages else await context.new_page()
        await login(page, f"http://127.0.0.1:{hub.http_port}", "kari")
        banner = page.locator("#silences:not([hidden]) li")
        await banner.first.wait_for(timeout=15_000)
        texts = await banner.all_inner_texts()
        assert len(texts) == 1, texts
        assert "mobile network work" in texts[0]
        assert "prioritet 1 varsles som vanlig" in texts[0]
        assert "Bergen-only" not in " ".join(texts)
        await context.close()
