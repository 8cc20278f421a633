"""The commands that show the cluster: jobs, ps, nodes, masters, status, inspect.

Read-only: each asks the active master and prints its answer, as a table (made
safe by `corral.output`) or as JSON (`-o json`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel

from corral import brokers, output
from corral.client import Client
from corral.clitools import (
    DEFAULT_URLS,
    AmqpUrls,
    Connect,
    Output,
    OutputFormat,
    fail,
    friendly_errors,
)
from corral.describe import describe_job, describe_task
from corral.errors import ApiFailure, CorralError
from corral.lookup import current_attempts, is_job_name
from corral.urls import join_urls
from schemas.api import JobInfo
from schemas.base import TASK_ID_PATTERN

M = TypeVar("M", bound=BaseModel)

InspectOutput = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", "--format", help="table (a description) or json."),
]


def show(
    fmt: OutputFormat,
    pages: Iterator[list[M]],
    headers: Sequence[str],
    row: Callable[[M], list[str]],
) -> None:
    """Print a listing page by page, as a table or as one JSON array."""
    if fmt == OutputFormat.json:
        for piece in output.stream_json(output.flatten(pages)):
            typer.echo(piece, nl=False)
        typer.echo()
        return
    for line in output.stream_table(headers, output.rows_by_page(pages, row)):
        typer.echo(line)


def find(client: Client, name: str) -> tuple[JobInfo, str | None]:
    """What `corral inspect NAME` shows: the job called NAME, else the task with that id,
    else the newest attempt of the one slot whose task ids start with NAME. Returns the
    master's JobInfo and the task's id (None for a job); CorralError if none is found."""
    if is_job_name(name):
        try:
            return client.job(name), None
        except ApiFailure as exc:
            if exc.code != "not_found":
                raise
    if re.fullmatch(TASK_ID_PATTERN, name):
        try:
            return client.task(name), name
        except ApiFailure as exc:
            if exc.code != "not_found":
                raise
    try:
        task = client.find_task(name)
    except ApiFailure as exc:
        if exc.code != "not_found":
            raise
        raise CorralError(
            f"no job or task is called {name!r} (`corral jobs` and `corral ps -a` list them)"
        ) from None
    return client.task(task.task_id), task.task_id


def print_status(connect: Connect, amqp: list[str], fmt: OutputFormat) -> None:
    """`corral status`: the broker nodes as probed here, then the master's answer."""
    nodes = brokers.probe(amqp)
    render = output.status_json if fmt == OutputFormat.json else output.status_text
    try:
        with connect(brokers.reachable_first(nodes)) as client:
            info = client.status()
    except CorralError as exc:
        typer.echo(render(None, nodes))
        fail(str(exc))
    typer.echo(render(info, nodes))


def print_description(info: JobInfo, task_id: str | None, fmt: OutputFormat) -> None:
    """`corral inspect`: the JobInfo as JSON, or the job (or its task) described."""
    if fmt == OutputFormat.json:
        typer.echo(info.model_dump_json(indent=2))
    elif task_id is None:
        typer.echo(describe_job(info))
    else:
        typer.echo(describe_task(info, task_id))


def register_view_commands(app: typer.Typer, connect: Connect) -> None:
    """Add the commands of this module to `app`; `connect(amqp)` makes their client."""

    @app.command()
    @friendly_errors
    def jobs(fmt: Output = OutputFormat.table, amqp: AmqpUrls = DEFAULT_URLS) -> None:
        """List jobs (RUNNING: running tasks / replicas).

        STATE shows a rollout under way (updating 2/4 v2→v3: slots done / all, from and
        to version) and a degraded service's healthy replicas (degraded 5/8)."""
        with connect(amqp) as client:
            show(fmt, client.iter_jobs(), output.JOB_HEADERS, output.job_row)

    @app.command()
    @friendly_errors
    def ps(
        job: Annotated[str | None, typer.Argument(metavar="JOB", help="Only this job.")] = None,
        every: Annotated[
            bool,
            typer.Option("--all", "-a", help="Every attempt kept, not only the current ones."),
        ] = False,
        fmt: Output = OutputFormat.table,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """List tasks, of every job or of JOB: the current (newest) attempt of each slot.

        HEALTH: healthy, starting or unhealthy (- without a check or when not running);
        RESTARTS: its slot's failures in a row; VER: the job version it runs."""
        with connect(amqp) as client:
            pages = client.iter_tasks(job)
            shown = pages if every else current_attempts(pages)
            show(fmt, shown, output.TASK_HEADERS, output.task_row)

    @app.command()
    @friendly_errors
    def nodes(fmt: Output = OutputFormat.table, amqp: AmqpUrls = DEFAULT_URLS) -> None:
        """List worker nodes with their capacity and use.

        STATE is ready, suspect, disconnected (its agent's connection closed) or down,
        with `,cordoned` or `,draining` when the node takes no new tasks."""
        with connect(amqp) as client:
            show(fmt, client.iter_nodes(), output.NODE_HEADERS, output.node_row)

    @app.command()
    @friendly_errors
    def masters(fmt: Output = OutputFormat.table, amqp: AmqpUrls = DEFAULT_URLS) -> None:
        """List the masters, the active one first (LAG: journal records behind it)."""
        with connect(join_urls(amqp)) as client:  # the bus tries each node in turn
            info = client.masters()
        if fmt == OutputFormat.json:
            typer.echo(output.to_json(info.masters))
        else:
            typer.echo(output.masters_table(info))

    @app.command()
    @friendly_errors
    def status(fmt: Output = OutputFormat.table, amqp: AmqpUrls = DEFAULT_URLS) -> None:
        """Show the cluster on one screen: masters, broker nodes, workers, jobs, pending
        tasks and dead letters. Exits 1 (after showing the broker nodes) if no master answers."""
        print_status(connect, amqp, fmt)

    @app.command(no_args_is_help=True)
    @friendly_errors
    def inspect(
        name: Annotated[str, typer.Argument(metavar="JOB|TASK", help="A job, or a task id.")],
        fmt: InspectOutput = OutputFormat.table,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """Describe a job or a task.

        A job: its state, version and rollout, spec, versions, where each slot's task
        runs (health, restarts, exit code, reason) and its last events. A task (an id, or
        a prefix of one slot's ids): its fields, its version's spec and its events."""
        with connect(amqp) as client:
            info, task_id = find(client, name)
        print_description(info, task_id, fmt)
