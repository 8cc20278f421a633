"""The records the master keeps: jobs, their tasks (one per slot and attempt), nodes.

Plain mutable dataclasses, changed only by `ClusterState.apply` (master/state.py).
Besides what they describe, they carry the indexes that keep the master's work
per input independent of how much it holds: a job's counts of its slots by
state, a node's tasks by job and the host ports in use.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from schemas.job import JobSpec
from schemas.messages import TERMINAL_TASK_STATES, NodeState, Resources, RunningTask, TaskState

ACTIVE_TASK_STATES: frozenset[str] = frozenset({"assigned", "running"})

Port = tuple[int, str]  # (host port, protocol)


def task_id_for(job_id: str, slot: int, attempt: int, submission: str = "") -> str:
    """`<job>-<submission>-<slot>-<attempt>`, e.g. `web-3f9a1c-0-0`.

    The submission token differs each time a name is submitted, also across master
    restarts, so no task id (and container name) ever stands for two different tasks.
    """
    if submission:
        return f"{job_id}-{submission}-{slot}-{attempt}"
    return f"{job_id}-{slot}-{attempt}"


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
    # Consecutive failures of the slot before this attempt (the restart backoff
    # reads it, so forgetting old attempts does not reset a crash loop's count).
    failures: int = 0
    # Lost because its assignment could not be delivered (the node had no queue).
    undelivered: bool = False
    # The slot's attempts lost undelivered in a row before this one (carried, like
    # `failures`, so that forgetting old attempts does not reset the backoff).
    undelivered_before: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_TASK_STATES


@dataclass
class Job:
    job_id: str
    spec: JobSpec
    submitted_at: float
    submission: str = ""  # this submission's token, part of its task ids
    cancelled: bool = False
    failed_reason: str = ""
    # slot -> its attempts, oldest first; the last one is the slot's current attempt
    slots: dict[int, list[str]] = field(default_factory=dict)
    # The current attempt of every slot, by state (what JobInfo.task_counts shows).
    task_counts: Counter[str] = field(default_factory=Counter)
    # The same for the slots the job wants (slot < replicas), which its state follows.
    wanted: Counter[str] = field(default_factory=Counter)
    wanted_done: int = 0  # of those, the slots whose work is done (see `slot_done`)

    @property
    def replicas(self) -> int:
        """The desired number of slots (`corral scale` changes the spec's count)."""
        return self.spec.replicas


def slot_done(spec: JobSpec, task: Task) -> bool:
    """Whether `task`, the current attempt of its slot, leaves nothing more to do there."""
    if task.state != "exited":
        return False
    if spec.kind == "batch":
        return task.exit_code == 0
    return spec.restart_condition == "never" or (
        spec.restart_condition == "on-failure" and task.exit_code == 0
    )


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
    # Tasks booked here, per job (the spread score), and the host ports they hold.
    job_counts: Counter[str] = field(default_factory=Counter)
    ports: Counter[Port] = field(default_factory=Counter)
    # No new tasks before this time, and why (e.g. its assignments came back unroutable).
    held_until: float = 0.0
    held_reason: str = ""

    @property
    def free_cpu(self) -> float:
        return self.capacity.cpus - self.used_cpu

    @property
    def free_memory(self) -> int:
        return self.capacity.memory - self.used_memory
