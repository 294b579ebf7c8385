"""Credentials out of every URL alarmhub shows: errors, logs, `/readyz`, exceptions.

`ALARMHUB_MQTT_URL` may carry the broker password (`mqtts://user:secret@host`).
Whatever shows a URL shows `redact_url(url)`: the password becomes `***`, the
user name stays (it says which account, and is no secret). It works on text
that is not a valid URL too (a password with an unescaped `/`, `#` or `@`):
the URL most worth redacting is the one in an error message about a bad URL.
"""

from __future__ import annotations

HIDDEN = "***"


def redact_url(url: str) -> str:
    """`url` with the password of its user info replaced by `***`; anything else as is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The user info ends at the last @. Not the authority's first / ? or #, as URL
    # parsing has it: a password with an unescaped / in it would then be shown.
    # Redacting a path's @ as well costs nothing.
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    shown = f"{user}:{HIDDEN}" if colon else user
    return f"{scheme}{sep}{shown}@{host}"
