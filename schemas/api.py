"""Client <-> master API: requests published to the corral.api queue and their replies.

A request is an envelope whose `type` is one of the `api.*` types below, sent
with AMQP properties `reply_to` and `correlation_id`. The active master
answers with an `api.reply` envelope carrying the same correlation id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import Field

from schemas.job import JobSpec, Strict
from schemas.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from schemas.messages import JobState, NodeState, Payload, Resources, TaskState


class TaskInfo(Strict):
    task_id: str
    job_id: str
    slot: int
    attempt: int
    state: TaskState
    node_id: str | None = None
    container_id: str = ""
    exit_code: int | None = None
    reason: str = ""
    updated_at: datetime


class JobInfo(Strict):
    job_id: str
    state: JobState
    reason: str = ""
    spec: JobSpec
    submitted_at: datetime
    tasks: list[TaskInfo] = Field(default_factory=list)
    # How many slots' current attempts are in each state (always complete, even when
    # `tasks` is empty, as in listings, or cut short).
    task_counts: dict[str, int] = Field(default_factory=dict)
    # Tasks left out of `tasks` to keep the reply within its size; `corral ps JOB` pages.
    tasks_omitted: Annotated[int, Field(ge=0)] = 0

    @property
    def exit_codes(self) -> dict[int, int | None]:
        """The exit code of the newest task of each slot."""
        newest: dict[int, TaskInfo] = {}
        for task in self.tasks:
            if task.slot not in newest or task.attempt > newest[task.slot].attempt:
                newest[task.slot] = task
        return {slot: task.exit_code for slot, task in sorted(newest.items())}


class NodeInfo(Strict):
    node_id: str
    state: NodeState
    capacity: Resources
    allocated: Resources
    labels: dict[str, str] = Field(default_factory=dict)
    tasks: int = 0
    last_seen: datetime


class SubmitJob(Payload):
    TYPE: ClassVar[str] = "api.submit"
    spec: JobSpec


class CancelJob(Payload):
    TYPE: ClassVar[str] = "api.cancel"
    job_id: str


class ScaleJob(Payload):
    TYPE: ClassVar[str] = "api.scale"
    job_id: str
    replicas: Annotated[int, Field(ge=0, le=10_000)]


class GetJob(Payload):
    TYPE: ClassVar[str] = "api.job"
    job_id: str


PageSize = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]


class ListJobs(Payload):
    """One page of jobs, ordered by id. Items carry no tasks (see JobInfo.task_counts)."""

    TYPE: ClassVar[str] = "api.jobs"
    include_done: bool = True
    limit: PageSize = DEFAULT_PAGE_SIZE
    cursor: str | None = None  # the previous page's next_cursor; None: the first page


class ListTasks(Payload):
    """One page of tasks (of one job, or of all), ordered by job, slot and attempt."""

    TYPE: ClassVar[str] = "api.tasks"
    job_id: str | None = None
    limit: PageSize = DEFAULT_PAGE_SIZE
    cursor: str | None = None


class ListNodes(Payload):
    """One page of nodes, ordered by id."""

    TYPE: ClassVar[str] = "api.nodes"
    limit: PageSize = DEFAULT_PAGE_SIZE
    cursor: str | None = None


class Page(Strict):
    """The result of a listing. `next_cursor` is None on the last page; otherwise send it
    back as `cursor` to get the next one. Cursors are opaque strings. A page holds at most
    `limit` items and stops early once it reaches about PAGE_BYTES."""

    items: list[Any]
    next_cursor: str | None = None


class ApiError(Strict):
    """Why a request failed. `code` is stable (for programs), `message` is for humans."""

    code: str
    message: str
    field: str | None = None


class Reply(Payload):
    """The master's answer to any api.* request; exactly one of result / error is set."""

    TYPE: ClassVar[str] = "api.reply"
    ok: bool
    result: Any = None
    error: ApiError | None = None


API_REQUESTS: tuple[type[Payload], ...] = (
    SubmitJob,
    CancelJob,
    ScaleJob,
    GetJob,
    ListJobs,
    ListTasks,
    ListNodes,
)
