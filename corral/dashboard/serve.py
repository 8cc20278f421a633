"""Serving the dashboard: uvicorn in the main thread, stopped cleanly by a signal.

The live model runs in a thread of its own (`corral.live`); uvicorn runs the
application on the main thread's event loop. Ctrl-C or SIGTERM ends every
browser's stream at once (uvicorn would otherwise wait for them: an event stream
never ends by itself), lets uvicorn finish, and returns normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from corral.dashboard.hub import MAX_STREAMS, Hub

# Connections and requests in progress beyond this many are answered 503 by uvicorn:
# every stream the hub allows, and room for pages, logins and the 503s themselves.
LIMIT_CONCURRENCY = MAX_STREAMS + 50


class _Server(uvicorn.Server):
    """uvicorn's server; on a signal it also ends the hub's streams, and it does not raise
    the signal again once stopped (the command returns, its `finally` blocks run)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C
        self.should_exit = True
        self._on_exit()


def server_config(
    app: Starlette, *, https_cert: str | None = None, https_key: str | None = None
) -> uvicorn.Config:
    """uvicorn's settings for the dashboard."""
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        ssl_certfile=https_cert,
        ssl_keyfile=https_key,
        timeout_graceful_shutdown=3,
        limit_concurrency=LIMIT_CONCURRENCY,
    )


def serve(
    app: Starlette,
    hub: Hub,
    sock: socket.socket,
    *,
    https_cert: str | None = None,
    https_key: str | None = None,
) -> None:
    """Run `app` on `sock` until SIGINT or SIGTERM; blocks, on the main thread."""
    config = server_config(app, https_cert=https_cert, https_key=https_key)
    loop: list[asyncio.AbstractEventLoop] = []

    def on_exit() -> None:
        if loop:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop[0].call_soon_threadsafe(hub.close)

    server = _Server(config, on_exit)

    async def main() -> None:
        loop.append(asyncio.get_running_loop())
        await server.serve(sockets=[sock])

    asyncio.run(main())
