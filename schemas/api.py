"""Client <-> master API: requests published on the corral.requests exchange (routing key
<role>.<type>, read by the master from the corral.api queue) and their replies.

A request is an envelope whose `type` is one of the `api.*` types below, sent
with AMQP properties `reply_to` and `correlation_id`. The active master
answers with an `api.reply` envelope carrying the same correlation id.

Requests are closed (an unknown field is an error); the reply and the models in
its `result` (JobInfo, TaskInfo, NodeInfo, Page, MastersInfo, ClusterStatus) are
open, except the job spec inside a JobInfo, which is read with the ECHOED context
(schemas.base): its unknown fields are dropped, so a client can read a newer
master's jobs.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator

from schemas.base import (
    ECHOED,
    IPV4_NET_PATTERN,
    Count,
    Cursor,
    Int64,
    JobId,
    Labels,
    NodeId,
    Open,
    TaskId,
    Text,
    Timestamp,
    Token,
)
from schemas.job import JobSpec
from schemas.limits import (
    DEFAULT_PAGE_SIZE,
    MAX_BATCH_JOBS,
    MAX_BATCH_REPLICAS,
    MAX_INT,
    MAX_JOB_EVENTS,
    MAX_PAGE_SIZE,
    MAX_REPLICAS,
    MAX_VERSIONS_KEPT,
)
from schemas.messages import (
    Address,
    Health,
    JobState,
    MasterRole,
    NodeState,
    Payload,
    Resources,
    Slot,
    TaskState,
)

# A slot whose attempts failed this many times in a row, never healthy in between, is
# crash-looping: its job's reason says so and `run --wait` gives up.
CRASH_LOOP_RESTARTS = 2
# The most masters an api.masters / api.status reply lists (a group is a handful).
MAX_MASTERS = 64
# The most distinct reasons an api.status reply gives for pending tasks.
MAX_PENDING_REASONS = 10
# A job owner is a broker user name: an AMQP user_id is a short string (255 bytes).
MAX_USER_LENGTH = 255


def _echoed_spec(value: Any) -> Any:
    # A newer master may echo spec fields this client does not know; they are dropped.
    if isinstance(value, dict):
        return JobSpec.model_validate(value, context={ECHOED: True})
    return value


class TaskInfo(Open):
    """One attempt of one slot of a job, as the master knows it."""

    task_id: TaskId
    job_id: JobId
    slot: Slot
    attempt: Count
    state: TaskState
    node_id: NodeId | None = None
    container_id: Token = ""
    exit_code: Int64 | None = None
    reason: Text = ""
    updated_at: Timestamp
    started_at: Timestamp | None = None
    version: Count = 1  # the job version (spec) it runs
    health: Health = ""  # Docker's last verdict ("": no check)
    healthy: bool = False  # running, and passing, for the job's min_healthy
    # Failures of its slot in a row before this attempt (a crash loop's restarts).
    restarts: Count = 0
    # Running beyond its slot's current attempt, until that one is healthy (start-first).
    retiring: bool = False
    address: Address = ""  # on the cluster network, while it runs ("": none)


class VersionInfo(Open):
    """One version of a job's spec: 1 when submitted, one more for each update or rollback."""

    version: Count
    spec: Annotated[JobSpec, BeforeValidator(_echoed_spec)]
    created_at: Timestamp
    reason: Text = ""  # e.g. "update", "rollback of version 3 (task ... exited with code 1)"


class RolloutInfo(Open):
    """An update in progress, or the last one. `done` of `total` slots run the target
    version and are healthy."""

    state: Annotated[str, Field(pattern=r"^[a-z][a-z_-]{0,31}$")]  # updating, rolling-back, ...
    from_version: Count
    to_version: Count
    done: Count = 0
    total: Count = 0
    reason: Text = ""


class EventInfo(Open):
    """Something that happened to a job or one of its tasks (`corral inspect`)."""

    at: Timestamp
    task_id: TaskId | None = None
    text: Text


class JobInfo(Open):
    """A job: its spec with every default filled in, its state, and (some of) its tasks."""

    job_id: JobId
    state: JobState
    reason: Text = ""
    spec: Annotated[JobSpec, BeforeValidator(_echoed_spec)]
    submitted_at: Timestamp
    tasks: list[TaskInfo] = Field(default_factory=list)
    # How many slots' current attempts are in each state (always complete, even when
    # `tasks` is empty, as in listings, or cut short).
    task_counts: dict[str, Count] = Field(default_factory=dict)
    # Tasks left out of `tasks` to keep the reply within its size; `corral ps JOB` pages.
    tasks_omitted: Count = 0
    version: Count = 1  # the version of the spec its slots run (or are rolling to)
    healthy: Count = 0  # wanted slots whose task is healthy
    rollout: RolloutInfo | None = None
    # Only in api.job replies: the versions kept (newest last) and the last events.
    versions: Annotated[list[VersionInfo], Field(max_length=MAX_VERSIONS_KEPT)] = Field(
        default_factory=list
    )
    events: Annotated[list[EventInfo], Field(max_length=MAX_JOB_EVENTS)] = Field(
        default_factory=list
    )
    ended_at: Timestamp | None = None
    # The user who submitted it ("": submitted before jobs had owners). Only its owner
    # and admins see its env values; everyone sees its secret_env values as "***".
    owner: Annotated[str, Field(max_length=MAX_USER_LENGTH)] = ""

    @property
    def exit_codes(self) -> dict[int, int | None]:
        """The exit code of the newest task of each slot."""
        newest: dict[int, TaskInfo] = {}
        for task in self.tasks:
            if task.slot not in newest or task.attempt > newest[task.slot].attempt:
                newest[task.slot] = task
        return {slot: task.exit_code for slot, task in sorted(newest.items())}


class NodeInfo(Open):
    """A worker node as the master sees it; `allocated` counts what the master placed."""

    node_id: NodeId
    state: NodeState
    capacity: Resources
    allocated: Resources
    labels: Labels = Field(default_factory=dict)
    tasks: Count = 0
    last_seen: Timestamp
    reason: Text = ""  # why it is in its state (e.g. no heartbeat for 3.1 s)
    cordoned: bool = False  # takes no new tasks
    draining: bool = False  # its tasks are being moved elsewhere
    subnet: Annotated[str, Field(pattern=f"^$|{IPV4_NET_PATTERN}")] = ""  # cluster network
    addr: Address = ""  # its advertised host address ("": it takes no part in the network)


class SubmitJob(Payload):
    """Run a job; the result is its JobInfo. The job id is the spec's name."""

    TYPE: ClassVar[str] = "api.submit"
    spec: JobSpec


class SubmitJobs(Payload):
    """Run many jobs in one request; the result is a SubmitResults, one entry per spec,
    in order. Each job is submitted as api.submit would submit it (the same checks, the
    same errors, a redelivery gets the same outcome), and one scheduling pass places
    them all. A job that fails leaves the others submitted."""

    TYPE: ClassVar[str] = "api.submit_many"
    specs: Annotated[list[JobSpec], Field(min_length=1, max_length=MAX_BATCH_JOBS)]

    @field_validator("specs")
    @classmethod
    def _bounded(cls, specs: list[JobSpec]) -> list[JobSpec]:
        replicas = sum(spec.replicas for spec in specs)
        if replicas > MAX_BATCH_REPLICAS:
            raise ValueError(
                f"the specs ask for {replicas} replicas in all, more than the "
                f"{MAX_BATCH_REPLICAS} one request may carry: send fewer jobs per request"
            )
        return specs


class SubmitOutcome(Open):
    """What one spec of an api.submit_many came to: its job's state, or the error that
    api.submit would have given it."""

    job_id: JobId
    ok: bool
    state: JobState | None = None
    error: ApiError | None = None


class SubmitResults(Open):
    """The result of api.submit_many."""

    results: Annotated[list[SubmitOutcome], Field(max_length=MAX_BATCH_JOBS)]


class CancelJob(Payload):
    """Stop every task of a job; the result is its JobInfo."""

    TYPE: ClassVar[str] = "api.cancel"
    job_id: JobId


class ScaleJob(Payload):
    """Set a job's replicas; the result is its JobInfo."""

    TYPE: ClassVar[str] = "api.scale"
    job_id: JobId
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)]


class UpdateJob(Payload):
    """Roll a running service out to a new spec (its name must be the job's), as its
    `update` policy says; the result is its JobInfo."""

    TYPE: ClassVar[str] = "api.update"
    job_id: JobId
    spec: JobSpec


class RollbackJob(Payload):
    """Roll a service back to the version before its current one; the result is its JobInfo."""

    TYPE: ClassVar[str] = "api.rollback"
    job_id: JobId


class PurgeJob(Payload):
    """Forget an ended job now, and remove its containers; the result is its last JobInfo."""

    TYPE: ClassVar[str] = "api.purge"
    job_id: JobId


class SetNodeSchedule(Payload):
    """Cordon a node (no new tasks), drain it (also move its tasks away, start-first), or
    make it schedulable again; the result is its NodeInfo."""

    TYPE: ClassVar[str] = "api.node"
    node_id: NodeId
    action: Literal["cordon", "uncordon", "drain"]


class GetTask(Payload):
    """One task, with its job's events about it; the result is a JobInfo holding the job,
    that one task, and its events (`versions` holds the task's version only)."""

    TYPE: ClassVar[str] = "api.task"
    task_id: TaskId


class GetJob(Payload):
    """One job; the result is its JobInfo (tasks_omitted says if tasks were left out)."""

    TYPE: ClassVar[str] = "api.job"
    job_id: JobId


class GetLogs(Payload):
    """A task's container logs: the master checks that the caller may read them (its own
    job's, or any job's for an admin) and asks the task's worker to stream them to the
    request's `reply_to` as `logs.chunk` messages, as a `logs.request` would; if the
    caller may not, or the task has no container, the answer is an `api.reply` error."""

    TYPE: ClassVar[str] = "api.logs"
    task_id: TaskId
    follow: bool = False
    tail: Count | None = None


PageSize = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]


class ListJobs(Payload):
    """One page of jobs, ordered by id. Items carry no tasks (see JobInfo.task_counts)."""

    TYPE: ClassVar[str] = "api.jobs"
    include_done: bool = True
    limit: PageSize = DEFAULT_PAGE_SIZE
    cursor: Cursor | None = None  # the previous page's next_cursor; None: the first page


class ListTasks(Payload):
    """One page of tasks (of one job, or of all), ordered by job, slot and attempt."""

    TYPE: ClassVar[str] = "api.tasks"
    job_id: JobId | None = None
    limit: PageSize = DEFAULT_PAGE_SIZE
    cursor: Cursor | None = None


class ListNodes(Payload):
    """One page of nodes, ordered by id."""

    TYPE: ClassVar[str] = "api.nodes"
    limit: PageSize = DEFAULT_PAGE_SIZE
    cursor: Cursor | None = None


class Page(Open):
    """The result of a listing. `next_cursor` is None on the last page; otherwise send it
    back as `cursor` to get the next one. Cursors are opaque strings. A page holds at most
    `limit` items and stops early once it reaches about PAGE_BYTES."""

    items: Annotated[list[Any], Field(max_length=MAX_PAGE_SIZE)]
    next_cursor: Cursor | None = None


class GetMasters(Payload):
    """The masters of the group as the active master hears them; the result is a
    MastersInfo."""

    TYPE: ClassVar[str] = "api.masters"


class GetStatus(Payload):
    """The cluster on one screen: masters, workers, jobs, pending tasks, dead letters;
    the result is a ClusterStatus."""

    TYPE: ClassVar[str] = "api.status"


class MasterInfo(Open):
    """One master, from the last beat the active master received from it.

    `lag` is how many journal records it is behind the active master (None if
    either has applied none yet); `last_seen_ago` is seconds since that beat, on the
    active master's clock; `broker` is the broker node its connection is on ("" if
    unknown)."""

    name: NodeId
    instance: Token
    role: MasterRole
    epoch: Count | None = None
    applied: Annotated[int, Field(ge=-1, le=MAX_INT)] = -1
    lag: Count | None = None
    last_seen_ago: Annotated[float, Field(ge=0, le=1e9)]
    started_at: Timestamp | None = None
    broker: Text = ""


Masters = Annotated[list[MasterInfo], Field(max_length=MAX_MASTERS)]


class MastersInfo(Open):
    """The result of api.masters: the active master first, then the others by role and
    name; `omitted` counts those left out past MAX_MASTERS."""

    masters: Masters = Field(default_factory=list)
    omitted: Count = 0


StateName = Annotated[str, Field(pattern=r"^[a-z][a-z_-]{0,31}$")]
# How many things are in each state (absent: none). Keys are strings, not the
# Literal, so a client can read a newer master that has a state it does not know.
StateCounts = Annotated[dict[StateName, Count], Field(max_length=32)]


class Totals(Open):
    """CPUs and memory (bytes) summed over nodes; unlike Resources, not capped per node."""

    cpus: Annotated[float, Field(ge=0, le=1e12)] = 0.0
    memory: Count = 0


class WorkersStatus(Open):
    """Worker nodes by state; `capacity` and `free` add up the ready nodes only (where
    new tasks can go)."""

    states: StateCounts = Field(default_factory=dict)
    capacity: Totals = Field(default_factory=Totals)
    free: Totals = Field(default_factory=Totals)


class ReasonCount(Open):
    """How many pending tasks wait for one reason ("": not looked at by the scheduler yet)."""

    reason: Text
    count: Count


class PendingStatus(Open):
    """Pending tasks: how many, and the MAX_PENDING_REASONS most common reasons, most
    common first (tasks waiting for other reasons are `count` minus their sum)."""

    count: Count = 0
    reasons: Annotated[list[ReasonCount], Field(max_length=MAX_PENDING_REASONS)] = Field(
        default_factory=list
    )


class ClusterStatus(Open):
    """The result of api.status. `epoch` is the active master's; `jobs` counts jobs by
    state, ended ones the master still remembers included; `dead_letters` is the
    depth of the dead-letter queue, None if the master could not tell."""

    masters: Masters = Field(default_factory=list)
    epoch: Count | None = None
    workers: WorkersStatus = Field(default_factory=WorkersStatus)
    jobs: StateCounts = Field(default_factory=dict)
    pending: PendingStatus = Field(default_factory=PendingStatus)
    dead_letters: Count | None = None


class ApiError(Open):
    """Why a request failed. `code` is stable (for programs), `message` is for humans."""

    code: Annotated[str, Field(pattern=r"^[a-z][a-z_]{0,63}$")]
    message: Text
    field: Text | None = None


class Reply(Payload):
    """The master's answer to any api.* request; exactly one of result / error is set."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "api.reply"
    ok: bool
    result: Any = None
    error: ApiError | None = None


API_REQUESTS: tuple[type[Payload], ...] = (
    SubmitJob,
    SubmitJobs,
    CancelJob,
    ScaleJob,
    UpdateJob,
    RollbackJob,
    PurgeJob,
    SetNodeSchedule,
    GetJob,
    GetTask,
    ListJobs,
    ListTasks,
    ListNodes,
    GetMasters,
    GetStatus,
    GetLogs,
)
