"""Moving a job's slots to new tasks while it keeps serving: rolling updates and drains.

Both come down to one move, carried out by the controller: replace a slot's
current task with a new attempt, either start-first (the old task keeps
running, `retiring`, until the new one is healthy, then it is stopped) or
stop-first (the old task is stopped, then the new one starts).

- A rolling update replaces the slots whose task runs an older version,
  `parallelism` at a time: a slot counts as in progress until its new task
  is healthy. A new task that fails before it was ever healthy rolls the job
  back (`failed_before_healthy`): the previous version's spec becomes a new
  version, rolled out the same way.
- A drain replaces, start-first, every service task on the node (and batch
  tasks too when the node is leaving the cluster; otherwise they finish).

Pure: reads the state, returns decisions; the controller commits them.
"""

from __future__ import annotations

from dataclasses import dataclass

from master import events as ev
from master.model import ACTIVE_TASK_STATES, Job, Task
from master.reports import tasks_on
from master.state import ClusterState


@dataclass(frozen=True)
class Step:
    """What a rollout does now: replace these slots' tasks, or end (`ended`)."""

    replace: list[Task]
    ended: ev.RolloutEnded | None = None


def step(state: ClusterState, job: Job, now: float) -> Step:
    """The next move of the job's active rollout.

    Slots are taken in order; a slot is in progress while its current attempt runs
    the target version and is not yet healthy. O(replicas) per call, made once per
    input that touched the job while its rollout runs."""
    rollout = job.rollout
    if rollout is None or not rollout.active or job.cancelled or job.failed_reason:
        return Step([])
    outdated: list[Task] = []
    busy = 0
    target = equivalent_versions(job)
    for slot in range(job.replicas):
        attempts = job.slots.get(slot)
        if not attempts:
            busy += 1  # being filled (fill_slots makes it on the target version)
            continue
        task = state.tasks[attempts[-1]]
        if task.version not in target:
            outdated.append(task)
        elif not (task.healthy and task.state == "running") and not _done(job, task):
            busy += 1
    if not outdated and not busy:
        state_name = "rolled-back" if rollout.automatic else "done"
        reason = rollout.reason if rollout.automatic else ""
        return Step([], ev.RolloutEnded(at=now, job_id=job.job_id, state=state_name, reason=reason))
    room = max(0, job.spec.update.parallelism - busy)
    return Step(outdated[:room])


def equivalent_versions(job: Job) -> set[int]:
    """The versions a slot may run and count as up to date (see `Rollout.equivalent`)."""
    if job.rollout is None:
        return {job.version}
    return {job.version, *job.rollout.equivalent}


def _done(job: Job, task: Task) -> bool:
    """A slot whose work is over (a service that exited cleanly under on-failure)."""
    return task.state == "exited" and job.spec.restart_condition != "always"


def failed_before_healthy(job: Job, task: Task) -> bool:
    """Whether `task`, which just ended, fails its job's rollout: a task of the version
    being rolled out that ended badly before it was ever healthy."""
    rollout = job.rollout
    if rollout is None or not rollout.active or task.version != job.version:
        return False
    if task.was_healthy or task.state in ("lost", "stopped"):
        return False
    return task.state == "failed" or job.spec.kind == "service" or task.exit_code != 0


def previous_version(job: Job) -> int | None:
    """The newest kept version before the current one (what a rollback goes back to)."""
    older = [version for version in job.versions if version < job.version]
    return max(older) if older else None


def to_drain(state: ClusterState, node_id: str) -> list[Task]:
    """The tasks on a draining node still to be replaced: each active current attempt of a
    service (any job's, when the node is leaving) not yet replaced elsewhere."""
    node = state.nodes.get(node_id)
    if node is None or not node.draining:
        return []
    found = []
    for task in tasks_on(state, node_id, ACTIVE_TASK_STATES):
        job = state.jobs.get(task.job_id)
        if job is None or task.retiring or job.cancelled or job.failed_reason:
            continue
        if job.slots.get(task.slot, [""])[-1] != task.task_id or task.slot >= job.replicas:
            continue
        if job.spec.kind == "service" or node.leaving:
            found.append(task)
    return found
