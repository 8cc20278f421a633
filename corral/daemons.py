"""`corral master` and `corral worker`: build the settings at the edge, then serve.

The daemon packages are imported only when their command runs, so the rest of
the CLI starts fast and works without them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from corral.client import DEFAULT_URL
from corral.clitools import (
    Amqp,
    LogLevel,
    parse_pairs,
    parse_size_option,
    setup_logging,
    usage_error,
)
from master.settings import MasterSettings
from schemas.envelope import describe_errors
from worker.settings import DEFAULT_STATE_DIR, WorkerSettings

LogLevelOpt = Annotated[LogLevel, typer.Option(help="How much to log.")]


def master(
    name: Annotated[str, typer.Option(help="This master's name (in logs and messages).")] = (
        "master"
    ),
    heartbeat_interval: Annotated[
        float, typer.Option(metavar="S", help="Expected worker heartbeat interval.")
    ] = 1.0,
    suspect_after: Annotated[
        float, typer.Option(metavar="S", help="A silent node is suspect after this long.")
    ] = 2.0,
    dead_after: Annotated[
        float, typer.Option(metavar="S", help="A silent node is down after this long.")
    ] = 3.0,
    amqp: Amqp = DEFAULT_URL,
    log_level: LogLevelOpt = LogLevel.info,
) -> None:
    """Run a master (the control plane) until SIGTERM or Ctrl-C."""
    try:
        settings = MasterSettings(
            amqp_url=amqp,
            name=name,
            heartbeat_interval=heartbeat_interval,
            suspect_after=suspect_after,
            dead_after=dead_after,
        )
    except ValidationError as exc:
        usage_error(f"invalid master settings: {describe_errors(exc)}")
    setup_logging(log_level.value)
    from master.daemon import serve

    with contextlib.suppress(KeyboardInterrupt):
        serve(settings)


def worker(
    node_id: Annotated[
        str | None, typer.Option(metavar="ID", help="Node id (default: kept in --state-dir).")
    ] = None,
    cpus: Annotated[
        float | None, typer.Option(metavar="N", help="CPUs to offer (default: all).")
    ] = None,
    memory: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Memory to offer, e.g. 4g (default: all).")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(metavar="K=V", help="Node label (for constraints).")
    ] = None,
    state_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="Where the node keeps its id.")
    ] = DEFAULT_STATE_DIR,
    heartbeat_interval: Annotated[
        float, typer.Option(metavar="S", help="Seconds between heartbeats.")
    ] = 1.0,
    container_label: Annotated[
        list[str] | None,
        typer.Option(metavar="K=V", help="Extra label on every container (tests use it)."),
    ] = None,
    amqp: Amqp = DEFAULT_URL,
    log_level: LogLevelOpt = LogLevel.info,
) -> None:
    """Run a worker (the node agent that runs containers) until SIGTERM or Ctrl-C."""
    try:
        settings = WorkerSettings(
            amqp_url=amqp,
            node_id=node_id,
            cpus=cpus,
            memory=parse_size_option(memory, "--memory"),
            labels=parse_pairs(label, "--label"),
            state_dir=state_dir,
            heartbeat_interval=heartbeat_interval,
            container_labels=parse_pairs(container_label, "--container-label"),
        )
    except ValidationError as exc:
        usage_error(f"invalid worker settings: {describe_errors(exc)}")
    setup_logging(log_level.value)
    from worker.agent import serve

    with contextlib.suppress(KeyboardInterrupt):
        serve(settings)


def register_daemons(app: typer.Typer) -> None:
    app.command()(master)
    app.command()(worker)
