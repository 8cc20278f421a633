"""`corral dashboard`: a read-only web view of the cluster, live.

One process subscribes once to the cluster (`corral.live.LiveCluster`: the status
topic, and the master's listings now and then), and pushes what changed to every
browser with Server-Sent Events, a few times a second at most:

- `board`: the rows the browsers have, and the change from them to a new view;
- `hub`: the coalescing loop, and one bounded queue per browser;
- `app`: the Starlette application (page, static files, JSON and SSE endpoints);
- `login`: `--login`, HTTP basic credentials checked by the broker;
- `listen`: `--listen`, and what listening there exposes;
- `serve`: uvicorn on the main thread, stopped cleanly by a signal;
- `static/`: the page, plain JavaScript modules (no build step) and a stylesheet.

See docs/dashboard.md.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from bus.tls import Tls
from corral.clitools import (
    DEFAULT_URLS,
    AmqpUrls,
    Connect,
    LogLevel,
    connector,
    context_tls,
    fail,
    setup_logging,
    usage_error,
    warn,
)
from corral.dashboard.listen import DEFAULT_LISTEN, Listen, exposure_warnings, open_socket
from corral.errors import redact_url
from corral.urls import join_urls

ListenOpt = Annotated[
    str,
    typer.Option(
        "--listen",
        metavar="HOST:PORT",
        help="Where to serve the page. Anything but a loopback address exposes the cluster:"
        " use --login.",
    ),
]
LoginOpt = Annotated[
    bool,
    typer.Option(
        "--login/--no-login",
        help="Ask each browser for the user and password of a broker user that may read the"
        " cluster's status (a viewer, submitter or admin), checked by the broker.",
    ),
]
HttpsCertOpt = Annotated[
    str | None,
    typer.Option("--https-cert", metavar="FILE", help="Serve HTTPS with this certificate (PEM)."),
]
HttpsKeyOpt = Annotated[
    str | None,
    typer.Option("--https-key", metavar="FILE", help="The HTTPS certificate's key (PEM)."),
]
LogLevelOpt = Annotated[LogLevel, typer.Option("--log-level", help="Logging on stderr.")]


def register_dashboard_command(app: typer.Typer, connect: Connect) -> None:
    """Add `corral dashboard` to `app`; `connect(amqp)` makes its client."""

    @app.command()
    def dashboard(
        listen: ListenOpt = DEFAULT_LISTEN,
        login: LoginOpt = False,
        https_cert: HttpsCertOpt = None,
        https_key: HttpsKeyOpt = None,
        log_level: LogLevelOpt = LogLevel.warning,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """Serve a live, read-only web view of the cluster: masters, nodes, jobs, tasks,
        pending work and status events (http://127.0.0.1:8700/ by default).

        It reads the cluster as the user of --amqp (a viewer is enough). Ctrl-C stops it."""
        try:
            where = Listen.parse(listen)
        except ValueError as exc:
            usage_error(f"--listen: {exc}")
        if (https_cert is None) != (https_key is None):
            usage_error("--https-cert and --https-key go together")
        setup_logging(log_level)
        for warning in exposure_warnings(where, login, https_cert is not None):
            warn(warning)
        _run(connect, amqp, where, login, https_cert, https_key)


def _run(
    connect: Connect,
    amqp: list[str],
    where: Listen,
    login: bool,
    https_cert: str | None,
    https_key: str | None,
) -> None:
    from corral.client import TLS_ENV
    from corral.dashboard.app import create_app
    from corral.dashboard.hub import Hub
    from corral.dashboard.login import BrokerLogin
    from corral.dashboard.serve import serve
    from corral.live import LiveCluster

    url = join_urls(amqp)
    try:
        sock = open_socket(where)
    except OSError as exc:
        fail(f"cannot listen on {where.host}:{where.port}: {exc.strerror or exc}")
    tls = context_tls() or Tls(*(os.environ.get(var) or None for var in TLS_ENV))
    # The login check takes only the CA of these: never the client certificate (login.py).
    checker = BrokerLogin(url, tls=tls if tls.given else None) if login else None
    live = LiveCluster(connector(connect, amqp))
    hub = Hub(live)
    web = create_app(hub, login=checker, hosts=where.hosts())
    typer.echo(
        f"corral dashboard: {where.url(https_cert is not None)} (cluster {redact_url(url)};"
        " Ctrl-C stops it)",
        err=True,
    )
    live.start()
    try:
        serve(web, hub, sock, https_cert=https_cert, https_key=https_key)
    finally:
        live.stop(timeout=2.0)  # a daemon thread: one stuck connecting does not hold the exit
        sock.close()
