"""The files alarmhub ships with: its device profiles, default rules and their test cases.

They live at the repository's top (``devices/``, ``config/``), where people look for
them and edit them. The wheel carries copies inside the package, under
``alarmhub/_data/`` (hatchling's ``force-include`` in pyproject.toml), so an
installed alarmhub runs from any directory with no checkout present.

A checkout, or an editable install (``pip install -e``, which imports the package
straight from the checkout), has no ``_data/``: there the built-in files are the
repository's own, so an edit to ``config/rules.toml`` is what the next run uses.
(hatchling copies ``_data/`` into site-packages for an editable install too, but
that directory has no ``__init__.py``: the checkout's regular package wins the
import, and :func:`resources.files` answers with the checkout's folder.)

Callers get real paths, not importlib ``Traversable`` objects: the daemon re-reads
the rules file on SIGHUP and walks the profiles folder, so alarmhub is not meant to
run from a zip archive.
"""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path

DATA = "_data"


def _find(in_package: str, in_checkout: str) -> Path:
    packaged = Path(str(resources.files("alarmhub").joinpath(DATA, in_package)))
    if packaged.exists():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / in_checkout
    if checkout.exists():
        return checkout
    # Neither: a wheel built without its data. Name the place the build should have
    # filled, not site-packages/devices, which would send a person looking for a checkout.
    return packaged


def devices_dir() -> Path:
    """The built-in device profiles (``devices/`` in the repository)."""
    return _find("devices", "devices")


def rules_file() -> Path:
    """The built-in rules file (``config/rules.toml`` in the repository)."""
    return _find("rules.toml", "config/rules.toml")


def rules_tests_file() -> Path:
    """The cases that test the built-in rules (``config/rules.tests.toml``)."""
    return _find("rules.tests.toml", "config/rules.tests.toml")


def settings_reference() -> Path:
    """``config/alarmhub.toml``: every setting with its default, documented.

    A reference to copy from, never read implicitly: the settings file alarmhub reads
    is ``config/alarmhub.toml`` under the working directory or ``ALARMHUB_CONFIG``.
    """
    return _find("alarmhub.toml", "config/alarmhub.toml")


def installed_version() -> str:
    """The installed alarmhub's version, as `alarmhub cluster status` lists it."""
    try:
        return metadata.version("alarmhub")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"
