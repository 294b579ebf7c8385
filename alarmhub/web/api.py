"""The HTTP application: health, readiness and metrics (the API grows here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from alarmhub.app import AlarmHub


def create_app(hub: AlarmHub) -> FastAPI:
    app = FastAPI(
        title="alarmhub",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/healthz", include_in_schema=True)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: broker connected, database writable, rules loaded."""
        checks = {
            "broker_connected": hub.mqtt_connected,
            "database_writable": hub.metrics.store_writable._value.get() == 1,  # noqa: SLF001
            "rules_loaded": bool(hub.rules.version),
        }
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # A plain route: prometheus-client's mounted ASGI app answers 307 -> /metrics/.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(hub.metrics.registry), media_type=content_type)

    return app
