"""The journal service over HTTP: post a Bundle, poll its status URL (issue 17).

Every request carries the municipality's authorisation (`RequestAuth`: HelseID with
a fresh DPoP proof per request in production, NoAuth in tests); a response the
auth learns from (a DPoP nonce, an expired token) is retried once at once. Every
answer becomes a named outcome (core/journal/delivery.py); a timeout or a
connection error is a Retry, never an exception out of here.
"""

from __future__ import annotations

from urllib.parse import urljoin

import httpx
import orjson

from alarmhub.core.journal.delivery import Outcome, Retry, after_poll, after_post
from alarmhub.journal.auth import RequestAuth

BUNDLE_PATH = "/v1/Bundle"
FHIR_JSON = "application/fhir+json"


class JournalClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    @property
    def http(self) -> httpx.AsyncClient:
        """The connection pool the requests (and a municipality's token requests) share."""
        return self._http

    async def post_bundle(self, bundle: bytes, auth: RequestAuth) -> Outcome:
        url = self._base + BUNDLE_PATH
        try:
            response = await self._request("POST", url, auth, bundle)
        except httpx.HTTPError as exc:
            return Retry(_error(exc))
        location = response.headers.get("location")
        return after_post(
            response.status_code, urljoin(url, location) if location else None, _body(response)
        )

    async def poll(self, location: str, auth: RequestAuth) -> Outcome:
        try:
            response = await self._request("GET", location, auth, None)
        except httpx.HTTPError as exc:
            return Retry(_error(exc))
        return after_poll(response.status_code, _body(response))

    async def _request(
        self, method: str, url: str, auth: RequestAuth, content: bytes | None
    ) -> httpx.Response:
        for _ in range(2):  # the second only when the auth asks for it (a fresh nonce)
            headers = {"accept": FHIR_JSON, **await auth.headers(method, url)}
            if content is not None:
                headers["content-type"] = FHIR_JSON
            response = await self._http.request(method, url, content=content, headers=headers)
            if not auth.observe(response.status_code, dict(response.headers)):
                return response
        return response


def _body(response: httpx.Response) -> object:
    try:
        return orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None


def _error(exc: httpx.HTTPError) -> str:
    """The kind of failure, not its text: an httpx message may quote the URL's query."""
    return f"{type(exc).__name__}: the journal could not be reached"
