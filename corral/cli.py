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
from corral.errors import ApiFailure, CorralError, NoCluster, NoMaster
from corral.job import Job, exit_code
from corral.lookup import current_attempts, is_job_name, slot_attempts
from corral.text import visible
from corral.urls import join_urls
from schemas.api import TaskInfo
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
    """Wait for the job to settle. Exit, as `docker run` does, with a batch job's exit
    code (see `corral.job.exit_code`); 1 if it failed without one or was cancelled, or
    if a service failed or was cancelled."""
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
    code = exit_code(job.exit_codes(info)) if info.spec.kind == "batch" else None
    if info.state in ("failed", "cancelled"):
        reason = f": {info.reason}" if info.reason else ""
        status = _process_status(code) if code and info.state == "failed" else 1
        fail(f"job {info.job_id} {info.state}{reason}", code=status)
    if code:
        raise typer.Exit(_process_status(code))


def _process_status(code: int) -> int:
    """An exit code a process can have (1-255); 1 stands for any other non-zero one."""
    return code if 0 < code < 256 else 1


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
    every: Annotated[
        bool, typer.Option("--all", "-a", help="Every attempt kept, not only the current ones.")
    ] = False,
    fmt: Output = OutputFormat.table,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """List tasks, of every job or of JOB: the current (newest) attempt of each slot."""
    with _client(amqp) as client:
        pages = client.iter_tasks(job)
        _show(
            fmt, pages if every else current_attempts(pages), output.TASK_HEADERS, output.task_row
        )


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
    target: Annotated[
        str,
        typer.Argument(
            metavar="TASK|JOB",
            help="A task id, or a prefix of the task ids of one slot (its newest attempt);"
            " or a job: the newest attempt that ran of each slot, one slot after the other,"
            " each line prefixed with its slot ([0] ...).",
        ),
    ],
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep streaming (one task, or a job of one slot)."),
    ] = False,
    tail: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Only the last N lines (of each slot).")
    ] = None,
    previous: Annotated[
        bool,
        typer.Option(
            "--previous",
            "-p",
            help="The attempt before: before TASK, or before the newest of each slot of JOB.",
        ),
    ] = False,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Print a task's container output, from the worker that has it. A job name means
    every slot of the job (--follow only if it has one slot)."""
    with _client(amqp) as client:
        try:
            tasks = _job_tasks(client, target)
            if tasks is None:
                for chunk in client.logs(target, follow=follow, tail=tail, previous=previous):
                    typer.echo(chunk, nl=False)
            else:
                _job_logs(client, target, tasks, follow=follow, tail=tail, previous=previous)
        except KeyboardInterrupt:
            return


def _job_tasks(client: Client, name: str) -> list[TaskInfo] | None:
    """Every attempt of the job called `name`; None if no job is (then it names a task)."""
    if not is_job_name(name):
        return None
    try:
        return client.tasks(name)
    except ApiFailure as exc:
        if exc.code == "not_found":
            return None
        raise


def _job_logs(
    client: Client,
    job: str,
    tasks: list[TaskInfo],
    *,
    follow: bool,
    tail: int | None,
    previous: bool,
) -> None:
    """`corral logs JOB`: each slot's chosen attempt in turn, its lines prefixed `[SLOT] `.

    Only attempts that were placed on a node count (one waiting to restart has no
    logs yet: its slot shows the attempt that ran before it). A slot whose logs
    cannot be read is a warning and the next slot follows; the command then exits 1.
    """
    slots = slot_attempts(tasks)
    if not slots:
        fail(f"job {job} has no tasks, so no logs")
    if follow and len(slots) > 1:
        example = next(task for task in slots.values() if task is not None)
        usage_error(
            f"--follow streams one task, and job {job} has {len(slots)} slots: pick a task,"
            f" e.g. `corral logs -f {example.task_id}` (`corral ps {job}` lists them)"
        )
    chosen = slot_attempts([task for task in tasks if task.node_id], previous=previous)
    if not any(chosen.values()):
        which = "an attempt that ran before its newest" if previous else "run yet"
        fail(f"no slot of job {job} has {which} (`corral ps -a {job}` says why)")
    never = [slot for slot in slots if slot not in chosen]
    if never:
        warn(f"slot(s) {_slots(never)} of job {job} never ran: no logs")
    without = [slot for slot, task in chosen.items() if task is None]
    if without:
        warn(f"no attempt ran before the newest in slot(s) {_slots(without)} of job {job}")
    unread = []
    for slot, task in chosen.items():
        if task is not None and not _slot_logs(client, task, follow, tail):
            unread.append(slot)
    if unread:
        fail(f"could not read the logs of slot(s) {_slots(unread)} of job {job} (see above)")


def _slot_logs(client: Client, task: TaskInfo, follow: bool, tail: int | None) -> bool:
    """Print one slot's logs, prefixed; False (after a warning) if they cannot be read."""
    prefix = output.LinePrefix(output.slot_prefix(task.slot))
    try:
        for chunk in client.task_logs(task, follow=follow, tail=tail):
            typer.echo(prefix.feed(chunk), nl=False)
    except CorralError as exc:
        warn(f"slot {task.slot} ({task.task_id}): {exc}")
        return False
    finally:
        typer.echo(prefix.end(), nl=False)
    return True


def _slots(slots: list[int]) -> str:
    shown = ", ".join(str(slot) for slot in slots[:10])
    return shown + (f" and {len(slots) - 10} more" if len(slots) > 10 else "")


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
