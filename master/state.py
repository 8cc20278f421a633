"""The master's picture of the cluster, changed only by `ClusterState.apply(event)`.

Applying never reads a clock, never does I/O and never fails on an event that
refers to something gone (it is ignored): the same events in the same order
always give the same state. Controllers read this state and return events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import singledispatchmethod

from master import events as ev
from schemas.api import JobInfo, NodeInfo, TaskInfo
from schemas.job import JobSpec
from schemas.messages import (
    TERMINAL_TASK_STATES,
    JobState,
    NodeState,
    Resources,
    RunningTask,
    TaskState,
)

ACTIVE_TASK_STATES: frozenset[str] = frozenset({"assigned", "running"})


def task_id_for(job_id: str, slot: int, attempt: int, submission: str = "") -> str:
    """`<job>-<submission>-<slot>-<attempt>`, e.g. `web-3f9a1c-0-0`.

    The submission token differs each time a name is submitted, also across master
    restarts, so no task id (and container name) ever stands for two different tasks.
    """
    if submission:
        return f"{job_id}-{submission}-{slot}-{attempt}"
    return f"{job_id}-{slot}-{attempt}"


def _timestamp(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


@dataclass
class Task:
    task_id: str
    job_id: str
    slot: int
    attempt: int
    created_at: float
    state: TaskState = "pending"
    node_id: str | None = None
    container_id: str = ""
    exit_code: int | None = None
    reason: str = ""
    retryable: bool = True
    not_before: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_TASK_STATES

    def info(self) -> TaskInfo:
        return TaskInfo(
            task_id=self.task_id,
            job_id=self.job_id,
            slot=self.slot,
            attempt=self.attempt,
            state=self.state,
            node_id=self.node_id,
            container_id=self.container_id,
            exit_code=self.exit_code,
            reason=self.reason,
            updated_at=_timestamp(self.updated_at),
        )


@dataclass
class Job:
    job_id: str
    spec: JobSpec
    submitted_at: float
    submission: str = ""  # this submission's token, part of its task ids
    cancelled: bool = False
    failed_reason: str = ""
    # slot -> its attempts, oldest first
    slots: dict[int, list[str]] = field(default_factory=dict)

    @property
    def replicas(self) -> int:
        """The desired number of slots (`corral scale` changes the spec's count)."""
        return self.spec.replicas


@dataclass
class Node:
    node_id: str
    state: NodeState
    capacity: Resources
    labels: dict[str, str]
    boot_id: str
    last_seen: float
    reported: list[RunningTask] = field(default_factory=list)
    used_cpu: float = 0.0
    used_memory: int = 0
    task_ids: set[str] = field(default_factory=set)

    @property
    def free_cpu(self) -> float:
        return self.capacity.cpus - self.used_cpu

    @property
    def free_memory(self) -> int:
        return self.capacity.memory - self.used_memory

    def info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            state=self.state,
            capacity=self.capacity,
            allocated=Resources(cpus=round(max(self.used_cpu, 0.0), 6), memory=self.used_memory),
            labels=self.labels,
            tasks=len(self.task_ids),
            last_seen=_timestamp(self.last_seen),
        )


class ClusterState:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, Task] = {}
        self.nodes: dict[str, Node] = {}

    # -- the only mutation --

    @singledispatchmethod
    def apply(self, event: ev.Event) -> None:
        raise TypeError(f"unknown event {type(event).__name__}")

    @apply.register
    def _job_submitted(self, event: ev.JobSubmitted) -> None:
        old = self.jobs.get(event.job_id)
        if old is not None:  # a finished job's name is reused: forget the old one
            for attempts in old.slots.values():
                for task_id in attempts:
                    self._unbind(self.tasks[task_id])
                    del self.tasks[task_id]
        self.jobs[event.job_id] = Job(
            event.job_id,
            event.spec,
            event.at,
            submission=event.submission,
        )

    @apply.register
    def _job_scaled(self, event: ev.JobScaled) -> None:
        if job := self.jobs.get(event.job_id):
            job.spec = job.spec.model_copy(update={"replicas": event.replicas})

    @apply.register
    def _job_cancelled(self, event: ev.JobCancelled) -> None:
        if job := self.jobs.get(event.job_id):
            job.cancelled = True

    @apply.register
    def _job_failed(self, event: ev.JobFailed) -> None:
        if job := self.jobs.get(event.job_id):
            job.failed_reason = event.reason

    @apply.register
    def _task_created(self, event: ev.TaskCreated) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            return
        self.tasks[event.task_id] = Task(
            task_id=event.task_id,
            job_id=event.job_id,
            slot=event.slot,
            attempt=event.attempt,
            created_at=event.at,
            not_before=event.not_before,
            reason=event.reason,
            updated_at=event.at,
        )
        job.slots.setdefault(event.slot, []).append(event.task_id)

    @apply.register
    def _task_unplaced(self, event: ev.TaskUnplaced) -> None:
        if (task := self.tasks.get(event.task_id)) and task.state == "pending":
            task.reason = event.reason

    @apply.register
    def _task_assigned(self, event: ev.TaskAssigned) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.state != "pending":
            return
        task.state = "assigned"
        task.node_id = event.node_id
        task.reason = ""
        task.updated_at = event.at
        self._bind(task)

    @apply.register
    def _task_updated(self, event: ev.TaskUpdated) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.terminal:
            return
        task.state = event.state
        task.exit_code = event.exit_code
        task.reason = event.reason
        task.retryable = event.retryable
        task.container_id = event.container_id or task.container_id
        task.updated_at = event.at
        if event.state == "running" and task.started_at is None:
            task.started_at = event.at
        if task.terminal:
            self._unbind(task)

    @apply.register
    def _node_observed(self, event: ev.NodeObserved) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            self.nodes[event.node_id] = Node(
                event.node_id,
                "ready",
                event.capacity,
                event.labels,
                event.boot_id,
                event.at,
                list(event.tasks),
            )
            return
        node.capacity = event.capacity
        node.labels = event.labels
        node.boot_id = event.boot_id
        node.last_seen = event.at
        node.reported = list(event.tasks)

    @apply.register
    def _node_state_changed(self, event: ev.NodeStateChanged) -> None:
        if node := self.nodes.get(event.node_id):
            node.state = event.state

    def _bind(self, task: Task) -> None:
        node = self.nodes.get(task.node_id or "")
        job = self.jobs.get(task.job_id)
        if node is None or job is None or task.task_id in node.task_ids:
            return
        node.task_ids.add(task.task_id)
        node.used_cpu += job.spec.cpu
        node.used_memory += job.spec.memory

    def _unbind(self, task: Task) -> None:
        node = self.nodes.get(task.node_id or "")
        job = self.jobs.get(task.job_id)
        if node is None or job is None or task.task_id not in node.task_ids:
            return
        node.task_ids.discard(task.task_id)
        node.used_cpu -= job.spec.cpu
        node.used_memory -= job.spec.memory

    # -- reading --

    def current_tasks(self, job: Job) -> list[Task]:
        """The newest attempt of each slot."""
        return [self.tasks[attempts[-1]] for _, attempts in sorted(job.slots.items())]

    def live_tasks(self, job: Job) -> list[Task]:
        return [task for task in self.current_tasks(job) if not task.terminal]

    def pending_tasks(self) -> list[Task]:
        return [task for task in self.tasks.values() if task.state == "pending"]

    def job_state(self, job: Job) -> tuple[JobState, str]:
        """A job's state and why, derived from its tasks."""
        if job.cancelled:
            return "cancelled", ""
        if job.failed_reason:
            return "failed", job.failed_reason
        current = [t for t in self.current_tasks(job) if t.slot < job.replicas]
        if job.replicas == 0 and job.spec.kind == "service":
            return "running", "scaled to 0 replicas"
        if len(current) == job.replicas and all(self._slot_done(job, t) for t in current):
            return "complete", ""
        waiting = [t for t in current if t.state in ("pending", "assigned")]
        if any(t.state == "running" for t in current) and (job.spec.kind == "batch" or not waiting):
            return "running", ""
        pending = next((t for t in current if t.state == "pending" and t.reason), None)
        return "pending", pending.reason if pending else ""

    @staticmethod
    def _slot_done(job: Job, task: Task) -> bool:
        if task.state != "exited":
            return False
        if job.spec.kind == "batch":
            return task.exit_code == 0
        return job.spec.restart_condition == "never" or (
            job.spec.restart_condition == "on-failure" and task.exit_code == 0
        )

    def job_info(self, job: Job) -> JobInfo:
        state, reason = self.job_state(job)
        tasks = [self.tasks[t].info() for attempts in job.slots.values() for t in attempts]
        return JobInfo(
            job_id=job.job_id,
            state=state,
            reason=reason,
            spec=job.spec,
            submitted_at=_timestamp(job.submitted_at),
            tasks=sorted(tasks, key=lambda t: (t.slot, t.attempt)),
        )
