"""Contact bindings from authenticated REGISTERs: where a device's answer goes when its
MESSAGE names no Contact.

The SCAIP guideline recommends that a device REGISTER with digest; alarmhub keeps
the binding in memory for its expiry (a restart forgets it: devices re-register
well within an hour, and a MESSAGE's own Contact or From is used meanwhile). One
binding per device (the latest), bounded in number.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from sipmessage import Request

DEFAULT_EXPIRES_S = 3600
MAX_EXPIRES_S = 3600
MIN_EXPIRES_S = 60
DEFAULT_LIMIT = 200_000


class Registrar:
    def __init__(self, monotonic: Callable[[], float], *, limit: int = DEFAULT_LIMIT) -> None:
        self._now = monotonic
        self._limit = limit
        self._bindings: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def register(self, user: str, request: Request) -> tuple[str, int] | None:
        """Apply a REGISTER of `user`; the binding kept and its expiry, or None (removed/none).

        ValueError when its Contact or Expires cannot be read.
        """
        raw = (request.headers.get("Contact") or "").strip()
        if raw == "*":
            self._bindings.pop(user, None)
            return None
        contacts = request.contact
        if not contacts:  # a query: answer with the current binding
            current = self.contact_of(user)
            return (current, int(self._bindings[user][1] - self._now())) if current else None
        contact = contacts[0]
        expires_param = contact.parameters.get("expires")
        expires = int(expires_param) if expires_param else request.expires
        expires = DEFAULT_EXPIRES_S if expires is None else expires
        if expires <= 0:
            self._bindings.pop(user, None)
            return None
        expires = min(max(expires, MIN_EXPIRES_S), MAX_EXPIRES_S)
        uri = str(contact.uri)
        self._bindings[user] = (uri, self._now() + expires)
        self._bindings.move_to_end(user)
        while len(self._bindings) > self._limit:
            self._bindings.popitem(last=False)
        return uri, expires

    def contact_of(self, user: str) -> str | None:
        found = self._bindings.get(user)
        if found is None:
            return None
        uri, until = found
        if until <= self._now():
            del self._bindings[user]
            return None
        return uri
