"""The alarm's page offers its actions only to the roles the API lets act on alarms.

A municipality administrator reads alarms but may not act on them (core/tenancy.py:
`ACT_ON_ALARMS` is the operators' and the admins'). Their page showed *Kvitter*,
*Notat*, *Avslutt* … enabled, each answered `403` by the API: at 3 a.m. an
administrator who clicked *Kvitter* believing they had taken the alarm had not, and
nothing on the page said so before they tried. In a real headless Chromium: the
administrator's page shows every action unavailable with the reason and sends
nothing, on the detail and from the queue's keys; the server still refuses their own
session. The operator's page works as before, also when it could not read who is
signed in. (That every role's page follows the server's rules, which the page now reads
from `/api/v1/me`: test_operator_page_permissions.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from alarmhub.clock import SystemClock
from alarmhub.core.people import Role
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite import accounts
from tests.support.helpers import db_rows
from tests.support.operator_page import CEILING_MS, PASSWORD, OperatorPage, login, operator_page

pytestmark = [pytest.mark.broker, pytest.mark.timeout(150)]

ACTIONS = "#actions button"
KEYS = ["a", "n", "r", "e", "d", "o"]  # actions.js ACTION_KEYS
# What the signed-in browser session can send, buttons or not: the page's API module,
# with its CSRF header and session cookie.
POST_FROM_PAGE = """async (url) => {
  const { post } = await import("/static/js/api.js");
  const res = await post(url, {});
  return [res.status, res.error?.code ?? null];
}"""


def _admin(op: OperatorPage) -> None:
    with accounts.connect(op.db) as conn:
        hashed = accounts.hash_password(PASSWORD)
        now = SystemClock().now()
        accounts.create_user(conn, "anne", Role.MUNICIPALITY_ADMIN, ["0301"], hashed, now, ())


async def _page_as(op: OperatorPage, user: str) -> Page:
    browser = op.page.context.browser
    assert browser is not None
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="nb-NO", timezone_id="Europe/Oslo"
    )
    page = await context.new_page()
    page.set_default_timeout(CEILING_MS)
    page.on("pageerror", lambda exc: op.problems.append(f"pageerror: {exc}"))
    await login(page, op.base, user)
    return page


def _posts(page: Page) -> list[str]:
    """Every POST the page sends from now on (its actions are POSTs)."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    return sent


def _alarm(op: OperatorPage, alarm_id: str) -> tuple[Any, ...]:
    [row] = db_rows(op.db, "SELECT state, acknowledged_by FROM alarms WHERE id = ?", (alarm_id,))
    return row


async def test_a_municipality_admin_s_alarm_page_offers_no_action_that_would_be_refused(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with operator_page(tmp_path, broker, client_id) as op:
        _admin(op)
        alarm_id = await op.raise_alarm("pend-7", "p7")
        page = await _page_as(op, "anne")
        sent = _posts(page)

        # The detail: every action shown unavailable, with the reason beside it.
        await page.goto(f"{op.base}/alarms/{alarm_id}")
        buttons = page.locator(ACTIONS)
        await buttons.first.wait_for()
        assert await buttons.count() == len(KEYS)
        for i in range(len(KEYS)):
            assert await buttons.nth(i).is_disabled(), await buttons.nth(i).inner_text()
        reason = page.locator("#actions-unavailable")
        text = await reason.inner_text()
        assert "Rollen din (municipality_admin) kan ikke handle på alarmer" in text
        assert await buttons.first.get_attribute("aria-describedby") == "actions-unavailable"
        # Nor the keys: no dialog asks for a note or an outcome, nothing is sent.
        for key in KEYS:
            await page.keyboard.press(key)
            assert await page.locator("dialog[open]").count() == 0, key
        await page.locator("#toast.error:not([hidden])").wait_for()
        assert sent == []

        # The queue's keys the same: nothing sent, the reason said.
        await page.goto(f"{op.base}/")
        await page.locator("#queue tbody tr", has_text="pend-7").wait_for()
        await page.keyboard.press("a")
        toast = page.locator("#toast.error:not([hidden])")
        await toast.wait_for()
        assert "kan ikke handle på alarmer" in await toast.inner_text()
        assert sent == []
        assert _alarm(op, alarm_id) == ("open", None)

        # Not the guard: the server refuses the administrator's own session.
        for action in ("acknowledge", "notes", "dispatch", "on-site", "escalate"):
            url = f"/api/v1/alarms/{alarm_id}/{action}"
            assert await page.evaluate(POST_FROM_PAGE, url) == [403, "forbidden"], action
        assert _alarm(op, alarm_id) == ("open", None)
        assert op.problems == []


async def test_an_operator_s_alarm_page_acts_as_before(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with operator_page(tmp_path, broker, client_id) as op:
        alarm_id = await op.raise_alarm("pend-7", "p7")
        page = op.page
        await page.goto(f"{op.base}/alarms/{alarm_id}")
        acknowledge = page.locator(f"{ACTIONS}[aria-keyshortcuts='a']")
        await acknowledge.wait_for(timeout=CEILING_MS)
        assert await page.locator("#actions-unavailable").count() == 0
        for i in range(len(KEYS)):
            assert await page.locator(ACTIONS).nth(i).is_enabled()
        await acknowledge.click()
        await page.locator("#summary", has_text="Kvittert").wait_for(timeout=CEILING_MS)
        assert _alarm(op, alarm_id) == ("acknowledged", "kari")

        # Who is signed in could not be read: the server decides, the page does not lock
        # the operator out. Another alarm, taken with its key.
        other = await op.raise_alarm("fall-1", "f1", "fall.detected")
        await page.route("**/api/v1/me", lambda route: route.fulfill(status=503, body="busy"))
        await page.goto(f"{op.base}/alarms/{other}")
        await page.locator(f"{ACTIONS}[aria-keyshortcuts='a']:enabled").wait_for()
        await page.keyboard.press("a")
        await page.locator("#summary", has_text="Kvittert").wait_for(timeout=CEILING_MS)
        assert _alarm(op, other) == ("acknowledged", "kari")
        assert op.problems == []
