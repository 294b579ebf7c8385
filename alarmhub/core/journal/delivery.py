"""What the journal's answers mean, and when to try again: the delivery's pure decisions.

The shell (alarmhub/journal/client.py) sends the Bundle and polls its status URL;
each HTTP answer becomes one of these named outcomes, and the worker
(daemon/journal.py) turns it into the export's next state. No I/O; the random draw
of the jitter is an argument.

JFT answers `POST /v1/Bundle` with `202 Accepted` and a `Location` to poll (VKP.md).
*Provisional* (not yet confirmed with NHN): polling that Location answers `202` (or
`200` with `{"status": "pending"}`) while the EPJ has not answered, `200` with
`{"status": "confirmed"}` once journaled, and `200` with `{"status": "refused",
"reason": …}` or a 4xx with a FHIR OperationOutcome when refused. An answer about the
sender or the address rather than the note (401, 403, 404, 410) is retried, never a
refusal: there is no resend of a refused note.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from alarmhub.core.national_id import redact_quoted

MAX_REASON = 200
RETRYABLE = frozenset({408, 425, 429})  # and every 5xx
# Answers about who sends or where, not about the note: the municipality's sign-in
# refused (a clock off, a client not yet approved for JFT, a revoked key) or no such
# endpoint (ALARMHUB_JOURNAL_URL mistyped). Refused for good, every note answered until
# the fix was lost to the journal (there is no resend); retried, they go once it is fixed.
NOT_ABOUT_THE_NOTE = frozenset({401, 403, 404, 405, 410})
GONE = frozenset({404, 410})  # a status URL the journal no longer knows


class RefusalClass(StrEnum):
    """Why the journal refused, bounded: a metric label and the alert's grouping."""

    INVALID = "invalid"  # 400, 422: the document (or a code in it) is not accepted
    # 401, 403 and 404, 410 are retried (NOT_ABOUT_THE_NOTE); these two labels stay, at 0.
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    JOURNAL = "journal"  # the EPJ itself refused it, after accepting the request
    OTHER = "other"  # any other 4xx


@dataclass(frozen=True, slots=True)
class Accepted:
    """202: the journal took the request; poll `location` for the EPJ's answer."""

    location: str


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The EPJ journaled the note."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """Not answered yet: poll again later."""


@dataclass(frozen=True, slots=True)
class Refused:
    kind: RefusalClass
    reason: str  # the journal's words, redacted and cut short


@dataclass(frozen=True, slots=True)
class Retry:
    """A failure that says nothing about the document: 5xx, timeout, no connection, a
    sign-in or an address the journal refused."""

    error: str


@dataclass(frozen=True, slots=True)
class Resend:
    """The status URL is gone (the journal forgot it): post the same note again, which
    the journal recognises by its identifier, and poll the status it answers with."""

    error: str


Outcome = Accepted | Confirmed | Waiting | Refused | Retry | Resend


def reason_text(body: object, status: int) -> str:
    """The journal's reason: `reason`, or an OperationOutcome's first diagnostics/text.

    Redacted (any national identity number masked, grouped as people write it or not:
    a journal might quote the patient's number back) and cut short: it goes on the
    row, the API, the page and the log.
    """
    found = ""
    if isinstance(body, Mapping):
        reason = body.get("reason")
        issues = body.get("issue")
        if isinstance(reason, str):
            found = reason
        elif isinstance(issues, list) and issues and isinstance(issues[0], Mapping):
            first = issues[0]
            details = first.get("details")
            text = details.get("text") if isinstance(details, Mapping) else None
            found = str(first.get("diagnostics") or text or first.get("code") or "")
    return redact_quoted(found.strip() or f"HTTP {status}")[:MAX_REASON]


def refusal_class(status: int) -> RefusalClass:
    if status in (400, 422):
        return RefusalClass.INVALID
    return RefusalClass.OTHER


def _failed(status: int, body: object) -> Refused | Retry:
    if status >= 500 or status in RETRYABLE:
        return Retry(f"the journal answered {status}")
    if status in NOT_ABOUT_THE_NOTE:
        return Retry(f"the journal answered {status}: {reason_text(body, status)}")
    return Refused(refusal_class(status), reason_text(body, status))


def after_post(status: int, location: str | None, body: object) -> Outcome:
    """The answer to `POST /v1/Bundle`."""
    if status == 202:
        if not location:
            return Retry("the journal answered 202 without a Location")
        return Accepted(location)
    if status in (200, 201):  # journaled at once (a resend of a confirmed note)
        return Confirmed()
    return _failed(status, body)


def after_poll(status: int, body: object) -> Outcome:
    """The answer to polling the status URL."""
    if status == 202:
        return Waiting()
    if status == 200:
        said = body.get("status") if isinstance(body, Mapping) else None
        if said == "confirmed":
            return Confirmed()
        if said == "refused":
            return Refused(RefusalClass.JOURNAL, reason_text(body, status))
        return Waiting()
    if status in GONE:
        return Resend(f"the journal answered {status} to the status URL: sending it again")
    return _failed(status, body)


def backoff(attempts: int, base_s: float, max_s: float, draw: float) -> timedelta:
    """Exponential backoff with full jitter: a uniform wait in [0, min(max, base·2^n)).

    `draw` is uniform in [0, 1) (the shell's random). Full jitter spreads the retries
    of many exports after a journal outage instead of sending them in one wave.
    """
    ceiling = min(max_s, base_s * 2 ** min(attempts, 30))
    return timedelta(seconds=ceiling * draw)
