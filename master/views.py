"""What clients see of the state: TaskInfo, NodeInfo and JobInfo, within a size budget.

Every spec shown has its `secret_env` values redacted (`access.redacted`), for
every reader: a view is what leaves the master, in replies, listings and versions.
Whether the reader may see `env` values is decided per caller by the API
(`access.hide_env`), not here.

A JobInfo never grows with its job: `task_counts` is always complete (read from
the job's counters), and its `tasks` stop once the reply would pass
`limits.PAGE_BYTES`, the current attempt of each slot first, the rest counted
in `tasks_omitted`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from master.access import redacted
from master.model import Job, Node, Task
from master.rollout import equivalent_versions
from master.state import ClusterState
from schemas.api import EventInfo, JobInfo, NodeInfo, RolloutInfo, TaskInfo, VersionInfo
from schemas.limits import PAGE_BYTES
from schemas.messages import Resources


def timestamp(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def json_size(info: TaskInfo | JobInfo | NodeInfo) -> int:
    """Bytes of the item's compact JSON, as it travels inside a reply."""
    return len(info.__pydantic_serializer__.to_json(info))


def task_info(task: Task) -> TaskInfo:
    return TaskInfo(
        task_id=task.task_id,
        job_id=task.job_id,
        slot=task.slot,
        attempt=task.attempt,
        state=task.state,
        node_id=task.node_id,
        container_id=task.container_id,
        exit_code=task.exit_code,
        reason=task.reason,
        updated_at=timestamp(task.updated_at),
        started_at=timestamp(task.started_at) if task.started_at is not None else None,
        version=task.version,
        health=task.health,  # type: ignore[arg-type]
        healthy=task.healthy and task.state == "running",
        restarts=task.failures,
        retiring=task.retiring,
        address=task.address,
    )


def node_info(node: Node, subnet: str = "") -> NodeInfo:
    return NodeInfo(
        node_id=node.node_id,
        state=node.state,
        capacity=node.capacity,
        allocated=Resources(cpus=round(max(node.used_cpu, 0.0), 6), memory=node.used_memory),
        labels=node.labels,
        tasks=len(node.task_ids),
        last_seen=timestamp(node.last_seen),
        reason=node.state_reason,
        cordoned=node.cordoned,
        draining=node.draining,
        subnet=subnet,
        addr=node.network.addr if node.network is not None else "",
    )


def job_summary(state: ClusterState, job: Job) -> JobInfo:
    """The job without its tasks (as listings show it), with complete `task_counts`."""
    status, reason = state.job_state(job)
    return JobInfo(
        job_id=job.job_id,
        state=status,
        reason=reason,
        spec=redacted(job.spec),
        submitted_at=timestamp(job.submitted_at),
        task_counts=dict(sorted(job.task_counts.items())),
        version=job.version,
        healthy=state.serving(job),
        rollout=_rollout_info(state, job),
        ended_at=timestamp(job.ended_at) if job.ended_at is not None else None,
        owner=job.owner,
    )


def _rollout_info(state: ClusterState, job: Job) -> RolloutInfo | None:
    rollout = job.rollout
    if rollout is None:
        return None
    done = 0
    if rollout.active:  # O(replicas): only while it runs
        target = equivalent_versions(job)
        for slot in range(job.replicas):
            attempts = job.slots.get(slot)
            task = state.tasks[attempts[-1]] if attempts else None
            if task is not None and task.version in target and task.healthy:
                done += 1
    else:
        done = job.replicas if rollout.state == "done" else 0
    return RolloutInfo(
        state=rollout.state,
        from_version=rollout.from_version,
        to_version=rollout.to_version,
        done=done,
        total=job.replicas,
        reason=rollout.reason,
    )


def _history(job: Job, task_id: str | None = None) -> list[EventInfo]:
    return [
        EventInfo(at=timestamp(at), task_id=about or None, text=text)
        for at, about, text in job.history
        if task_id is None or about == task_id
    ]


def _versions(job: Job) -> list[VersionInfo]:
    return [
        VersionInfo(
            version=v.version, spec=redacted(v.spec), created_at=timestamp(v.at), reason=v.reason
        )
        for v in job.versions.values()
    ]


def task_detail(state: ClusterState, job: Job, task: Task) -> JobInfo:
    """The job with only `task`, the version it runs and its events (`corral inspect TASK`)."""
    versions = [v for v in _versions(job) if v.version == task.version]
    return job_summary(state, job).model_copy(
        update={
            "tasks": [task_info(task)],
            "versions": versions,
            "events": _history(job, task.task_id),
        }
    )


def _by_priority(state: ClusterState, job: Job) -> Iterator[Task]:
    """The current attempt of each slot (by slot), then older attempts, newest first."""
    slots = sorted(job.slots.items())
    for _, attempts in slots:
        yield state.tasks[attempts[-1]]
    for _, attempts in slots:
        for task_id in reversed(attempts[:-1]):
            yield state.tasks[task_id]


def job_detail(state: ClusterState, job: Job, budget: int = PAGE_BYTES) -> JobInfo:
    """The job with as many of its tasks as fit in `budget` bytes of JSON, in all.

    Tasks are chosen current attempts first and listed by (slot, attempt); the
    ones left out are counted in `tasks_omitted` (`api.tasks` pages through all).
    """
    summary = job_summary(state, job).model_copy(
        update={"versions": _versions(job), "events": _history(job)}
    )
    room = budget - json_size(summary)
    chosen: list[TaskInfo] = []
    total = sum(len(attempts) for attempts in job.slots.values())
    for task in _by_priority(state, job):
        info = task_info(task)
        size = json_size(info) + 1  # and its comma
        if size > room:
            break
        chosen.append(info)
        room -= size
    chosen.sort(key=lambda t: (t.slot, t.attempt))
    return summary.model_copy(update={"tasks": chosen, "tasks_omitted": total - len(chosen)})
