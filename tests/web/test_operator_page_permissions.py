"""What each role's page offers is what the server lets that role do, read from the server.

The page used to decide by lists of roles written by hand in its scripts, copies of the
tenancy rules (core/tenancy.py `GRANTS`): `ACTS` in actions.js (who may act on an alarm),
`DECIDES` in held.js (who may release a held journal note), the devices page's managers,
and the header's `data-needs-role` links. Only `ACTS` was held to the rules by a test; a
copy that drifted would hide from a role an action the server lets it take (nobody
acknowledges the alarm from the page at 3 a.m.) or offer one the server refuses.

Now `/api/v1/me` answers the caller's `permissions` (GRANTS of its role) and the page asks
only that; no script names a role except to say its name. Checked here in a real
headless Chromium for a user of *every* role of `Role` (a role added is covered without
editing this file): the page shows exactly what GRANTS says, the `?` help lists only the
keys that role may use, and every role the server has has a name in each language the
page speaks, and no other.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Page

from alarmhub.clock import SystemClock
from alarmhub.core.people import Role
from alarmhub.core.tenancy import GRANTS, Permission
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite import accounts
from tests.support.helpers import REPO
from tests.support.operator_page import CEILING_MS, PASSWORD, OperatorPage, login, operator_page

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

STATIC = REPO / "alarmhub/web/static"
ACTION_KEYS = {"a", "n", "r", "e", "d", "o"}  # actions.js ACTION_KEYS
# Keys of the help that act on an alarm or answer an action's dialog (resolve, voice).
ACTING_ROWS = ACTION_KEYS | {"1–4", "Tab, 1–9", "a, 1–3, Tab, 1–3"}
# Keys every role may use: moving, opening, going back, the help itself.
READING_ROWS = {"j / ↓, k / ↑", "Enter", "Esc", "?"}
# The header's links, and the permission the API their page reads needs.
NAV = {
    "/": Permission.READ_ALARMS,
    "/devices": Permission.READ_DEVICES,
    "/reports": Permission.READ_REPORTS,
    "/users": Permission.MANAGE_USERS,
    "/residents": Permission.MANAGE_RESIDENTS,
}
ME = """async () => {
  const { get } = await import("/static/js/api.js");
  return (await get("/api/v1/me")).data;
}"""
HELP_KEYS = (
    """() => [...document.querySelectorAll("dialog[open] th kbd")].map((k) => k.textContent)"""
)
ROLE_NAMES = """async () => {
  const { LANGS, TEXT } = await import("/static/js/i18n.js");
  return Object.fromEntries(LANGS.map((l) => [
    l, Object.keys(TEXT[l]).filter((k) => k.startsWith("role.")).map((k) => k.slice(5)),
  ]));
}"""


def _quoted(value: str) -> re.Pattern[str]:
    return re.compile(rf"""(["'`]){re.escape(value)}\1""")


def test_no_page_script_names_a_role_but_to_say_its_name() -> None:
    """What a role may do is the server's answer, so the page keeps no list of roles.

    A role's value quoted in a script or a page (`"admin"`, `data-needs-role=…`) is a
    copy of the tenancy rules that can drift; i18n's `role.<value>` names are texts.
    """
    found = []
    for path in sorted([*STATIC.glob("js/*.js"), *STATIC.glob("*.html")]):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "data-needs-role" in line or any(_quoted(r.value).search(line) for r in Role):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []


def _users(op: OperatorPage) -> dict[Role, str]:
    """One user of each role, named after it."""
    names = {role: f"u-{role.value}".replace("_", "-") for role in Role}
    with accounts.connect(op.db) as conn:
        hashed = accounts.hash_password(PASSWORD)
        now = SystemClock().now()
        for role, name in names.items():
            accounts.create_user(conn, name, role, ["0301"], hashed, now, ())
    return names


async def _page_as(op: OperatorPage, user: str) -> Page:
    browser = op.page.context.browser
    assert browser is not None
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="nb-NO")
    page = await context.new_page()
    page.set_default_timeout(CEILING_MS)
    page.on("pageerror", lambda exc: op.problems.append(f"pageerror: {exc}"))
    await login(page, op.base, user)
    return page


async def _signed_in(page: Page, url: str) -> None:
    """Open `url` and wait until the page has read who is signed in (the header names
    them; the links are hidden in the same step, the page's own controls right after)."""
    await page.goto(url)
    await page.wait_for_function("() => document.getElementById('who')?.textContent !== ''")


async def _help_keys(page: Page) -> set[str]:
    await page.keyboard.press("?")
    await page.locator("dialog[open]").wait_for()
    keys = set(await page.evaluate(HELP_KEYS))
    await page.keyboard.press("Escape")
    await page.locator("dialog[open]").wait_for(state="detached")
    return keys


async def _check_role(op: OperatorPage, page: Page, role: Role, alarm_id: str) -> None:
    grants = GRANTS[role]
    acts = Permission.ACT_ON_ALARMS in grants
    me = await page.evaluate(ME)
    assert isinstance(me, dict), f"/api/v1/me of a {role}: {me!r}"
    assert sorted(me["permissions"]) == sorted(p.value for p in grants), me

    # The queue: the header's links, and the help.
    await _signed_in(page, f"{op.base}/")
    for href, needs in NAV.items():
        shown = await page.locator(f"header.top nav li:has(a[href='{href}'])").is_visible()
        assert shown == (needs in grants), (href, shown)
    keys = await _help_keys(page)
    assert keys == (READING_ROWS | ACTING_ROWS if acts else READING_ROWS), keys

    # The alarm's page: its actions, the help, and the held-note decision.
    await _signed_in(page, f"{op.base}/alarms/{alarm_id}")
    buttons = page.locator("#actions button")
    await buttons.first.wait_for()
    enabled = [await buttons.nth(i).is_enabled() for i in range(await buttons.count())]
    assert enabled == [acts] * len(ACTION_KEYS), enabled
    assert await _help_keys(page) == keys
    decides = await page.evaluate(
        "async (me) => (await import('/static/js/held.js')).decides(me)", me
    )
    assert decides == (Permission.MANAGE_RESIDENTS in grants)

    # The devices page: registering and importing only where the API lets manage.
    await _signed_in(page, f"{op.base}/devices")
    manage = page.locator("section.manage")
    for i in range(await manage.count()):
        assert await manage.nth(i).is_visible() == (Permission.MANAGE_DEVICES in grants)


async def test_each_role_s_page_offers_what_the_server_lets_that_role_do(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with operator_page(tmp_path, broker, client_id) as op:
        users = _users(op)
        alarm_id = await op.raise_alarm("pend-7", "p7")
        for role, user in users.items():
            page = await _page_as(op, user)
            await _check_role(op, page, role, alarm_id)
            await page.context.close()

        # Every role the server has is named in each of the page's languages; no other.
        names = await op.page.evaluate(ROLE_NAMES)
        roles = sorted(r.value for r in Role)
        assert {lang: sorted(found) for lang, found in names.items()} == {"nb": roles, "en": roles}
        assert op.problems == []


async def test_the_help_tells_a_reader_why_the_action_keys_are_not_listed(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """An operator's help lists the action keys and no refusal; a municipality admin's
    lists none and says why, in the words the action keys' refusal uses."""
    async with operator_page(tmp_path, broker, client_id) as op:
        users = _users(op)
        await _signed_in(op.page, f"{op.base}/")
        await op.page.keyboard.press("?")
        dialog = op.page.locator("dialog[open]")
        await dialog.wait_for()
        assert "Kvitter" in await dialog.inner_text()
        assert await dialog.locator(".unavailable").count() == 0

        page = await _page_as(op, users[Role.MUNICIPALITY_ADMIN])
        await _signed_in(page, f"{op.base}/")
        await page.keyboard.press("?")
        dialog = page.locator("dialog[open]")
        await dialog.wait_for()
        text = await dialog.inner_text()
        assert "Rollen din (municipality_admin) kan ikke handle på alarmer" in text
        assert "Kvitter" not in text
        assert op.problems == []
