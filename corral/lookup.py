"""Finding a task from its id or an id prefix, without listing every task of the cluster.

A task id is `<job>-<submission>-<slot>-<attempt>` and job ids hold `-` too,
so the job cannot be read off the id; but it can only be one of few:

- a job whose id followed by `-` starts the query (`web` for `web-3fa9c1-0-0`):
  at most one per `-` in the query's first 63 characters. Their tasks are
  listed (one job each), and an exact match ends the search at once;
- a job whose id starts with the query (`corral logs web` for `web-3fa9c1-0-0`):
  every task of it matches. Jobs are listed in id order, so the listing stops
  after the last such id, and two tasks from them are enough to decide.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from corral.errors import ApiFailure, CorralError
from schemas.api import TaskInfo
from schemas.job import NAME_PATTERN

if TYPE_CHECKING:
    from corral.client import Client

MAX_JOB_ID = 63
# Matches kept for the error message when the query is ambiguous.
SHOWN = 5


def owner_candidates(query: str) -> list[str]:
    """The job ids that, followed by `-`, start `query`: `a-b-c` -> [a, a-b]."""
    found = []
    for index, char in enumerate(query[: MAX_JOB_ID + 1]):
        if char == "-" and re.fullmatch(NAME_PATTERN, query[:index]):
            found.append(query[:index])
    return found


def find_task(client: Client, query: str) -> TaskInfo:
    """The task whose id is `query`, else the only one whose id starts with it.

    Raises ApiFailure "not_found" if none does, CorralError naming a few if
    several do. Costs a request per candidate job (see the module docstring)
    plus, unless `query` is a whole task id, a listing of jobs up to `query`.
    """
    matches = _Matches()
    for job_id in owner_candidates(query):
        for task in _tasks_of(client, job_id):
            if task.task_id == query:
                return task
            if task.task_id.startswith(query):
                matches.add(task)
    for job_id in _jobs_starting_with(client, query):
        if matches.count > 1:
            break
        # Every task of such a job matches: two settle it, so fetch no more than that.
        for task in next(iter(_task_pages(client, job_id, page_size=2)), []):
            matches.add(task)
    if matches.count == 1:
        return matches.kept[0]
    if not matches.count:
        raise ApiFailure("not_found", f"no task {query!r}; `corral ps` lists the tasks")
    names = ", ".join(sorted(task.task_id for task in matches.kept)[:SHOWN])
    more = ", …" if matches.count > SHOWN else ""
    raise CorralError(f"{query!r} matches several tasks ({names}{more}); give more of the id")


class _Matches:
    """Counts matching tasks and keeps only the few an error message shows."""

    def __init__(self) -> None:
        self.count = 0
        self.kept: list[TaskInfo] = []

    def add(self, task: TaskInfo) -> None:
        self.count += 1
        if len(self.kept) <= SHOWN:
            self.kept.append(task)


def _task_pages(client: Client, job_id: str, *, page_size: int) -> Iterator[list[TaskInfo]]:
    """The pages of a job's tasks; none if the job is gone (it may end meanwhile)."""
    try:
        yield from client.iter_tasks(job_id, page_size=page_size)
    except ApiFailure as exc:
        if exc.code != "not_found":
            raise


def _tasks_of(client: Client, job_id: str) -> Iterator[TaskInfo]:
    for page in _task_pages(client, job_id, page_size=client.page_size):
        yield from page


def _jobs_starting_with(client: Client, query: str) -> Iterator[str]:
    for page in client.iter_jobs():
        for job in page:
            if job.job_id.startswith(query):
                yield job.job_id
            elif job.job_id > query:
                return  # listings are in id order: no later id starts with `query`
