"""`/healthz`, `/readyz` and `/metrics`: what the service manager and Prometheus ask.

They answer without authentication, outside `/api/v1`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import choose_encoder

from alarmhub.web.deps import Ctx

STORE_WRITABLE = "alarmhub_store_writable"
SIP_LISTENING = "alarmhub_sip_listening"


async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def readyz(ctx: Ctx) -> JSONResponse:
    """Readiness: broker connected (the owner only), database writable, rules loaded.

    Several instances (issue 15): `owns` lists the leases this instance holds and
    works under, `role` is "owner" with any, else "standby". A standby serves the
    API with its database reachable and is ready; only the owner's intake needs
    the broker, so its `checks` leave `broker_connected` out.

    The owner's SCAIP listener is shown (`sip_listening`, per transport) but is no
    check: a 503 would take the operator page out of a load balancer, and where a
    floating address follows readiness keep from the owner the address it must bind.
    On several instances an owner that cannot listen hands intake over instead
    (daemon/sipwatch.py); docs/operations.md says why.
    """
    hub = ctx.hub
    # The gauge the writer sets after each commit, read through the registry's public
    # API (a gauge's own value is a private attribute of prometheus-client).
    writable = hub.metrics.registry.get_sample_value(STORE_WRITABLE)
    owns = hub.owns
    checks = {"broker_connected": hub.mqtt_connected} if owns else {}
    checks |= {
        "database_writable": writable == 1,
        "rules_loaded": bool(hub.rules.version),
    }
    # HTTP serves while the first term still starts: not ready until the daemon has.
    ok = hub.ready.is_set() and all(checks.values())
    # Which broker: the URL with its password redacted (issue 13 item 10); with a list,
    # `broker` is the whole list and `mqtt_broker` the one connected to (None: none).
    # Which instance answered, when several share one database (issue 15).
    brokers = ",".join(t.shown for t in hub.settings.mqtt_brokers)
    body = {
        "ready": ok,
        "checks": checks,
        "broker": brokers,
        "mqtt_broker": hub.mqtt_broker,
        "instance_id": hub.settings.instance_id,
        "owns": owns,
        "role": "owner" if owns else "standby",
    }
    if owns and hub.settings.sip_listen:  # only the owner listens
        registry = hub.metrics.registry
        body["sip_listening"] = {
            x.transport: registry.get_sample_value(SIP_LISTENING, {"transport": x.transport}) == 1
            for x in hub.settings.sip_listen
        }
    return JSONResponse(body, status_code=200 if ok else 503)


async def metrics(request: Request, ctx: Ctx) -> Response:
    # A plain route: prometheus-client's mounted ASGI app answers 307 -> /metrics/.
    # `?name[]=x&name[]=y` exposes only those series, as prometheus-client's own
    # HTTP handler does: a cheap poll for scripts (the bench polls 4 times a second).
    names = request.query_params.getlist("name[]")
    registry = ctx.hub.metrics.registry
    exposed = registry.restricted_registry(names) if names else registry
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(exposed), media_type=content_type)


def router() -> APIRouter:
    r = APIRouter(tags=["ops"])
    r.add_api_route("/healthz", healthz)
    r.add_api_route(
        "/readyz",
        readyz,
        responses={503: {"description": "Not ready; `checks` says which check failed"}},
    )
    r.add_api_route("/metrics", metrics, include_in_schema=False)
    return r
