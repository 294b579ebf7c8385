"""The lock files agree with pyproject.toml and with each other (docs/operations.md).

`make` installs requirements/dev.lock and runs the tests; production installs
requirements/run.lock. So every runtime pin must be the same in both, and every pin
must lie inside pyproject.toml's ranges (a lock left stale by a pyproject.toml edit
fails here, not in a deployment). `make lock` regenerates both.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.helpers import REPO

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def pins(lock: Path) -> dict[str, str]:
    text = lock.read_text(encoding="utf-8")
    found: dict[str, str] = {
        canonicalize_name(name): version for name, version in PIN.findall(text)
    }
    # Every pinned entry carries its hashes: pip's --require-hashes refuses the file otherwise.
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n", text.index("-o ")) + 1 :])
    assert all("--hash=sha256:" in entry for entry in entries if entry.strip()), lock
    return found


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
RUN = pins(REPO / "requirements" / "run.lock")
DEV = pins(REPO / "requirements" / "dev.lock")


def test_production_gets_the_versions_the_tests_ran_with() -> None:
    assert RUN, "requirements/run.lock pins nothing"
    differ = {name: (v, DEV.get(name)) for name, v in RUN.items() if DEV.get(name) != v}
    assert differ == {}, "run.lock and dev.lock disagree (run.lock, dev.lock): run `make lock`"


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        (RUN, PROJECT["dependencies"]),
        (DEV, PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]),
    ],
    ids=["run.lock", "dev.lock"],
)
def test_every_pin_is_inside_pyproject_ranges(
    lock: dict[str, str], requirements: list[str]
) -> None:
    outside = []
    for spec in map(Requirement, requirements):
        version = lock.get(canonicalize_name(spec.name))
        if version is None or not spec.specifier.contains(version, prereleases=True):
            outside.append(f"{spec} (locked: {version})")
    assert outside == [], "the lock is stale for pyproject.toml: run `make lock`"
