"""HTTP inside the daemon's event loop: uvicorn serving the FastAPI app.

uvicorn's own signal capture is switched off: it would re-raise SIGTERM after
only the web server stopped. alarmhub's composition root owns shutdown and
stops intake, the writer and the web server in order.

With `ALARMHUB_HTTP_TLS_CERT` and `ALARMHUB_HTTP_TLS_KEY` uvicorn serves HTTPS
itself. Otherwise it serves plain HTTP: on loopback (a TLS reverse proxy in front,
or the demo), or elsewhere only with `ALARMHUB_HTTP_ALLOW_PLAIN`, said once at
start as a warning. uvicorn believes X-Forwarded-Proto/-For only from the
addresses in FORWARDED_ALLOW_IPS (default 127.0.0.1 and ::1, a proxy on this
machine): the request's scheme is then `https`, which the cookies and HSTS follow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from typing import TYPE_CHECKING

import structlog
import uvicorn

from alarmhub.settings import is_loopback
from alarmhub.web.api import create_app

if TYPE_CHECKING:
    from alarmhub.web.ports import DaemonPort

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(hub: DaemonPort, started: asyncio.Event) -> None:
    settings = hub.settings
    listen = settings.listen
    if not settings.http_tls and not is_loopback(listen.host):
        log.warning(
            "http.plain",
            listen=settings.http_listen,
            why="ALARMHUB_HTTP_ALLOW_PLAIN: passwords and session cookies cross the network "
            "unencrypted unless a TLS proxy is in front",
        )
    config = uvicorn.Config(
        create_app(hub),
        host=listen.host,
        port=listen.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
        ssl_certfile=settings.http_tls_cert,
        ssl_keyfile=settings.http_tls_key,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        while not server.started:
            if task.done():
                await task  # raises the bind error, e.g. address in use
                raise OSError(f"HTTP server on {listen.host}:{listen.port} did not start")
            await asyncio.sleep(0.01)
        sockets = [s for srv in server.servers for s in srv.sockets]
        if sockets:
            hub.http_port = sockets[0].getsockname()[1]
        started.set()
        await hub.wait_stopped()
    finally:
        server.should_exit = True
        await task
