"""Listings one page at a time: api.jobs, api.tasks and api.nodes.

Items come in the order of a stable key (jobs and nodes by id; tasks by job,
slot and attempt). A page holds at most `limit` items and stops before its
items' JSON passes `limits.PAGE_BYTES` (a page always holds at least one item,
so a listing always moves on). Its `next_cursor` encodes the key of its last
item: the next page starts right after that key, so items added or removed
meanwhile neither repeat nor push others out of the listing. The cursor is
opaque to clients (URL-safe base64 of a small JSON array); one this master did
not make, or made for another listing, is refused naming the `cursor` field.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Iterator
from typing import Any

from master.errors import ApiProblem
from master.state import ClusterState
from master.views import job_summary, json_size, node_info, task_info
from schemas.api import JobInfo, ListJobs, ListNodes, ListTasks, NodeInfo, Page, TaskInfo
from schemas.limits import PAGE_BYTES

Item = JobInfo | TaskInfo | NodeInfo
TaskKey = tuple[str, int, int]


def encode_cursor(kind: str, *key: str | int) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, shape: tuple[type, ...]) -> list[Any]:
    """The key inside a cursor of `kind` whose parts have the types in `shape`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        value = None
    if (
        not isinstance(value, list)
        or len(value) != len(shape) + 1
        or value[0] != kind
        or any(type(part) is not kind_ for part, kind_ in zip(value[1:], shape, strict=True))
    ):
        raise ApiProblem(
            "invalid",
            f"cursor: {cursor[:40]!r} is not a cursor of an {kind} page from this master; "
            "send the next_cursor of the previous page, or none for the first page",
            field="cursor",
        )
    return value[1:]


def paginate(items: Iterator[tuple[tuple[str | int, ...], Item]], limit: int, kind: str) -> Page:
    """Fill a page from (key, item) pairs in key order; `next_cursor` if any item is left."""
    chosen: list[dict[str, Any]] = []
    used = 2  # the brackets of the JSON array
    last: tuple[str | int, ...] = ()
    for key, item in items:
        size = json_size(item) + (1 if chosen else 0)
        if chosen and (len(chosen) >= limit or used + size > PAGE_BYTES):
            return Page(items=chosen, next_cursor=encode_cursor(kind, *last))
        chosen.append(item.model_dump(mode="json"))
        used += size
        last = key
    return Page(items=chosen)


def jobs_page(state: ClusterState, request: ListJobs) -> Page:
    after = ""
    if request.cursor is not None:
        (after,) = decode_cursor(request.cursor, "jobs", (str,))
    job_ids = sorted(state.jobs)

    def items() -> Iterator[tuple[tuple[str | int, ...], Item]]:
        for job_id in job_ids[bisect.bisect_right(job_ids, after) :]:
            job = state.jobs[job_id]
            if request.include_done or not state.job_done(job):
                yield (job_id,), job_summary(state, job)

    return paginate(items(), request.limit, "jobs")


def nodes_page(state: ClusterState, request: ListNodes) -> Page:
    after = ""
    if request.cursor is not None:
        (after,) = decode_cursor(request.cursor, "nodes", (str,))
    node_ids = sorted(state.nodes)
    pairs = (
        ((node_id,), node_info(state.nodes[node_id], state.subnets.get(node_id, "")))
        for node_id in node_ids[bisect.bisect_right(node_ids, after) :]
    )
    return paginate(pairs, request.limit, "nodes")


def tasks_page(state: ClusterState, request: ListTasks) -> Page:
    """Tasks of one job, or of all, every attempt, by (job, slot, attempt)."""
    after: TaskKey | None = None
    if request.cursor is not None:
        job_id, slot, attempt = decode_cursor(request.cursor, "tasks", (str, int, int))
        if request.job_id not in (None, job_id):
            raise ApiProblem(
                "invalid",
                f"cursor: it continues a listing of job {job_id!r}, not {request.job_id!r}",
                field="cursor",
            )
        after = (job_id, slot, attempt)
    if request.job_id is not None:
        job_ids = [request.job_id] if request.job_id in state.jobs else []
    else:
        job_ids = sorted(state.jobs)
    return paginate(_tasks_after(state, job_ids, after), request.limit, "tasks")


def _tasks_after(
    state: ClusterState, job_ids: list[str], after: TaskKey | None
) -> Iterator[tuple[tuple[str | int, ...], Item]]:
    start_job, start_slot, start_attempt = after or ("", -1, -1)
    for job_id in job_ids[bisect.bisect_left(job_ids, start_job) :]:
        job = state.jobs[job_id]
        slots = sorted(job.slots)
        first = bisect.bisect_left(slots, start_slot) if job_id == start_job else 0
        for slot in slots[first:]:
            resume = job_id == start_job and slot == start_slot
            for task_id in job.slots[slot]:
                task = state.tasks[task_id]
                if after is None or not resume or task.attempt > start_attempt:
                    yield (job_id, slot, task.attempt), task_info(task)
