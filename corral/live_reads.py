"""The listings the live model asks for, made on a reader thread with a Client of its own.

A `Read` is asked by the model's thread and answered (`Answer`) by the reader,
so that a listing which takes seconds (20,000 tasks, a busy master) never
holds up the events. Each Read carries `since`, the count of events received
when it was asked: the model applies those that came after it again over the
answer, so the answer (a picture from the past) ends up as current as the
events (docs: corral.live).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from corral.errors import ApiFailure
from corral.lookup import slot_attempts
from corral.streams import Event
from schemas.api import JobInfo, MasterInfo, NodeInfo, TaskInfo
from schemas.limits import MAX_PAGE_SIZE
from schemas.messages import JobEvent, NodeEvent, TaskStatus

if TYPE_CHECKING:
    from corral.client import Client

log = logging.getLogger("corral.live")

# The job listing is read with the nodes' while it has at most this many jobs.
SMALL_LISTING = 500

What = Literal["all", "refresh", "job"]


@dataclass(frozen=True)
class Read:
    """A listing wanted: everything ("all"), nodes and masters (and the jobs if
    `with_jobs`: "refresh"), or one job with its tasks ("job")."""

    what: What
    generation: int  # the subscription it is for: answers to an older one are dropped
    since: int  # events received when it was asked
    job_id: str = ""
    with_jobs: bool = False

    @property
    def key(self) -> str:
        """One of each key is asked at a time."""
        return f"job:{self.job_id}" if self.what == "job" else self.what

    def concerns(self, event: Event) -> bool:
        """Whether `event` changes what this read lists (so it is applied again over it)."""
        payload = event.payload
        if self.what == "all":
            return True
        if self.what == "refresh":
            return isinstance(payload, NodeEvent) or (
                self.with_jobs and isinstance(payload, JobEvent)
            )
        return isinstance(payload, TaskStatus | JobEvent) and payload.job_id == self.job_id


@dataclass(frozen=True)
class Everything:
    masters: tuple[MasterInfo, ...]
    nodes: list[NodeInfo]
    jobs: list[JobInfo]
    tasks: list[TaskInfo]
    took: float  # seconds the listing took


@dataclass(frozen=True)
class Refreshed:
    masters: tuple[MasterInfo, ...]
    nodes: list[NodeInfo]
    jobs: list[JobInfo] | None  # None: not asked


@dataclass(frozen=True)
class OneJob:
    job_id: str
    info: JobInfo | None  # None: the master knows no such job (any more)
    tasks: list[TaskInfo]
    readable: bool = True  # False: the master would not say (left as it is)


@dataclass(frozen=True)
class Answer:
    read: Read
    result: Everything | Refreshed | OneJob | None = None
    error: str = ""  # why the read failed ("": it did not); the connection starts again


def perform(client: Client, read: Read) -> Everything | Refreshed | OneJob:
    """Make `read` through `client`. Raises CorralError (but a job that cannot be read is
    an answer)."""
    if read.what == "all":
        return everything(client)
    if read.what == "refresh":
        jobs = _all(client.iter_jobs(page_size=SMALL_LISTING)) if read.with_jobs else None
        return Refreshed(masters(client), _all(client.iter_nodes(page_size=MAX_PAGE_SIZE)), jobs)
    return one_job(client, read.job_id)


def everything(client: Client) -> Everything:
    started = time.monotonic()
    listed_masters = masters(client)
    nodes = _all(client.iter_nodes(page_size=MAX_PAGE_SIZE))
    jobs = _all(client.iter_jobs(page_size=MAX_PAGE_SIZE))
    tasks = _all(client.iter_tasks(current=True, page_size=MAX_PAGE_SIZE))
    took = time.monotonic() - started
    log.debug("listed everything in %.2f s", took)
    return Everything(listed_masters, nodes, jobs, tasks, took)


def one_job(client: Client, job_id: str) -> OneJob:
    try:
        info = client.job(job_id)
        tasks = [task for task in slot_attempts(info.tasks).values() if task is not None]
        if info.tasks_omitted:
            tasks = client.tasks(job_id, current=True)
    except ApiFailure as exc:
        if exc.code == "not_found":
            return OneJob(job_id, None, [])
        log.debug("cannot read job %s: %s", job_id, exc)
        return OneJob(job_id, None, [], readable=False)
    return OneJob(job_id, info, tasks)


def masters(client: Client) -> tuple[MasterInfo, ...]:
    try:
        return tuple(client.masters().masters)
    except ApiFailure:  # a master from before master groups
        return ()


def _all(pages: Any) -> list[Any]:
    return [item for page in pages for item in page]
