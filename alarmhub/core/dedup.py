"""Message identity: is this a message alarmhub already has, or a new one?

MQTT QoS 1 delivers a message at least once, and a device resends until it has
a receipt, so one message can arrive many times and must count once. But a
message id is only the device's word, and devices break it: a pendant whose
counter restarts after a battery change sends "id 7" again, months after the
first "id 7", and that second press is a person asking for help, not a resend.
An id remembered forever and compared without its content threw those presses
away as redeliveries (issue 12 item 12).

So a message is the same message only when all of these hold:

- it has the same identity: (device, message id) for a decoded message, its
  exact bytes on its topic for a dead letter (``pipeline.fingerprint``);
- the copy alarmhub stored under that identity arrived within the window: the
  message-id window (hours) for ids the device gave, the content window
  (seconds) for ids alarmhub made from the content of a format without ids;
- it carries the same bytes (a redelivery and a resend are the same bytes; an
  id reused for other content is a new message, flagged ``id_reused``);
- and, for messages identified by their content alone (no id of their own: a
  content hash, or a dead letter), nothing the first copy raised has been
  resolved since. Two identical presses of a Zigbee SOS button are identical
  bytes; once an operator resolved the first one's alarm, the second is a new
  call for help, never a redelivery of the first. A SCAIP request is judged the
  same way: its `ref` is a counter that restarts (a battery change) and its body
  carries no time, so a press after the restart is byte for byte an earlier one.
  A device's genuine resends (every 5-20 s, for at most 30 minutes) are about an
  alarm still active, and stay redeliveries. Under `hold_until_taken` they need
  not be: an operator may take and resolve the alarm between two resends, and
  the device, told only HOLD so far, sends the request again. The intake knows
  it answered that request HOLD moments ago (``RawMessage.resending``): the
  device's session for it is still open, so the same bytes are that request,
  never a new alarm. A `ref` whose session ended (answered 0) is judged as above.

A redelivery must still be a no-op within the window (a crash between commit
and acknowledgement makes the broker deliver again at reconnect), so the
window has to be longer than any delay of a redelivery: see
``message_id_dedup_window_h`` in config/alarmhub.toml for the reasoning behind
the default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Identity(StrEnum):
    """What dedup decided for one message; stored on its inbox row (NULL for NEW)."""

    NEW = "new"  # nothing stored under this identity
    REDELIVERY = "redelivery"  # the same message again: no second event
    ID_REUSED = "id_reused"  # same id within the window, other content: a new message
    WINDOW_PASSED = "window_passed"  # same id and content, but the first is older than the window
    ALARM_RESOLVED = "alarm_resolved"  # identical content, but its alarm was resolved since
    # The broker's retained copy of a message older than the inbox keeps any: a
    # redelivery of one whose row was pruned, never news of the device (identify).
    STALE_RETAINED = "stale_retained"

    @property
    def is_new(self) -> bool:
        return self not in (Identity.REDELIVERY, Identity.STALE_RETAINED)


# A dead letter's payload is stored as this many first bytes, its size and its
# sha256 (issue 13 item 1): a device sending 200 MB messages must not fill the disk.
DEAD_LETTER_KEPT_BYTES = 512


def payload_digest(payload: bytes) -> str:
    """The hash a payload stored only in part is recognised by (hex sha256)."""
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, slots=True)
class Prior:
    """The latest message the store (or this batch) holds under one identity."""

    received_at: datetime
    payload: bytes
    alarm_ids: tuple[str, ...] = ()  # alarms its events raised or joined
    # Set when `payload` holds only the first bytes (a large dead letter): the
    # sha256 of the whole payload, which a redelivery is compared by instead.
    digest: str | None = None

    def same_content(self, payload: bytes, digest: str | None = None) -> bool:
        """Whether `payload` is this message's; `digest`: its sha256, when it was cut too."""
        if self.digest is None and digest is None:
            return payload == self.payload
        mine = self.digest if self.digest is not None else payload_digest(self.payload)
        theirs = digest if digest is not None else payload_digest(payload)
        return mine == theirs


@dataclass(frozen=True, slots=True)
class Windows:
    """How long an identity stays the same message."""

    message_id: timedelta = timedelta(hours=24)  # ids the device gave
    content: timedelta = timedelta(seconds=30)  # ids made from the content (``h:…``)


def identify(
    prior: Prior | None,
    payload: bytes,
    received_at: datetime,
    window: timedelta,
    *,
    by_content: bool,
    alarm_active: Callable[[str], bool],
    digest: str | None = None,
    retained: bool = False,
    device_time: datetime | None = None,
    retained_max_age: timedelta | None = None,
    resending: bool = False,
) -> Identity:
    """Decide whether a message is the `prior` one again.

    `by_content`: the message has no id of its own (a content hash or a dead
    letter), or one the device restarts (a SCAIP `ref`), so identical bytes are
    all that ties it to the prior one.
    `alarm_active(id)` says whether an alarm is still active now.
    `digest`: the sha256 of the whole payload when `payload` is only its first
    bytes (an oversized message, cut on arrival): compared instead of the bytes.
    `retained`: MQTT's retain flag. The broker sends a topic's retained message
    again at every subscription (alarmhub subscribes at each connect), days after
    it was published (OwnTracks keeps positions retained): the same bytes as one
    stored are that message again, past the window too. Taken for a new message,
    a phone dead for days was "heard" (its device_offline resolved) and judged
    at its old position.
    `device_time`: the newest time the message's events claim (None: it gives
    none). `retained_max_age`: the inbox's retention. A retained message whose
    device time is older than that may be one whose row was pruned (`prior` is
    then None): the broker re-sends an OwnTracks phone's position of two weeks
    ago at every reconnect. It is STALE_RETAINED, a redelivery: what a retained
    copy of a stored message is, so pruning changes nothing. Taken for new, it
    was the dead phone "heard" again, judged at a two-week-old position. One
    without a device time cannot be dated and is judged as before.

    `resending`: the sender is still resending this request (a SCAIP device
    answered HOLD for it moments ago): identical bytes are a redelivery even if
    its alarm was resolved since; it is the same call for help, still unanswered.

    A wall clock stepped back (NTP) makes the age negative: that counts as
    within the window, the safe side for a redelivery.
    """
    if retained and prior is not None and prior.same_content(payload, digest):
        return Identity.REDELIVERY
    if retained and _older(device_time, received_at, retained_max_age):
        return Identity.STALE_RETAINED
    if prior is None:
        return Identity.NEW
    if received_at - prior.received_at > window:
        return Identity.WINDOW_PASSED
    if not prior.same_content(payload, digest):
        return Identity.ID_REUSED
    if by_content and not resending and any(not alarm_active(a) for a in prior.alarm_ids):
        return Identity.ALARM_RESOLVED
    return Identity.REDELIVERY


def _older(device_time: datetime | None, received_at: datetime, age: timedelta | None) -> bool:
    return device_time is not None and age is not None and received_at - device_time > age


# The message id alarmhub makes from the content of a message whose format has
# no id of its own (core/decode.py): `h:<hash of the bytes>:<window>`.
CONTENT_ID_PREFIX = "h:"
