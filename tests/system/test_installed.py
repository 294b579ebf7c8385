"""An installed alarmhub runs on its own: the wheel carries its rules and profiles (issue 11).

The module builds the wheel from this checkout and installs it, with its dependencies
from the machine's ordinary package index, into a new virtual environment under a
temporary directory. Every command then runs from an empty working directory with
only the three settings the README's "Point it at a real broker" sets: no
ALARMHUB_RULES, no ALARMHUB_DEVICES_DIR, no checkout on the path. Before the fix the
first of them failed with `…/site-packages/devices: is not a directory of device
profiles`.

The environment is made with `--without-pip` and filled by this interpreter's pip
(`pip --python`): the same pip, without a second copy of it installed each run.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from alarmhub import builtin
from alarmhub.dev.mosquitto import LocalBroker, free_port
from tests.support.helpers import REPO, Publisher, native, run_cli, wait_until

DEVICE = "pend-0042"


class Installed:
    """A virtual environment with the wheel installed, and an empty place to run it."""

    def __init__(self, venv: Path, workdir: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.bin = venv / "bin"

    def env(self, **settings: str) -> dict[str, str]:
        # Nothing from the test run's environment that could lead back to the checkout:
        # no PYTHONPATH, no ALARMHUB_* beyond what the caller names.
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        if "HOME" in os.environ:
            env["HOME"] = os.environ["HOME"]
        env.update(settings)
        return env

    def alarmhub(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "alarmhub"), *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def _run(cmd: list[str], timeout: float) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    dist = root / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist)]
    if importlib.util.find_spec("hatchling") is not None:
        # The build backend is already here: no isolated build environment to fill.
        build.append("--no-build-isolation")
    _run([*build, str(REPO)], timeout=180)
    wheels = list(dist.glob("alarmhub-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=60)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    # Exactly the production install docs/operations.md gives: the locked, hashed
    # dependencies, then the wheel alone. A lock that misses a dependency fails `pip check`.
    lock = REPO / "requirements" / "run.lock"
    _run([*pip, "install", "--quiet", "--require-hashes", "--only-binary", ":all:", "-r", str(lock)],
         timeout=240)  # fmt: skip
    _run([*pip, "install", "--quiet", "--no-deps", str(wheels[0])], timeout=120)
    _run([*pip, "check"], timeout=60)
    workdir = root / "empty"
    workdir.mkdir()
    return Installed(venv, workdir)


def _settings(
    tmp_path: Path, broker_url: str = "mqtt://127.0.0.1:1", port: int = 0
) -> dict[str, str]:
    return {
        "ALARMHUB_MQTT_URL": broker_url,
        "ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'alarmhub.db'}",
        "ALARMHUB_HTTP_LISTEN": f"127.0.0.1:{port}",
    }


def test_the_package_runs_from_the_environment_and_carries_the_checkouts_files(
    installed: Installed,
) -> None:
    result = subprocess.run(
        [
            str(installed.bin / "python"),
            "-c",
            "import alarmhub.builtin as b; print(b.__file__); print(b.rules_file()); print(b.devices_dir())",
        ],
        env=installed.env(),
        cwd=installed.workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    module, rules, devices = (Path(line) for line in result.stdout.splitlines())
    site = installed.venv / "lib"
    assert module.is_relative_to(site), "the checkout, not the wheel, was imported"
    assert rules.is_relative_to(site)
    assert rules.parent.name == "_data"
    assert rules.read_bytes() == (REPO / "config" / "rules.toml").read_bytes()
    shipped = sorted(p.relative_to(devices) for p in devices.rglob("*") if p.is_file())
    ours = sorted(
        p.relative_to(REPO / "devices") for p in (REPO / "devices").rglob("*") if p.is_file()
    )
    assert shipped == ours


def test_rules_check_and_test_use_the_built_in_files(installed: Installed, tmp_path: Path) -> None:
    env = installed.env(**_settings(tmp_path))
    check = installed.alarmhub(["rules", "check"], env)
    assert check.returncode == 0, check.stderr
    assert "/site-packages/alarmhub/_data/rules.toml (built-in default): OK" in check.stdout
    cases = installed.alarmhub(["rules", "test"], env)
    assert cases.returncode == 0, cases.stdout + cases.stderr
    assert "_data/rules.tests.toml (built-in cases)" in cases.stdout
    assert cases.stdout.rstrip().endswith(" passed, 0 failed")


def test_overrides_still_win_and_a_missing_one_names_its_variable(
    installed: Installed, tmp_path: Path
) -> None:
    own = tmp_path / "own-rules.toml"
    own.write_bytes((REPO / "config" / "rules.toml").read_bytes())
    env = installed.env(**_settings(tmp_path), ALARMHUB_RULES=str(own))
    check = installed.alarmhub(["rules", "check"], env)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{own}: OK")
    # The built-in cases are for the built-in rules only.
    cases = installed.alarmhub(["rules", "test"], env)
    assert cases.returncode == 1
    assert "name the cases file" in cases.stderr

    missing = installed.alarmhub(
        ["rules", "check"],
        installed.env(**_settings(tmp_path), ALARMHUB_RULES=str(tmp_path / "nope.toml")),
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("alarmhub: setting ALARMHUB_RULES")
    assert "nope.toml is not a file" in missing.stderr
    no_dir = installed.alarmhub(
        ["rules", "check"],
        installed.env(**_settings(tmp_path), ALARMHUB_DEVICES_DIR=str(tmp_path / "nope")),
    )
    assert no_dir.returncode == 2
    assert no_dir.stderr.startswith("alarmhub: setting ALARMHUB_DEVICES_DIR")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.broker
def test_a_press_becomes_an_open_alarm(
    installed: Installed, broker: LocalBroker, tmp_path: Path
) -> None:
    port = free_port()
    env = installed.env(**_settings(tmp_path, broker.url, port))
    reg = installed.alarmhub(
        ["devices", "register", "--id", DEVICE, "--kind", "safety_alarm", "--municipality", "0301"],
        env,
    )
    assert reg.returncode == 0, reg.stderr

    log_path = tmp_path / "alarmhub.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [str(installed.bin / "alarmhub"), "run"],
            env=env,
            cwd=installed.workdir,
            stdout=log,
            stderr=log,
        )
    try:
        # Ready: subscribed at the broker (SUBACK), database writable, rules loaded.
        assert wait_until(lambda: daemon.poll() is not None or _ready(port), 30, 0.1), (
            log_path.read_text()
        )
        assert daemon.poll() is None, log_path.read_text()
        started = [
            orjson.loads(line)
            for line in log_path.read_bytes().splitlines()
            if b'"alarmhub.started"' in line
        ]
        assert len(started) == 1, log_path.read_text()
        assert started[0]["rules_file"].endswith("/site-packages/alarmhub/_data/rules.toml")
        assert started[0]["profiles_dir"].endswith("/site-packages/alarmhub/_data/devices")

        publisher = Publisher(broker.port)
        try:
            publisher.publish(
                *native(DEVICE, "press-1", "button.pressed", ts=datetime.now(UTC).isoformat())
            )
        finally:
            publisher.close()

        found: list[dict[str, Any]] = []

        def open_alarm() -> bool:
            listed = installed.alarmhub(["alarms", "list", "--state", "open", "--json"], env)
            assert listed.returncode == 0, listed.stderr
            found[:] = orjson.loads(listed.stdout)
            return bool(found)

        assert wait_until(open_alarm, 20, 0.2), log_path.read_text()
        assert [(a["device_id"], a["state"], a["municipality"]) for a in found] == [
            (DEVICE, "open", "0301")
        ]
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        rc = daemon.wait(timeout=30)
    assert rc == 0, f"exit {rc} after {time.monotonic() - stopping:.1f} s\n{log_path.read_text()}"
    assert list(installed.workdir.iterdir()) == [], "alarmhub wrote into its working directory"


# --- the checkout itself (and so an editable install) --------------------------------------


def test_a_checkout_uses_its_own_top_level_files() -> None:
    # Editable installs import the package from the checkout, which has no _data/.
    assert not (REPO / "alarmhub" / builtin.DATA).exists()
    assert builtin.rules_file() == REPO / "config" / "rules.toml"
    assert builtin.rules_tests_file() == REPO / "config" / "rules.tests.toml"
    assert builtin.devices_dir() == REPO / "devices"
    assert builtin.settings_reference() == REPO / "config" / "alarmhub.toml"


def test_rules_check_from_elsewhere_reads_the_built_in_rules(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALARMHUB_")}
    env["ALARMHUB_DATABASE_URL"] = f"sqlite:///{tmp_path / 'a.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "alarmhub.cli", "rules", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{REPO / 'config' / 'rules.toml'} (built-in default): OK")


def test_a_missing_rules_file_is_a_bad_setting_in_the_checkout_too(tmp_path: Path) -> None:
    result = run_cli(
        ["alarms", "list"],
        {
            "ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
            "ALARMHUB_RULES": str(tmp_path / "gone.toml"),
        },
    )
    assert result.returncode == 2
    assert result.stderr.startswith("alarmhub: setting ALARMHUB_RULES")
