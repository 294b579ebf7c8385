"""Pages of GET /api/v1/devices: the size bounds, the `Link` headers, the opaque cursor.

A municipality has thousands of devices (issue 13 item 3): one unbounded list was
read, serialised and rendered whole on every load of the devices page. The list
stays a JSON array (clients that read it keep working, page by page), and the
next page is announced in headers, as GitHub's API does.
"""

from __future__ import annotations

import base64
import binascii

import orjson

from alarmhub.web.errors import ApiError

# Devices per page of GET /devices: the default, and the most one request may ask for.
DEVICE_PAGE = 100
MAX_DEVICE_PAGE = 1000
# A cursor holds a device id: up to 128 characters of up to 4 UTF-8 bytes, base64 (4/3).
MAX_CURSOR = 1024
PAGE_HEADERS = {
    "Link": {
        "description": 'the next page, `<…&cursor=…>; rel="next"`; absent on the last page',
        "schema": {"type": "string"},
    },
    "X-Next-Cursor": {
        "description": "the `cursor` of the next page; absent on the last page",
        "schema": {"type": "string"},
    },
}


def encode_device_cursor(municipality: str, device_id: str) -> str:
    raw = orjson.dumps([municipality, device_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_device_cursor(cursor: str) -> tuple[str, str]:
    """The (municipality, id) a page starts after; 422 for anything this API did not make."""
    bad = ApiError(
        422,
        "validation",
        "query.cursor: not a cursor from this API",
        fields=[{"field": "query.cursor", "message": "not a cursor from this API"}],
    )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        # validate: urlsafe_b64decode skips characters outside the alphabet.
        value = orjson.loads(base64.b64decode(padded, altchars=b"-_", validate=True))
    except (binascii.Error, ValueError):
        raise bad from None
    match value:
        case [str(municipality), str(device_id)]:
            return municipality, device_id
    raise bad
