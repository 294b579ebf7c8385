"""HTTP inside the daemon's event loop: uvicorn serving the FastAPI app.

uvicorn's own signal capture is switched off: it would re-raise SIGTERM after
only the web server stopped. alarmhub's composition root owns shutdown and
stops intake, the writer and the web server in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from typing import TYPE_CHECKING

import uvicorn

from alarmhub.web.api import create_app

if TYPE_CHECKING:
    from alarmhub.app import AlarmHub


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(hub: AlarmHub, started: asyncio.Event) -> None:
    listen = hub.settings.listen
    config = uvicorn.Config(
        create_app(hub),
        host=listen.host,
        port=listen.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
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
