"""Finding tasks: from an id or an id prefix, and the current attempt of each slot.

A task id is `<job>-<submission>-<slot>-<attempt>` and job ids hold `-` too,
so the job cannot be read off the id; but it can only be one of few:

- a job whose id followed by `-` starts the query (`web` for `web-3fa9c1-0-0`):
  at most one per `-` in the query's first 63 characters. Their tasks are
  listed (one job each), and an exact match ends the search at once;
- a job whose id starts with the query (`corral logs web` for `web-3fa9c1-0-0`):
  every task of it matches. Jobs are listed in id order, so the listing stops
  after the last such id, and a job's tasks are read only until a second slot
  shows up.

A prefix names one slot, not one task: when every task it matches is an attempt
of the same slot, it means the newest of them (`hello` once `hello`'s only slot
has been retried). Listings come in (job, slot, attempt) order, which the
functions here rely on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from corral.errors import ApiFailure, CorralError
from schemas.api import TaskInfo
from schemas.job import NAME_PATTERN

if TYPE_CHECKING:
    from corral.client import Client

MAX_JOB_ID = 63
# Slots kept for the error message when the query is ambiguous.
SHOWN = 5
# Tasks asked for at once while reading a job whose id starts with the query.
PREFIX_PAGE = 2

SlotKey = tuple[str, int]


def slot_of(task: TaskInfo) -> SlotKey:
    return (task.job_id, task.slot)


def is_job_name(text: str) -> bool:
    """Whether `text` can be a job id (so asking the master for that job is valid)."""
    return re.fullmatch(NAME_PATTERN, text) is not None


def owner_candidates(query: str) -> list[str]:
    """The job ids that, followed by `-`, start `query`: `a-b-c` -> [a, a-b]."""
    found = []
    for index, char in enumerate(query[: MAX_JOB_ID + 1]):
        if char == "-" and is_job_name(query[:index]):
            found.append(query[:index])
    return found


def find_task(client: Client, query: str) -> TaskInfo:
    """The task whose id is `query`, else the newest attempt of the only slot whose
    task ids start with it.

    Raises ApiFailure "not_found" if no task id does, CorralError naming a few if
    tasks of several slots do. Costs a request per candidate job (see the module
    docstring) plus, unless `query` is a whole task id, a listing of jobs up to
    `query`.
    """
    matches = _Matches()
    exact = _search_owners(client, query, matches)
    if exact is not None:
        return exact
    _search_jobs_starting_with(client, query, matches)
    if matches.count == 1:
        return matches.newest[0]
    if not matches.count:
        raise ApiFailure("not_found", f"no task {query!r}; `corral ps` lists the tasks")
    names = ", ".join(sorted(task.task_id for task in matches.newest)[:SHOWN])
    more = ", …" if matches.count > SHOWN else ""
    raise CorralError(f"{query!r} matches several tasks ({names}{more}); give more of the id")


def _search_owners(client: Client, query: str, matches: _Matches) -> TaskInfo | None:
    """Add the tasks of the jobs `query` may be a task id of; the task if one is `query`."""
    for job_id in owner_candidates(query):
        for task in _tasks_of(client, job_id, page_size=client.page_size):
            if task.task_id == query:
                return task
            if task.task_id.startswith(query):
                matches.add(task)
    return None


def _search_jobs_starting_with(client: Client, query: str, matches: _Matches) -> None:
    """Add the tasks of the jobs whose ids start with `query`, until two slots match."""
    for job_id in _jobs_starting_with(client, query):
        if matches.count > 1:
            return
        # Every task of such a job matches: a second slot settles it, so read no further.
        for task in _tasks_of(client, job_id, page_size=PREFIX_PAGE):
            matches.add(task)
            if matches.count > 1:
                return


def attempt_before(client: Client, task: TaskInfo) -> TaskInfo:
    """The newest attempt of `task`'s slot that is older than `task`.

    CorralError if there is none (the slot's first attempt, or the older ones
    were forgotten). Reads the job's tasks up to the end of that slot.
    """
    earlier: TaskInfo | None = None
    for other in _tasks_of(client, task.job_id, page_size=client.page_size):
        if other.slot > task.slot:
            break
        if other.slot == task.slot and other.attempt < task.attempt:
            earlier = other
    if earlier is None:
        raise CorralError(
            f"slot {task.slot} of job {task.job_id} has no attempt before {task.task_id}"
        )
    return earlier


def slot_attempts(
    tasks: Iterable[TaskInfo], *, previous: bool = False
) -> dict[int, TaskInfo | None]:
    """One job's tasks (every attempt) -> for each slot, in slot order, its newest attempt;
    with `previous`, the attempt before that one (None if the slot has no other)."""
    by_slot: dict[int, list[TaskInfo]] = {}
    for task in tasks:
        by_slot.setdefault(task.slot, []).append(task)
    chosen: dict[int, TaskInfo | None] = {}
    for slot in sorted(by_slot):
        attempts = sorted(by_slot[slot], key=lambda task: task.attempt)
        if previous:
            chosen[slot] = attempts[-2] if len(attempts) > 1 else None
        else:
            chosen[slot] = attempts[-1]
    return chosen


def current_attempts(pages: Iterable[Sequence[TaskInfo]]) -> Iterator[list[TaskInfo]]:
    """A listing's pages with only the newest attempt of each slot.

    The pages must list tasks in (job, slot, attempt) order, as the master's do.
    A slot's attempts may straddle pages, so the last slot of each page is held
    back until the next page shows whether a newer attempt follows.
    """
    held: TaskInfo | None = None
    for page in pages:
        kept: list[TaskInfo] = []
        for task in page:
            if held is not None and slot_of(held) != slot_of(task):
                kept.append(held)
            if held is None or slot_of(held) != slot_of(task) or task.attempt >= held.attempt:
                held = task
        yield kept
    if held is not None:
        yield [held]


class _Matches:
    """Counts the slots that matching tasks belong to, keeping the newest attempt of the
    first few (enough for the answer or for an error message)."""

    def __init__(self) -> None:
        self.count = 0
        self._kept: dict[SlotKey, TaskInfo] = {}
        self._last: SlotKey | None = None

    @property
    def newest(self) -> list[TaskInfo]:
        return list(self._kept.values())

    def add(self, task: TaskInfo) -> None:
        key = slot_of(task)
        if key != self._last and key not in self._kept:
            self.count += 1
        self._last = key
        kept = self._kept.get(key)
        newer = kept is not None and task.attempt > kept.attempt
        if newer or (kept is None and len(self._kept) <= SHOWN):
            self._kept[key] = task


def _tasks_of(client: Client, job_id: str, *, page_size: int) -> Iterator[TaskInfo]:
    """A job's tasks; none if the job is gone (it may end meanwhile)."""
    try:
        for page in client.iter_tasks(job_id, page_size=page_size):
            yield from page
    except ApiFailure as exc:
        if exc.code != "not_found":
            raise


def _jobs_starting_with(client: Client, query: str) -> Iterator[str]:
    for page in client.iter_jobs():
        for job in page:
            if job.job_id.startswith(query):
                yield job.job_id
            elif job.job_id > query:
                return  # listings are in id order: no later id starts with `query`
