"""Each log line reaches the stream in one write, newline included.

A process killed -9 between a line and its newline (print() writes them apart)
left a line without an end, and the next start's first line was glued onto it:
the log then said a daemon had started three times when it had started four.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest
import structlog

from alarmhub.observability.logs import configure_logging


class WriteRecorder:
    """A stream that keeps every write() call it is given, as the kernel would see them."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("restore_structlog")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_one_write_per_line(fmt: Literal["json", "console"]) -> None:
    out = WriteRecorder()
    configure_logging(fmt=fmt, stream=out)
    logger = structlog.get_logger("t")
    logger.info("mqtt.connecting", host="127.0.0.1", port=1883)
    logger.warning("message.dead_lettered", reason="malformed_json")
    logger.info("mqtt.connected")
    assert len(out.writes) == 3, out.writes
    for text in out.writes:
        assert text.endswith("\n"), text
        assert text.count("\n") == 1, text
    assert "mqtt.connecting" in out.writes[0]
