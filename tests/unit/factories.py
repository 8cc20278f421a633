"""Builders shared by the unit tests: specs, heartbeats, and a ClusterState grown by events.

`Cluster` only ever changes its state through `ClusterState.apply`, exactly as the
master does, so a test reads as the sequence of events that led to its situation.
"""

from __future__ import annotations

from typing import Literal

from master import events as ev
from master.access import Caller
from master.state import ClusterState, Job, Node, Task, task_id_for
from schemas.job import JobSpec
from schemas.messages import Heartbeat, Resources, RunningTask

MiB = 1024**2
GiB = 1024**3

TaskUpdate = Literal["running", "exited", "failed", "lost", "stopped"]

# The caller of API requests in tests that are not about access: may do everything.
ADMIN = Caller("corral", "admin")


def job_spec(name: str = "web", /, **fields: object) -> JobSpec:
    """A valid spec; `fields` are given as a job file would give them (e.g. memory="1g")."""
    return JobSpec.model_validate({"name": name, "image": "busybox", **fields})


def heartbeat(
    node_id: str,
    *,
    cpus: float = 4.0,
    memory: int = 8 * GiB,
    labels: dict[str, str] | None = None,
    tasks: list[RunningTask] | None = None,
    seq: int = 0,
) -> Heartbeat:
    return Heartbeat(
        node_id=node_id,
        boot_id=f"boot-{node_id}",
        seq=seq,
        interval=1.0,
        capacity=Resources(cpus=cpus, memory=memory),
        allocated=Resources(cpus=0, memory=0),
        labels=labels or {},
        tasks=tasks or [],
    )


def running(
    task_id: str, job_id: str = "web", state: Literal["running", "exited"] = "running"
) -> RunningTask:
    """A container as a worker reports it in its heartbeat."""
    return RunningTask(
        task_id=task_id,
        job_id=job_id,
        container_id=f"c-{task_id}",
        state=state,
        cpu=0.1,
        memory=MiB,
    )


class Cluster:
    """A ClusterState built by applying events; `now` is the `at` of the next event."""

    def __init__(self, now: float = 0.0) -> None:
        self.state = ClusterState()
        self.now = now
        self.history: list[ev.Event] = []

    def apply(self, *events: ev.Event) -> None:
        for event in events:
            self.state.apply(event)
            self.history.append(event)

    def node(
        self,
        node_id: str,
        *,
        cpus: float = 4.0,
        memory: int = 8 * GiB,
        labels: dict[str, str] | None = None,
    ) -> Node:
        self.apply(
            ev.NodeObserved(
                at=self.now,
                node_id=node_id,
                boot_id=f"boot-{node_id}",
                capacity=Resources(cpus=cpus, memory=memory),
                labels=labels or {},
            )
        )
        return self.state.nodes[node_id]

    def node_state(self, node_id: str, state: Literal["ready", "suspect", "down"]) -> None:
        self.apply(ev.NodeStateChanged(at=self.now, node_id=node_id, state=state))

    def job(self, spec: JobSpec, *, tasks: bool = True) -> Job:
        """Submit `spec` (job id = its name) and, unless told not to, attempt 0 of each slot."""
        self.apply(ev.JobSubmitted(at=self.now, job_id=spec.name, spec=spec))
        if tasks:
            for slot in range(spec.replicas):
                self.attempt(spec.name, slot, 0)
        return self.state.jobs[spec.name]

    def attempt(self, job_id: str, slot: int, attempt: int, *, not_before: float = 0.0) -> Task:
        task_id = task_id_for(job_id, slot, attempt)
        self.apply(
            ev.TaskCreated(
                at=self.now,
                task_id=task_id,
                job_id=job_id,
                slot=slot,
                attempt=attempt,
                not_before=not_before,
            )
        )
        return self.state.tasks[task_id]

    def assign(self, task_id: str, node_id: str) -> Task:
        self.apply(ev.TaskAssigned(at=self.now, task_id=task_id, node_id=node_id, epoch=1))
        return self.state.tasks[task_id]

    def update(
        self,
        task_id: str,
        state: TaskUpdate,
        exit_code: int | None = None,
        *,
        reason: str = "",
        retryable: bool = True,
    ) -> Task:
        self.apply(
            ev.TaskUpdated(
                at=self.now,
                task_id=task_id,
                state=state,
                exit_code=exit_code,
                reason=reason,
                retryable=retryable,
            )
        )
        return self.state.tasks[task_id]

    def job_state(self, job_id: str) -> tuple[str, str]:
        return self.state.job_state(self.state.jobs[job_id])
