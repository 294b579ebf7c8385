"""The users page in a real headless Chromium (issue 13 #6): an admin locks an operator out.

The admin logs in through the form, records the operator's HPR number (issue 17: the
journal note's author), disables the operator on the users page, and the operator's
next API call with a token created before is 401.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from alarmhub.app import AlarmHub
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import hub_settings, register, run_cli
from tests.web.test_web_e2e import CHROMIUM, CHROMIUM_ARGS, create_user, login

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


async def test_admin_disables_an_operator_on_the_users_page(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `apt-get install chromium chromium-driver`")
    db_url = f"sqlite:///{tmp_path / 'alarmhub.db'}"
    register(db_url, [("pend-1", "safety_alarm", "0301")], tmp_path)
    create_user(db_url, "kari", "operator", ["0301"])
    create_user(db_url, "root", "admin", [])
    made = run_cli(["tokens", "create", "--user", "kari"], {"ALARMHUB_DATABASE_URL": db_url})
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    problems: list[str] = []
    async with (
        AlarmHub(hub_settings(tmp_path, broker.url, client_id)) as hub,
        async_playwright() as pw,
    ):
        base = f"http://127.0.0.1:{hub.http_port}"
        kari = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        async with kari:
            assert (await kari.get("/api/v1/me")).status_code == 200
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = await browser.new_page(locale="nb-NO")
                page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                # "Deaktivere kari?", and the HPR number typed into its prompt.
                page.on(
                    "dialog",
                    lambda d: d.accept("001234567") if d.type == "prompt" else d.accept(),
                )
                await login(page, base, "root")
                await page.click("header.top nav a[href='/users']")
                row = page.locator("#users tbody tr[data-user='kari']")
                await row.wait_for(timeout=15_000)
                await row.get_by_role("button", name="HPR-nummer kari").click()
                await row.locator("td.hpr", has_text="1234567").wait_for(timeout=15_000)
                await row.get_by_role("button", name="Deaktiver kari").click()
                await row.locator("td", has_text="Deaktivert").wait_for(timeout=15_000)
                assert await page.locator("#tokens tbody tr", has_text="kari").count() == 1
            finally:
                await browser.close()
            r = await kari.get("/api/v1/me")
            assert r.status_code == 401, r.text
            assert await hub.reader.hpr_of("kari") == "1234567"  # leading zeros dropped
    assert problems == []
