"""Every change to the cluster state, as an event.

`ClusterState.apply(event)` is the only mutation of the master's state, so
replaying the same events rebuilds the same state (the HA journal appends
exactly these). Events carry their own time (`at`, seconds since the epoch)
so that applying them never reads a clock.

`NodeObserved` is soft state rebuilt from heartbeats; it is marked
`JOURNALED = False` and a journal skips it (standbys observe heartbeats
themselves). Forgetting is a change like any other (`TaskForgotten`,
`JobForgotten`), so a replay forgets exactly what the master forgot.

Besides the cluster itself, the state holds what a master must remember to act
the same after a failover, each changed by its own event: the last state
announced for each job (`JobStateChanged`), containers fenced lately
(`TaskFenced`) and the outcomes of recent mutating requests (`RequestDone`).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from schemas.job import JobSpec, Strict
from schemas.messages import JobState, NodeNetwork, NodeState, Resources, RunningTask


class Event(Strict):
    JOURNALED: ClassVar[bool] = True
    at: float


class JobSubmitted(Event):
    kind: Literal["job.submitted"] = "job.submitted"
    job_id: str
    spec: JobSpec
    submission: str = ""  # a token unique to this submission, part of its task ids
    # The user who submitted it. Journals written before jobs had owners have none:
    # "" means no owner, and a job without one only admins may change (master/access.py).
    owner: str = ""


class JobScaled(Event):
    kind: Literal["job.scaled"] = "job.scaled"
    job_id: str
    replicas: int


class JobCancelled(Event):
    kind: Literal["job.cancelled"] = "job.cancelled"
    job_id: str


class JobFailed(Event):
    kind: Literal["job.failed"] = "job.failed"
    job_id: str
    reason: str


class TaskCreated(Event):
    """A new attempt for a slot; it waits in `pending` until `not_before`."""

    kind: Literal["task.created"] = "task.created"
    task_id: str
    job_id: str
    slot: int
    attempt: int
    not_before: float = 0.0
    reason: str = ""
    failures: int = 0  # consecutive failures of the slot before this attempt
    undelivered: int = 0  # the slot's attempts lost undelivered in a row before this one
    version: int = 1  # the job version it runs
    # Start-first: the slot's previous attempt, if still active, keeps running (retiring)
    # until this one is healthy.
    retire: bool = False


class TaskUnplaced(Event):
    """The scheduler could not place a pending task; `reason` says why, for humans."""

    kind: Literal["task.unplaced"] = "task.unplaced"
    task_id: str
    reason: str


class TaskAssigned(Event):
    kind: Literal["task.assigned"] = "task.assigned"
    task_id: str
    node_id: str
    epoch: int


class TaskUpdated(Event):
    """A task reached a new state (reported by its worker, or decided by the master)."""

    kind: Literal["task.updated"] = "task.updated"
    task_id: str
    state: Literal["running", "exited", "failed", "lost", "stopped"]
    exit_code: int | None = None
    reason: str = ""
    container_id: str = ""
    retryable: bool = True
    address: str = ""  # its address on the cluster network, once running ("": none)


class TaskHealth(Event):
    """Docker's verdict on a running task's health check changed (reported by its worker)."""

    kind: Literal["task.health"] = "task.health"
    task_id: str
    health: Literal["starting", "healthy", "unhealthy"]
    reason: str = ""


class TaskHealthy(Event):
    """A task has been running (and passing its check) for its job's min_healthy."""

    kind: Literal["task.healthy"] = "task.healthy"
    task_id: str


class JobUpdated(Event):
    """A job rolls to a new version of its spec: an update, or a rollback (whose spec is
    an older version's, under a new number)."""

    kind: Literal["job.updated"] = "job.updated"
    job_id: str
    spec: JobSpec
    version: int
    reason: str = ""
    rollback: bool = False
    automatic: bool = False  # a rollback the master started because the update failed


class RolloutEnded(Event):
    """A job's rollout ended: "done", "rolled-back" or "failed"."""

    kind: Literal["job.rollout"] = "job.rollout"
    job_id: str
    state: Literal["done", "rolled-back", "failed"]
    reason: str = ""


class NodeScheduling(Event):
    """Whether a node takes new tasks (cordoned) and whether its tasks move away (draining;
    leaving: its agent leaves the cluster, so batch tasks move too)."""

    kind: Literal["node.scheduling"] = "node.scheduling"
    node_id: str
    cordoned: bool
    draining: bool = False
    leaving: bool = False


class TaskUndelivered(Event):
    """An assignment came back unroutable: the task is lost, and its node takes no new
    tasks until `hold_until` (its agent is not consuming its queue), for `reason`.

    `boot_id` is the node's agent when the master decided ("": unknown). The hold
    is for that agent: a state that already knows a newer one ignores it, as the
    master that decided dropped the hold when it saw the newer agent."""

    kind: Literal["task.undelivered"] = "task.undelivered"
    task_id: str
    node_id: str
    hold_until: float
    reason: str
    boot_id: str = ""


class TaskForgotten(Event):
    """An ended attempt that is not its slot's current one leaves the master's memory."""

    kind: Literal["task.forgotten"] = "task.forgotten"
    task_id: str


class JobForgotten(Event):
    """An ended job and all its tasks leave the master's memory."""

    kind: Literal["job.forgotten"] = "job.forgotten"
    job_id: str


class TaskFenced(Event):
    """The master sent a stop to a container it does not want on `node_id` (a stray).

    Remembered for a few seconds (`state.FENCE_RESEND_SECONDS`), so that a stray
    reported by every heartbeat is not sent a stop each time, also by a new leader."""

    kind: Literal["task.fenced"] = "task.fenced"
    task_id: str
    job_id: str
    node_id: str


class JobStateChanged(Event):
    """The job's derived state changed, and was announced (a `JobEvent`)."""

    kind: Literal["job.state"] = "job.state"
    job_id: str
    state: JobState
    reason: str = ""


class RequestDone(Event):
    """A mutating API request was carried out (or refused): what it came to, by the
    envelope's `message_id`, so that a redelivery gets the same outcome. Committed
    again when a redelivery is recognised (the memory is least recently used)."""

    kind: Literal["request.done"] = "request.done"
    message_id: str
    request_type: str
    job_id: str
    error_code: str = ""  # "" when the request succeeded
    error_message: str = ""
    error_field: str | None = None


class NodeObserved(Event):
    """A heartbeat arrived. Soft state: not journaled."""

    JOURNALED: ClassVar[bool] = False
    kind: Literal["node.observed"] = "node.observed"
    node_id: str
    boot_id: str
    capacity: Resources
    labels: dict[str, str] = Field(default_factory=dict)
    tasks: list[RunningTask] = Field(default_factory=list)
    network: NodeNetwork | None = None
    interval: float = 1.0  # how often it said it heartbeats (seconds)


class NodeStateChanged(Event):
    kind: Literal["node.state"] = "node.state"
    node_id: str
    state: NodeState
    reason: str = ""


class SubnetAllocated(Event):
    """The node's containers get addresses out of `subnet` (docs/networking.md)."""

    kind: Literal["node.subnet"] = "node.subnet"
    node_id: str
    subnet: str


class NodeForgotten(Event):
    """A node down for long, with nothing booked on it, leaves the master's table."""

    kind: Literal["node.forgotten"] = "node.forgotten"
    node_id: str


AnyEvent = Annotated[
    JobSubmitted
    | JobScaled
    | JobCancelled
    | JobFailed
    | JobForgotten
    | JobStateChanged
    | TaskCreated
    | TaskUnplaced
    | TaskAssigned
    | TaskUpdated
    | TaskHealth
    | TaskHealthy
    | JobUpdated
    | RolloutEnded
    | NodeScheduling
    | TaskUndelivered
    | TaskForgotten
    | TaskFenced
    | RequestDone
    | NodeObserved
    | NodeStateChanged
    | NodeForgotten
    | SubnetAllocated,
    Field(discriminator="kind"),
]
