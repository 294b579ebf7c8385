"""One error shape everywhere: `{"error": {"code": …, "message": …}}`.

FastAPI's own errors (unknown route, validation, malformed JSON, body too
large) are rewritten into the same shape, so a client — and the OpenAPI
document, which declares these responses — has one format to handle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from alarmhub.store.errors import StoreUnavailableError

# How long a client is asked to wait when the database is out of reach: a restart or
# a failover to a standby takes seconds (docs/scaling.md).
STORE_RETRY_AFTER_S = 5


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    holder: str | None = None
    fields: list[FieldError] | None = None
    rows: list[str] | None = None
    # The open alarms that stop a device from moving (409 device_has_open_alarms).
    alarms: list[str] | None = None
    # The codes a field allows, when the one given is not among them (a resolve's cause).
    allowed: list[str] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised by handlers and dependencies; becomes an :class:`ErrorBody` response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


def not_found(what: str = "resource") -> ApiError:
    # The same answer whether it does not exist or belongs to another municipality.
    return ApiError(404, "not_found", f"no such {what}")


def forbidden(message: str = "your role may not do this") -> ApiError:
    return ApiError(403, "forbidden", message)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    detail: dict[str, Any] = {"code": code, "message": message}
    detail.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse({"error": detail}, status_code=status, headers=dict(headers or {}))


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
}


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    async def on_api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, exc.headers)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        fields = [
            {"field": _field_name(e.get("loc", ())), "message": str(e.get("msg", "invalid"))}
            for e in errors
        ]
        first = fields[0] if fields else {"field": "?", "message": "invalid"}
        return error_response(
            422, "validation", f"{first['field']}: {first['message']}", fields=fields
        )

    async def on_store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # The database out of reach (refused, restarting, cut off) is a 503 the client
        # retries, whichever store: never a 500, which says the server is broken.
        assert isinstance(exc, StoreUnavailableError)
        return error_response(
            503,
            "store_unavailable",
            "the database is out of reach for now; try again",
            {"Retry-After": str(STORE_RETRY_AFTER_S)},
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StoreUnavailableError, on_store_unavailable)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of error responses, so the document matches what is sent."""
    text = {
        400: "Malformed request (e.g. the body is not valid JSON)",
        401: "Not authenticated",
        403: "Authenticated, but the role may not do this (or the CSRF token is missing)",
        404: "Not found — also for objects of another municipality",
        409: "Conflict with the current state",
        413: "Request body larger than 1 MiB",
        422: "Validation failed; `fields` names each field",
        429: "Too many attempts; see Retry-After",
        503: "The database is out of reach for now; see Retry-After",
    }
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}
