"""The `corral` command line: run and inspect jobs, and start the daemons.

Expected failures (CorralError, JobFileError) print `error: <what to do>` on
stderr and exit 1; bad options (a malformed --amqp URL included) exit 2.
Listings stream: each page the master sends is printed before the next is
asked for. Text from the broker is printed through `corral.output`, which
escapes control characters; `corral logs` alone prints the container's
output as it is, like `docker logs`.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from corral import brokers, output
from corral.client import Client
from corral.clitools import (
    DEFAULT_URLS,
    AmqpUrls,
    fail,
    friendly_errors,
    parse_pairs,
    usage_error,
    warn,
)
from corral.daemons import register_daemons
from corral.errors import CorralError, NoCluster, NoMaster
from corral.job import Job
from corral.text import visible
from corral.urls import join_urls
from schemas.envelope import describe_errors
from schemas.files import load_job_file
from schemas.job import JobSpec

app = typer.Typer(
    name="corral",
    help="Corral: run containers on a fleet of workers that talk over RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


class EventFormat(StrEnum):
    text = "text"
    json = "json"


class Kind(StrEnum):
    batch = "batch"
    service = "service"


class Restart(StrEnum):
    always = "always"
    on_failure = "on-failure"
    never = "never"


M = TypeVar("M", bound=BaseModel)

Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")]
WaitTimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="Give up waiting after this long."),
]


# The JobSpec field a validation error names -> the `corral run` option that sets it.
_FIELD_OPTIONS = {
    "name": "--name",
    "image": "IMAGE",
    "command": "CMD",
    "env": "--env",
    "cpu": "--cpu",
    "memory": "--memory",
    "replicas": "--replicas",
    "kind": "--kind",
    "restart": "--restart/--max-retries",
    "constraints": "--constraint",
    "labels": "--label",
    "ports": "--port",
}


def _client(amqp: list[str] | str) -> Client:
    # The bus logs its retries as warnings; a one-shot command reports the outcome itself.
    # pika logs each failed attempt with a traceback; the error we raise says it all.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    url = amqp if isinstance(amqp, str) else join_urls(amqp)
    return Client(url, name=f"cli@{socket.gethostname()}")


def default_name(image: str) -> str:
    """A job name from the image: `registry:5000/team/web:1.2` -> `web-3fa9`."""
    last = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    base = re.sub(r"[^a-z0-9-]+", "-", last.lower()).strip("-")[:58].strip("-")
    return f"{base or 'job'}-{secrets.token_hex(2)}"


def _spec_error(exc: ValidationError) -> str:
    fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    options = sorted(_FIELD_OPTIONS[field] for field in fields if field in _FIELD_OPTIONS)
    hint = f" (check {', '.join(options)})" if options else ""
    return f"invalid job: {describe_errors(exc)}{hint}"


def _report_submitted(job: Job) -> None:
    info = job.last or job.info()
    typer.echo(output.job_summary(info))


def _wait_and_report(job: Job, timeout: float | None) -> None:
    """Wait for the job to settle; exit 1 if it failed or was cancelled."""
    try:
        info = job.wait(timeout)
    except KeyboardInterrupt:
        typer.echo(
            visible(
                f"stopped waiting; job {job.id} carries on (`corral cancel {job.id}` stops it)"
            ),
            err=True,
        )
        raise typer.Exit(130) from None
    typer.echo(output.job_state(info))
    if info.spec.kind == "batch" or info.state != "running":
        typer.echo(f"exit codes: {output.exit_codes(info)}")
    if info.state in ("failed", "cancelled"):
        reason = f": {info.reason}" if info.reason else ""
        fail(f"job {info.job_id} {info.state}{reason}")


def _submit(amqp: list[str], spec: JobSpec, wait: bool, timeout: float | None) -> None:
    with _client(amqp) as client:
        job = client.submit(spec)
        _report_submitted(job)
        if wait:
            _wait_and_report(job, timeout)


@app.command(
    context_settings={"allow_interspersed_args": False},
    no_args_is_help=True,
)
@friendly_errors
def run(
    image: Annotated[str, typer.Argument(metavar="IMAGE", help="Container image.")],
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="CMD", help="Command and arguments (everything after IMAGE)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Job name (default: from the image + 4 hex chars).")
    ] = None,
    replicas: Annotated[int, typer.Option(help="How many copies run at once.")] = 1,
    cpu: Annotated[float | None, typer.Option(help="CPUs per task, e.g. 0.5.")] = None,
    memory: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Memory per task, e.g. 256m.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", metavar="K=V", help="Environment variable.")
    ] = None,
    kind: Annotated[Kind, typer.Option(help="batch runs to completion; a service runs on.")] = (
        Kind.batch
    ),
    port: Annotated[
        list[str] | None,
        typer.Option("--port", "-p", metavar="HOST:CONTAINER", help="Publish a port."),
    ] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option(metavar="K=V", help="Only on nodes with this label (k=v or k!=v)."),
    ] = None,
    label: Annotated[list[str] | None, typer.Option(metavar="K=V", help="Job label.")] = None,
    max_retries: Annotated[
        int | None, typer.Option(help="Retries of a failing batch task.")
    ] = None,
    restart: Annotated[
        Restart | None, typer.Option(help="When to restart (default by kind).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the job ends (a service: runs).")] = False,
    timeout: WaitTimeoutOpt = None,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Run IMAGE as a job. Options go before IMAGE; everything after it is the command."""
    data: dict[str, Any] = {
        "name": name or default_name(image),
        "image": image,
        "command": list(command) if command else None,
        "env": parse_pairs(env, "--env"),
        "replicas": replicas,
        "kind": kind.value,
        "ports": list(port or []),
        "constraints": list(constraint or []),
        "labels": parse_pairs(label, "--label"),
    }
    if cpu is not None:
        data["cpu"] = cpu
    if memory is not None:
        data["memory"] = memory
    restart_policy: dict[str, Any] = {}
    if restart is not None:
        restart_policy["condition"] = restart.value
    if max_retries is not None:
        restart_policy["max_retries"] = max_retries
    if restart_policy:
        data["restart"] = restart_policy
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        usage_error(_spec_error(exc))
    _submit(amqp, spec, wait, timeout)


@app.command(no_args_is_help=True)
@friendly_errors
def submit(
    file: Annotated[str, typer.Argument(metavar="FILE", help="Job file, YAML or JSON.")],
    wait: Annotated[bool, typer.Option(help="Wait until the job ends (a service: runs).")] = False,
    timeout: WaitTimeoutOpt = None,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Submit the job described in FILE."""
    _submit(amqp, load_job_file(file), wait, timeout)


def _show(
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


@app.command()
@friendly_errors
def jobs(fmt: Output = OutputFormat.table, amqp: AmqpUrls = DEFAULT_URLS) -> None:
    """List jobs (RUNNING: running tasks / replicas)."""
    with _client(amqp) as client:
        _show(fmt, client.iter_jobs(), output.JOB_HEADERS, output.job_row)


@app.command()
@friendly_errors
def ps(
    job: Annotated[str | None, typer.Argument(metavar="JOB", help="Only this job.")] = None,
    fmt: Output = OutputFormat.table,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """List tasks (every attempt), of every job or of JOB."""
    with _client(amqp) as client:
        _show(fmt, client.iter_tasks(job), output.TASK_HEADERS, output.task_row)


@app.command()
@friendly_errors
def nodes(fmt: Output = OutputFormat.table, amqp: AmqpUrls = DEFAULT_URLS) -> None:
    """List worker nodes with their capacity and use."""
    with _client(amqp) as client:
        _show(fmt, client.iter_nodes(), output.NODE_HEADERS, output.node_row)


@app.command()
@friendly_errors
def masters(fmt: Output = OutputFormat.table, amqp: AmqpUrls = DEFAULT_URLS) -> None:
    """List the masters, the active one first (LAG: journal records behind it)."""
    with _client(join_urls(amqp)) as client:  # the bus tries each node in turn
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
    nodes = brokers.probe(amqp)
    render = output.status_json if fmt == OutputFormat.json else output.status_text
    try:
        with _client(brokers.reachable_first(nodes)) as client:
            info = client.status()
    except CorralError as exc:
        typer.echo(render(None, nodes))
        fail(str(exc))
    typer.echo(render(info, nodes))


@app.command(no_args_is_help=True)
@friendly_errors
def cancel(
    job: Annotated[str, typer.Argument(metavar="JOB")], amqp: AmqpUrls = DEFAULT_URLS
) -> None:
    """Stop every task of JOB."""
    with _client(amqp) as client:
        info = client.cancel(job)
    typer.echo(output.job_state(info))


@app.command(no_args_is_help=True)
@friendly_errors
def scale(
    job: Annotated[str, typer.Argument(metavar="JOB")],
    replicas: Annotated[int, typer.Argument(metavar="N", min=0, help="New replica count.")],
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Change how many copies of JOB run."""
    with _client(amqp) as client:
        info = client.scale(job, replicas)
    typer.echo(visible(f"job {info.job_id}: scaled to {replicas} replicas ({info.state})"))


@app.command(no_args_is_help=True)
@friendly_errors
def logs(
    task: Annotated[str, typer.Argument(metavar="TASK", help="Task id (or a unique prefix).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")] = False,
    tail: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Only the last N lines.")
    ] = None,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Print a task's container output, from the worker that runs it."""
    with _client(amqp) as client:
        try:
            for chunk in client.logs(task, follow=follow, tail=tail):
                typer.echo(chunk, nl=False)
        except KeyboardInterrupt:
            return


@app.command()
@friendly_errors
def watch(
    pattern: Annotated[
        str, typer.Argument(metavar="PATTERN", help="Routing-key pattern, e.g. 'job.#'.")
    ] = "#",
    fmt: Annotated[
        EventFormat, typer.Option("--output", "-o", help="text or json (one per line).")
    ] = EventFormat.text,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Print live status events (task.<job>.<task>.<state>, job.*, node.*). Ctrl-C ends.

    Without a master running, says so on stderr and watches anyway (workers
    still report their tasks; a master that starts is seen).
    """
    render = output.event_json if fmt == EventFormat.json else output.event_line
    with _client(amqp) as client:
        try:
            client.check_master()
        except NoCluster:
            raise  # no status exchange to bind to: nothing could ever be seen
        except NoMaster as exc:
            warn(f"{exc}; watching anyway")
        try:
            for event in client.events(pattern):
                typer.echo(render(event))
        except KeyboardInterrupt:
            return


register_daemons(app)


def main() -> None:
    app(prog_name="corral")
