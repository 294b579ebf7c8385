"""The operator page in a real headless Chromium, behind a proxy a test controls.

What an operator sees when things go wrong (docs/operator-guide.md, "When the queue
is not live"): the hub runs in-process on a fixed port, so a test can stop it and
start it again on the same address; the browser reaches it only through a
`TcpProxy`, so a test can cut, silence, reset or truncate the page's connections,
or answer `502` while the hub is down, as a reverse proxy does. Alarms come in over
a real Mosquitto; a colleague acts through the API with a bearer token.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page, async_playwright

from alarmhub.app import AlarmHub
from alarmhub.clock import SystemClock
from alarmhub.core.people import Role
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite import accounts
from tests.support.helpers import Publisher, async_wait_until, db_rows, hub_settings, native
from tests.support.helpers import register as register_devices
from tests.support.tcp_proxy import TcpProxy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"
_HASH = accounts.hash_password(PASSWORD)
# A ceiling against a hang, never a measure of speed.
CEILING_MS = 30_000
DEVICES = [
    ("fall-1", "fall_sensor", "0301"),
    ("pend-7", "safety_alarm", "0301"),
    ("pend-8", "safety_alarm", "0301"),
    ("disp-3", "medication_dispenser", "0301"),
]


RECORD_CONNECTION = """() => {
  window.__shown = [];
  const badge = document.getElementById("conn");
  const banner = document.getElementById("offline");
  const note = () => {
    if (badge && window.__shown.at(-1) !== badge.dataset.state) window.__shown.push(badge.dataset.state);
    const shown = banner && !banner.hidden && `banner:${banner.dataset.state}`;
    if (shown && window.__shown.at(-1) !== shown) window.__shown.push(shown);
  };
  const watch = new MutationObserver(note);
  for (const node of [badge, banner]) if (node) watch.observe(node, { attributes: true });
  note();
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorPage:
    """One operator (kari) on the queue page; a colleague (per) reachable through `api`."""

    page: Page
    proxy: TcpProxy
    pub: Publisher
    db: Path
    base: str
    problems: list[str]
    hub: AlarmHub | None
    start_hub: Any  # () -> Awaitable[AlarmHub]
    stop_hub: Any  # () -> Awaitable[None]
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, user: str = "per") -> httpx.AsyncClient:
        """A colleague's API client, straight to the hub (not through the page's proxy)."""
        assert self.hub is not None
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.hub.http_port}",
            headers={"Authorization": f"Bearer {self.tokens[user]}"},
            timeout=10,
        )

    async def raise_alarm(self, device: str, msg_id: str, etype: str = "button.pressed") -> str:
        """Publish a press (or `etype`) and wait until its alarm is stored: its id."""
        self.pub.publish(*native(device, msg_id, etype))
        sql = "SELECT id FROM alarms WHERE device_id = ? AND state != 'resolved'"
        assert await async_wait_until(lambda: bool(db_rows(self.db, sql, (device,))), 20)
        return str(db_rows(self.db, sql, (device,))[0][0])

    def row(self, device: str) -> Any:
        return self.page.locator("#queue tbody tr", has_text=device)

    async def conn_state(self) -> str:
        return str(await self.page.get_attribute("#conn", "data-state"))

    async def record_connection(self) -> None:
        """From now on, every state the badge shows and every showing of the banner is
        recorded in the page (`window.__shown`): a state that lasted a moment is not
        missed by a test that looks later."""
        await self.page.evaluate(RECORD_CONNECTION)

    async def shown(self) -> list[str]:
        """What `record_connection` recorded: badge states, and `banner:<state>` each time
        the banner appeared or changed (`connecting`, `stale`)."""
        return list(await self.page.evaluate("window.__shown"))

    async def wait_shown(self, what: str) -> None:
        await self.page.wait_for_function(
            "w => (window.__shown ?? []).includes(w)", arg=what, timeout=CEILING_MS
        )

    async def open_with_clock_held(self, *routes: tuple[str, Any], path: str = "/") -> None:
        """Open the queue page afresh with its clock standing still (Playwright's clock),
        `routes` (pattern, handler) in place before it makes a request and after the old
        page made its last.

        From here no timer of the page fires — not the periodic reads, not a retry, not a
        batched render — unless the test moves the page's time (`page.clock.run_for`), so
        what the page does meanwhile it does for a reason that is not a timer: a stream
        (re)opened, an answer, a key. A read seen after moving the clock by less than a
        period cannot be that period's read, on any machine, however slow: the verdict
        rests on the page's time, which only the test moves, never on the wall clock.
        Rows the page draws from a read are drawn at once; a live change waits for its
        render timer, so put what a test needs on screen in the store before this.
        `path`: the page's address, e.g. "/?max_rows=3" (the most alarms it reads).
        """
        await self.page.goto("about:blank")  # the old page's timers go with it
        start = SystemClock().now()
        # Installed behind and moved forward to now: pause_at may not go back in time.
        await self.page.clock.install(time=start - timedelta(minutes=1))
        await self.page.clock.pause_at(start)
        for pattern, handler in routes:
            await self.page.route(pattern, handler)
        await self.page.goto(f"{self.base}{path}")


def _seed(
    db_url: str, db: Path, tmp_path: Path, devices: list[tuple[str, str, str]]
) -> dict[str, str]:
    register_devices(db_url, DEVICES + devices, tmp_path)
    now = SystemClock().now()
    tokens: dict[str, str] = {}
    with accounts.connect(db) as conn:
        for name in ("kari", "per"):
            accounts.create_user(conn, name, Role.OPERATOR, ["0301"], _HASH, now, ())
            tokens[name] = accounts.create_token(conn, name, now, None, ())
    return tokens


def _watch(page: Page, problems: list[str]) -> None:
    """Script errors are problems; failed requests are expected here (faults are injected)."""
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))


async def login(page: Page, base: str, name: str = "kari") -> None:
    await page.goto(f"{base}/")
    assert "/login" in page.url, page.url  # no session: the page sends us to the form
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_url(f"{base}/")


@contextlib.asynccontextmanager
async def operator_page(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    devices: list[tuple[str, str, str]] | None = None,
    **settings: Any,
) -> AsyncIterator[OperatorPage]:
    """The page logged in as kari and live; `devices` (id, kind, municipality) are
    registered besides DEVICES, `settings` go to the hub."""
    if not Path(CHROMIUM).exists():
        raise AssertionError("chromium is not installed: `apt-get install chromium`")
    db = tmp_path / "alarmhub.db"
    db_url = f"sqlite:///{db}"
    tokens = _seed(db_url, db, tmp_path, devices or [])
    port = free_port()
    hs = hub_settings(tmp_path, broker.url, client_id, http_listen=f"127.0.0.1:{port}", **settings)
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    problems: list[str] = []
    async with AsyncExitStack() as outer, TcpProxy(port) as proxy, async_playwright() as pw:
        outer.callback(pub.close)
        hub_stack = AsyncExitStack()
        outer.push_async_callback(hub_stack.aclose)

        async def start_hub() -> AlarmHub:
            hub = await hub_stack.enter_async_context(AlarmHub(hs))
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(20)
            view.hub = hub
            return hub

        async def stop_hub() -> None:
            await hub_stack.aclose()
            view.hub = None

        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        outer.push_async_callback(browser.close)
        context = await browser.new_context(
            viewport={"width": 1280, "height": 900}, locale="nb-NO", timezone_id="Europe/Oslo"
        )
        page = await context.new_page()
        _watch(page, problems)
        base = f"http://127.0.0.1:{proxy.port}"
        view = OperatorPage(page, proxy, pub, db, base, problems, None, start_hub, stop_hub)
        view.tokens = tokens
        await start_hub()
        await login(page, base)
        await page.wait_for_selector("#conn[data-state='live']", timeout=CEILING_MS)
        yield view
