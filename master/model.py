"""The records the master keeps: jobs, their tasks (one per slot and attempt), nodes,
nodes known only from the journal, and the outcomes of recent requests.

Plain mutable dataclasses, changed only by `ClusterState.apply` (master/state.py).
Besides what they describe, they carry the indexes that keep the master's work
per input independent of how much it holds: a job's counts of its slots by
state, a node's tasks by job and the host ports in use.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from schemas.api import CRASH_LOOP_RESTARTS, ApiError
from schemas.job import JobSpec
from schemas.limits import MAX_JOB_EVENTS
from schemas.messages import (
    TERMINAL_TASK_STATES,
    JobState,
    NodeNetwork,
    NodeState,
    Resources,
    RunningTask,
    TaskState,
)

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


def millicpus(cpus: float) -> int:
    """CPUs in thousandths (a spec's step): bookings add up exactly, in any order."""
    return round(cpus * 1000)


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
    version: int = 1  # the job version (spec) it runs
    health: str = ""  # Docker's last verdict on its health check ("": none yet / no check)
    # Since when it has been running and passing its check (None: not so now); it is
    # `healthy` once that has lasted the job's min_healthy (a TaskHealthy event).
    passing_since: float | None = None
    healthy: bool = False
    was_healthy: bool = False  # it has been healthy at some point (a crash loop had ended)
    # Kept running after its slot got a newer attempt (start-first), until that one is
    # healthy; then stopped.
    retiring: bool = False
    address: str = ""  # on the cluster network, while running ("": none)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_TASK_STATES


@dataclass
class Version:
    """One version of a job's spec."""

    version: int
    spec: JobSpec
    at: float
    reason: str = ""


@dataclass
class Rollout:
    """A job's update (or rollback) to `to_version`: "updating" or "rolling-back" while it
    runs, then "done", "rolled-back" (an update that failed and was undone) or "failed"."""

    state: str
    from_version: int
    to_version: int
    reason: str = ""
    automatic: bool = False  # a rollback the master started because the update failed
    # The versions whose containers are the target's (the specs differ at most in what
    # does not reach a container, e.g. the replicas: a rollback makes an older spec
    # current again, its tasks need no replacing). Computed once, when it starts.
    equivalent: list[int] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.state in ("updating", "rolling-back")


# One entry of a job's history: (when, task id or "", what happened).
JobNote = tuple[float, str, str]


def job_history() -> deque[JobNote]:
    return deque(maxlen=MAX_JOB_EVENTS)


@dataclass
class Job:
    job_id: str
    spec: JobSpec
    submitted_at: float
    submission: str = ""  # this submission's token, part of its task ids
    owner: str = ""  # the user who submitted it ("": none, see master/access.py)
    # 1 for a new name, one more each time the name is submitted again while the
    # previous job is still remembered (`v<n>` tokens for submissions without one).
    generation: int = 1
    announced: JobState | None = None  # the last state announced (JobStateChanged)
    cancelled: bool = False
    failed_reason: str = ""
    # slot -> its attempts, oldest first; the last one is the slot's current attempt
    slots: dict[int, list[str]] = field(default_factory=dict)
    # The current attempt of every slot, by state (what JobInfo.task_counts shows).
    task_counts: Counter[str] = field(default_factory=Counter)
    # The same for the slots the job wants (slot < replicas), which its state follows.
    wanted: Counter[str] = field(default_factory=Counter)
    wanted_done: int = 0  # of those, the slots whose work is done (see `slot_done`)
    wanted_healthy: int = 0  # of those, the slots whose task is running and healthy
    # Healthy tasks that still serve a wanted slot while its new attempt starts (retiring).
    retiring_healthy: int = 0
    # Of those, the slots crash-looping (see `crash_looping`).
    wanted_looping: int = 0
    version: int = 1  # the version its slots run or roll to (`spec` is its spec)
    versions: dict[int, Version] = field(default_factory=dict)  # the kept ones, oldest first
    rollout: Rollout | None = None
    history: deque[JobNote] = field(default_factory=job_history)
    ended_at: float | None = None

    @property
    def replicas(self) -> int:
        """The desired number of slots (`corral scale` changes the spec's count)."""
        return self.spec.replicas

    def spec_of(self, task: Task) -> JobSpec:
        """The spec `task` runs: its version's (the current one if that was dropped)."""
        if task.version == self.version:
            return self.spec
        kept = self.versions.get(task.version)
        return kept.spec if kept is not None else self.spec

    def note(self, at: float, task_id: str, text: str) -> None:
        self.history.append((at, task_id, text))


def crash_looping(task: Task) -> bool:
    """Whether a slot whose current attempt is `task` is crash-looping: its attempts
    failed CRASH_LOOP_RESTARTS times in a row, and this one is not healthy (yet)."""
    return task.failures >= CRASH_LOOP_RESTARTS and not task.healthy


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
    used_millicpus: int = 0
    used_memory: int = 0
    task_ids: set[str] = field(default_factory=set)
    # Tasks booked here, per job (the spread score), and the host ports they hold.
    job_counts: Counter[str] = field(default_factory=Counter)
    ports: Counter[Port] = field(default_factory=Counter)
    # No new tasks before this time, and why (e.g. its assignments came back unroutable).
    held_until: float = 0.0
    held_reason: str = ""
    state_since: float = 0.0  # when it entered its state
    state_reason: str = ""
    cordoned: bool = False  # no new tasks (corral cordon / drain)
    draining: bool = False  # its tasks move elsewhere, start-first (corral drain)
    leaving: bool = False  # its agent announced it leaves the cluster: drain all, batch too
    network: NodeNetwork | None = None  # its side of the cluster network, as it last said
    interval: float = 1.0  # how often it heartbeats, as it last said (liveness scales by it)

    @property
    def used_cpu(self) -> float:
        return self.used_millicpus / 1000

    @property
    def free_cpu(self) -> float:
        return self.capacity.cpus - self.used_cpu

    @property
    def free_memory(self) -> int:
        return self.capacity.memory - self.used_memory


@dataclass
class Unseen:
    """A node the journal names but no heartbeat has shown this master yet.

    A standby replays the journal before it hears every node (and a starting
    master replays it before any), so what the journal says about such a node is
    kept here until its first heartbeat makes it a `Node`: its state (a node the
    journal says is down stays down when it is first heard from, until the leader
    says otherwise), its hold, and the active tasks booked on it (bound to it
    then, without a scan of all tasks). The scheduler and the listings see only
    `Node`s; liveness judges these too, so that on a new leader a node that died
    during the failover goes down and its tasks are replaced.
    """

    node_id: str
    # When the journal first named it (the old leader had heard from it then, or
    # shortly before): liveness measures its silence from there, or from its grace.
    last_seen: float
    state: NodeState = "ready"
    held_until: float = 0.0
    held_reason: str = ""
    held_boot: str = ""  # the agent the hold is for ("": any)
    task_ids: set[str] = field(default_factory=set)
    state_since: float = 0.0
    state_reason: str = ""
    cordoned: bool = False
    draining: bool = False
    leaving: bool = False


@dataclass(frozen=True)
class Outcome:
    """What a mutating request came to: its job, and the error if it failed."""

    request_type: str
    job_id: str
    error: ApiError | None = None


class RequestMemory:
    """The outcomes of the last `size` mutating requests, by message id (an LRU).

    Part of the state: only `ClusterState.apply` (a `RequestDone`) calls
    `remember`, which also makes an id the most recently used; `recall` reads.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._outcomes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestMemory):
            return NotImplemented
        return self.size == other.size and self.items() == other.items()

    __hash__ = None  # type: ignore[assignment]

    def items(self) -> list[tuple[str, Outcome]]:
        """(message id, outcome), least recently used first."""
        return list(self._outcomes.items())

    def recall(self, message_id: str, request_type: str, job_id: str) -> Outcome | None:
        """The outcome of an earlier request with this id, type and job, if remembered."""
        outcome = self._outcomes.get(message_id)
        if outcome is None or (outcome.request_type, outcome.job_id) != (request_type, job_id):
            return None  # unknown, or an id reused for another request: a new request
        return outcome

    def remember(self, message_id: str, outcome: Outcome) -> None:
        if not message_id or self.size == 0:
            return
        self._outcomes[message_id] = outcome
        self._outcomes.move_to_end(message_id)
        while len(self._outcomes) > self.size:
            self._outcomes.popitem(last=False)
