"""core/sipcodes.py: how a SIP listener that could not bind tries again, and what it says."""

from __future__ import annotations

import errno

import pytest

from alarmhub.core.sipcodes import BindFailure, Rebind, bind_failure, bind_hint


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (7, 30.0), (10_000, 30.0)],
)
def test_the_wait_doubles_from_one_second_to_thirty(failures: int, delay: float) -> None:
    assert Rebind().delay(failures) == delay


def test_a_shorter_first_wait_doubles_the_same_way() -> None:
    assert [Rebind(0.05, 0.3).delay(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.3, 0.3]


@pytest.mark.parametrize(
    ("code", "reason", "hint_mentions"),
    [
        (errno.EADDRINUSE, BindFailure.ADDRESS_IN_USE, "another process"),
        (errno.EACCES, BindFailure.PERMISSION_DENIED, "CAP_NET_BIND_SERVICE"),
        (errno.EPERM, BindFailure.PERMISSION_DENIED, "CAP_NET_BIND_SERVICE"),
        (errno.EADDRNOTAVAIL, BindFailure.ADDRESS_NOT_AVAILABLE, "0.0.0.0"),
        (errno.ENOENT, BindFailure.OTHER, "ALARMHUB_SCAIP_LISTEN"),
        (None, BindFailure.OTHER, "ALARMHUB_SCAIP_LISTEN"),
    ],
)
def test_each_bind_error_has_a_named_reason_and_a_way_out(
    code: int | None, reason: BindFailure, hint_mentions: str
) -> None:
    assert bind_failure(code) is reason
    hint = bind_hint(reason)
    assert hint_mentions in hint
    assert "retries by itself" in hint
