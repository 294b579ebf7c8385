"""The operator page over TLS, and plain HTTP only where it is safe (issue 13 item 8).

alarmhub serves HTTPS itself when ALARMHUB_HTTP_TLS_CERT and ALARMHUB_HTTP_TLS_KEY
are set; over https its cookies are `__Host-` prefixed and Secure and every
response carries HSTS. Plain HTTP on an address other than loopback is a bad
setting unless ALARMHUB_HTTP_ALLOW_PLAIN says so, and then a warning at start.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import PASSWORD, login, stack
from tests.support.helpers import hub_settings, run_cli

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


def _set_cookies(r: httpx.Response) -> dict[str, str]:
    return {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}


@pytest.mark.broker
async def test_https_with_host_prefixed_secure_cookies_and_hsts(
    tmp_path: Path, broker: LocalBroker, client_id: str, cert: tuple[Path, Path]
) -> None:
    crt, key = cert
    tls = {"http_tls_cert": crt, "http_tls_key": key}
    async with stack(tmp_path, broker, client_id, settings=tls) as s:
        assert s.base.startswith("https://")
        async with s.client(verify=ssl.create_default_context(cafile=crt)) as browser:
            health = await browser.get("/healthz")
            assert health.status_code == 200
            assert health.headers["strict-transport-security"] == "max-age=31536000"

            r = await login(browser, "op0301")
            assert (r.status_code, r.headers["location"]) == (303, "/")
            assert r.headers["strict-transport-security"] == "max-age=31536000"
            cookies = _set_cookies(r)
            assert set(cookies) == {"__Host-alarmhub_session", "__Host-alarmhub_csrf"}
            for text in cookies.values():
                assert "; secure" in text
                assert "; path=/" in text
                assert "domain=" not in text  # __Host- forbids a Domain
            assert "httponly" in cookies["__Host-alarmhub_session"]

            me = await browser.get("/api/v1/me")
            assert (me.status_code, me.json()["name"]) == (200, "op0301")
            csrf = browser.cookies["__Host-alarmhub_csrf"]
            alarm = s.alarms["osl-pend-1"]
            ack = await browser.post(
                f"/api/v1/alarms/{alarm}/acknowledge", headers={"X-CSRF-Token": csrf}
            )
            assert ack.status_code == 200, ack.text
            out = await browser.post("/logout", headers={"X-CSRF-Token": csrf})
            assert out.status_code == 303
            cleared = _set_cookies(out)
            assert set(cleared) == {"__Host-alarmhub_session", "__Host-alarmhub_csrf"}
            assert all("; secure" in text for text in cleared.values())

        # A plain-HTTP client on the TLS port gets no page (the handshake fails).
        async with httpx.AsyncClient(base_url=s.base.replace("https:", "http:")) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/healthz")


@pytest.mark.broker
async def test_plain_http_on_loopback_keeps_plain_cookies_and_no_hsts(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    # The demo and the tests: a browser drops a Secure cookie over http://127.0.0.1.
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client() as browser:
        r = await login(browser, "op0301")
        cookies = _set_cookies(r)
        assert set(cookies) == {"alarmhub_session", "alarmhub_csrf"}
        assert all("secure" not in text for text in cookies.values())
        assert "strict-transport-security" not in r.headers
        # Only a trusted proxy (uvicorn's FORWARDED_ALLOW_IPS, 127.0.0.1 here) makes it https.
        proxied = await login(browser, "op0301b", **{"X-Forwarded-Proto": "https"})
        assert set(_set_cookies(proxied)) == {"__Host-alarmhub_session", "__Host-alarmhub_csrf"}


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080"])
def test_plain_http_on_the_network_needs_a_setting(listen: str) -> None:
    result = run_cli(["run"], {"ALARMHUB_HTTP_LISTEN": listen})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for named in (
        "ALARMHUB_HTTP_LISTEN",
        "ALARMHUB_HTTP_TLS_CERT",
        "ALARMHUB_HTTP_TLS_KEY",
        "ALARMHUB_HTTP_ALLOW_PLAIN=true",
    ):
        assert named in lines[0]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ALARMHUB_HTTP_TLS_CERT": "{crt}"}, "ALARMHUB_HTTP_TLS_KEY"),
        ({"ALARMHUB_HTTP_TLS_KEY": "{key}"}, "ALARMHUB_HTTP_TLS_KEY"),
        (
            {"ALARMHUB_HTTP_TLS_CERT": "/nonexistent.pem", "ALARMHUB_HTTP_TLS_KEY": "{key}"},
            "ALARMHUB_HTTP_TLS_CERT",
        ),
        (
            {"ALARMHUB_HTTP_TLS_CERT": "{crt}", "ALARMHUB_HTTP_TLS_KEY": "{crt}"},
            "ALARMHUB_HTTP_TLS_KEY",
        ),  # not a key
    ],
)
def test_a_bad_tls_setting_is_one_line(
    env: dict[str, str], named: str, cert: tuple[Path, Path]
) -> None:
    crt, key = cert
    env = {k: v.format(crt=crt, key=key) for k, v in env.items()}
    result = run_cli(["alarms", "list"], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]


@pytest.mark.broker
async def test_allowed_plain_http_on_the_network_warns_at_start(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    settings = hub_settings(
        tmp_path, broker.url, client_id, http_listen="0.0.0.0:0", http_allow_plain=True
    )
    with capture_logs() as logs:
        async with AlarmHub(settings):
            pass
    warnings = [e for e in logs if e["event"] == "http.plain"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["listen"] == "0.0.0.0:0"


@pytest.mark.broker
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
async def test_a_browser_logs_in_and_acknowledges_over_https(
    tmp_path: Path, broker: LocalBroker, client_id: str, cert: tuple[Path, Path]
) -> None:
    """The page's own script sends the __Host- CSRF cookie's token: acknowledge needs it."""
    from playwright.async_api import async_playwright  # noqa: PLC0415 - only this test

    crt, key = cert
    tls = {"http_tls_cert": crt, "http_tls_key": key}
    async with stack(tmp_path, broker, client_id, settings=tls) as s, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(ignore_https_errors=True)  # self-signed
            page = await context.new_page()
            failed: list[str] = []
            page.on(
                "response",
                lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            await page.goto(f"{s.base}/")
            assert "/login" in page.url
            await page.fill("#username", "op0301")
            await page.fill("#password", PASSWORD)
            await page.press("#password", "Enter")
            await page.wait_for_url(f"{s.base}/")
            jar = {c["name"]: c for c in await context.cookies()}
            assert set(jar) == {"__Host-alarmhub_session", "__Host-alarmhub_csrf"}
            assert all(c["secure"] and c["path"] == "/" for c in jar.values())

            row = page.locator("#queue tbody tr", has_text="Oslo-resident-1")
            await row.wait_for(timeout=10_000)
            await page.keyboard.press("a")  # acknowledge the selected (only) row: a POST
            await row.locator("td.state", has_text="Kvittert").wait_for(timeout=5000)
            assert failed == []
            await page.click("#logout")
            await page.wait_for_url(f"{s.base}/login*")
        finally:
            await browser.close()
