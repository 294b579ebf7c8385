"""A SCAIP alarm on the operator's page, in a real headless Chromium (issue 16).

The whole hub with its SIP listener on loopback, the fake SCAIP device sending over UDP
with digest, Mosquitto, SQLite. The municipality holds its devices until an operator
takes the alarm: the operator opens the alarm, sees the callback number, the position and
the device's texts, takes it with the keyboard choosing simplex and "call this number",
and the held device's next resend is answered snu=0 with exactly those.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from alarmhub.core.digest import credentials_for
from alarmhub.core.tenancy import Scope
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.sim.scaip_device import Outcome, ResendPolicy, ScaipFleet
from tests.daemon.test_scaip_daemon import scaip_device
from tests.support.api_harness import stack
from tests.support.helpers import REPO, async_wait_until, db_rows
from tests.web.test_web_e2e import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, login

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

DEVICE, PASSWORD = "4790012345", "scaip-test-secret"
POLICY = ResendPolicy(
    interval_s=(0.3, 0.6), answer_timeout_s=2.0, give_up_after_s=90.0, t1_s=0.1, t2_s=0.8
)
HOLD_RULES = """
[municipalities.0301.scaip]
answer = "hold_until_taken"
mre = 1
cre = 61
"""
CEILING_MS = 10_000  # a ceiling against a hang, never a measure


async def test_operator_sees_the_scaip_alarm_and_takes_it_choosing_the_voice_by_keyboard(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `apt-get install chromium chromium-driver`")
    rules = tmp_path / "rules.toml"
    rules.write_text((REPO / "config" / "rules.toml").read_text() + HOLD_RULES)
    settings = {"rules": rules, "scaip_listen": "udp://127.0.0.1:0"}
    problems: list[str] = []  # script errors and failed requests: the page must have none
    async with stack(tmp_path, broker, client_id, alarms=False, settings=settings) as s:
        hub = s.hub
        assert hub.sip is not None
        await hub.sip.started.wait()
        await hub.register_new_device(scaip_device(DEVICE), audit=())
        creds = credentials_for(DEVICE, hub.settings.scaip_realm, PASSWORD)
        assert await hub.directory.set_device_credentials(
            Scope.everything("t"), creds, datetime.now(UTC), []
        )
        async with (
            ScaipFleet(f"udp://127.0.0.1:{hub.sip.port('udp')}", POLICY) as fleet,
            async_playwright() as pw,
        ):
            record = fleet.device(DEVICE, PASSWORD).alarm(
                "W1",
                stc="0010",
                crd="gsm:+4791234567",
                stt="Manual alarm",
                lte="Bedroom",
                ite="Key box at the back door",
                lge={"geo": "59.91390,10.75220", "tim": "2026-11-25T10:00:00Z"},
            )
            assert await async_wait_until(lambda: record.snus[:2] == [4, 4], 30), record
            [(alarm_id,)] = db_rows(s.db, "SELECT id FROM alarms WHERE device_id = ?", (DEVICE,))

            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(timezone_id="Europe/Oslo", locale="nb-NO")
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.on(
                "response",
                lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
            )
            await login(page, s.base, "op0301")
            await page.goto(f"{s.base}/alarms/{alarm_id}")
            scaip = page.locator("#scaip")
            await scaip.get_by_text("gsm:+4791234567").wait_for(timeout=CEILING_MS)
            shown = await scaip.inner_text()
            for text in ("Manual alarm", "Bedroom", "Key box at the back door", "W1", "HOLD"):
                assert text in shown, (text, shown)
            # The position like any other fix: coordinates as text.
            assert "59.91390, 10.75220" in await page.locator("#position").inner_text()
            held = page.locator("#timeline li[data-type='answered']")
            assert "snu 4" in await held.inner_text()

            # Take it with the keyboard: `a`, 3 = simplex, Tab, 3 = call the number, Tab,
            # the number, Enter.
            await page.keyboard.press("a")
            dialog = page.locator("dialog[open]", has_text="Ta alarmen")
            await dialog.wait_for(timeout=CEILING_MS)
            await page.keyboard.press("3")
            await page.keyboard.press("Tab")
            await page.keyboard.press("3")
            await page.keyboard.press("Tab")
            await page.keyboard.type("+4712345678")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "scaip-take.png"), full_page=True)
            await page.keyboard.press("Enter")
            await dialog.wait_for(state="detached", timeout=CEILING_MS)

            assert await record.wait(60), record
            assert record.outcome is Outcome.HANDLED, record
            *before, last = [a for _, a in record.answers]
            assert {a.snu for a in before} == {4}
            assert (last.snu, last.mre, last.cre, last.tnu) == (0, 2, 62, "+4712345678")
            # The page shows what the device was told, from the acknowledgement's commit.
            told = page.locator("#timeline li[data-type='answered']", has_text="snu 0")
            await told.wait_for(timeout=CEILING_MS)
            assert "+4712345678" in await told.inner_text()
            await scaip.get_by_text("Enveis tale").wait_for(timeout=CEILING_MS)
            await page.screenshot(path=str(ARTIFACTS / "scaip-detail.png"), full_page=True)
            await browser.close()
    assert db_rows(s.db, "SELECT state, acknowledged_by FROM alarms") == [
        ("acknowledged", "op0301")
    ]
    assert problems == []
