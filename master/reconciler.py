"""Restart policies: what happens to a slot after its task ended.

- A service restarts with capped exponential backoff (`always`, or
  `on-failure` after a non-zero exit).
- A batch slot retries a failed task up to `max_retries` times, then the job
  fails. Exit code 0 completes the slot.
- A task lost with its node is replaced at once and does not count as a failure;
  one lost because its assignment could not be delivered is replaced after a
  backoff (by the undelivered losses in a row).
- A start failure that retrying cannot fix (a missing image) fails the job.

Pure: reads the state, returns events.
"""

from __future__ import annotations

from master import events as ev
from master.state import ClusterState, Job, Task, task_id_for
from schemas.api import CRASH_LOOP_RESTARTS
from schemas.job import RestartPolicy

# A task that ran at least this long resets its slot's backoff (as a crash loop has ended).
HEALTHY_RUN_SECONDS = 30.0


def restart_delay(policy: RestartPolicy, failures: int) -> float:
    """Backoff before the next attempt after `failures` consecutive failures (>= 1)."""
    if failures <= 0:
        return 0.0
    doublings = min(failures - 1, 64)  # past that the cap wins anyway; 2**1024 overflows
    return float(min(policy.backoff_max, policy.backoff_initial * 2.0**doublings))


def failures_after(job: Job, task: Task) -> int:
    """Consecutive failures of a slot once `task`, its newest attempt, has ended.

    Each attempt carries the count it started with (`Task.failures`), so this
    reads one task, however many older attempts were forgotten: lost and stopped
    attempts do not count, a service's healthy run resets the count, and a
    service that exits cleanly and restarts still backs off.
    """
    if not task.terminal or task.state in ("lost", "stopped"):
        return task.failures
    ran = (task.updated_at - task.started_at) if task.started_at is not None else 0.0
    if (task.was_healthy or ran >= HEALTHY_RUN_SECONDS) and job.spec.kind == "service":
        return 0
    if task.state == "failed" or task.exit_code != 0 or job.spec.kind == "service":
        return task.failures + 1
    return task.failures


def consecutive_failures(state: ClusterState, job: Job, slot: int) -> int:
    """Failed attempts of a slot since its last healthy run; lost and stopped tasks do not count."""
    attempts = job.slots.get(slot)
    return failures_after(job, state.tasks[attempts[-1]]) if attempts else 0


def undelivered_losses(task: Task) -> int:
    """How many of its slot's attempts in a row, up to `task`, were lost undelivered."""
    return task.undelivered_before + 1 if task.undelivered else 0


def _wants_restart(job: Job, task: Task) -> bool:
    """Whether the policy replaces an ended (not lost, not stopped) task."""
    condition = job.spec.restart_condition
    if condition == "never":
        return False
    if job.spec.kind == "batch" or condition == "on-failure":
        return not _succeeded(task)
    return True


def _succeeded(task: Task) -> bool:
    return task.state == "exited" and task.exit_code == 0


def failure_text(task: Task) -> str:
    if task.state == "failed":
        return task.reason or "failed to start"
    detail = f" ({task.reason})" if task.reason else ""  # e.g. out of memory (limit 64Mi)
    return f"exited with code {task.exit_code}{detail}"


def after_task_ended(state: ClusterState, task: Task, now: float) -> list[ev.Event]:
    """Events that follow `task` reaching a terminal state: a new attempt, or a failed job."""
    job = state.jobs.get(task.job_id)
    if job is None or job.cancelled or job.failed_reason or task.slot >= job.replicas:
        return []
    if job.slots[task.slot][-1] != task.task_id or task.state == "stopped":
        return []  # an older attempt, or one the master stopped on purpose
    failures = consecutive_failures(state, job, task.slot)
    if task.state == "lost":
        return [_replacement(state, job, task, failures, now)]
    if task.state == "failed" and not task.retryable:
        return [ev.JobFailed(at=now, job_id=job.job_id, reason=_describe(task))]
    if not _wants_restart(job, task):
        if _succeeded(task) or (job.spec.kind == "service" and task.state == "exited"):
            return []  # the slot is done
        return [ev.JobFailed(at=now, job_id=job.job_id, reason=_describe(task))]
    if job.spec.kind == "batch" and failures > job.spec.restart.max_retries:
        reason = f"{_describe(task)}; gave up after {failures - 1} retries"
        return [ev.JobFailed(at=now, job_id=job.job_id, reason=reason)]
    delay = restart_delay(job.spec.restart, failures)
    reason = f"restarting after {task.task_id} {failure_text(task)}"
    if job.spec.kind == "service" and failures >= CRASH_LOOP_RESTARTS:
        reason = f"crash loop ({failures} failures in a row): {reason}"
    return [
        new_attempt(
            job, task.slot, task.attempt + 1, now=now, delay=delay, reason=reason, failures=failures
        )
    ]


def _replacement(state: ClusterState, job: Job, task: Task, failures: int, now: float) -> ev.Event:
    """The next attempt after a loss: at once, unless the assignment never reached a node.

    Undelivered assignments back off like restarts (by the losses in a row), so a
    node that takes tasks but never runs them cannot make the master spin.
    """
    delay, reason = 0.0, ""
    losses = undelivered_losses(task)
    if losses:
        delay = restart_delay(job.spec.restart, losses)
        reason = f"replacing {task.task_id}, whose assignment could not be delivered"
    return new_attempt(
        job,
        task.slot,
        task.attempt + 1,
        now=now,
        delay=delay,
        reason=reason,
        failures=failures,
        undelivered=losses,
    )


def _describe(task: Task) -> str:
    return f"task {task.task_id} {failure_text(task)}"


def new_attempt(
    job: Job,
    slot: int,
    attempt: int,
    *,
    now: float,
    delay: float = 0.0,
    reason: str = "",
    failures: int = 0,
    undelivered: int = 0,
    retire: bool = False,
) -> ev.TaskCreated:
    if delay:
        reason = f"{reason} (in {delay:g} s)" if reason else f"waiting {delay:g} s"
    return ev.TaskCreated(
        at=now,
        task_id=task_id_for(job.job_id, slot, attempt, job.submission),
        job_id=job.job_id,
        slot=slot,
        attempt=attempt,
        not_before=now + delay,
        reason=reason,
        failures=failures,
        undelivered=undelivered,
        version=job.version,
        retire=retire,
    )


def fill_slots(state: ClusterState, job: Job, now: float) -> list[ev.Event]:
    """New attempts for slots with no live task: a new job, or one scaled (back) up."""
    events: list[ev.Event] = []
    for slot in range(job.replicas):
        attempts = job.slots.get(slot)
        if not attempts:
            events.append(new_attempt(job, slot, 0, now=now))
        elif (newest := state.tasks[attempts[-1]]).state == "stopped":  # scaled down earlier
            failures = failures_after(job, newest)
            events.append(new_attempt(job, slot, newest.attempt + 1, now=now, failures=failures))
    return events
