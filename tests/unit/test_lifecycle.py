"""A workload over its lifetime, on the controller alone: health, crash loops, rolling updates
and rollbacks, drains, agents that disconnect, retention."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from master.controller import ApiProblem, Controller
from master.settings import MasterSettings
from schemas.messages import Heartbeat, TaskStatus
from tests.unit.factories import heartbeat, job_spec, running
from tests.unit.test_controller import job_events, report, starts, stops

Health = Literal["starting", "healthy", "unhealthy"]


def controller(*node_ids: str, **settings: Any) -> Controller:
    master = Controller(MasterSettings(amqp_url="amqp://x", **settings), epoch=7)
    for node_id in node_ids:
        master.heartbeat(heartbeat(node_id), 0.0)
    master.drain()
    return master


def health(master: Controller, task_id: str, verdict: Health, now: float, why: str = "") -> None:
    node_id = master.state.tasks[task_id].node_id or "?"
    status = TaskStatus(
        task_id=task_id,
        job_id=task_id.split("-")[0],
        node_id=node_id,
        state="running",
        health=verdict,
        reason=why,
    )
    master.task_status(status, now)


def tick(master: Controller, now: float, *, silent: tuple[str, ...] = ()) -> None:
    """Every node but the `silent` ones heartbeats (listing its running tasks), then a tick."""
    for node_id, node in list(master.state.nodes.items()):
        if node_id in silent or node.state in ("down", "disconnected"):
            continue
        tasks = [
            running(task_id, master.state.tasks[task_id].job_id)
            for task_id in sorted(node.task_ids)
            if master.state.tasks[task_id].state == "running"
        ]
        master.heartbeat(heartbeat(node_id, seq=int(now * 10), tasks=tasks), now)
    master.tick(now)


def run_all(master: Controller, now: float) -> None:
    """Every assigned task reports running."""
    for task in list(master.state.tasks.values()):
        if task.state == "assigned":
            report(master, task.task_id, "running", now)


def service(master: Controller, replicas: int = 2, **fields: object) -> None:
    master.submit(job_spec(kind="service", replicas=replicas, **fields), 1.0)
    run_all(master, 1.5)
    tick(master, 3.0)  # healthy after min_healthy (1 s)
    master.drain()


def node_state(master: Controller, node_id: str) -> str:
    return master.state.nodes[node_id].state


def current(master: Controller, slot: int, job: str = "web") -> str:
    return master.state.jobs[job].slots[slot][-1]


# -- health ---------------------------------------------------------------------------


def test_a_service_runs_once_every_replica_has_been_healthy_for_min_healthy() -> None:
    master = controller("a", "b")
    master.submit(job_spec(kind="service", replicas=2, min_healthy=2), 1.0)
    run_all(master, 1.5)
    tick(master, 3.0)
    info = master.job_info("web")
    assert (info.state, info.reason, info.healthy) == ("degraded", "0/2 healthy", 0)
    tick(master, 3.5)
    info = master.job_info("web")
    assert (info.state, info.healthy, [t.healthy for t in info.tasks]) == ("running", 2, [True] * 2)


def test_a_checked_task_is_healthy_only_after_its_check_passes() -> None:
    master = controller("a")
    master.submit(job_spec(kind="service", health={"tcp": 80}, min_healthy=0.5), 1.0)
    run_all(master, 1.5)
    tick(master, 5.0)
    assert master.job_info("web").state == "degraded"
    health(master, "web-0-0", "healthy", 6.0)
    tick(master, 6.4)
    assert master.job_info("web").state == "degraded"
    tick(master, 6.5)
    assert master.job_info("web").state == "running"


def test_an_unhealthy_task_is_stopped_and_replaced_by_its_restart_policy() -> None:
    master = controller("a")
    service(master, 1, health={"tcp": 80})
    health(master, "web-0-0", "healthy", 4.0)
    master.drain()
    health(master, "web-0-0", "unhealthy", 9.0, "health check failed 3 times in a row")
    commands, _ = master.drain()
    assert stops(commands) == {"web-0-0": ("a", "unhealthy")}
    task = master.state.tasks["web-0-0"]
    assert (task.state, task.reason) == (
        "failed",
        "unhealthy: health check failed 3 times in a row",
    )
    assert master.state.tasks["web-0-1"].state == "pending"  # after its backoff


def test_a_crash_loop_shows_in_the_job_state_with_its_last_exit() -> None:
    master = controller("a")
    master.submit(job_spec(kind="service"), 1.0)
    now = 1.0
    for _ in range(3):
        tick(master, now)
        task_id = current(master, 0)
        report(master, task_id, "running", now + 0.1)
        report(master, task_id, "exited", now + 0.5, code=3)
        now += 10
    tick(master, now)
    info = master.job_info("web")
    assert info.state in ("pending", "degraded")
    assert info.reason.startswith("crash loop: slot 0 failed 3 times in a row")
    assert "exited with code 3" in info.reason
    newest = next(t for t in info.tasks if t.task_id == current(master, 0))
    assert newest.restarts == 3


def test_a_healthy_run_ends_a_crash_loop() -> None:
    master = controller("a")
    master.submit(job_spec(kind="service"), 1.0)
    report(master, "web-0-0", "running", 1.1)
    report(master, "web-0-0", "exited", 1.5, code=1)
    tick(master, 3.0)
    report(master, "web-0-1", "running", 3.1)
    tick(master, 4.5)  # healthy
    report(master, "web-0-1", "exited", 5.0, code=1)
    assert master.state.tasks["web-0-2"].failures == 0


# -- rolling updates ------------------------------------------------------------------


def test_a_stop_first_update_replaces_one_slot_at_a_time() -> None:
    master = controller("a", "b")
    service(master, 2)
    new = job_spec(kind="service", replicas=2, command=["sleep", "9"])
    info = master.update("web", new, 10.0)
    assert info.version == 2 and info.rollout is not None
    assert (info.rollout.state, info.rollout.done, info.rollout.total) == ("updating", 0, 2)
    commands, _ = master.drain()
    assert stops(commands) == {"web-0-0": ("a", "updating to version 2")}
    assert master.state.tasks[current(master, 1)].version == 1  # parallelism 1
    report(master, current(master, 0), "running", 10.5)
    tick(master, 11.6)
    assert master.state.tasks[current(master, 1)].version == 2
    report(master, current(master, 1), "running", 11.7)
    tick(master, 13.0)
    info = master.job_info("web")
    assert info.rollout is not None and (info.rollout.state, info.state) == ("done", "running")
    assert [v.version for v in info.versions] == [1, 2]


def test_a_start_first_update_stops_the_old_task_once_the_new_one_is_healthy() -> None:
    master = controller("a", "b")
    service(master, 1, update={"order": "start-first"})
    master.update(
        "web", job_spec(kind="service", update={"order": "start-first"}, env={"A": "1"}), 10.0
    )
    commands, _ = master.drain()
    assert stops(commands) == {} and len(starts(commands)) == 1
    assert master.state.tasks["web-0-0"].retiring
    report(master, current(master, 0), "running", 10.5)
    master.drain()
    tick(master, 11.6)
    commands, _ = master.drain()
    assert stops(commands) == {"web-0-0": ("a", f"replaced by {current(master, 0)}")}


def test_a_new_version_that_crashes_is_rolled_back_and_the_old_one_keeps_serving() -> None:
    master = controller("a", "b")
    service(master, 2, update={"order": "start-first"})
    master.update(
        "web",
        job_spec(kind="service", replicas=2, update={"order": "start-first"}, command=["false"]),
        10.0,
    )
    master.drain()
    failing = current(master, 0)
    report(master, failing, "running", 10.2)
    report(master, failing, "exited", 10.4, code=1)
    info = master.job_info("web")
    assert info.version == 3 and info.rollout is not None
    assert info.rollout.state == "rolling-back"
    assert info.rollout.reason.startswith(
        f"rollback to version 1: task {failing} exited with code 1"
    )
    assert info.versions[-1].spec.command is None  # version 1's spec, as version 3
    assert master.state.tasks["web-1-0"].state == "running"  # never touched
    assert master.state.tasks["web-0-0"].state == "running"  # still serving, retiring
    tick(master, 12.0)
    report(master, current(master, 0), "running", 12.1)
    tick(master, 13.5)
    info = master.job_info("web")
    assert info.rollout is not None and info.rollout.state == "rolled-back"


def test_rollback_on_request_and_its_errors() -> None:
    master = controller("a")
    service(master, 1)
    with pytest.raises(ApiProblem, match="no earlier version"):
        master.rollback("web", 5.0)
    master.update("web", job_spec(kind="service", env={"V": "2"}), 6.0)
    info = master.rollback("web", 7.0)
    assert info.version == 3 and info.rollout is not None
    assert info.rollout.state == "rolling-back" and info.versions[-1].spec.env == {}
    with pytest.raises(ApiProblem, match="only services"):
        batch = controller("a")
        batch.submit(job_spec(), 1.0)
        batch.update("web", job_spec(env={"V": "2"}), 2.0)


# -- drain, cordon, leaving -------------------------------------------------------------


def test_drain_starts_each_replacement_before_stopping_the_old_task() -> None:
    master = controller("a", "b")
    service(master, 2)
    on_a = [t.task_id for t in master.state.tasks.values() if t.node_id == "a"]
    node = master.set_schedule("a", "drain", 5.0)
    assert (node.cordoned, node.draining) == (True, True)
    commands, _ = master.drain()
    assert stops(commands) == {}
    assert set(starts(commands).values()) == {"b"}
    run_all(master, 5.5)
    tick(master, 7.0)
    commands, _ = master.drain()
    assert set(stops(commands)) == set(on_a)
    assert master.state.nodes["a"].task_ids == set()
    assert master.set_schedule("a", "uncordon", 8.0).cordoned is False


def test_a_cordoned_node_takes_no_new_tasks() -> None:
    master = controller("a", "b")
    master.set_schedule("a", "cordon", 0.5)
    master.submit(job_spec(kind="service", replicas=2), 1.0)
    assert set(starts(master.drain()[0]).values()) == {"b"}


def test_a_leaving_node_moves_batch_tasks_too_then_is_down_when_it_closes() -> None:
    master = controller("a", "b")
    master.submit(job_spec(), 1.0)  # batch, spread: on a
    run_all(master, 1.5)
    master.drain()
    leaving = heartbeat("a", seq=5, tasks=[running("web-0-0")])
    master.heartbeat(Heartbeat.model_validate({**leaving.model_dump(), "leaving": True}), 2.0)
    assert starts(master.drain()[0]) == {"web-0-1": "b"}
    report(master, "web-0-1", "running", 2.5)
    tick(master, 4.0)
    assert stops(master.drain()[0]) == {"web-0-0": ("a", "replaced by web-0-1")}
    master.connection_closed("a", 4.1)
    assert master.state.nodes["a"].state == "down"


# -- agent crash vs host loss -----------------------------------------------------------


def test_a_closed_connection_keeps_the_tasks_for_the_agent_grace() -> None:
    master = controller("a", "b", agent_grace=30.0)
    service(master, 2)
    master.connection_closed("a", 3.5)
    assert node_state(master, "a") == "disconnected"
    for now in (5.0, 10.0, 20.0):
        master.heartbeat(heartbeat("b", seq=int(now)), now)
        tick(master, now)
    assert all(t.state == "running" for t in master.state.tasks.values())
    # the agent comes back (a new boot id) and lists its containers: nothing restarts
    back = heartbeat("a", seq=1, tasks=[running(t) for t in master.state.nodes["a"].task_ids])
    master.heartbeat(back.model_copy(update={"boot_id": "boot-a2"}), 21.0)
    assert master.state.nodes["a"].state == "ready"
    assert len(master.state.tasks) == 2 and starts(master.drain()[0]) == {}


def test_past_the_agent_grace_the_tasks_are_replaced_and_fenced_on_return() -> None:
    master = controller("a", "b", agent_grace=5.0)
    service(master, 2)
    on_a = next(t for t in master.state.tasks.values() if t.node_id == "a").task_id
    master.connection_closed("a", 3.5)
    master.heartbeat(heartbeat("b", seq=8), 8.4)
    tick(master, 8.4)
    assert master.state.tasks[on_a].state == "running"
    tick(master, 8.6)
    assert master.state.tasks[on_a].state == "lost"
    assert master.state.nodes["a"].state == "down"
    master.drain()
    master.heartbeat(heartbeat("a", seq=1, tasks=[running(on_a)]), 12.0)
    assert stops(master.drain()[0]) == {on_a: ("a", "fenced")}


def test_a_jobs_own_agent_grace_wins() -> None:
    master = controller("a", agent_grace=30.0)
    service(master, 1, agent_grace=0)
    master.connection_closed("a", 3.5)
    tick(master, 3.6)
    assert master.state.tasks["web-0-0"].state == "lost"


def test_a_close_after_silence_is_left_to_liveness() -> None:
    master = controller("a", "b")
    service(master, 2)
    master.connection_closed("a", 5.5)  # silent since 3: the broker noticed the silence
    assert node_state(master, "a") == "ready"
    master.heartbeat(heartbeat("b", seq=6), 6.0)
    tick(master, 6.0, silent=("a",))
    assert master.state.nodes["a"].state == "down"


# -- retention --------------------------------------------------------------------------


def test_an_ended_job_is_purged_after_its_ttl_with_its_containers() -> None:
    master = controller("a", ended_job_ttl=100.0)
    master.submit(job_spec(), 1.0)
    report(master, "web-0-0", "running", 1.5)
    report(master, "web-0-0", "exited", 2.0, code=0)
    master.drain()
    tick(master, 101.9)
    assert "web" in master.state.jobs
    tick(master, 102.0)
    assert "web" not in master.state.jobs
    assert stops(master.drain()[0]) == {"web-0-0": ("a", "job expired")}


def test_purge_forgets_an_ended_job_now_and_refuses_a_running_one() -> None:
    master = controller("a")
    master.submit(job_spec(kind="service"), 1.0)
    with pytest.raises(ApiProblem, match="cancel it first"):
        master.purge("web", 2.0)
    master.cancel("web", 3.0)
    assert master.purge("web", 4.0).state == "cancelled"
    assert "web" not in master.state.jobs


def test_a_hundred_restarts_keep_a_few_containers_and_attempts() -> None:
    master = controller("a", keep_containers=2, keep_attempts=5)
    master.submit(
        job_spec(kind="service", restart={"backoff_initial": 0.5, "backoff_max": 0.5}), 0.0
    )
    now, removed = 0.0, set()
    for _ in range(100):
        task_id = current(master, 0)
        report(master, task_id, "running", now + 0.1)
        report(master, task_id, "exited", now + 0.2, code=1)
        now += 1.0
        tick(master, now)
        removed |= set(stops(master.drain()[0]))
    slot = master.state.jobs["web"].slots[0]
    assert len(slot) == 6  # the current attempt and 5 ended ones
    kept = {t for t in slot[:-1] if t not in removed}
    assert kept == set(slot[-3:-1])  # the containers of the 2 newest ended attempts
    assert len(removed) == 100 - 2
    assert len(master.job_info("web").tasks) == 6
    assert job_events(master.drain()[1]) == []


def test_a_start_first_update_counts_the_retiring_task_as_serving() -> None:
    master = controller("a", "b")
    service(master, 2, update={"order": "start-first"})
    spec = job_spec(kind="service", replicas=2, update={"order": "start-first"}, env={"A": "1"})
    master.update("web", spec, 10.0)
    info = master.job_info("web")
    assert (info.state, info.healthy) == (
        "running",
        2,
    )  # web-0-0 serves until its successor is healthy
    report(master, current(master, 0), "exited", 10.5, code=1)  # the new one fails: rollback
    assert master.job_info("web").healthy == 2


def test_cancel_during_a_start_first_update_stops_the_retiring_task_too() -> None:
    master = controller("a", "b")
    service(master, 1, update={"order": "start-first"})
    spec = job_spec(kind="service", update={"order": "start-first"}, env={"A": "1"})
    master.update("web", spec, 10.0)
    master.drain()
    master.cancel("web", 11.0)
    assert set(stops(master.drain()[0])) == {"web-0-0", current(master, 0)}


def test_an_update_that_changes_no_container_replaces_nothing() -> None:
    master = controller("a")
    service(master, 1)
    master.update("web", job_spec(kind="service", stop_grace=3, min_healthy=2), 10.0)
    rollout = master.job_info("web").rollout
    assert rollout is not None and rollout.state == "done"
    assert starts(master.drain()[0]) == {} and len(master.state.tasks) == 1


def test_a_task_healthy_once_then_unhealthy_does_not_roll_the_update_back() -> None:
    master = controller("a", "b")
    service(master, 2)
    master.update("web", job_spec(kind="service", replicas=2, env={"A": "1"}), 10.0)
    new = current(master, 0)
    report(master, new, "running", 10.2)
    tick(master, 11.5)  # healthy
    health(master, new, "unhealthy", 12.0, "boom")
    info = master.job_info("web")
    assert info.rollout is not None and info.rollout.state == "updating" and info.version == 2


def test_a_node_that_left_and_comes_back_is_schedulable_again() -> None:
    master = controller("a", "b")
    leaving = heartbeat("a", seq=5)
    master.heartbeat(Heartbeat.model_validate({**leaving.model_dump(), "leaving": True}), 1.0)
    master.connection_closed("a", 1.1)
    assert node_state(master, "a") == "down"
    master.heartbeat(heartbeat("a", seq=9), 5.0)
    node = master.state.nodes["a"]
    assert (node.state, node.cordoned, node.draining, node.leaving) == (
        "ready",
        False,
        False,
        False,
    )
