"""structlog set-up: JSON lines for machines, readable lines on a terminal.

Ids (`alarm_id`, `device_id`, `municipality`) are bound through contextvars by
the shell; no resident's personal data (names, addresses, positions) is ever a
log field. Event names are stable (`alarm.raised`, `message.dead_lettered`, …):
dashboards and runbooks refer to them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto", stream: Any = None
) -> None:
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write() per line: print() writes the line and its newline separately, so
        # a kill -9 between the two glued the next start's first line onto this one.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


class OncePer:
    """Say an unchanged, repeating problem once per interval, not once per message.

    Keys can come from the wire (a dead letter's device id from its topic), so the
    keys kept are bounded: past `max_keys`, those whose interval has passed with
    nothing suppressed are forgotten (they would log at once anyway), and if more
    than half are left, the oldest go down to half (each may be logged once more).
    2,000 ghost device ids kept 2,000 keys for ever.
    """

    def __init__(self, interval_s: float = 60.0, max_keys: int = 10_000) -> None:
        self._interval = interval_s
        self._max = max_keys
        self._last: dict[str, tuple[float, int]] = {}

    def should_log(self, key: str) -> tuple[bool, int]:
        """Return (log now?, how many were suppressed since the last time)."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is None or now - last[0] >= self._interval:
            suppressed = last[1] if last else 0
            self._last[key] = (now, 0)
            if last is None and len(self._last) > self._max:
                self._forget(now)
            return True, suppressed
        self._last[key] = (last[0], last[1] + 1)
        return False, 0

    def warn(self, logger: Any, event: str, **fields: object) -> None:
        """`event` at warning level once per interval, with how many were not said since."""
        should, suppressed = self.should_log(event)
        if should:
            logger.warning(event, since_last=suppressed, **fields)

    def __len__(self) -> int:
        return len(self._last)

    def _forget(self, now: float) -> None:
        kept = {k: v for k, v in self._last.items() if v[1] or now - v[0] < self._interval}
        # Down to half at most, so that the sweep (over every key) runs once per
        # max_keys / 2 new keys, never once per message of a flood.
        if len(kept) > self._max // 2:
            kept = dict(list(kept.items())[len(kept) - self._max // 2 :])
        self._last = kept
