"""Placement at scale (master/scheduler.py): in a small cluster a pass places exactly as
scoring every node does (the simple scan, `scheduler.place`), for spread and bin-pack,
with the same reasons; in a large one a job's candidates are a sample, yet every task
goes to a node that fits, a constrained job finds its one node, and a pass costs a
bounded number of node checks per task."""

from __future__ import annotations

import random

import pytest

from master import events as ev
from master import scheduler
from master.model import Node
from schemas.job import JobSpec
from tests.unit.factories import Cluster, GiB, job_spec


def simple_scan(cluster: Cluster) -> tuple[dict[str, str | None], dict[str, str]]:
    """The reference: every due pending task, oldest first within its job and jobs in the
    order of their oldest task, placed on the best-scoring node that fits (every node
    checked), each placement applied before the next; the reason of each task left."""
    placed: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    due = scheduler.ready_to_place(cluster.state, cluster.now)
    order: dict[str, int] = {}
    for index, task in enumerate(due):
        order.setdefault(task.job_id, index)
    for task in sorted(due, key=lambda t: order[t.job_id]):
        node = scheduler.place(cluster.state, task, cluster.now)
        placed[task.task_id] = node.node_id if node else None
        if node is None:
            spec = cluster.state.jobs[task.job_id].spec
            nodes = cluster.state.nodes.values()
            reasons[task.task_id] = scheduler.unplaced_reason(spec, nodes, cluster.now)
            continue
        assigned = ev.TaskAssigned(
            at=cluster.now, task_id=task.task_id, node_id=node.node_id, epoch=1
        )
        cluster.apply(assigned)
    return placed, reasons


def planned(cluster: Cluster) -> tuple[dict[str, str | None], dict[str, str]]:
    """One pass of `plan`, applied as the master applies it: where each task went (None:
    unplaced), and the unplaced tasks' reasons."""
    placed: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    for event in scheduler.plan(cluster.state, epoch=1, now=cluster.now):
        cluster.apply(event)
        if isinstance(event, ev.TaskAssigned):
            placed[event.task_id] = event.node_id
        elif isinstance(event, ev.TaskUnplaced):
            placed[event.task_id] = None
            reasons[event.task_id] = event.reason
    return placed, reasons


def random_cluster(seed: int, nodes: int) -> Cluster:
    rng = random.Random(seed)
    cluster = Cluster()
    for index in range(nodes):
        cluster.node(
            f"n{index:03d}",
            cpus=rng.choice([1, 2, 4, 8]),
            memory=rng.choice([1, 2, 4]) * GiB,
            labels={"zone": rng.choice("abc")},
        )
    for index in range(rng.randint(1, 12)):
        fields: dict[str, object] = {
            "cpu": rng.choice([0.1, 0.5, 1, 2]),
            "memory": rng.choice(["64m", "256m", "1g"]),
            "replicas": rng.randint(1, 12),
            "kind": "service",
            "placement": rng.choice(["spread", "binpack"]),
        }
        if rng.random() < 0.3:
            fields["constraints"] = [f"zone={rng.choice('abcd')}"]
        cluster.job(job_spec(f"j{index}", **fields))
    return cluster


@pytest.mark.parametrize("seed", range(40))
def test_a_small_cluster_is_placed_exactly_as_the_simple_scan_places_it(seed: int) -> None:
    nodes = random.Random(seed).randint(1, scheduler.FULL_SCAN_NODES)
    reference, under_test = random_cluster(seed, nodes), random_cluster(seed, nodes)
    assert planned(under_test) == simple_scan(reference)  # the reasons too, word for word


def big_cluster(nodes: int = 500) -> Cluster:
    cluster = Cluster()
    for index in range(nodes):
        cluster.node(f"n{index:04d}", cpus=4, memory=8 * GiB, labels={"zone": "common"})
    return cluster


def test_a_large_cluster_places_every_task_on_a_node_that_fits() -> None:
    cluster = big_cluster()
    for index in range(300):
        cluster.job(job_spec(f"one{index}", cpu=1, memory="1g"))
    cluster.job(job_spec("many", cpu=0.5, memory="256m", replicas=400, kind="service"))
    placed, reasons = planned(cluster)
    assert not reasons and None not in placed.values()
    for node in cluster.state.nodes.values():
        assert node.free_cpu >= -1e-9 and node.free_memory >= 0
    # Spread still spreads a many-replica job: no node holds more than a few of it.
    assert max(node.job_counts["many"] for node in cluster.state.nodes.values()) <= 2


def test_a_constrained_job_finds_the_one_node_it_may_run_on() -> None:
    cluster = big_cluster()
    cluster.node("special", cpus=4, memory=8 * GiB, labels={"zone": "rare"})
    cluster.job(job_spec("picky", constraints=["zone=rare"], replicas=3, cpu=1, kind="service"))
    placed, _ = planned(cluster)
    assert set(placed.values()) == {"special"}


def test_when_the_sample_fills_up_more_nodes_are_taken() -> None:
    # Every node but one is full: the job's walk has to reach it, wherever it starts.
    cluster = big_cluster(200)
    for index in range(199):
        cluster.job(job_spec(f"filler{index}", cpu=4, memory="1g"))
    planned(cluster)
    free = [n.node_id for n in cluster.state.nodes.values() if n.free_cpu >= 1]
    assert len(free) == 1
    cluster.job(job_spec("late", cpu=1, replicas=3, kind="service"))
    placed, reasons = planned(cluster)
    assert set(placed.values()) == set(free) and not reasons


def test_an_unplaceable_job_in_a_large_cluster_gets_the_full_reason() -> None:
    cluster = big_cluster()
    cluster.job(job_spec("huge", cpu=64))
    placed, reasons = planned(cluster)
    assert list(placed.values()) == [None]
    assert list(reasons.values()) == [
        "no node can run it: 500 nodes have less than 64 free CPUs (the most free: 4 CPUs)"
    ]


def test_a_one_replica_job_checks_a_few_nodes_not_the_whole_fleet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = big_cluster(2000)
    for index in range(200):
        cluster.job(job_spec(f"one{index}", cpu=0.1, memory="64m"))
    checks = 0
    original = scheduler.rejection

    def counted(spec: JobSpec, node: Node, now: float) -> str | None:
        nonlocal checks
        checks += 1
        return original(spec, node, now)

    monkeypatch.setattr(scheduler, "rejection", counted)
    placed, _ = planned(cluster)
    assert None not in placed.values() and len(placed) == 200
    # MIN_CANDIDATES per job, plus the re-check of the chosen node: not 2000 each.
    assert checks <= 200 * (scheduler.MIN_CANDIDATES + 2)
