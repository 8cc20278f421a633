"""Waiting from the command line: progress while a job settles, a rollout runs or a
node drains, and the verdict when it is over.

Progress goes to stderr, so stdout keeps only the outcome: on a terminal one line
rewritten in place as it changes, elsewhere a line each time it changes (and for a
batch job nothing: its outcome is all a script needs). The verdicts
(`service_verdict`, `rollout_verdict`, `drain_verdict`) are pure functions of the
master's last answer: an exit status and the sentence to print.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import typer

from corral import output
from corral.clitools import fail
from corral.errors import WaitTimeout
from corral.job import Job, Until, exit_code, rollout_ended, trouble
from corral.rows import node_state, rollout_text, running_count
from corral.text import visible
from schemas.api import JobInfo, NodeInfo
from schemas.messages import TERMINAL_JOB_STATES

T = TypeVar("T")
# How often `wait_drained` asks the master for the node's task count.
DRAIN_POLL = 1.0


@dataclass(frozen=True)
class Verdict:
    """How a wait ended: exit `code` 0 prints `message` on stdout, any other prints it
    as `error: message` on stderr."""

    code: int
    message: str

    def report(self) -> None:
        if self.code:
            fail(self.message, code=self.code)
        typer.echo(visible(self.message))


class Progress(Generic[T]):
    """Prints `render(item)` on stderr whenever it differs from the line printed last;
    a render of None prints nothing. `last` is the newest item seen.

    On a terminal (`terminal`, default: whether stderr is one) the progress is one line
    rewritten in place (`\\r`, cut to the terminal's width); elsewhere (a log file, CI)
    each new text is a line of its own. Use it as a context manager, or call `end`,
    so that what is printed next starts on a line of its own.
    """

    def __init__(self, render: Callable[[T], str | None], *, terminal: bool | None = None) -> None:
        self.render = render
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.last: T | None = None
        self._shown: str | None = None
        self._width = 0  # of the unfinished line on the terminal

    def __call__(self, item: T) -> None:
        self.last = item
        line = self.render(item)
        if line is None or line == self._shown:
            return
        self._shown = line
        text = visible(line)
        if not self.terminal:
            typer.echo(text, err=True)
            return
        text = text[: max(shutil.get_terminal_size().columns - 1, 20)]
        typer.echo("\r" + text.ljust(self._width), err=True, nl=False)
        self._width = len(text)

    def end(self) -> None:
        """Finish the line being rewritten (if any)."""
        if self._width:
            typer.echo("", err=True)
            self._width = 0

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, *_: object) -> None:
        self.end()


# -- a job settling (run/submit --wait) --


def job_progress(info: JobInfo) -> str | None:
    """`web: 2/3 healthy` while a service comes up; nothing for a batch job."""
    if info.spec.kind != "service" or info.state in TERMINAL_JOB_STATES:
        return None
    return f"{info.job_id}: {info.healthy}/{info.spec.replicas} healthy ({info.state})"


def any_job_progress(info: JobInfo) -> str | None:
    """`job_progress`, and for a batch job `hello: running, 1/1 running` (on a terminal)."""
    if info.spec.kind == "service" or info.state in TERMINAL_JOB_STATES:
        return job_progress(info)
    reason = f" ({info.reason})" if info.reason else ""
    return f"{info.job_id}: {info.state}, {running_count(info)} running{reason}"


def service_verdict(info: JobInfo) -> Verdict:
    """A settled service (`corral.job.is_settled`): 0 once every replica is healthy
    (or it completed), 1 with the reason if it ended otherwise or is in trouble."""
    if info.state in ("running", "complete"):
        return Verdict(0, f"job {info.job_id}: {info.healthy}/{info.spec.replicas} healthy")
    job = info.job_id
    why = trouble(info)
    if why:
        return Verdict(1, f"job {job} {info.state}: {why} (`corral inspect {job}` says more)")
    return Verdict(1, f"job {job} {info.state}" + (f": {info.reason}" if info.reason else ""))


def wait_and_report(job: Job, timeout: float | None) -> None:
    """Wait for the job to settle. A batch job exits, as `docker run` does, with its exit
    code (see `corral.job.exit_code`); 1 if it failed without one or was cancelled. A
    service exits 0 once every replica is healthy, 1 if it failed, was cancelled,
    crash-loops or turned unhealthy."""
    progress: Progress[JobInfo] = Progress(job_progress)
    if progress.terminal:
        progress.render = any_job_progress
    job.on_change = progress
    with (
        _interruptible(
            f"stopped waiting; job {job.id} carries on (`corral cancel {job.id}` stops it)"
        ),
        progress,
    ):
        info = job.wait(timeout)
    typer.echo(output.job_state(info))
    batch = info.spec.kind == "batch"
    if batch or info.state != "running":
        typer.echo(f"exit codes: {output.exit_codes(info)}")
    code = exit_code(job.exit_codes(info)) if batch else None
    if info.state in ("failed", "cancelled"):
        reason = f": {info.reason}" if info.reason else ""
        status = _process_status(code) if code and info.state == "failed" else 1
        fail(f"job {info.job_id} {info.state}{reason}", code=status)
    if code:
        raise typer.Exit(_process_status(code))
    verdict = None if batch else service_verdict(info)
    if verdict is not None and verdict.code:
        verdict.report()


def _process_status(code: int) -> int:
    """An exit code a process can have (1-255); 1 stands for any other non-zero one."""
    return code if 0 < code < 256 else 1


# -- a rollout (update, rollback) --


def rollout_progress(info: JobInfo) -> str | None:
    """`web: updating 2/4 v2→v3, 3/4 healthy` while the rollout runs."""
    if rollout_ended(info) or info.rollout is None:
        return None
    healthy = f"{info.healthy}/{info.spec.replicas} healthy"
    return f"{info.job_id}: {rollout_text(info.rollout)}, {healthy}"


def rollout_verdict(started: JobInfo, info: JobInfo, *, rollback: bool) -> Verdict:
    """How the rollout that `started` (the master's answer to api.update or api.rollback)
    began has ended, from `info` (where `rollout_ended` holds). 0 if it is "done" (for a
    rollback, "rolled-back" too); 1 with its reason otherwise: an update the master rolled
    back because a new task failed, or a rollout that failed or paused."""
    job = info.job_id
    kind = "rollback" if rollback else "update"
    if info.state in TERMINAL_JOB_STATES:
        reason = f": {info.reason}" if info.reason else ""
        return Verdict(1, f"job {job} {info.state} during its {kind}{reason}")
    rollout = info.rollout
    if rollout is None or rollout.to_version < started.version:
        return Verdict(0, f"job {job}: runs version {info.version} (nothing to roll out)")
    healthy = f"{info.healthy}/{info.spec.replicas} healthy"
    if rollout.state == "done" or (rollback and rollout.state == "rolled-back"):
        done = "rolled back to an earlier spec" if rollback else "rolled out"
        return Verdict(0, f"job {job}: version {rollout.to_version} {done}, {healthy}")
    reason = f": {rollout.reason}" if rollout.reason else ""
    what = f"the {kind} of job {job} to version {started.version}"
    if rollout.state == "rolled-back":
        return Verdict(
            1,
            f"{what} was rolled back (it now runs version {rollout.to_version}, {healthy}){reason}",
        )
    return Verdict(1, f"{what} ended {rollout.state}{reason}")


def wait_rollout(job: Job, started: JobInfo, timeout: float | None, *, rollback: bool) -> None:
    """Wait for the rollout `started` began to end, showing its progress; exit as
    `rollout_verdict` says."""
    progress: Progress[JobInfo] = Progress(rollout_progress)
    job.on_change = progress
    carries_on = f"the rollout of job {job.id} carries on (`corral rollback {job.id}` undoes it)"
    with _interruptible(f"stopped waiting; {carries_on}"):
        info = _wait_or_explain(job, timeout, rollout_ended, progress)
    rollout_verdict(started, info, rollback=rollback).report()


def _wait_or_explain(
    job: Job, timeout: float | None, until: Until, progress: Progress[JobInfo]
) -> JobInfo:
    try:
        with progress:
            return job.wait(timeout, until=until)
    except WaitTimeout as exc:
        last = progress.last
        where = rollout_progress(last) if last is not None else None
        fail(
            f"gave up waiting after {exc.timeout:g} s ({where or exc.state}); the rollout"
            f" carries on (`corral inspect {job.id}` follows it, `corral rollback {job.id}`"
            " undoes it)"
        )


@contextmanager
def _interruptible(message: str) -> Iterator[None]:
    """Ctrl-C ends the wait, not the work: print `message` on stderr and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(visible(message), err=True)
        raise typer.Exit(130) from None


# -- a node draining --


def drain_progress(node: NodeInfo | None) -> str | None:
    if node is None:
        return None
    return f"node {node.node_id}: {node_state(node)}, {node.tasks} tasks left"


def drain_verdict(node_id: str, node: NodeInfo | None) -> Verdict:
    if node is None:
        return Verdict(0, f"node {node_id}: the master no longer knows it; nothing runs there")
    if not node.draining and not node.cordoned:
        return Verdict(1, f"node {node_id} was uncordoned before it drained ({node.tasks} tasks)")
    return Verdict(0, f"node {node_id}: drained ({node_state(node)}, no tasks)")


def wait_drained(
    fetch: Callable[[], NodeInfo | None],
    node_id: str,
    timeout: float | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Ask `fetch` for the node every DRAIN_POLL s, showing its task count, until it has
    none (or is forgotten, or uncordoned); exit as `drain_verdict` says."""
    progress: Progress[NodeInfo | None] = Progress(drain_progress)
    deadline = None if timeout is None else clock() + timeout
    with _interruptible(f"stopped waiting; node {node_id} keeps draining"), progress:
        node = fetch()
        while not drained(node):
            progress(node)
            pause = DRAIN_POLL
            if deadline is not None:
                pause = min(pause, deadline - clock())
                if pause <= 0:
                    progress.end()
                    fail(
                        f"gave up waiting after {timeout:g} s: {drain_progress(node)}; the"
                        " drain carries on (`corral nodes` shows it)"
                    )
            sleep(pause)
            node = fetch()
    drain_verdict(node_id, node).report()


def drained(node: NodeInfo | None) -> bool:
    """Nothing is left to wait for: the node has no tasks, is gone, or is schedulable."""
    return node is None or node.tasks == 0 or not (node.draining or node.cordoned)
