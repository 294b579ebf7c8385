"""scripts/system-packages against a fake apt-get: it waits for another apt's locks.

On a freshly booted machine unattended-upgrades or cloud-init holds apt's locks for
minutes, and apt-get fails at once ("Could not get lock"), which failed `make test`. The
script runs here with a PATH of fakes only (so every package looks missing, `id` says
root, `sleep` returns at once), and the fake apt-get records how it was called.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.helpers import REPO

SCRIPT = REPO / "scripts" / "system-packages"
LOCKED = "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 2332 (apt-get)"

FAKE_APT_GET = """#!/bin/bash
# Records each call; `update` fails as the test says for its first calls.
echo "DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-} $*" >> "$CALLS"
if [[ " $* " == *" update "* ]]; then
  n=0; [ -f "$COUNT" ] && read -r n < "$COUNT"  # builtins only: PATH holds the fakes
  n=$((n + 1)); echo "$n" > "$COUNT"
  if [ "$n" -le "$FAILURES" ]; then echo "$FAILURE" >&2; exit 100; fi
fi
exit 0
"""


def run(tmp_path: Path, failures: int, failure: str = LOCKED) -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"apt-get": FAKE_APT_GET, "id": "#!/bin/bash\necho 0\n", "sleep": "#!/bin/bash\n"}
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env_path = shutil.which("env")
    assert env_path is not None
    (bin_dir / "env").symlink_to(env_path)
    calls = tmp_path / "calls"
    environ = {
        "PATH": str(bin_dir),
        "CALLS": str(calls),
        "COUNT": str(tmp_path / "count"),
        "FAILURES": str(failures),
        "FAILURE": failure,
        "HOME": os.environ.get("HOME", "/root"),
    }
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT), "test"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr, calls.read_text().splitlines() if calls.exists() else []


def test_apt_get_waits_for_dpkgs_lock_and_update_is_tried_again_while_the_lists_are_locked(
    tmp_path: Path,
) -> None:
    """The old script ran `apt-get update` once and failed with the lock's message."""
    rc, err, calls = run(tmp_path, failures=2)
    assert rc == 0, err
    updates = [c for c in calls if c.endswith(" update -qq")]
    installs = [c for c in calls if " install " in c]
    assert len(updates) == 3  # two refusals while another apt held the lists, then done
    assert len(installs) == 1
    for call in [*updates, *installs]:
        # dpkg's locks are waited for by apt itself; non-interactive even through sudo.
        assert "-o DPkg::Lock::Timeout=600" in call, call
        assert call.startswith("DEBIAN_FRONTEND=noninteractive "), call
    assert "mosquitto" in installs[0]
    assert err.count("another apt holds the package lists; waiting") == 2


def test_an_update_failing_for_another_reason_fails_at_once_with_its_message(
    tmp_path: Path,
) -> None:
    rc, err, calls = run(tmp_path, failures=1, failure="E: Failed to fetch http://deb.debian.org")
    assert rc != 0
    assert "Failed to fetch" in err
    assert [c for c in calls if " install " in c] == []
    assert len(calls) == 1
