"""Placement: which node a pending task goes to, and why it stays pending when none fits."""

from __future__ import annotations

import random
from collections import Counter
from typing import Literal

import pytest

from master import events as ev
from master import scheduler
from master.state import Task
from tests.unit.factories import Cluster, GiB, MiB, job_spec


def run_pass(cluster: Cluster, *, epoch: int = 1) -> list[ev.Event]:
    """One scheduling pass, applying each event before the next placement, as the master does."""
    events = []
    for event in scheduler.plan(cluster.state, epoch=epoch, now=cluster.now):
        cluster.apply(event)
        events.append(event)
    return events


def place_all(cluster: Cluster, job_id: str) -> Counter[str]:
    """Schedule every pending task; where the tasks of `job_id` went."""
    run_pass(cluster)
    job = cluster.state.jobs[job_id]
    return Counter(t.node_id for t in cluster.state.current_tasks(job) if t.node_id)


def node_of(cluster: Cluster, task: Task) -> str | None:
    node = scheduler.place(cluster.state, task, cluster.now)
    return node.node_id if node else None


# -- filters --


@pytest.mark.parametrize(
    ("cpu", "memory", "chosen"),
    [(2, "1g", "small"), (3, "1g", "big"), (1, "3g", "big"), (5, "1g", None), (1, "5g", None)],
)
def test_resources_filter(cpu: float, memory: str, chosen: str | None) -> None:
    cluster = Cluster()
    cluster.node("small", cpus=2, memory=2 * GiB)
    cluster.node("big", cpus=4, memory=4 * GiB)
    cluster.job(job_spec("hog", cpu=1, memory="1g"))
    cluster.assign("hog-0-0", "big")
    job = cluster.job(job_spec(cpu=cpu, memory=memory))
    # `big` has 3 CPUs and 3Gi free once `hog` runs there; spread prefers the emptier node.
    assert node_of(cluster, cluster.state.tasks[job.slots[0][0]]) == chosen


def test_a_task_fits_exactly_the_free_cpus() -> None:
    cluster = Cluster()
    cluster.node("a", cpus=1.0)
    cluster.job(job_spec("small", cpu=0.1, replicas=7))
    assert place_all(cluster, "small") == {"a": 7}
    task = cluster.job(job_spec(cpu=0.3)).slots[0][0]
    assert node_of(cluster, cluster.state.tasks[task]) == "a"


@pytest.mark.parametrize(
    ("constraints", "chosen"),
    [
        (["zone=east"], "east"),
        (["zone!=east"], "west"),
        (["zone=east", "disk=ssd"], "east"),
        (["zone=west", "disk=ssd"], None),
        (["gpu="], None),
        (["gpu!=yes", "zone=west"], "west"),
    ],
)
def test_constraints(constraints: list[str], chosen: str | None) -> None:
    cluster = Cluster()
    cluster.node("east", labels={"zone": "east", "disk": "ssd"})
    cluster.node("west", labels={"zone": "west"})
    job = cluster.job(job_spec(constraints=constraints))
    assert node_of(cluster, cluster.state.tasks[job.slots[0][0]]) == chosen


@pytest.mark.parametrize("state", ["suspect", "down"])
def test_only_ready_nodes_take_tasks(state: Literal["suspect", "down"]) -> None:
    cluster = Cluster()
    cluster.node("a")
    cluster.node("b")
    cluster.node_state("a", state)
    cluster.job(job_spec(replicas=3))
    assert place_all(cluster, "web") == {"b": 3}


def test_host_port_conflicts() -> None:
    cluster = Cluster()
    cluster.node("a")
    cluster.job(job_spec("dns", ports=["53:53/udp"]))
    assert place_all(cluster, "dns") == {"a": 1}
    job = cluster.job(job_spec(ports=["8080:80", "53:53"], replicas=2))
    assert place_all(cluster, "web") == {"a": 1}  # tcp 53 is free; 8080 is taken by slot 0
    (pending,) = cluster.state.pending_tasks()
    assert pending.task_id == job.slots[1][0]
    assert pending.reason == "no node can run it: 1 node has a requested host port in use"


def test_a_port_is_free_again_once_its_task_ended() -> None:
    cluster = Cluster()
    cluster.node("a")
    cluster.job(job_spec("old", ports=["8080:80"]))
    place_all(cluster, "old")
    cluster.update("old-0-0", "exited", 0)
    cluster.job(job_spec(ports=["8080:80"]))
    assert place_all(cluster, "web") == {"a": 1}


# -- scoring --


def test_spread_over_equal_nodes() -> None:
    cluster = Cluster()
    cluster.node("a")
    cluster.node("b")
    cluster.job(job_spec(replicas=4))
    assert place_all(cluster, "web") == {"a": 2, "b": 2}


def test_spread_counts_the_jobs_own_tasks_first() -> None:
    cluster = Cluster()
    cluster.node("a")
    cluster.node("b", cpus=16, memory=64 * GiB)
    cluster.job(job_spec(replicas=2))
    assert place_all(cluster, "web") == {"a": 1, "b": 1}


def test_spread_prefers_the_less_loaded_node() -> None:
    cluster = Cluster()
    cluster.node("a")
    cluster.node("b")
    cluster.job(job_spec("other", cpu=2))
    cluster.assign("other-0-0", "a")
    cluster.job(job_spec())
    assert place_all(cluster, "web") == {"b": 1}


def test_binpack_fills_one_node_first() -> None:
    cluster = Cluster()
    cluster.node("a", cpus=2)
    cluster.node("b", cpus=2)
    cluster.job(job_spec(cpu=1, replicas=3, placement="binpack"))
    assert place_all(cluster, "web") == {"a": 2, "b": 1}


def test_binpack_prefers_the_fuller_node() -> None:
    cluster = Cluster()
    cluster.node("a")
    cluster.node("b")
    cluster.job(job_spec("other", cpu=1))
    cluster.assign("other-0-0", "b")
    cluster.job(job_spec(replicas=2, placement="binpack"))
    assert place_all(cluster, "web") == {"b": 2}


# -- why a task stays pending --


def reason(cluster: Cluster, **fields: object) -> str:
    spec = job_spec("probe", **fields)
    return scheduler.unplaced_reason(spec, cluster.state.nodes.values(), cluster.now)


def test_reason_for_too_few_cpus() -> None:
    cluster = Cluster()
    cluster.node("a", cpus=2)
    cluster.node("b", cpus=2)
    assert reason(cluster, cpu=8) == (
        "no node can run it: 2 nodes have less than 8 free CPUs (the most free: 2 CPUs)"
    )


def test_reason_for_too_little_memory() -> None:
    cluster = Cluster()
    cluster.node("a", memory=512 * MiB)
    assert reason(cluster, memory="1g") == (
        "no node can run it: 1 node has less than 1Gi free memory (the most free: 512Mi)"
    )


def test_reason_lists_each_cause_most_common_first() -> None:
    cluster = Cluster()
    cluster.node("a", labels={"zone": "x"})
    cluster.node("b", labels={"zone": "x"})
    cluster.node("c", labels={"zone": "y"})
    cluster.node("d")
    cluster.node_state("d", "down")
    assert reason(cluster, constraints=["zone=y"], cpu=8) == (
        "no node can run it: 2 nodes do not match the constraints zone=y; "
        "1 node has less than 8 free CPUs; 1 node is down (the most free: 4 CPUs)"
    )


def test_reason_without_nodes_says_how_to_start_one() -> None:
    assert "`corral worker`" in reason(Cluster())


def test_reason_for_ports_in_plural() -> None:
    cluster = Cluster()
    cluster.node("a")
    cluster.node("b")
    cluster.job(job_spec("dns", ports=["53:53"], replicas=2))
    place_all(cluster, "dns")
    assert reason(cluster, ports=["53:53"]) == (
        "no node can run it: 2 nodes have a requested host port in use"
    )


def test_a_pass_reports_a_new_reason_once() -> None:
    cluster = Cluster(now=5.0)
    task = cluster.state.tasks[cluster.job(job_spec(cpu=8)).slots[0][0]]
    (first,) = run_pass(cluster, epoch=3)
    assert isinstance(first, ev.TaskUnplaced)
    assert (first.task_id, first.at, task.reason) == (task.task_id, 5.0, first.reason)
    cluster.now = 6.0
    assert run_pass(cluster) == []
    cluster.node("a", cpus=2)  # a different reason now
    (second,) = run_pass(cluster)
    assert isinstance(second, ev.TaskUnplaced) and "1 node has less than 8" in second.reason


def test_a_pass_assigns_with_the_epoch() -> None:
    cluster = Cluster(now=4.0)
    cluster.node("a")
    task = cluster.state.tasks[cluster.job(job_spec()).slots[0][0]]
    assert run_pass(cluster, epoch=9) == [
        ev.TaskAssigned(at=4.0, task_id=task.task_id, node_id="a", epoch=9)
    ]


def test_ready_to_place_honours_not_before_oldest_first() -> None:
    cluster = Cluster(now=1.0)
    cluster.job(job_spec("late"), tasks=False)
    cluster.attempt("late", 0, 1, not_before=10.0)
    cluster.now = 2.0
    cluster.job(job_spec("b-job"))
    cluster.job(job_spec("a-job"))

    def ready(now: float) -> list[str]:
        return [t.task_id for t in scheduler.ready_to_place(cluster.state, now)]

    assert ready(9.9) == ["a-job-0-0", "b-job-0-0"]
    assert ready(10.0) == ["late-0-1", "a-job-0-0", "b-job-0-0"]
    cluster.node("a")
    cluster.assign("a-job-0-0", "a")
    assert ready(10.0) == ["late-0-1", "b-job-0-0"]


# -- a whole pass --


def test_ten_thousand_replicas_nothing_can_run_all_wait_with_one_reason() -> None:
    cluster = Cluster()
    for index in range(100):
        cluster.node(f"n{index:03}", cpus=2)
    job = cluster.job(job_spec(cpu=64, replicas=10_000))
    events = run_pass(cluster)
    assert len(events) == 10_000 and all(isinstance(e, ev.TaskUnplaced) for e in events)
    reasons = {t.reason for t in cluster.state.current_tasks(job)}
    assert reasons == {
        "no node can run it: 100 nodes have less than 64 free CPUs (the most free: 2 CPUs)"
    }
    assert run_pass(cluster) == []  # nothing changed: nothing to say


@pytest.mark.parametrize("nodes", [1000])
def test_ten_thousand_replicas_spread_evenly(nodes: int) -> None:
    cluster = Cluster()
    for index in range(nodes):
        cluster.node(f"n{index:04}", cpus=64, memory=64 * GiB)
    cluster.job(job_spec(cpu=0.01, memory="6m", replicas=10_000))
    placed = place_all(cluster, "web")
    assert sorted(set(placed.values())) == [10_000 // nodes]
    assert len(placed) == nodes


def test_a_pass_places_as_one_task_at_a_time_would() -> None:
    """The heap of candidates gives the same placements as scoring every node per task."""
    rng = random.Random(7)
    sizes = [(rng.choice([1, 2, 4]), rng.choice([1, 4]) * GiB) for _ in range(12)]
    fast, slow = Cluster(), Cluster()
    for cluster in (fast, slow):
        for index, (cpus, memory) in enumerate(sizes):
            cluster.node(f"n{index:02}", cpus=cpus, memory=memory)
        for name, placement in (("spread", "spread"), ("packed", "binpack"), ("ports", "spread")):
            ports = ["8080:80"] if name == "ports" else []
            cluster.job(job_spec(name, cpu=0.5, replicas=15, placement=placement, ports=ports))
    run_pass(fast)
    for task in scheduler.ready_to_place(slow.state, slow.now):
        node = scheduler.place(slow.state, task, slow.now)
        if node is not None:
            slow.assign(task.task_id, node.node_id)
    assert {t.task_id: t.node_id for t in fast.state.tasks.values()} == {
        t.task_id: t.node_id for t in slow.state.tasks.values()
    }


def test_a_job_without_room_does_not_keep_others_waiting() -> None:
    cluster = Cluster()
    cluster.node("a", cpus=2)
    cluster.job(job_spec("big", cpu=4, replicas=3))
    cluster.job(job_spec("small", cpu=1, replicas=2))
    assert place_all(cluster, "small") == {"a": 2}
    big = cluster.state.current_tasks(cluster.state.jobs["big"])
    assert {t.state for t in big} == {"pending"} and len({t.reason for t in big}) == 1


def test_a_held_node_takes_nothing_until_its_hold_ends() -> None:
    cluster = Cluster(now=10.0)
    cluster.node("a")
    cluster.job(job_spec("x"))
    cluster.assign("x-0-0", "a")
    cluster.apply(
        ev.TaskUndelivered(
            at=10.0, task_id="x-0-0", node_id="a", hold_until=40.0, reason="has no queue"
        )
    )
    cluster.job(job_spec())
    assert place_all(cluster, "web") == {}
    assert cluster.state.tasks["web-0-0"].reason == "no node can run it: 1 node has no queue"
    assert scheduler.next_due(cluster.state, cluster.now) == 40.0
    cluster.now = 40.0
    assert place_all(cluster, "web") == {"a": 1}


def test_next_due_is_the_earliest_backoff_to_end() -> None:
    cluster = Cluster(now=1.0)
    cluster.job(job_spec(), tasks=False)
    assert scheduler.next_due(cluster.state, 1.0) == float("inf")
    cluster.attempt("web", 0, 1, not_before=9.0)
    cluster.job(job_spec("other"), tasks=False)
    cluster.attempt("other", 0, 1, not_before=5.0)
    assert scheduler.next_due(cluster.state, 1.0) == 5.0
    assert scheduler.next_due(cluster.state, 5.0) == 9.0
