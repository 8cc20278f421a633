"""The commands that show the cluster: jobs, ps, nodes, masters, status, inspect.

Read-only: each asks the active master and prints its answer. The listings (jobs,
ps, nodes, masters) print as a table, a wide table, JSON or YAML (`corral.listings`),
filtered here page by page (the master's listings have no filters), and jobs, ps
and nodes can stay on watch (`corral.watching`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Generic, TypeVar

import typer
from pydantic import BaseModel

from corral import brokers, colour
from corral.client import Client
from corral.clitools import (
    DEFAULT_URLS,
    AmqpUrls,
    Connect,
    ListFormat,
    ListOutput,
    NoHeadersOpt,
    Output,
    OutputFormat,
    WatchOpt,
    fail,
    friendly_errors,
    warn,
)
from corral.cluster_status import status_json, status_text, status_yaml
from corral.describe import describe_job, describe_task
from corral.errors import ApiFailure, CorralError
from corral.formats import data, yaml_text
from corral.listings import ChangedItems, Redraw, View, filtered, print_listing
from corral.lookup import current_attempts, is_job_name
from corral.rows import JOB_COLUMNS, MASTER_COLUMNS, NODE_COLUMNS, TASK_COLUMNS, Columns, by_role
from corral.tables import flatten
from corral.urls import join_urls
from corral.watching import (
    JOB_EVENTS,
    NODE_EVENTS,
    NODE_VOLATILE,
    TASK_EVENTS,
    EventFeed,
    Watch,
    concerns,
)
from schemas.api import JobInfo, NodeInfo, TaskInfo
from schemas.base import TASK_ID_PATTERN

M = TypeVar("M", bound=BaseModel)


class TaskStateName(StrEnum):
    """schemas.messages.TaskState, for --state (a test keeps the two the same)."""

    pending = "pending"
    assigned = "assigned"
    running = "running"
    exited = "exited"
    failed = "failed"
    lost = "lost"
    stopped = "stopped"


class JobStateName(StrEnum):
    """schemas.messages.JobState, for --state."""

    pending = "pending"
    running = "running"
    degraded = "degraded"
    complete = "complete"
    failed = "failed"
    cancelled = "cancelled"


TaskStateOpt = Annotated[
    list[TaskStateName] | None,
    typer.Option(
        "--state",
        metavar="STATE",
        help=f"Only tasks in this state: {', '.join(TaskStateName)} (repeat for several).",
        show_default=False,
    ),
]
JobStateOpt = Annotated[
    list[JobStateName] | None,
    typer.Option(
        "--state",
        metavar="STATE",
        help=f"Only jobs in this state: {', '.join(JobStateName)} (repeat for several).",
        show_default=False,
    ),
]
InspectOutput = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", "--format", help="table (a description), json or yaml."),
]


@dataclass(frozen=True)
class Listing(Generic[M]):
    """One listing command's items: how to read them (`pages`), which to show (`keep`),
    and, for --watch, their key, the events that may change them and the fields that
    change without an event."""

    columns: Columns[M]
    pages: Callable[[Client], Iterable[list[M]]]
    key: Callable[[M], str]
    events: tuple[str, ...]
    job: str | None = None
    keep: Callable[[M], bool] = lambda item: True
    volatile: frozenset[str] = field(default_factory=frozenset)


def view_of(ctx: typer.Context, columns: Columns[M], fmt: ListFormat, no_headers: bool) -> View[M]:
    return View(columns, fmt, headers_shown=not no_headers, colour=colour.enabled(ctx))


def show_listing(
    connect: Connect, amqp: list[str], listing: Listing[M], view: View[M], *, watch: bool
) -> None:
    """Print the listing page by page; with `watch`, keep it current until Ctrl-C (exit 0)."""
    with connect(amqp) as client:
        if not watch:
            print_listing(view, filtered(listing.pages(client), listing.keep))
            return
        terminal = view.tabular and sys.stdout.isatty()
        on_watch = Watch(
            relist=lambda: list(flatten(listing.pages(client))),
            key=listing.key,
            concern=lambda event: concerns(event, listing.events, listing.job),
            display=Redraw(view) if terminal else ChangedItems(view),
            keep=listing.keep,
            volatile=listing.volatile,
            warn=warn,
        )
        # Made here, used only on the feed's thread: `connect` reads this command's
        # settings (a context's TLS files), which a new thread would not see.
        events_client = connect(amqp)
        try:
            on_watch.run(EventFeed(lambda: events_client).start())
        except KeyboardInterrupt:
            return


def task_listing(
    job: str | None, every: bool, states: set[str], nodes: set[str]
) -> Listing[TaskInfo]:
    """`corral ps`: every attempt or each slot's current one, of JOB or of every job,
    in the given states and on the given nodes (each: any, if none is given)."""

    def pages(client: Client) -> Iterator[list[TaskInfo]]:
        listed = client.iter_tasks(job)
        return listed if every else current_attempts(listed)

    def keep(task: TaskInfo) -> bool:
        return (not states or task.state in states) and (not nodes or task.node_id in nodes)

    return Listing(TASK_COLUMNS, pages, lambda t: t.task_id, TASK_EVENTS, job, keep)


def job_listing(states: set[str]) -> Listing[JobInfo]:
    return Listing(
        JOB_COLUMNS,
        lambda client: client.iter_jobs(),
        lambda job: job.job_id,
        JOB_EVENTS,
        keep=lambda job: not states or job.state in states,
    )


NODE_LISTING: Listing[NodeInfo] = Listing(
    NODE_COLUMNS,
    lambda client: client.iter_nodes(),
    lambda node: node.node_id,
    NODE_EVENTS,
    volatile=NODE_VOLATILE,
)


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
    render = {OutputFormat.json: status_json, OutputFormat.yaml: status_yaml}.get(fmt, status_text)
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
    elif fmt == OutputFormat.yaml:
        typer.echo(yaml_text(data(info)), nl=False)
    elif task_id is None:
        typer.echo(describe_job(info))
    else:
        typer.echo(describe_task(info, task_id))


def register_view_commands(app: typer.Typer, connect: Connect) -> None:
    """Add the commands of this module to `app`; `connect(amqp)` makes their client."""

    @app.command()
    @friendly_errors
    def jobs(
        ctx: typer.Context,
        state: JobStateOpt = None,
        fmt: ListOutput = ListFormat.table,
        no_headers: NoHeadersOpt = False,
        watch: WatchOpt = False,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """List jobs (RUNNING: running tasks / replicas).

        STATE shows a rollout under way (updating 2/4 v2→v3: slots done / all, from and
        to version) and a degraded service's healthy replicas (degraded 5/8)."""
        listing = job_listing({s.value for s in state or ()})
        view = view_of(ctx, listing.columns, fmt, no_headers)
        show_listing(connect, amqp, listing, view, watch=watch)

    @app.command()
    @friendly_errors
    def ps(
        ctx: typer.Context,
        job: Annotated[str | None, typer.Argument(metavar="JOB", help="Only this job.")] = None,
        every: Annotated[
            bool,
            typer.Option("--all", "-a", help="Every attempt kept, not only the current ones."),
        ] = False,
        state: TaskStateOpt = None,
        node: Annotated[
            list[str] | None,
            typer.Option(metavar="NODE", help="Only tasks on this node (repeat for several)."),
        ] = None,
        fmt: ListOutput = ListFormat.table,
        no_headers: NoHeadersOpt = False,
        watch: WatchOpt = False,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """List tasks, of every job or of JOB: the current (newest) attempt of each slot.

        HEALTH: healthy, starting or unhealthy (- without a check or when not running);
        RESTARTS: its slot's failures in a row; VER: the job version it runs. --state
        and --node filter (a retiring task's state is running)."""
        listing = task_listing(job, every, {s.value for s in state or ()}, set(node or ()))
        view = view_of(ctx, listing.columns, fmt, no_headers)
        show_listing(connect, amqp, listing, view, watch=watch)

    @app.command()
    @friendly_errors
    def nodes(
        ctx: typer.Context,
        fmt: ListOutput = ListFormat.table,
        no_headers: NoHeadersOpt = False,
        watch: WatchOpt = False,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """List worker nodes with their capacity and use.

        STATE is ready, suspect, disconnected (its agent's connection closed) or down,
        with `,cordoned` or `,draining` when the node takes no new tasks."""
        view = view_of(ctx, NODE_LISTING.columns, fmt, no_headers)
        show_listing(connect, amqp, NODE_LISTING, view, watch=watch)

    @app.command()
    @friendly_errors
    def masters(
        ctx: typer.Context,
        fmt: ListOutput = ListFormat.table,
        no_headers: NoHeadersOpt = False,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """List the masters, the active one first (LAG: journal records behind it)."""
        with connect(join_urls(amqp)) as client:  # the bus tries each node in turn
            info = client.masters()
        view = view_of(ctx, MASTER_COLUMNS, fmt, no_headers)
        print_listing(view, [by_role(info.masters)])
        if info.omitted and view.tabular:
            typer.echo(f"({info.omitted} more masters not shown)")

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
