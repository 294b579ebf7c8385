"""The journal's answers as named outcomes, and the backoff, as tables (core/journal/delivery.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alarmhub.core.journal.delivery import (
    Accepted,
    Confirmed,
    Outcome,
    RefusalClass,
    Refused,
    Resend,
    Retry,
    Waiting,
    after_poll,
    after_post,
    backoff,
)
from tests.support.national_ids import KARI

OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "ukjent kode 9.9"}]}


@pytest.mark.parametrize(
    ("status", "location", "body", "expected"),
    [
        (202, "/v1/status/1", None, Accepted("/v1/status/1")),
        (202, None, None, Retry("the journal answered 202 without a Location")),
        (201, None, None, Confirmed()),
        (500, None, None, Retry("the journal answered 500")),
        (503, None, None, Retry("the journal answered 503")),
        (429, None, None, Retry("the journal answered 429")),
        (408, None, None, Retry("the journal answered 408")),
        (400, None, OUTCOME, Refused(RefusalClass.INVALID, "ukjent kode 9.9")),
        (
            422,
            None,
            {"reason": "mangler pasient"},
            Refused(RefusalClass.INVALID, "mangler pasient"),
        ),
        # The sign-in or the address, not the note: retried, never the note given up.
        (401, None, None, Retry("the journal answered 401: HTTP 401")),
        (403, None, {"reason": "ikke godkjent"}, Retry("the journal answered 403: ikke godkjent")),
        (404, None, "not json", Retry("the journal answered 404: HTTP 404")),
        (409, None, None, Refused(RefusalClass.OTHER, "HTTP 409")),
        (413, None, None, Refused(RefusalClass.OTHER, "HTTP 413")),
    ],
)
def test_the_answer_to_a_post(
    status: int, location: str | None, body: object, expected: Outcome
) -> None:
    assert after_post(status, location, body) == expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (202, None, Waiting()),
        (200, {"status": "pending"}, Waiting()),
        (200, {"status": "confirmed"}, Confirmed()),
        (
            200,
            {"status": "refused", "reason": "ukjent pasient"},
            Refused(RefusalClass.JOURNAL, "ukjent pasient"),
        ),
        (502, None, Retry("the journal answered 502")),
        (410, None, Resend("the journal answered 410 to the status URL: sending it again")),
        (404, None, Resend("the journal answered 404 to the status URL: sending it again")),
        (401, None, Retry("the journal answered 401: HTTP 401")),
    ],
)
def test_the_answer_to_a_poll(status: int, body: object, expected: Outcome) -> None:
    assert after_poll(status, body) == expected


def test_a_reason_never_carries_a_national_identity_number_and_is_short() -> None:
    refused = after_poll(
        200, {"status": "refused", "reason": f"ukjent pasient {KARI} " + "x" * 400}
    )
    assert isinstance(refused, Refused)
    assert KARI not in refused.reason
    assert KARI[6:] not in refused.reason
    assert len(refused.reason) == 200


@pytest.mark.parametrize(
    "quoted",
    [
        f"{KARI[:6]} {KARI[6:]}",
        f"{KARI[:6]}-{KARI[6:]}",
        f"{KARI[:6]}.{KARI[6:]}",
        f"{KARI[:2]}.{KARI[2:4]}.{KARI[4:6]} {KARI[6:]}",
        f"{KARI[:2]} {KARI[2:4]} {KARI[4:6]} {KARI[6:]}",
    ],
    ids=["space", "hyphen", "dot", "dotted-date", "spaced"],
)
def test_a_reason_quoting_the_number_as_people_write_it_is_masked(quoted: str) -> None:
    """A journal (an EPJ, a person) writes the number in groups: `018190 12365`. Only a
    run of eleven digits was masked, so the individual number went to the row, the API,
    the page and the log as the journal wrote it."""
    body = {"issue": [{"severity": "error", "diagnostics": f"Pasient {quoted} finnes ikke"}]}
    refused = after_post(422, None, body)
    assert isinstance(refused, Refused)
    assert KARI[6:] not in refused.reason
    assert refused.reason == f"Pasient {KARI[:6]}***** finnes ikke"


@pytest.mark.parametrize(
    ("attempts", "draw", "seconds"),
    [
        (0, 0.5, 0.5),
        (1, 0.5, 1.0),
        (3, 1.0 - 1e-9, 8.0),
        (10, 0.5, 150.0),
        (40, 0.25, 75.0),
        (2, 0.0, 0.0),
    ],
)
def test_backoff_is_exponential_with_full_jitter_and_capped(
    attempts: int, draw: float, seconds: float
) -> None:
    waited = backoff(attempts, 1.0, 300.0, draw)
    assert isinstance(waited, timedelta)
    assert waited.total_seconds() == pytest.approx(seconds, abs=1e-6)
