"""The event-sourced cluster state: task states, node allocations, job states, replay."""

from __future__ import annotations

from typing import Any

import pytest

from master import events as ev
from master import views
from master.state import ClusterState
from schemas.messages import Resources
from tests.unit.factories import Cluster, GiB, MiB, TaskUpdate, job_spec


def two_nodes() -> Cluster:
    cluster = Cluster(now=100.0)
    cluster.node("a")
    cluster.node("b")
    return cluster


def snapshot(state: ClusterState) -> Any:
    """Everything a client can see of the state."""
    return (
        [views.job_detail(state, job) for job in state.jobs.values()],
        [views.node_info(node) for node in state.nodes.values()],
        sorted(state.tasks),
        sorted(state.pending),
        list(state.ended),
    )


# -- tasks and allocations --


def test_a_task_moves_through_its_states() -> None:
    cluster = two_nodes()
    task = cluster.state.tasks[cluster.job(job_spec()).slots[0][0]]
    assert (task.state, task.node_id, task.attempt) == ("pending", None, 0)
    cluster.assign(task.task_id, "a")
    assert (task.state, task.node_id) == ("assigned", "a")
    cluster.now = 101.0
    cluster.apply(
        ev.TaskUpdated(at=101.0, task_id=task.task_id, state="running", container_id="c1")
    )
    assert (task.state, task.started_at, task.container_id) == ("running", 101.0, "c1")
    cluster.now = 102.0
    cluster.update(task.task_id, "exited", 3)
    assert (task.state, task.exit_code, task.container_id) == ("exited", 3, "c1")
    assert (task.terminal, task.updated_at, task.started_at) == (True, 102.0, 101.0)


def test_assigning_takes_resources_and_running_does_not_add_more() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(cpu=1.5, memory="512m", replicas=2))
    cluster.assign("web-0-0", "a")
    cluster.assign("web-1-0", "a")
    cluster.assign("web-1-0", "b")  # already assigned: ignored
    cluster.update("web-0-0", "running")
    cluster.update("web-0-0", "running")
    node = cluster.state.nodes["a"]
    assert (node.used_cpu, node.used_memory, node.task_ids) == (3.0, GiB, {"web-0-0", "web-1-0"})
    assert (node.free_cpu, node.free_memory) == (1.0, 7 * GiB)
    assert cluster.state.nodes["b"].used_cpu == 0
    assert views.node_info(node).allocated == Resources(cpus=3.0, memory=GiB)


@pytest.mark.parametrize("end", ["exited", "failed", "lost", "stopped"])
def test_a_terminal_task_gives_its_resources_back_once(end: TaskUpdate) -> None:
    cluster = two_nodes()
    cluster.job(job_spec(cpu=1, memory="256m", replicas=2))
    cluster.assign("web-0-0", "a")
    cluster.assign("web-1-0", "a")
    cluster.update("web-0-0", "running")
    cluster.update("web-0-0", end, 0)
    cluster.update("web-0-0", "exited", 1)  # a terminal task does not change again
    cluster.update("web-0-0", "running")
    node = cluster.state.nodes["a"]
    assert (node.used_cpu, node.used_memory, node.task_ids) == (1.0, 256 * MiB, {"web-1-0"})
    assert cluster.state.tasks["web-0-0"].state == end


def test_unplaced_reason_is_kept_only_while_pending() -> None:
    cluster = two_nodes()
    cluster.job(job_spec())
    cluster.apply(ev.TaskUnplaced(at=100.0, task_id="web-0-0", reason="no room"))
    assert cluster.state.tasks["web-0-0"].reason == "no room"
    cluster.assign("web-0-0", "a")
    cluster.apply(ev.TaskUnplaced(at=100.0, task_id="web-0-0", reason="late"))
    assert cluster.state.tasks["web-0-0"].reason == ""


def test_node_observed_updates_a_known_node_but_not_its_state() -> None:
    cluster = two_nodes()
    cluster.node_state("a", "down")
    cluster.now = 200.0
    node = cluster.node("a", cpus=8, labels={"zone": "x"})
    assert (node.state, node.capacity.cpus, node.labels, node.last_seen) == (
        "down",
        8,
        {"zone": "x"},
        200.0,
    )


# -- job states --


def test_batch_job_pending_running_complete() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(replicas=2))
    assert cluster.job_state("web") == ("pending", "")
    cluster.apply(ev.TaskUnplaced(at=100.0, task_id="web-0-0", reason="no node has 8 CPUs"))
    assert cluster.job_state("web") == ("pending", "no node has 8 CPUs")
    cluster.assign("web-0-0", "a")
    cluster.assign("web-1-0", "b")
    assert cluster.job_state("web") == ("pending", "")
    cluster.update("web-0-0", "running")
    assert cluster.job_state("web") == ("running", "")
    cluster.update("web-0-0", "exited", 0)
    cluster.update("web-1-0", "running")
    assert cluster.job_state("web") == ("running", "")
    cluster.update("web-1-0", "exited", 0)
    assert cluster.job_state("web") == ("complete", "")


def test_batch_job_failed_with_reason() -> None:
    cluster = two_nodes()
    cluster.job(job_spec())
    cluster.assign("web-0-0", "a")
    cluster.update("web-0-0", "exited", 1)
    assert cluster.job_state("web")[0] != "complete"
    cluster.apply(ev.JobFailed(at=100.0, job_id="web", reason="gave up after 3 retries"))
    assert cluster.job_state("web") == ("failed", "gave up after 3 retries")


@pytest.mark.parametrize("kind", ["batch", "service"])
def test_cancelled_job(kind: str) -> None:
    cluster = two_nodes()
    cluster.job(job_spec(kind=kind))
    cluster.assign("web-0-0", "a")
    cluster.update("web-0-0", "running")
    cluster.apply(ev.JobCancelled(at=100.0, job_id="web"))
    assert cluster.job_state("web") == ("cancelled", "")


def test_service_runs_only_when_every_replica_is_healthy() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(kind="service", replicas=2))
    assert cluster.job_state("web")[0] == "pending"
    cluster.assign("web-0-0", "a")
    cluster.update("web-0-0", "running")
    assert cluster.job_state("web") == ("degraded", "0/2 healthy")
    cluster.apply(ev.TaskHealthy(at=1.0, task_id="web-0-0"))
    assert cluster.job_state("web") == ("degraded", "1/2 healthy")
    cluster.assign("web-1-0", "b")
    cluster.update("web-1-0", "running")
    cluster.apply(ev.TaskHealthy(at=1.0, task_id="web-1-0"))
    assert cluster.job_state("web") == ("running", "")


def test_service_scaled_to_zero_is_running() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(kind="service", replicas=2))
    cluster.apply(ev.JobScaled(at=100.0, job_id="web", replicas=0))
    cluster.update("web-0-0", "stopped")
    cluster.update("web-1-0", "stopped")
    job = cluster.state.jobs["web"]
    assert (job.replicas, job.spec.replicas) == (0, 0)
    assert cluster.job_state("web") == ("running", "scaled to 0 replicas")


def test_scaled_down_slots_do_not_count() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(replicas=2))
    cluster.assign("web-0-0", "a")
    cluster.update("web-0-0", "exited", 0)
    cluster.apply(ev.JobScaled(at=100.0, job_id="web", replicas=1))
    assert cluster.job_state("web") == ("complete", "")


@pytest.mark.parametrize(
    ("condition", "code", "state"),
    [("never", 1, "complete"), ("on-failure", 0, "complete"), ("always", 0, "pending")],
)
def test_service_slot_done_by_restart_condition(condition: str, code: int, state: str) -> None:
    cluster = two_nodes()
    cluster.job(job_spec(kind="service", restart={"condition": condition}))
    cluster.assign("web-0-0", "a")
    cluster.update("web-0-0", "exited", code)
    assert cluster.job_state("web")[0] == state


# -- job names, unknown references, replay --


def test_resubmitting_a_finished_jobs_name_replaces_it() -> None:
    cluster = two_nodes()
    cluster.job(job_spec())
    cluster.assign("web-0-0", "a")
    cluster.update("web-0-0", "exited", 0)
    cluster.now = 200.0
    job = cluster.job(job_spec(image="nginx", replicas=2), tasks=False)
    assert cluster.state.jobs["web"] is job
    assert (job.spec.image, job.slots, job.submitted_at) == ("nginx", {}, 200.0)
    assert "web-0-0" not in cluster.state.tasks
    assert cluster.job_state("web") == ("pending", "")


def test_resubmitting_releases_the_old_jobs_resources() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(cpu=1))
    cluster.assign("web-0-0", "a")
    cluster.update("web-0-0", "running")
    cluster.apply(ev.JobFailed(at=100.0, job_id="web", reason="gave up"))
    cluster.job(job_spec(cpu=1), tasks=False)
    node = cluster.state.nodes["a"]
    assert (node.used_cpu, node.task_ids) == (0.0, set())


UNKNOWN_REFERENCES: list[ev.Event] = [
    ev.JobScaled(at=1.0, job_id="nope", replicas=3),
    ev.JobCancelled(at=1.0, job_id="nope"),
    ev.JobFailed(at=1.0, job_id="nope", reason="x"),
    ev.TaskCreated(at=1.0, task_id="nope-0-0", job_id="nope", slot=0, attempt=0),
    ev.TaskUnplaced(at=1.0, task_id="nope-0-0", reason="x"),
    ev.TaskAssigned(at=1.0, task_id="nope-0-0", node_id="a", epoch=1),
    ev.TaskUpdated(at=1.0, task_id="nope-0-0", state="lost"),
    ev.NodeStateChanged(at=1.0, node_id="nope", state="down"),
    ev.JobForgotten(at=1.0, job_id="nope"),
    ev.TaskForgotten(at=1.0, task_id="nope-0-0"),
    ev.TaskForgotten(at=1.0, task_id="web-0-0"),  # the current attempt is never forgotten
    ev.TaskUndelivered(at=1.0, task_id="nope-0-0", node_id="nope", hold_until=9.0, reason="x"),
]


@pytest.mark.parametrize("event", UNKNOWN_REFERENCES, ids=lambda e: e.kind)
def test_events_about_unknown_things_are_ignored(event: ev.Event) -> None:
    cluster = two_nodes()
    cluster.job(job_spec())
    cluster.assign("web-0-0", "a")
    before = snapshot(cluster.state)
    cluster.apply(event)
    assert snapshot(cluster.state) == before


def test_an_event_that_is_not_a_known_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown event"):
        ClusterState().apply(ev.Event(at=0.0))


def test_replaying_the_same_events_gives_the_same_state() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(kind="service", replicas=2))
    cluster.job(job_spec("batch", replicas=2, cpu=2))
    cluster.assign("web-0-0", "a")
    cluster.assign("web-1-0", "b")
    cluster.assign("batch-0-0", "a")
    cluster.now = 101.0
    cluster.update("web-0-0", "running")
    cluster.update("batch-0-0", "exited", 2)
    cluster.attempt("batch", 0, 1, not_before=102.0)
    cluster.apply(ev.TaskUnplaced(at=101.0, task_id="batch-1-0", reason="full"))
    cluster.node_state("b", "down")
    cluster.update("web-1-0", "lost", reason="node b is down")
    cluster.apply(ev.JobScaled(at=102.0, job_id="web", replicas=3))

    replayed = ClusterState()
    for event in cluster.history:
        replayed.apply(event)
    assert snapshot(replayed) == snapshot(cluster.state)
    info = views.job_detail(replayed, replayed.jobs["batch"])
    assert [(t.task_id, t.state) for t in info.tasks] == [
        ("batch-0-0", "exited"),
        ("batch-0-1", "pending"),
        ("batch-1-0", "pending"),
    ]
    assert info.exit_codes == {0: None, 1: None}


# -- indexes kept by apply --


def test_task_counts_follow_each_slots_current_attempt() -> None:
    cluster = two_nodes()
    job = cluster.job(job_spec(kind="service", replicas=3))
    assert job.task_counts == {"pending": 3}
    cluster.assign("web-0-0", "a")
    cluster.assign("web-1-0", "b")
    cluster.update("web-0-0", "running")
    cluster.update("web-1-0", "exited", 1)
    assert job.task_counts == {"pending": 1, "running": 1, "exited": 1}
    cluster.attempt("web", 1, 1)  # the exited attempt is no longer current
    assert job.task_counts == {"pending": 2, "running": 1}
    cluster.apply(ev.JobScaled(at=100.0, job_id="web", replicas=1))
    assert (job.task_counts, job.wanted) == ({"pending": 2, "running": 1}, {"running": 1})


def test_the_pending_index_holds_exactly_the_pending_tasks() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(replicas=3))
    cluster.assign("web-0-0", "a")
    cluster.update("web-1-0", "stopped")
    assert sorted(cluster.state.pending) == ["web-2-0"]
    assert [t.task_id for t in cluster.state.pending_tasks()] == ["web-2-0"]


def test_ended_jobs_are_listed_in_the_order_they_ended() -> None:
    cluster = two_nodes()
    for name in ("one", "two", "three"):
        cluster.job(job_spec(name))
    cluster.apply(ev.JobCancelled(at=100.0, job_id="three"))
    cluster.assign("one-0-0", "a")
    cluster.update("one-0-0", "exited", 0)
    assert list(cluster.state.ended) == ["three", "one"]
    cluster.job(job_spec("three"))  # the name is reused: a new job, not ended
    assert list(cluster.state.ended) == ["one"]


def test_nodes_count_their_tasks_by_job_and_their_ports() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(ports=["8080:80", "53:53/udp"], replicas=2))
    cluster.assign("web-0-0", "a")
    node = cluster.state.nodes["a"]
    assert (node.job_counts, node.ports) == ({"web": 1}, {(8080, "tcp"): 1, (53, "udp"): 1})
    cluster.update("web-0-0", "exited", 0)
    assert (node.job_counts, node.ports) == ({}, {})


@pytest.mark.parametrize(
    ("change", "bumps"),
    [
        (lambda c: c.attempt("web", 1, 0), True),
        (lambda c: c.update("web-0-0", "exited", 0), True),
        (lambda c: c.node("c"), True),
        (lambda c: c.node("a", cpus=8), True),
        (lambda c: c.node("a"), False),  # a heartbeat that changes nothing
        (lambda c: c.node_state("a", "suspect"), False),
        (lambda c: c.update("web-0-0", "running"), False),
        (lambda c: c.apply(ev.TaskUnplaced(at=100.0, task_id="web-0-0", reason="x")), False),
    ],
)
def test_placeable_version_moves_only_when_a_pending_task_may_fit(change: Any, bumps: bool) -> None:
    cluster = two_nodes()
    cluster.job(job_spec(replicas=2), tasks=False)
    cluster.attempt("web", 0, 0)
    cluster.assign("web-0-0", "a")
    before = cluster.state.placeable_version
    change(cluster)
    assert (cluster.state.placeable_version != before) is bumps


def test_an_undelivered_task_is_lost_and_holds_its_node() -> None:
    cluster = two_nodes()
    cluster.job(job_spec(cpu=1))
    cluster.assign("web-0-0", "a")
    cluster.apply(
        ev.TaskUndelivered(
            at=100.0, task_id="web-0-0", node_id="a", hold_until=130.0, reason="has no queue"
        )
    )
    task, node = cluster.state.tasks["web-0-0"], cluster.state.nodes["a"]
    assert (task.state, task.undelivered, task.reason) == ("lost", True, "node a has no queue")
    assert (node.used_cpu, node.held_until, node.held_reason) == (0.0, 130.0, "has no queue")
    cluster.node("a")  # the same agent: still held
    assert node.held_until == 130.0
    rebooted = ev.NodeObserved(
        at=101.0, node_id="a", boot_id="new", capacity=node.capacity, labels={}
    )
    cluster.apply(rebooted)  # a new agent: maybe it consumes now
    assert (node.held_until, node.held_reason) == (0.0, "")
