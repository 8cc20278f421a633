"""The master's controller, driven by calling it: build, call, assert on commands and events."""

from __future__ import annotations

from typing import Literal

import pytest

from master.controller import (
    UNROUTABLE_REASON,
    ApiProblem,
    Command,
    Controller,
    StandbyCommand,
    StartCommand,
    StopCommand,
)
from master.settings import MasterSettings
from schemas.messages import JobEvent, NodeEvent, Payload, TaskStatus
from tests.unit.factories import GiB, heartbeat, job_spec, running

Status = Literal["running", "exited", "failed", "stopped"]


def controller(*node_ids: str, now: float = 0.0) -> Controller:
    """A controller with epoch 7 that has heard one heartbeat from each node, drained."""
    master = Controller(MasterSettings(amqp_url="amqp://x"), epoch=7)
    for node_id in node_ids:
        master.heartbeat(heartbeat(node_id), now)
    master.drain()
    return master


def starts(commands: list[Command]) -> dict[str, str]:
    return {c.task_id: c.node_id for c in commands if isinstance(c, StartCommand)}


def stops(commands: list[Command]) -> dict[str, tuple[str, str]]:
    return {c.task_id: (c.node_id, c.reason) for c in commands if isinstance(c, StopCommand)}


def job_events(notifications: list[Payload]) -> list[tuple[str, str]]:
    return [(n.state, n.reason) for n in notifications if isinstance(n, JobEvent)]


def report(
    master: Controller, task_id: str, state: Status, now: float, code: int | None = None
) -> None:
    """The worker that runs `task_id` (as the master believes) reports its state."""
    node_id = master.state.tasks[task_id].node_id or "?"
    status = TaskStatus(
        task_id=task_id, job_id=task_id.split("-")[0], node_id=node_id, state=state, exit_code=code
    )
    master.task_status(status, now)


def test_a_new_node_is_announced_once() -> None:
    master = controller()
    master.heartbeat(heartbeat("a"), 0.0)
    master.heartbeat(heartbeat("a", seq=1), 1.0)
    assert master.drain() == ([], [NodeEvent(node_id="a", state="ready")])


def test_submit_starts_each_replica() -> None:
    master = controller("a", "b")
    info = master.submit(job_spec(kind="service", replicas=2), 1.0)
    assert (info.state, [t.state for t in info.tasks]) == ("pending", ["assigned", "assigned"])
    commands, notifications = master.drain()
    assert starts(commands) == {"web-0-0": "a", "web-1-0": "b"}
    assert job_events(notifications) == [("pending", "")]


def test_a_job_nothing_can_run_waits_with_a_reason() -> None:
    master = controller("a")
    info = master.submit(job_spec(cpu=64), 1.0)
    assert info.state == "pending"
    assert "1 node has less than 64 free CPUs" in info.reason
    assert master.drain()[0] == []


def test_submitting_an_active_job_again_is_a_conflict() -> None:
    master = controller("a")
    master.submit(job_spec(), 1.0)
    with pytest.raises(ApiProblem) as caught:
        master.submit(job_spec(), 2.0)
    assert (caught.value.code, caught.value.field) == ("conflict", "name")
    assert "cancel it first" in str(caught.value)


def test_unknown_jobs_are_not_found() -> None:
    master = controller("a")
    with pytest.raises(ApiProblem) as cancelling:
        master.cancel("nope", 1.0)
    with pytest.raises(ApiProblem) as scaling:
        master.scale("nope", 2, 1.0)
    assert cancelling.value.code == scaling.value.code == "not_found"
    assert "no job named 'nope'" in str(cancelling.value)


def test_cancel_stops_the_tasks() -> None:
    master = controller("a", "b")
    master.submit(job_spec(kind="service", replicas=2), 1.0)
    report(master, "web-0-0", "running", 2.0)
    master.drain()
    info = master.cancel("web", 3.0)
    assert (info.state, [t.state for t in info.tasks]) == ("cancelled", ["stopped", "stopped"])
    commands, notifications = master.drain()
    assert stops(commands) == {"web-0-0": ("a", "job cancelled"), "web-1-0": ("b", "job cancelled")}
    assert starts(commands) == {}
    assert job_events(notifications) == [("cancelled", "")]
    master.cancel("web", 4.0)
    assert master.drain() == ([], [])


def test_scale_down_stops_the_surplus_slots() -> None:
    master = controller("a", "b")
    master.submit(job_spec(kind="service", replicas=3), 1.0)
    master.drain()
    info = master.scale("web", 1, 2.0)
    assert info.spec.replicas == 1
    assert stops(master.drain()[0]) == {
        "web-1-0": ("b", "scaled down to 1"),
        "web-2-0": ("a", "scaled down to 1"),
    }


def test_scale_down_then_up_restarts_the_slots() -> None:
    master = controller("a", "b")
    master.submit(job_spec(kind="service", replicas=3), 1.0)
    master.scale("web", 1, 2.0)
    master.drain()
    master.scale("web", 3, 3.0)
    assert set(starts(master.drain()[0])) == {"web-1-1", "web-2-1"}


def test_task_status_drives_the_job_state_and_its_events() -> None:
    master = controller("a")
    master.submit(job_spec(), 1.0)
    master.drain()
    report(master, "web-0-0", "running", 2.0)
    report(master, "web-0-0", "running", 2.5)  # a duplicate report changes nothing
    assert job_events(master.drain()[1]) == [("running", "")]
    report(master, "web-0-0", "exited", 3.0, code=0)
    assert master.job_info("web").state == "complete"
    assert master.drain() == ([], [JobEvent(job_id="web", state="complete")])
    assert master.state.nodes["a"].used_cpu == 0


def test_a_failing_batch_task_is_retried_then_fails_the_job() -> None:
    master = controller("a")
    master.submit(job_spec(restart={"max_retries": 1}), 1.0)
    master.drain()
    report(master, "web-0-0", "exited", 2.0, code=1)
    commands, _ = master.drain()
    assert stops(commands) == {}  # its container stays for its logs (keep_containers)
    assert starts(commands) == {}  # it waits for its backoff
    master.heartbeat(heartbeat("a", seq=1), 2.9)
    master.tick(2.9)
    assert master.drain()[0] == []
    master.tick(3.0)
    assert starts(master.drain()[0]) == {"web-0-1": "a"}
    report(master, "web-0-1", "exited", 4.0, code=1)
    info = master.job_info("web")
    assert (info.state, info.reason) == (
        "failed",
        "task web-0-1 exited with code 1; gave up after 1 retries",
    )
    assert ("failed", info.reason) in job_events(master.drain()[1])


def test_a_silent_node_loses_its_tasks_to_the_other_node() -> None:
    master = controller("a", "b")
    master.submit(job_spec(kind="service", replicas=2), 1.0)
    report(master, "web-0-0", "running", 1.5)
    report(master, "web-1-0", "running", 1.5)
    master.drain()
    master.heartbeat(heartbeat("b", seq=1), 2.5)
    master.tick(2.5)
    # a is only suspect: its task's replacement starts paused on b (a warm standby)
    assert master.drain()[0] == [StandbyCommand("web-0-1", "web", 0, "b", 10.0)]
    master.tick(3.0)
    commands, notifications = master.drain()
    assert master.state.tasks["web-0-0"].state == "lost"
    assert starts(commands) == {"web-0-1": "b"}
    assert stops(commands) == {}
    assert NodeEvent(node_id="a", state="down", reason="no heartbeat for 3.0 s") in notifications


def silent_node_scenario() -> Controller:
    """Node a went silent at 0 and is down at 3; its task web-0-0 now runs on b as web-0-1."""
    master = controller("a", "b")
    master.submit(job_spec(kind="service"), 0.0)
    report(master, "web-0-0", "running", 0.5)
    master.heartbeat(heartbeat("b", seq=1), 2.5)
    master.tick(3.0)
    report(master, "web-0-1", "running", 3.5)
    assert master.state.tasks["web-0-1"].node_id == "b"
    master.drain()
    return master


def test_a_returning_node_is_fenced_once_per_interval() -> None:
    master = silent_node_scenario()
    back = heartbeat("a", seq=9, tasks=[running("web-0-0")])
    master.heartbeat(heartbeat("b", seq=2, tasks=[running("web-0-1")]), 10.0)
    master.heartbeat(back, 10.0)
    commands, notifications = master.drain()
    assert stops(commands) == {"web-0-0": ("a", "fenced")}
    assert NodeEvent(node_id="a", state="ready") in notifications
    master.tick(11.0)  # web-0-1 has been healthy for min_healthy: the job runs again
    assert job_events(master.drain()[1]) == [("running", "")]
    for now in (11.0, 12.0, 13.0, 14.0):
        master.heartbeat(heartbeat("b", seq=int(now), tasks=[running("web-0-1")]), now)
        master.heartbeat(back, now)
        master.tick(now)
    assert master.drain() == ([], [])
    master.heartbeat(back, 15.0)
    assert stops(master.drain()[0]) == {"web-0-0": ("a", "fenced")}


def test_a_late_running_status_from_the_old_node_is_fenced() -> None:
    master = silent_node_scenario()
    status = TaskStatus(task_id="web-0-0", job_id="web", node_id="a", state="running")
    master.task_status(status, 10.0)
    assert stops(master.drain()[0]) == {"web-0-0": ("a", "fenced")}
    assert master.state.tasks["web-0-0"].state == "lost"


def test_a_task_of_an_unknown_job_is_left_alone() -> None:
    master = controller("a")
    master.heartbeat(heartbeat("a", seq=1, tasks=[running("other-0-0", job_id="other")]), 1.0)
    assert master.drain() == ([], [])


def test_a_running_container_whose_status_was_lost_is_taken_as_running() -> None:
    master = controller("a")
    master.submit(job_spec(), 1.0)
    master.drain()
    master.heartbeat(heartbeat("a", seq=1, tasks=[running("web-0-0")]), 2.0)
    assert master.state.tasks["web-0-0"].state == "running"
    assert master.drain() == ([], [JobEvent(job_id="web", state="running")])


def test_an_unroutable_assignment_holds_the_node_and_backs_off_the_replacement() -> None:
    master = controller("a", "b")
    master.submit(job_spec(), 1.0)
    master.drain()
    master.assignment_unroutable("web-0-0", 2.0)
    task = master.state.tasks["web-0-0"]
    assert (task.state, task.reason) == ("lost", f"node a {UNROUTABLE_REASON}")
    assert starts(master.drain()[0]) == {}  # the replacement waits for its backoff
    replacement = master.state.tasks["web-0-1"]
    assert replacement.reason == (
        "replacing web-0-0, whose assignment could not be delivered (in 1 s)"
    )
    for node_id in ("a", "b"):
        master.heartbeat(heartbeat(node_id, seq=1), 3.0)
    master.tick(3.0)
    assert starts(master.drain()[0]) == {"web-0-1": "b"}  # not a: it is held
    master.assignment_unroutable("web-0-0", 3.0)  # not assigned any more: ignored
    assert master.drain()[0] == []


def test_a_node_without_a_queue_cannot_make_the_master_spin() -> None:
    """It heartbeats with room for everything but never consumes: records stay few."""
    master = controller("real")
    master.heartbeat(heartbeat("fake", cpus=1000, memory=1000 * GiB), 0.0)
    master.submit(job_spec(kind="service", replicas=4, cpu=1), 0.0)
    now = 0.0
    while now < 120.0:
        commands, _ = master.drain()
        for start in (c for c in commands if isinstance(c, StartCommand)):
            if start.node_id == "fake":
                master.assignment_unroutable(start.task_id, now)
            else:
                report(master, start.task_id, "running", now)
        now += 0.25
        master.heartbeat(heartbeat("real", seq=int(now * 4)), now)
        master.heartbeat(heartbeat("fake", cpus=1000, memory=1000 * GiB), now)
        master.tick(now)
    assert master.job_info("web").state == "running"
    assert len(master.state.tasks) == 6  # 2 lost on the fake node, 4 running
    assert {t.node_id for t in master.state.live_tasks(master.state.jobs["web"])} == {"real"}


def test_journal_receives_only_journaled_events() -> None:
    master = controller()
    kinds: list[str] = []
    master.journal = lambda event: kinds.append(type(event).__name__)
    master.heartbeat(heartbeat("a"), 0.0)
    master.submit(job_spec(), 1.0)
    assert kinds == ["JobSubmitted", "TaskCreated", "TaskAssigned", "JobStateChanged"]


def test_a_resubmitted_job_gets_fresh_task_ids() -> None:
    master = controller("a")
    master.submit(job_spec(kind="service"), 1.0)
    master.cancel("web", 2.0)
    stopped = set(stops(master.drain()[0]))
    master.submit(job_spec(kind="service"), 3.0)
    started = set(starts(master.drain()[0]))
    assert started and not started & stopped


def test_a_restarted_agent_that_lost_a_running_task_gets_it_replaced() -> None:
    master = controller("a", "b")
    master.submit(job_spec(kind="service", replicas=2), 1.0)
    for task_id in ("web-0-0", "web-1-0"):
        report(master, task_id, "running", 2.0)
    on_a = next(t for t in master.state.tasks.values() if t.node_id == "a")
    master.drain()

    rebooted = heartbeat("a").model_copy(update={"boot_id": "boot-a-2"})
    master.heartbeat(rebooted, 3.0)  # a new agent on `a` that runs nothing

    assert master.state.tasks[on_a.task_id].state == "lost"
    assert "restarted without it" in master.state.tasks[on_a.task_id].reason
    assert len(starts(master.drain()[0])) == 1  # its replacement


def test_the_same_agent_not_yet_reporting_a_task_loses_nothing() -> None:
    master = controller("a")
    master.submit(job_spec(kind="service"), 1.0)
    report(master, "web-0-0", "running", 2.0)
    master.heartbeat(heartbeat("a"), 3.0)  # same boot id, empty list: not evidence
    assert master.state.tasks["web-0-0"].state == "running"


def test_cancelling_a_finished_job_keeps_its_outcome() -> None:
    master = controller("a")
    master.submit(job_spec(restart={"max_retries": 0}), 1.0)
    report(master, "web-0-0", "running", 2.0)
    report(master, "web-0-0", "exited", 3.0, code=0)
    assert master.cancel("web", 4.0).state == "complete"


def test_a_running_report_for_a_job_never_seen_is_left_alone() -> None:
    master = controller("a")
    status = TaskStatus(task_id="old-0-0", job_id="old", node_id="a", state="running")
    master.task_status(status, 1.0)  # e.g. after this master restarted
    assert master.drain() == ([], [])


def test_a_resubmitted_name_removes_the_old_containers() -> None:
    master = controller("a")
    master.submit(job_spec(restart={"max_retries": 0}), 1.0)
    report(master, "web-0-0", "running", 2.0)
    report(master, "web-0-0", "exited", 3.0, code=0)
    master.drain()
    master.submit(job_spec(restart={"max_retries": 0}), 4.0)
    commands, _ = master.drain()
    assert stops(commands) == {"web-0-0": ("a", "job resubmitted")}
    assert starts(commands) == {"web-v2-0-0": "a"}


def test_a_resubmission_stops_only_the_containers_that_may_be_left() -> None:
    """Attempts beyond keep_containers were removed when they were replaced: no second
    stop for them; the kept ones go now."""
    master = controller("a")
    master.submit(job_spec(restart={"max_retries": 3, "backoff_initial": 0.5}), 1.0)
    now = 1.0
    for attempt in range(4):
        task_id = f"web-0-{attempt}"
        master.heartbeat(heartbeat("a", seq=attempt + 1), now)
        master.tick(now)
        report(master, task_id, "running", now)
        report(master, task_id, "exited", now + 0.1, code=1)
        now += 5.0
    assert master.job_info("web").state == "failed"
    master.drain()
    master.submit(job_spec(), now)
    commands, _ = master.drain()
    resubmitted = ("a", "job resubmitted")
    assert stops(commands) == {
        "web-0-1": resubmitted,
        "web-0-2": resubmitted,
        "web-0-3": resubmitted,
    }
