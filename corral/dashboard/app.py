"""The dashboard's web application (Starlette): the page, its static files, and two endpoints.

    GET /             the page (static/index.html)
    GET /static/...   its JavaScript modules and stylesheet (no build step)
    GET /api/state    the whole picture as JSON (the `snapshot` message, below)
    GET /api/stream   Server-Sent Events: `snapshot` first, then a `change` per tick

The shapes are in docs/dashboard.md. Every response carries a strict Content
Security Policy (scripts and styles from this origin only, no inline script);
requests whose Host header is not the dashboard's are refused, so a web page
elsewhere cannot read a localhost dashboard by DNS rebinding. With a login, every
request needs the HTTP basic credentials of a broker user (corral.dashboard.login),
and a stream ends when its verdict would be asked again, so that a user the broker
no longer knows is not shown more. There is no websocket: one is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.dashboard.hub import Hub
from corral.dashboard.login import BrokerLogin, Verdict, basic_credentials

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
REALM = 'Basic realm="corral dashboard", charset="UTF-8"'
NO_STORE = {"cache-control": "no-store"}
# Logins waiting for the broker's verdict beyond this many are answered 503 at once;
# and beyond this many from one address (a guesser takes no more of the queue).
MAX_WAITING_CHECKS = 16
MAX_WAITING_PER_CLIENT = 2
# A stream's send that waits this long (the browser stopped reading) ends the stream.
SEND_TIMEOUT = 60.0


def create_app(
    hub: Hub,
    *,
    login: BrokerLogin | None = None,
    hosts: Collection[str] | None = None,
) -> Starlette:
    """The application around `hub` (whose loop its lifespan runs). `hosts`: the host
    names a request may name (None: any); `login`: ask browsers to log in."""

    async def state(request: Request) -> Response:
        _, text = await hub.snapshot()
        return Response(text, media_type="application/json", headers=NO_STORE)

    async def stream(request: Request) -> Response:
        if hub.full:
            text = "too many pages are open on this dashboard; try again later\n"
            return PlainTextResponse(text, status_code=503, headers={"retry-after": "30"})
        headers = {**NO_STORE, "x-accel-buffering": "no"}
        lifetime = None if login is None else login.ttl
        return EventStream(hub.stream(lifetime), send_timeout=SEND_TIMEOUT, headers=headers)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run(), name="dashboard hub")
        try:
            yield
        finally:
            hub.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/state", state),
            Route("/api/stream", stream),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.add_middleware(Guard, login=login, hosts=hosts)
    return app


class EventStream(StreamingResponse):
    """A `text/event-stream` response whose every send must be done within `send_timeout`
    s: a browser that stops reading (its socket's buffer full) is cut off, and `events`
    closed, which frees its queue at once."""

    def __init__(
        self,
        events: AsyncGenerator[str, None],
        *,
        send_timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events
        self._send_timeout = send_timeout

    async def stream_response(self, send: Send) -> None:
        async def timed(message: Message) -> None:
            async with asyncio.timeout(self._send_timeout):
                await send(message)

        try:
            await super().stream_response(timed)
        except TimeoutError:
            # Returning unfinished makes the server close the connection.
            log.info("dashboard: a browser stopped reading for %g s; cut off", self._send_timeout)
        finally:
            await self._events.aclose()


def host_name(header: str) -> str:
    """The host of a Host header, without its port: `[::1]:8700` -> `[::1]`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.partition(":")[0]


class Guard:
    """ASGI middleware: the Host check, the login, and the security headers on every
    response (streams included: it only touches the response's start)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        login: BrokerLogin | None = None,
        hosts: Collection[str] | None = None,
    ) -> None:
        self.app = app
        self.login = login
        self.hosts = None if hosts is None else frozenset(host.lower() for host in hosts)
        # Broker checks run on a thread of their own, never on the pool the hub uses, and
        # only so many wait: a flood of made-up credentials gets 503, the pages go on.
        self._checks = ThreadPoolExecutor(1, thread_name_prefix="dashboard-login")
        self._waiting = 0
        self._waiting_from: dict[str, int] = {}  # client address -> its checks waiting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # no endpoint takes one, and none is guarded
                await send({"type": "websocket.close", "code": 1008})
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        client = scope.get("client")
        refusal = await self._refusal(headers, client[0] if client else "")
        secured = _with_headers(send)
        if refusal is not None:
            await refusal(scope, receive, secured)
            return
        await self.app(scope, receive, secured)

    async def _refusal(self, headers: dict[str, str], client: str) -> Response | None:
        if self.hosts is not None and host_name(headers.get("host", "")) not in self.hosts:
            return PlainTextResponse("unknown host name\n", status_code=400)
        if self.login is None:
            return None
        verdict = await self._verdict(headers.get("authorization", ""), client)
        if verdict is Verdict.OK:
            return None
        if verdict is Verdict.UNAVAILABLE:
            text = "the broker could not check your login; try again\n"
            return PlainTextResponse(text, status_code=503, headers={"retry-after": "5"})
        text = "log in as a broker user that may read the cluster's status (a viewer)\n"
        return PlainTextResponse(text, status_code=401, headers={"www-authenticate": REALM})

    async def _verdict(self, header: str, client: str = "") -> Verdict:
        """The verdict on the credentials of `header`, sent from address `client`."""
        assert self.login is not None
        credentials = basic_credentials(header)
        if credentials is None:
            return Verdict.DENIED
        cached = self.login.cached(*credentials)
        if cached is not None:
            return cached
        from_client = self._waiting_from.get(client, 0)
        if self._waiting >= MAX_WAITING_CHECKS or from_client >= MAX_WAITING_PER_CLIENT:
            return Verdict.UNAVAILABLE
        self._waiting += 1
        self._waiting_from[client] = from_client + 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._checks, self.login.verify, *credentials)
        finally:
            self._waiting -= 1
            left = self._waiting_from.pop(client) - 1
            if left:
                self._waiting_from[client] = left


def _with_headers(send: Send) -> Callable[[Message], Awaitable[None]]:
    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {key.lower() for key, _ in message.get("headers", [])}
            extra: list[Any] = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return secured
