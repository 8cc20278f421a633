"""Listings one page at a time, and a job's tasks within a reply's size."""

from __future__ import annotations

import json
from typing import Any

import pytest

from master import events as ev
from master import pages, views
from master.errors import ApiProblem
from master.state import ClusterState
from schemas.api import ListJobs, ListNodes, ListTasks, Page
from schemas.limits import PAGE_BYTES
from tests.unit.factories import Cluster, job_spec

KiB = 1024


def every_page(state: ClusterState, request: ListJobs | ListTasks | ListNodes) -> list[Page]:
    """Follow next_cursor from the first page to the last."""
    listing = {ListJobs: pages.jobs_page, ListTasks: pages.tasks_page, ListNodes: pages.nodes_page}
    result = []
    while True:
        page = listing[type(request)](state, request)  # type: ignore[operator]
        result.append(page)
        if page.next_cursor is None:
            return result
        request = request.model_copy(update={"cursor": page.next_cursor})


def ids(page: Page, key: str = "job_id") -> list[Any]:
    return [item[key] for item in page.items]


def jobs(*names: str) -> Cluster:
    cluster = Cluster(now=100.0)
    cluster.node("a")
    for name in names:
        cluster.job(job_spec(name, kind="service", replicas=2))
    return cluster


# -- jobs --


def test_jobs_come_by_id_a_page_at_a_time() -> None:
    cluster = jobs("c", "a", "e", "b", "d")
    first, second, third = every_page(cluster.state, ListJobs(limit=2))
    assert (ids(first), ids(second), ids(third)) == (["a", "b"], ["c", "d"], ["e"])
    assert third.next_cursor is None


def test_listed_jobs_carry_counts_but_no_tasks() -> None:
    cluster = jobs("web")
    cluster.assign("web-0-0", "a")
    (item,) = pages.jobs_page(cluster.state, ListJobs()).items
    assert (item["tasks"], item["task_counts"]) == ([], {"assigned": 1, "pending": 1})


def test_ended_jobs_can_be_left_out() -> None:
    cluster = jobs("a", "b", "c")
    cluster.apply(ev.JobCancelled(at=100.0, job_id="b"))
    assert ids(pages.jobs_page(cluster.state, ListJobs(include_done=False))) == ["a", "c"]


def test_a_cursor_holds_its_place_when_jobs_come_and_go() -> None:
    cluster = jobs("b", "d", "f", "h")
    first = pages.jobs_page(cluster.state, ListJobs(limit=2))
    assert ids(first) == ["b", "d"]
    cluster.job(job_spec("a"))  # before the cursor: not seen, nothing repeats
    cluster.job(job_spec("e"))  # after it: seen
    cluster.apply(ev.JobCancelled(at=100.0, job_id="d"), ev.JobForgotten(at=100.0, job_id="d"))
    rest = pages.jobs_page(cluster.state, ListJobs(limit=10, cursor=first.next_cursor))
    assert ids(rest) == ["e", "f", "h"]


def test_a_page_of_big_jobs_stops_before_the_byte_limit() -> None:
    cluster = Cluster()
    for index in range(12):
        env = {f"BLOB{n}": "x" * (60 * KiB) for n in range(3)}
        cluster.job(job_spec(f"job-{index:02}", env=env), tasks=False)
    listed = every_page(cluster.state, ListJobs(limit=5000))
    assert len(listed) > 1
    for page in listed:
        assert len(page.items) >= 1 and len(json.dumps(page.items)) <= PAGE_BYTES
    assert [job for page in listed for job in ids(page)] == sorted(cluster.state.jobs)


# -- tasks --


def many_tasks(replicas: int, retried: int = 0) -> Cluster:
    """Jobs `web` (`replicas` slots, the first `retried` of them with a second attempt)
    and `api` (2 slots)."""
    cluster = Cluster()
    cluster.job(job_spec("web", replicas=replicas))
    cluster.job(job_spec("api", replicas=2))
    for slot in range(retried):
        cluster.update(f"web-{slot}-0", "lost")
        cluster.attempt("web", slot, 1)
    return cluster


def test_tasks_come_by_job_slot_and_attempt() -> None:
    cluster = many_tasks(12, retried=2)
    listed = every_page(cluster.state, ListTasks(limit=5))
    keys = [(t["job_id"], t["slot"], t["attempt"]) for page in listed for t in page.items]
    assert keys == sorted(keys) and len(keys) == len(cluster.state.tasks)
    assert keys[2:5] == [("web", 0, 0), ("web", 0, 1), ("web", 1, 0)]
    assert keys[-2] == ("web", 10, 0)  # slots as numbers: 10 after 9


def test_more_tasks_than_a_page_holds_come_in_pages() -> None:
    cluster = many_tasks(10_000, retried=2)
    listed = every_page(cluster.state, ListTasks(limit=5000))
    assert len(listed) > 2  # 10,004 tasks: by count, and by bytes
    assert all(len(json.dumps(page.items, separators=(",", ":"))) <= PAGE_BYTES for page in listed)
    keys = [(t["job_id"], t["slot"], t["attempt"]) for page in listed for t in page.items]
    assert len(keys) == len(set(keys)) == len(cluster.state.tasks) == 10_004


def test_a_tasks_cursor_continues_only_its_own_job() -> None:
    cluster = many_tasks(3)
    page = pages.tasks_page(cluster.state, ListTasks(job_id="web", limit=1))
    with pytest.raises(ApiProblem) as caught:
        pages.tasks_page(cluster.state, ListTasks(job_id="api", cursor=page.next_cursor))
    assert (caught.value.code, caught.value.field) == ("invalid", "cursor")


# -- nodes and cursors --


def test_nodes_come_by_id() -> None:
    cluster = Cluster()
    for node_id in ("n3", "n1", "n2"):
        cluster.node(node_id)
    listed = every_page(cluster.state, ListNodes(limit=2))
    assert [ids(page, "node_id") for page in listed] == [["n1", "n2"], ["n3"]]


@pytest.mark.parametrize(
    "cursor",
    [
        "!",
        "not base64",
        "bm9wZQ",
        pages.encode_cursor("nodes", "x"),
        pages.encode_cursor("jobs", 3),
    ],
)
def test_a_cursor_this_master_did_not_make_is_refused(cursor: str) -> None:
    with pytest.raises(ApiProblem) as caught:
        pages.jobs_page(ClusterState(), ListJobs(cursor=cursor))
    assert (caught.value.code, caught.value.field) == ("invalid", "cursor")
    assert "cursor" in str(caught.value)


# -- one job's tasks --


def test_a_job_reply_keeps_current_attempts_first_and_counts_the_rest() -> None:
    cluster = Cluster()
    job = cluster.job(job_spec(replicas=3))
    for attempt in range(1, 6):
        for slot in range(3):
            cluster.update(f"web-{slot}-{attempt - 1}", "lost")
            cluster.attempt("web", slot, attempt)
    small = len(views.job_detail(cluster.state, job, budget=0).model_dump_json()) + 5 * 260
    info = views.job_detail(cluster.state, job, budget=small)
    current = {(slot, 5) for slot in range(3)}
    assert current <= {(t.slot, t.attempt) for t in info.tasks}
    assert info.tasks_omitted == 18 - len(info.tasks) > 0
    assert [(t.slot, t.attempt) for t in info.tasks] == sorted(
        (t.slot, t.attempt) for t in info.tasks
    )
    assert info.task_counts == {"pending": 3}


def test_a_job_of_ten_thousand_tasks_fits_one_reply() -> None:
    cluster = Cluster()
    job = cluster.job(job_spec(replicas=10_000))
    info = views.job_detail(cluster.state, job)
    assert len(info.model_dump_json()) <= PAGE_BYTES
    assert info.tasks_omitted == 10_000 - len(info.tasks) > 0
    assert info.task_counts == {"pending": 10_000}
