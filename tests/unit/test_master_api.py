"""The master's answers to api.* requests, and what it does with a repeated request."""

from __future__ import annotations

from master.api import Api, Outcome, RequestMemory
from master.controller import Controller
from master.settings import MasterSettings
from schemas.api import (
    CancelJob,
    GetJob,
    ListJobs,
    ListNodes,
    ListTasks,
    Page,
    Reply,
    ScaleJob,
    SubmitJob,
)
from schemas.messages import Heartbeat
from tests.unit.factories import ADMIN, heartbeat, job_spec


def api(**settings: int) -> Api:
    controller = Controller(MasterSettings(amqp_url="amqp://x", **settings), epoch=1)
    controller.heartbeat(heartbeat("a"), 0.0)
    controller.drain()
    return Api(controller)


def submit(master: Api, message_id: str, name: str = "web", now: float = 1.0) -> Reply:
    request = SubmitJob(spec=job_spec(name, kind="service"))
    return master.answer(request, message_id=message_id, now=now, token="abc123", caller=ADMIN)


def test_a_redelivered_submit_gets_its_job_not_a_conflict() -> None:
    master = api()
    first = submit(master, "m1")
    tasks = set(master.controller.state.tasks)
    master.controller.drain()
    again = submit(master, "m1", now=2.0)
    assert (first.ok, again.ok) == (True, True)
    assert again.result["job_id"] == "web" and again.result["tasks"] == first.result["tasks"]
    assert set(master.controller.state.tasks) == tasks
    assert master.controller.drain() == ([], [])  # nothing carried out twice


def test_another_submit_of_an_active_name_is_a_conflict() -> None:
    master = api()
    submit(master, "m1")
    other = submit(master, "m2")
    assert other.error is not None and (other.error.code, other.error.field) == ("conflict", "name")


def test_a_repeated_request_that_failed_fails_the_same_way() -> None:
    master = api()
    request = ScaleJob(job_id="nope", replicas=2)
    first = master.answer(request, message_id="m1", now=1.0, token="t", caller=ADMIN)
    submit(master, "m2", name="nope")  # the job exists now, but this is a repeat
    again = master.answer(request, message_id="m1", now=2.0, token="t", caller=ADMIN)
    assert first.error is not None and again.error == first.error
    assert first.error.code == "not_found"


def test_a_reused_message_id_for_another_request_is_a_new_request() -> None:
    master = api()
    submit(master, "m1")
    reply = master.answer(
        CancelJob(job_id="web"), message_id="m1", now=2.0, token="t", caller=ADMIN
    )
    assert reply.ok and reply.result["state"] == "cancelled"


def test_the_memory_of_requests_is_bounded() -> None:
    master = api(remember_requests=2)
    submit(master, "m1", name="one")
    submit(master, "m2", name="two")
    submit(master, "m3", name="three")
    assert len(master.memory) == 2
    forgotten = submit(master, "m1", name="one")  # carried out again: the job is active
    assert forgotten.error is not None and forgotten.error.code == "conflict"
    assert submit(master, "m3", name="three").ok


def test_request_memory_forgets_the_least_recently_used() -> None:
    memory = RequestMemory(2)
    memory.remember("a", Outcome("api.submit", "x"))
    memory.remember("b", Outcome("api.submit", "y"))
    recalled = memory.recall("a", "api.submit", "x")
    assert recalled is not None
    memory.remember("a", recalled)  # what a recognised redelivery does: now the most recent
    memory.remember("c", Outcome("api.submit", "z"))
    assert memory.recall("b", "api.submit", "y") is None
    assert memory.recall("a", "api.submit", "x") is not None
    assert memory.recall("a", "api.cancel", "x") is None


def test_reads_are_answered_afresh() -> None:
    master = api()
    submit(master, "m1")
    for request in (ListJobs(), ListTasks(job_id="web"), ListNodes()):
        first = master.answer(request, message_id="r1", now=2.0, token="t", caller=ADMIN)
        assert first.ok and Page.model_validate(first.result).items
    job = master.answer(GetJob(job_id="web"), message_id="r1", now=2.0, token="t", caller=ADMIN)
    assert job.ok and job.result["task_counts"] == {"assigned": 1}


def test_listing_the_tasks_of_an_unknown_job_is_not_found() -> None:
    reply = api().answer(ListTasks(job_id="nope"), message_id="r", now=1.0, token="t", caller=ADMIN)
    assert reply.error is not None and (reply.error.code, reply.error.field) == (
        "not_found",
        "job_id",
    )


def test_a_bad_cursor_names_the_field() -> None:
    reply = api().answer(
        ListNodes(cursor="garbage"), message_id="r", now=1.0, token="t", caller=ADMIN
    )
    assert reply.error is not None and (reply.error.code, reply.error.field) == (
        "invalid",
        "cursor",
    )


def test_a_message_that_is_not_a_request_is_invalid() -> None:
    beat = heartbeat("a")
    reply = api().answer(beat, message_id="r", now=1.0, token="t", caller=ADMIN)
    assert isinstance(beat, Heartbeat)
    assert reply.error is not None and (reply.error.code, reply.error.field) == ("invalid", "type")
