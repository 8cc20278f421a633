"""The `corral` command line: the app, and the commands that run and change jobs.

Expected failures (CorralError, JobFileError) print `error: <what to do>` on
stderr and exit 1; bad options (a malformed --amqp URL included) exit 2.
Listings stream: each page the master sends is printed before the next is
asked for. Text from the broker is printed through `corral.output`, which
escapes control characters; `corral logs` alone prints the container's
output as it is, like `docker logs`.

The other commands live beside this module, one module per responsibility, and
get their client from `_client` here (the one place a Client is made):

- `corral.cli_views`: jobs, ps, nodes, masters, status, inspect;
- `corral.cli_logs`: logs, watch;
- `corral.cli_nodes`: cordon, uncordon, drain;
- `corral.cli_admin`: admin bootstrap, add-worker, add-user, remove-user (broker users);
- `corral.cli_context`: context add, use, list, remove, show (named brokers);
- `corral.daemons`: master, worker.

Waiting (`--wait`) and its progress lines are `corral.waiting`.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError

from corral import output, waiting
from corral.cli_admin import admin_app
from corral.cli_context import context_app
from corral.cli_logs import register_log_commands
from corral.cli_nodes import register_node_commands
from corral.cli_views import register_view_commands
from corral.client import Client
from corral.clitools import (
    DEFAULT_URLS,
    AmqpUrls,
    ContextOpt,
    EnvOpt,
    JobArg,
    Kind,
    Restart,
    SecretEnvOpt,
    VersionOpt,
    WaitOpt,
    WaitTimeoutOpt,
    context_tls,
    friendly_errors,
    parse_pairs,
    usage_error,
)
from corral.colour import ColourMode, ColourOpt
from corral.daemons import register_daemons
from corral.dashboard import register_dashboard_command
from corral.errors import ApiFailure
from corral.job import Job
from corral.specs import (
    UPDATE_OPTIONS,
    SpecChanges,
    load_job_file,
    parse_secret_pairs,
    spec_error,
    updated_spec,
)
from corral.text import visible
from corral.top import register_top_command
from corral.urls import join_urls
from schemas.api import JobInfo
from schemas.job import JobSpec
from schemas.messages import TERMINAL_JOB_STATES

app = typer.Typer(
    name="corral",
    help="Corral: run containers on a fleet of workers that talk over RabbitMQ.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    version: VersionOpt = False,
    context_name: ContextOpt = None,
    color: ColourOpt = ColourMode.auto,
) -> None:
    """Corral: run containers on a fleet of workers that talk over RabbitMQ."""


def _client(amqp: list[str] | str) -> Client:
    # The bus logs its retries as warnings; a one-shot command reports the outcome itself.
    # pika logs each failed attempt with a traceback; the error we raise says it all.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    url = amqp if isinstance(amqp, str) else join_urls(amqp)
    return Client(url, name=f"cli@{socket.gethostname()}", tls=context_tls())


def default_name(image: str) -> str:
    """A job name from the image: `registry:5000/team/web:1.2` -> `web-3fa9`."""
    last = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    base = re.sub(r"[^a-z0-9-]+", "-", last.lower()).strip("-")[:58].strip("-")
    return f"{base or 'job'}-{secrets.token_hex(2)}"


def _report_submitted(job: Job) -> None:
    info = job.last or job.info()
    typer.echo(output.job_summary(info))


def _submit(amqp: list[str], spec: JobSpec, wait: bool, timeout: float | None) -> None:
    with _client(amqp) as client:
        job = client.submit(spec)
        _report_submitted(job)
        if wait:
            waiting.wait_and_report(job, timeout)


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
    env: EnvOpt = None,
    secret_env: SecretEnvOpt = None,
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
    wait: WaitOpt = False,
    timeout: WaitTimeoutOpt = None,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Run IMAGE as a job. Options go before IMAGE; everything after it is the command."""
    data: dict[str, Any] = {
        "name": name or default_name(image),
        "image": image,
        "command": list(command) if command else None,
        "env": parse_pairs(env, "--env"),
        "secret_env": parse_secret_pairs(secret_env, "--secret-env"),
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
        usage_error(spec_error(exc))
    _submit(amqp, spec, wait, timeout)


@app.command(no_args_is_help=True)
@friendly_errors
def submit(
    file: Annotated[str, typer.Argument(metavar="FILE", help="Job file, YAML or JSON.")],
    wait: WaitOpt = False,
    timeout: WaitTimeoutOpt = None,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Submit the job described in FILE.

    If FILE names a service that is still running, that service is updated to FILE's
    spec instead (a new version, rolled out as `corral update` does)."""
    spec = load_job_file(file)
    with _client(amqp) as client:
        try:
            job = client.submit(spec)
        except ApiFailure as exc:
            current = _running_service(client, spec.name) if exc.code == "conflict" else None
            if current is None:
                raise
            _update(client, current, spec, wait, timeout)
            return
        _report_submitted(job)
        if wait:
            waiting.wait_and_report(job, timeout)


def _running_service(client: Client, job_id: str) -> JobInfo | None:
    """The job called `job_id` if it is a service that has not ended, else None."""
    try:
        info = client.job(job_id)
    except ApiFailure:
        return None
    if info.spec.kind != "service" or info.state in TERMINAL_JOB_STATES:
        return None
    return info


@app.command(no_args_is_help=True)
@friendly_errors
def update(
    job: JobArg,
    image: Annotated[str | None, typer.Option(metavar="IMAGE", help="New image.")] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="K=V", help="Set a variable (K= sets it empty)."),
    ] = None,
    secret_env: SecretEnvOpt = None,
    env_rm: Annotated[
        list[str] | None, typer.Option("--env-rm", metavar="KEY", help="Remove a variable.")
    ] = None,
    cpu: Annotated[float | None, typer.Option(metavar="N", help="CPUs per task.")] = None,
    memory: Annotated[str | None, typer.Option(metavar="SIZE", help="Memory per task.")] = None,
    command: Annotated[
        str | None,
        typer.Option(
            metavar="'CMD ARGS'",
            help="New command, split like a shell would (not run by one); '' for the image's.",
        ),
    ] = None,
    parallelism: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Slots replaced at a time.")
    ] = None,
    start_first: Annotated[
        bool | None,
        typer.Option(
            "--start-first/--stop-first",
            help="Start each new task before stopping the old one (needs room for both),"
            " or stop first.",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait for the rollout to end; exit 1 if it is rolled back.")
    ] = False,
    timeout: WaitTimeoutOpt = None,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Change a service's spec and roll it out.

    JOB's current spec with these changes becomes its next version, rolled out a few
    slots at a time (the spec's `update` policy; --parallelism, --start-first change it).
    --env sets a variable (K= sets it empty), --secret-env a secret one, --env-rm removes
    one. A new task that fails or turns unhealthy before it was healthy rolls the job
    back by itself."""
    order: Literal["start-first", "stop-first"] | None = None
    if start_first is not None:
        order = "start-first" if start_first else "stop-first"
    changes = SpecChanges(
        image=image,
        env=parse_pairs(env, "--env"),
        secret_env=parse_secret_pairs(secret_env, "--secret-env"),
        env_rm=list(env_rm or []),
        cpu=cpu,
        memory=memory,
        command=command,
        parallelism=parallelism,
        order=order,
    )
    if changes.empty():
        usage_error(
            "nothing to change: give --image, --env, --secret-env, --env-rm, --cpu, --memory,"
            " --command, --parallelism or --start-first/--stop-first"
        )
    with _client(amqp) as client:
        current = client.job(job)
        try:
            spec = updated_spec(current.spec, changes)
        except ValidationError as exc:
            usage_error(spec_error(exc, UPDATE_OPTIONS))
        _update(client, current, spec, wait, timeout)


def _update(
    client: Client, current: JobInfo, spec: JobSpec, wait: bool, timeout: float | None
) -> None:
    """Send the update (unless `spec` is the job's already) and report it; with `wait`,
    wait for the rollout and exit as `waiting.rollout_verdict` says."""
    job = current.job_id
    if spec == current.spec:
        typer.echo(visible(f"job {job}: no change (version {current.version} has that spec)"))
        return
    started = client.update(job, spec)
    typer.echo(visible(f"updating {job} to version {started.version}"))
    if wait:
        waiting.wait_rollout(Job(client, job, started), started, timeout, rollback=False)


@app.command(no_args_is_help=True)
@friendly_errors
def rollback(
    job: JobArg,
    wait: Annotated[bool, typer.Option(help="Wait until the rollback is done.")] = False,
    timeout: WaitTimeoutOpt = None,
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Roll a service back to its previous spec.

    The spec of JOB's version before the current one becomes its next version, rolled
    out the way an update is."""
    with _client(amqp) as client:
        started = client.rollback(job)
        typer.echo(
            visible(f"rolling {job} back to its previous spec, as version {started.version}")
        )
        if wait:
            waiting.wait_rollout(Job(client, job, started), started, timeout, rollback=True)


@app.command(no_args_is_help=True)
@friendly_errors
def cancel(job: JobArg, amqp: AmqpUrls = DEFAULT_URLS) -> None:
    """Stop every task of JOB."""
    with _client(amqp) as client:
        info = client.cancel(job)
    typer.echo(output.job_state(info))


@app.command(no_args_is_help=True)
@friendly_errors
def scale(
    job: JobArg,
    replicas: Annotated[int, typer.Argument(metavar="N", min=0, help="New replica count.")],
    amqp: AmqpUrls = DEFAULT_URLS,
) -> None:
    """Change how many copies of JOB run."""
    with _client(amqp) as client:
        info = client.scale(job, replicas)
    typer.echo(visible(f"job {info.job_id}: scaled to {replicas} replicas ({info.state})"))


@app.command(no_args_is_help=True)
@friendly_errors
def purge(job: JobArg, amqp: AmqpUrls = DEFAULT_URLS) -> None:
    """Forget an ended job now and remove its containers.

    Ended jobs are otherwise kept for the master's --ended-job-ttl (a day by default)."""
    with _client(amqp) as client:
        info = client.purge(job)
    typer.echo(visible(f"job {info.job_id} ({info.state}) purged: its containers are removed"))


register_view_commands(app, _client)
register_log_commands(app, _client)
register_node_commands(app, _client)
register_top_command(app, _client)
register_dashboard_command(app, _client)
register_daemons(app)
app.add_typer(admin_app, name="admin")
app.add_typer(context_app, name="context")


def main() -> None:
    app(prog_name="corral")
