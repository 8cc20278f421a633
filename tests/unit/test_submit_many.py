"""api.submit_many: many jobs in one request, each as api.submit would take it, placed in
one scheduling pass; a redelivered batch is not carried out twice; the SDK splits a long
list into requests the master takes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.client import BATCH_BYTES, _batches
from master.access import Caller
from master.api import Api
from master.controller import Controller
from master.settings import MasterSettings
from schemas.api import SubmitJob, SubmitJobs, SubmitResults
from schemas.limits import MAX_BATCH_JOBS, MAX_BATCH_REPLICAS
from tests.unit.factories import ADMIN, heartbeat, job_spec


def cluster(nodes: int = 4) -> Api:
    controller = Controller(MasterSettings(amqp_url="amqp://x"), epoch=1)
    for index in range(nodes):
        controller.heartbeat(heartbeat(f"n{index}"), 0.0)
    controller.drain()
    return Api(controller)


def submit_many(
    master: Api, names: list[str], message_id: str = "m1", caller: Caller = ADMIN
) -> SubmitResults:
    request = SubmitJobs(specs=[job_spec(name, kind="service", cpu=0.25) for name in names])
    reply = master.answer(request, message_id=message_id, now=1.0, token="tok", caller=caller)
    assert reply.ok, reply.error
    return SubmitResults.model_validate(reply.result)


def test_every_job_of_a_batch_is_submitted_and_placed() -> None:
    master = cluster()
    results = submit_many(master, [f"j{i}" for i in range(40)])
    assert [r.job_id for r in results.results] == [f"j{i}" for i in range(40)]
    assert all(r.ok and r.state == "pending" for r in results.results)  # placed, not running
    state = master.controller.state
    assert {t.job_id for t in state.tasks.values()} == {f"j{i}" for i in range(40)}
    placed = [t.node_id for t in state.tasks.values()]
    assert None not in placed
    assert {placed.count(f"n{i}") for i in range(4)} == {10}  # spread evenly
    starts, _ = master.controller.drain()
    assert len(starts) == 40


def test_a_refused_job_leaves_the_others_submitted() -> None:
    master = cluster()
    submit_many(master, ["taken"], message_id="m0")
    results = submit_many(master, ["a", "taken", "b", "a"])
    codes = [(r.ok, r.error.code if r.error else None) for r in results.results]
    assert codes == [(True, None), (False, "conflict"), (True, None), (False, "conflict")]
    assert set(master.controller.state.jobs) == {"taken", "a", "b"}


def test_a_submitter_may_not_batch_over_another_owners_job() -> None:
    master = cluster()
    alice, bob = Caller("alice", "submitter"), Caller("bob", "submitter")
    submit_many(master, ["hers"], message_id="m0", caller=alice)
    results = submit_many(master, ["his", "hers"], caller=bob)
    assert results.results[0].ok
    error = results.results[1].error
    assert error is not None and error.code == "forbidden"
    viewer = submit_many(master, ["seen"], message_id="m2", caller=Caller("eve", "viewer"))
    assert viewer.results[0].error is not None
    assert viewer.results[0].error.code == "forbidden"
    assert "seen" not in master.controller.state.jobs


def test_a_redelivered_batch_is_not_carried_out_twice() -> None:
    master = cluster()
    first = submit_many(master, ["a", "b"])
    tasks = set(master.controller.state.tasks)
    master.controller.drain()
    again = submit_many(master, ["a", "b"])  # the same message id: a redelivery
    assert [r.ok for r in again.results] == [True, True]
    assert set(master.controller.state.tasks) == tasks
    assert master.controller.drain() == ([], [])
    assert [r.job_id for r in first.results] == ["a", "b"]
    other = submit_many(master, ["a"], message_id="m9")  # a new request: a conflict
    assert other.results[0].error is not None and other.results[0].error.code == "conflict"


def test_one_batch_is_one_scheduling_pass() -> None:
    master = cluster()
    passes = 0
    schedule = master.controller._schedule

    def counted(now: float) -> None:
        nonlocal passes
        passes += 1
        schedule(now)

    master.controller._schedule = counted  # type: ignore[method-assign]
    submit_many(master, [f"j{i}" for i in range(100)])
    assert passes == 1


def test_a_batch_is_bounded_in_jobs_and_replicas() -> None:
    with pytest.raises(ValidationError, match="at most 1000"):
        SubmitJobs(specs=[job_spec(f"j{i}") for i in range(MAX_BATCH_JOBS + 1)])
    with pytest.raises(ValidationError, match="send fewer jobs per request"):
        SubmitJobs(specs=[job_spec(f"j{i}", replicas=5000) for i in range(3)])
    with pytest.raises(ValidationError):
        SubmitJobs(specs=[])


def test_the_sdk_splits_a_long_list_by_jobs_replicas_and_bytes() -> None:
    many = [job_spec(f"j{i}") for i in range(2500)]
    assert [len(b) for b in _batches(many)] == [1000, 1000, 500]
    wide = [job_spec(f"w{i}", replicas=4000) for i in range(5)]
    assert [len(b) for b in _batches(wide)] == [2, 2, 1]
    assert all(sum(s.replicas for s in b) <= MAX_BATCH_REPLICAS for b in _batches(wide))
    big = [job_spec(f"b{i}", env={"X": "x" * 60_000}) for i in range(200)]
    batches = list(_batches(big))
    assert sum(len(b) for b in batches) == 200 and len(batches) > 1
    for batch in batches:
        size = len(SubmitJobs(specs=batch).model_dump_json())
        assert size <= BATCH_BYTES + 1024
    assert [s.name for b in batches for s in b] == [s.name for s in big]


def test_a_single_submit_is_unchanged_by_the_batch_path() -> None:
    master = cluster()
    reply = master.answer(
        SubmitJob(spec=job_spec("one")), message_id="x", now=1.0, token="t", caller=ADMIN
    )
    assert reply.ok and reply.result["job_id"] == "one"
