"""The commands that stream: `corral logs` (a task's or a job's container output, from
the workers) and `corral watch` (live status events)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from corral import output
from corral.client import Client
from corral.clitools import (
    DEFAULT_URLS,
    AmqpUrls,
    Connect,
    fail,
    friendly_errors,
    usage_error,
    warn,
)
from corral.errors import ApiFailure, CorralError, NoCluster, NoMaster
from corral.lookup import is_job_name, slot_attempts
from schemas.api import TaskInfo


class EventFormat(StrEnum):
    text = "text"
    json = "json"


def job_tasks(client: Client, name: str) -> list[TaskInfo] | None:
    """Every attempt of the job called `name`; None if no job is (then it names a task)."""
    if not is_job_name(name):
        return None
    try:
        return client.tasks(name)
    except ApiFailure as exc:
        if exc.code == "not_found":
            return None
        raise


def job_logs(
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


def register_log_commands(app: typer.Typer, connect: Connect) -> None:
    """Add `logs` and `watch` to `app`; `connect(amqp)` makes their client."""

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
            int | None,
            typer.Option(min=0, metavar="N", help="Only the last N lines (of each slot)."),
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
        with connect(amqp) as client:
            try:
                tasks = job_tasks(client, target)
                if tasks is None:
                    for chunk in client.logs(target, follow=follow, tail=tail, previous=previous):
                        typer.echo(chunk, nl=False)
                else:
                    job_logs(client, target, tasks, follow=follow, tail=tail, previous=previous)
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
        with connect(amqp) as client:
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
