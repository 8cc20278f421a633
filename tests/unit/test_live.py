"""The live model (corral.live_model): listings in, status events applied, snapshots out;
and LiveCluster's thread against a fake client (connecting again, problems shown)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from corral import live_model
from corral.errors import BrokerUnreachable, CorralError
from corral.live import LiveCluster
from corral.live_model import MAX_STALE_JOBS, Model, slot_and_attempt
from corral.live_reads import Answer, OneJob, everything
from corral.streams import Event
from schemas.api import JobInfo, MasterInfo, NodeInfo, TaskInfo
from schemas.envelope import Envelope, Message
from schemas.messages import (
    CommandRefused,
    JobEvent,
    LeaderAnnounced,
    NodeEvent,
    Payload,
    Resources,
    TaskStatus,
)
from tests.unit.factories import GiB, job_spec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(name: str = "web", replicas: int = 2, state: str = "running", **spec: Any) -> JobInfo:
    return JobInfo.model_validate(
        {
            "job_id": name,
            "state": state,
            "spec": job_spec(name, kind="service", replicas=replicas, **spec),
            "submitted_at": T0,
        }
    )


def task(job_id: str = "web", slot: int = 0, attempt: int = 0, **fields: Any) -> TaskInfo:
    values: dict[str, Any] = {
        "task_id": f"{job_id}-abc123-{slot}-{attempt}",
        "job_id": job_id,
        "slot": slot,
        "attempt": attempt,
        "state": "assigned",
        "node_id": "n1",
        "updated_at": T0,
    }
    return TaskInfo.model_validate({**values, **fields})


def node(node_id: str = "n1", state: str = "ready") -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        state=state,  # type: ignore[arg-type]
        capacity=Resources(cpus=4, memory=8 * GiB),
        allocated=Resources(cpus=1, memory=GiB),
        last_seen=T0,
    )


def master(name: str = "m1") -> MasterInfo:
    return MasterInfo(name=name, instance="abc", role="active", epoch=3, last_seen_ago=0.1)


def event(payload: Payload, key: str = "k") -> Event:
    return Event(key, payload, T0)


def status(task_id: str, state: str, job_id: str = "web", **fields: Any) -> Event:
    values = {"task_id": task_id, "job_id": job_id, "node_id": "n1", "state": state}
    return event(TaskStatus.model_validate({**values, **fields}))


@pytest.fixture
def model() -> Model:
    """One service `web` of two replicas, both assigned to n1, and one master."""
    loaded = Model(keep_events=5)
    loaded.load([master()], [node()], [job()], [task(slot=0), task(slot=1)], now=100.0)
    return loaded


def test_a_load_fills_the_view_with_counts_and_a_version(model: Model) -> None:
    view = model.view(connected=True, problem="")
    assert view.version > 0 and view.changed_at == 100.0
    assert [m.name for m in view.masters] == ["m1"]
    assert set(view.nodes) == {"n1"} and set(view.jobs) == {"web"}
    assert set(view.tasks) == {"web-abc123-0-0", "web-abc123-1-0"}
    assert dict(view.task_counts) == {"assigned": 2}
    assert dict(view.node_counts) == {"ready": 1} and dict(view.job_counts) == {"running": 1}
    assert view.jobs["web"].task_counts == {"assigned": 2}


def test_a_view_never_changes_once_handed_out(model: Model) -> None:
    before = model.view(connected=True, problem="")
    model.apply(status("web-abc123-0-0", "running"), now=101.0)
    after = model.view(connected=True, problem="")
    assert before.tasks["web-abc123-0-0"].state == "assigned"
    assert after.tasks["web-abc123-0-0"].state == "running"
    assert dict(before.task_counts) == {"assigned": 2}
    assert dict(after.task_counts) == {"assigned": 1, "running": 1}
    assert after.version > before.version
    with pytest.raises(TypeError):
        after.tasks["x"] = task()  # type: ignore[index]


def test_a_task_event_changes_the_task_and_its_jobs_counts(model: Model) -> None:
    model.apply(
        status("web-abc123-0-0", "running", health="starting", address="10.0.0.2"), now=101.0
    )
    view = model.view(connected=True, problem="")
    running = view.tasks["web-abc123-0-0"]
    assert (running.state, running.health, running.address) == ("running", "starting", "10.0.0.2")
    assert running.started_at == T0
    assert view.jobs["web"].task_counts == {"assigned": 1, "running": 1}
    model.apply(status("web-abc123-0-0", "exited", exit_code=3), now=102.0)
    exited = model.view(connected=True, problem="").tasks["web-abc123-0-0"]
    assert (exited.state, exited.exit_code, exited.address) == ("exited", 3, "")


def test_a_report_never_moves_a_task_back(model: Model) -> None:
    model.apply(status("web-abc123-0-0", "stopped", reason="fenced"), now=101.0)
    model.apply(status("web-abc123-0-0", "running"), now=102.0)  # late, or read before
    assert model.view(connected=True, problem="").tasks["web-abc123-0-0"].state == "stopped"


def test_a_running_task_is_healthy_after_its_jobs_min_healthy(model: Model) -> None:
    model.apply(status("web-abc123-0-0", "running"), now=101.0)
    model.mature(101.5)
    assert model.view(connected=True, problem="").jobs["web"].healthy == 0
    assert model.next_maturing() == 102.0  # min_healthy defaults to 1 s
    model.mature(102.0)
    view = model.view(connected=True, problem="")
    assert view.tasks["web-abc123-0-0"].healthy and view.jobs["web"].healthy == 1
    model.apply(status("web-abc123-0-0", "running", health="unhealthy"), now=103.0)
    view = model.view(connected=True, problem="")
    assert not view.tasks["web-abc123-0-0"].healthy and view.jobs["web"].healthy == 0


def test_a_new_attempt_replaces_its_slots_task_and_the_job_is_read_again(model: Model) -> None:
    model.apply(status("web-abc123-0-0", "failed", reason="boom"), now=101.0)
    model.apply(status("web-abc123-0-1", "running"), now=102.0)
    view = model.view(connected=True, problem="")
    assert set(view.tasks) == {"web-abc123-0-1", "web-abc123-1-0"}
    assert view.tasks["web-abc123-0-1"].slot == 0 and view.tasks["web-abc123-0-1"].attempt == 1
    assert view.jobs["web"].task_counts == {"assigned": 1, "running": 1}
    assert model.stale_jobs == {"web": 103.0}
    model.apply(status("web-abc123-0-0", "stopped"), now=103.0)  # the older attempt's report
    assert "web-abc123-0-0" not in model.view(connected=True, problem="").tasks


def test_a_scaled_up_slot_is_taken_from_events_within_bounds(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    model.apply(status("web-abc123-2-0", "running"), now=101.0)  # scaled up to 3
    assert model.view(connected=True, problem="").tasks["web-abc123-2-0"].state == "running"
    monkeypatch.setattr(live_model, "MAX_EXTRA_TASKS", 3)
    for slot in range(3, 10):
        model.apply(status(f"web-abc123-{slot}-0", "running"), now=101.0)
    assert len(model.view(connected=True, problem="").tasks) == 2 + 3
    model.set_job(job(replicas=3), [task(slot=s) for s in range(3)], now=102.0)
    assert len(model.view(connected=True, problem="").tasks) == 3
    model.apply(status("web-abc123-3-0", "running"), now=103.0)  # room again
    assert len(model.view(connected=True, problem="").tasks) == 4


def test_events_cannot_add_tasks_of_unknown_jobs_or_ids_of_no_slot(model: Model) -> None:
    model.apply(status("new-abc123-0-0", "running", job_id="new"), now=101.0)
    model.apply(status("web-notanid", "running"), now=101.0)
    assert len(model.view(connected=True, problem="").tasks) == 2
    assert set(model.stale_jobs) == {"web", "new"}


def test_a_stopped_task_has_its_job_read_again(model: Model) -> None:
    model.apply(status("web-abc123-1-0", "stopped", reason="scaled down to 1"), now=101.0)
    assert model.stale_jobs == {"web": 102.0}


def test_jobs_waiting_to_be_read_again_are_bounded(model: Model) -> None:
    for index in range(MAX_STALE_JOBS + 10):
        model.apply(event(JobEvent(job_id=f"j{index}", state="pending")), now=101.0)
    assert len(model.stale_jobs) == MAX_STALE_JOBS and model.relist_all
    assert model.take_due_jobs(100.5, 10) == [] and len(model.take_due_jobs(102.0, 10)) == 10
    assert len(model.stale_jobs) == MAX_STALE_JOBS - 10
    assert len(model.events) == 5  # keep_events


def test_a_job_event_changes_the_jobs_state_and_an_end_its_ended_at(model: Model) -> None:
    model.apply(event(JobEvent(job_id="web", state="degraded", reason="1/2 healthy")), 101.0)
    assert model.view(connected=True, problem="").jobs["web"].reason == "1/2 healthy"
    model.apply(event(JobEvent(job_id="web", state="cancelled")), now=102.0)
    view = model.view(connected=True, problem="")
    assert view.jobs["web"].state == "cancelled" and view.jobs["web"].ended_at == T0
    assert dict(view.job_counts) == {"cancelled": 1} and model.stale_jobs == {"web": 102.0}


def test_node_events_change_known_nodes_and_relist_unknown_ones(model: Model) -> None:
    model.apply(event(NodeEvent(node_id="n1", state="down", reason="no heartbeat")), 101.0)
    view = model.view(connected=True, problem="")
    assert view.nodes["n1"].state == "down" and dict(view.node_counts) == {"down": 1}
    assert not model.relist_nodes
    model.apply(event(NodeEvent(node_id="n9", state="ready")), now=102.0)
    assert model.relist_nodes and "n9" not in model.view(connected=True, problem="").nodes
    model.set_nodes([node(), node("n9")], now=103.0)
    assert not model.relist_nodes and len(model.view(connected=True, problem="").nodes) == 2


def test_a_new_leader_relists_everything_and_repeats_are_not_news(model: Model) -> None:
    model.apply(event(LeaderAnnounced(master="m1", epoch=3)), now=101.0)
    version = model.version
    model.apply(event(LeaderAnnounced(master="m1", epoch=3)), now=106.0)
    assert model.version == version and not model.relist_all and len(model.events) == 1
    model.apply(event(LeaderAnnounced(master="m2", epoch=9)), now=107.0)
    assert model.relist_all
    model.apply(event(CommandRefused(node_id="n1", reason="stale")), now=108.0)
    assert [e.payload.TYPE for e in model.view(connected=True, problem="").events] == [
        "leader.announce",
        "leader.announce",
        "command.refused",
    ]


def test_a_job_read_again_replaces_its_tasks_and_a_purged_one_goes(model: Model) -> None:
    model.want_job("web", now=100.0)
    healthy = task(slot=0, attempt=2, state="running", healthy=True)
    model.set_job(job(replicas=1), [healthy], now=101.0)
    view = model.view(connected=True, problem="")
    assert set(view.tasks) == {healthy.task_id} and view.jobs["web"].healthy == 1
    assert view.jobs["web"].task_counts == {"running": 1} and not model.stale_jobs
    model.drop_job("web", now=102.0)
    view = model.view(connected=True, problem="")
    assert not view.jobs and not view.tasks and not view.task_counts


def test_the_job_listing_drops_gone_jobs_and_wants_new_ones_read(model: Model) -> None:
    model.set_jobs([job("api", replicas=1)], now=101.0)
    view = model.view(connected=True, problem="")
    assert set(view.jobs) == {"api"} and not view.tasks
    assert model.stale_jobs == {"api": 101.0}


def test_what_a_listing_read_again_did_not_change_keeps_its_objects(model: Model) -> None:
    before = model.view(connected=True, problem="")
    model.set_nodes([node()], now=101.0)
    assert model.version == before.version  # nothing new
    model.load([master()], [node()], [job()], [task(slot=0), task(slot=1, state="running")], 102.0)
    after = model.view(connected=True, problem="")
    assert after.nodes["n1"] is before.nodes["n1"]
    assert after.tasks["web-abc123-0-0"] is before.tasks["web-abc123-0-0"]
    assert after.tasks["web-abc123-1-0"].state == "running"
    assert after.jobs["web"].task_counts == {"assigned": 1, "running": 1}


def test_slot_and_attempt_come_from_the_task_id() -> None:
    assert slot_and_attempt("web-3fa9c1-2-7", "web") == (2, 7)
    assert slot_and_attempt("my-web-3fa9c1-0-1", "my-web") == (0, 1)
    assert slot_and_attempt("web-1-0", "web") == (1, 0)  # ids from before submission tokens
    assert slot_and_attempt("web-x-y", "web") is None
    assert slot_and_attempt("api-1-0", "web") is None


def test_20000_tasks_load_apply_and_snapshot_quickly() -> None:
    big = Model()
    jobs = [job(f"j{index}", replicas=1000) for index in range(20)]
    tasks = [task(f"j{index}", slot) for index in range(20) for slot in range(1000)]
    nodes = [node(f"n{index}") for index in range(1000)]
    big.load([master()], nodes, jobs, tasks, now=100.0)
    started = time.perf_counter()
    for round_ in range(20):  # 20 batches of 100 events, a snapshot after each
        name = f"j{round_ // 10}"
        for slot in range(round_ % 10 * 100, round_ % 10 * 100 + 100):
            big.apply(status(f"{name}-abc123-{slot}-0", "running", job_id=name), now=101.0)
        view = big.view(connected=True, problem="")
    elapsed = time.perf_counter() - started
    assert view.task_counts["running"] == 2000 and view.jobs["j1"].task_counts["running"] == 1000
    assert elapsed < 2.0, f"2,000 events and 20 snapshots took {elapsed:.2f} s"
    started = time.perf_counter()
    for _ in range(100):
        big.view(connected=True, problem="")
    assert time.perf_counter() - started < 0.1


# -- LiveCluster, with a fake client --


class FakeClient:
    """Lists what it is given and delivers `events` through a subscription; `fail` makes
    every request raise it."""

    def __init__(self, events: list[Payload], fail: CorralError | None = None) -> None:
        self.events = list(events)
        self.fail = fail
        self.closed = False

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def _subscribe(self, queue: Any) -> Any:
        self._check()
        return self

    def _receive(self, subscription: Any, timeout: float) -> tuple[str, Message] | None:
        if not self.events:
            time.sleep(min(timeout, 0.01))
            return None
        payload = self.events.pop(0)
        return "k", Message(envelope=Envelope(type=payload.TYPE), payload=payload)

    def masters(self) -> Any:
        self._check()
        return type("MastersInfo", (), {"masters": [master()]})()

    def iter_nodes(self, **_: Any) -> Iterator[list[NodeInfo]]:
        self._check()
        yield [node()]

    def iter_jobs(self, **_: Any) -> Iterator[list[JobInfo]]:
        yield [job()]

    def iter_tasks(self, **_: Any) -> Iterator[list[TaskInfo]]:
        yield [task(slot=0), task(slot=1)]

    def close(self) -> None:
        self.closed = True


def test_live_cluster_follows_events_and_says_when_it_cannot_connect() -> None:
    clients = [
        FakeClient([], fail=BrokerUnreachable("amqp://x/", "refused")),
        FakeClient(
            [TaskStatus(task_id="web-abc123-0-0", job_id="web", node_id="n1", state="running")]
        ),
    ]
    made: list[FakeClient] = []

    def connect() -> Any:
        made.append(clients[len(made)] if len(made) < len(clients) else FakeClient([]))
        return made[-1]

    live = LiveCluster(connect, refresh=60.0)
    assert live.view().version == 0 and not live.view().connected
    live.start()
    try:
        down = live.wait(0, timeout=5.0)
        assert not down.connected and "refused" in down.problem
        view = live.wait(down.version, timeout=5.0)
        deadline = time.monotonic() + 5.0
        while view.tasks.get("web-abc123-0-0", task()).state != "running":
            assert time.monotonic() < deadline, view
            view = live.wait(view.version, timeout=1.0)
        assert view.connected and view.problem == "" and view.jobs["web"].state == "running"
    finally:
        live.stop()
    assert made[0].closed and made[1].closed


class Waits(FakeClient):
    """Records how long each receive was asked to wait."""

    def __init__(self) -> None:
        super().__init__([])
        self.waits: list[float] = []

    def _receive(self, subscription: Any, timeout: float) -> tuple[str, Message] | None:
        self.waits.append(timeout)
        return None


def loaded(live: LiveCluster, client: FakeClient) -> None:
    """`live` as after its first listing, without its threads."""
    live._generation = 1
    live._ask("all")
    live._answers.put(Answer(live._asked["all"], everything(client)))  # type: ignore[arg-type]
    live._take_answers()


@pytest.mark.parametrize("why", ["new leader", "many stale jobs", "unknown node"])
def test_a_listing_not_yet_allowed_is_waited_for_not_polled(why: str) -> None:
    """A full listing (or one of the nodes) wanted before MIN_RELIST has passed must not
    make the thread poll with no wait until then (it spun at 100 % for up to 5 s)."""
    connect: Any = Waits
    live = LiveCluster(connect, refresh=60.0)
    client = Waits()
    loaded(live, client)
    now = time.time()
    model = live._model
    if why == "new leader":
        model.relist_all = True
    elif why == "many stale jobs":
        for index in range(60):
            model.want_job(f"job-{index}", now - 1.0, delay=0.0)
    else:
        model.relist_nodes = True
    live._read_batch(client, client)  # type: ignore[arg-type]
    assert client.waits[-1] > 0.1
    live._catch_up()
    assert not live._asked  # not before MIN_RELIST


def test_what_is_asked_for_is_not_waited_for_again() -> None:
    """A read asked for and not answered yet does not make its time due again and again."""
    connect: Any = Waits
    live = LiveCluster(connect, refresh=60.0)
    client = Waits()
    loaded(live, client)
    live._model.want_job("web", time.time() - 5.0, delay=0.0)
    live._catch_up()
    assert set(live._asked) == {"job:web"}
    live._read_batch(client, client)  # type: ignore[arg-type]
    assert client.waits[-1] > 0.1


def test_an_answer_is_brought_up_to_date_by_the_events_that_came_meanwhile() -> None:
    connect: Any = Waits
    live = LiveCluster(connect, refresh=60.0)
    client = FakeClient(
        [
            TaskStatus(task_id="web-abc123-0-0", job_id="web", node_id="n1", state="running"),
            JobEvent(job_id="web", state="degraded", reason="0/2 healthy"),
        ]
    )
    loaded(live, client)
    live._model.want_job("web", time.time() - 5.0, delay=0.0)
    live._catch_up()  # the job is asked for; then the events come, then the answer
    live._read_batch(client, client)  # type: ignore[arg-type]
    old = job(state="running")
    live._answers.put(Answer(live._asked["job:web"], OneJob("web", old, [task(), task(slot=1)])))
    live._take_answers()
    view = live._model.view(connected=True, problem="")
    assert view.tasks["web-abc123-0-0"].state == "running"
    assert view.jobs["web"].state == "degraded"
    assert [event.payload.TYPE for event in view.events] == ["task.status", "job.status"]
