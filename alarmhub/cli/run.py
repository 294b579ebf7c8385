"""`alarmhub run`: the daemon in the foreground, stopped by SIGTERM, reloaded by SIGHUP."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from typing import Any

import structlog

from alarmhub.cli.output import EXIT_FAILED, error
from alarmhub.settings import Settings
from alarmhub.store.errors import StoreError
from alarmhub.store.schema_state import SchemaVersionError

# The cyclic collector's thresholds for the daemon's process (Python's: 700, 10, 10). A storm
# holds batches of up to 2,000 messages' objects alive across young collections, so with
# the defaults each new alarm paid ~20 % of its CPU in collections that found nothing
# (issue 18; docs/performance.md). What is loaded at start is frozen (AlarmHub.__aenter__).
GC_THRESHOLDS = (20_000, 50, 100)


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run", help="run the daemon: MQTT in, alarms out, HTTP on ALARMHUB_HTTP_LISTEN"
    )
    run.set_defaults(func=cmd_run)


def cmd_run(settings: Settings, _args: argparse.Namespace) -> int:
    from alarmhub.app import AlarmHub  # noqa: PLC0415 - keep CLI start-up light

    async def run() -> None:
        loop = asyncio.get_running_loop()
        # Taken from the first moment: `alarmhub.started` is logged inside the start, and
        # a SIGHUP (systemctl reload) sent on seeing it, before the handler below was
        # installed, met the default action and ended the daemon. One asked for during
        # the start is done once it has started.
        reload_asked = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, reload_asked.set)
        async with AlarmHub(settings) as hub:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(hub.stop()))
            # SIGHUP (systemctl reload): reload the rules; a bad file keeps the old ones.
            loop.add_signal_handler(signal.SIGHUP, hub.reload_rules)
            if reload_asked.is_set():
                hub.reload_rules()
            await hub.wait_stopped()

    gc.set_threshold(*GC_THRESHOLDS)
    try:
        asyncio.run(run())
    except (SchemaVersionError, StoreError) as exc:
        # One line, before anything was written or connected to: the operator's fix
        # (`alarmhub db migrate`, the right alarmhub, a database within reach) is in it.
        error(str(exc))
        return EXIT_FAILED
    except OSError as exc:
        structlog.get_logger("alarmhub").error("alarmhub.failed", error=str(exc))
        return EXIT_FAILED
    return 0
