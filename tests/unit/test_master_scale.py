"""Big inputs through the controller: correct results, and no work repeated per task.

Correctness only: bench/submit_scale.py prints how long these take.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping

import pytest

from master import events as ev
from master import scheduler
from master.controller import Controller, StartCommand
from master.settings import MasterSettings
from master.state import ClusterState
from schemas.messages import JobEvent, TaskStatus
from tests.unit.factories import GiB, heartbeat, job_spec


def controller(nodes: int, *, cpus: float = 4.0, memory: int = 8 * GiB) -> Controller:
    master = Controller(MasterSettings(amqp_url="amqp://x"), epoch=1)
    for index in range(nodes):
        master.heartbeat(heartbeat(f"n{index:04}", cpus=cpus, memory=memory), 0.0)
    master.drain()
    return master


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the scheduling passes the controller runs (one entry per pass)."""
    count: list[int] = []
    original = scheduler.plan

    def counting(
        state: ClusterState, *, epoch: int, now: float, preferred: Mapping[str, str] | None = None
    ) -> Iterator[ev.Event]:
        count.append(1)
        return original(state, epoch=epoch, now=now, preferred=preferred)

    monkeypatch.setattr(scheduler, "plan", counting)
    return count


def test_ten_thousand_replicas_nothing_can_place(passes: list[int]) -> None:
    master = controller(100)
    passes.clear()
    info = master.submit(job_spec(kind="service", cpu=64, replicas=10_000), 1.0)
    reason = "no node can run it: 100 nodes have less than 64 free CPUs (the most free: 4 CPUs)"
    assert (info.state, info.reason, info.task_counts) == ("pending", reason, {"pending": 10_000})
    assert 0 < len(info.tasks) < 10_000 and info.tasks_omitted == 10_000 - len(info.tasks)
    assert {t.reason for t in master.state.tasks.values()} == {reason}
    commands, notifications = master.drain()
    assert commands == []
    assert notifications == [JobEvent(job_id="web", state="pending", reason=reason)]
    assert len(passes) == 1


def test_nothing_new_means_no_pass_over_the_pending_tasks(passes: list[int]) -> None:
    master = controller(2)
    master.submit(job_spec(kind="service", cpu=64, replicas=10_000), 1.0)
    master.submit(job_spec("small", kind="service"), 1.0)
    task_id = next(iter(master.state.jobs["small"].slots.values()))[0]
    node_id = master.state.tasks[task_id].node_id or ""
    before = len(passes)
    for step in range(1, 20):
        now = 1.0 + step * 0.25
        for index in range(2):
            master.heartbeat(heartbeat(f"n{index:04}", seq=step), now)
        master.tick(now)
    status = TaskStatus(task_id=task_id, job_id="small", node_id=node_id, state="running")
    master.task_status(status, 6.0)
    assert len(passes) == before
    master.heartbeat(heartbeat("n0002"), 6.0)  # room appears: one pass
    assert len(passes) == before + 1


@pytest.mark.parametrize("nodes", [100])
def test_ten_thousand_replicas_are_placed_evenly(nodes: int) -> None:
    master = controller(nodes, cpus=64, memory=64 * GiB)
    info = master.submit(job_spec(kind="service", cpu=0.01, memory="6m", replicas=10_000), 1.0)
    assert info.task_counts == {"assigned": 10_000}
    commands, notifications = master.drain()
    per_node = Counter(c.node_id for c in commands if isinstance(c, StartCommand))
    assert sum(per_node.values()) == 10_000
    assert set(per_node.values()) == {10_000 // nodes} and len(per_node) == nodes
    assert notifications == [JobEvent(job_id="web", state="pending")]


def test_a_big_job_lost_with_its_node_is_replaced_in_one_pass(passes: list[int]) -> None:
    master = controller(2, cpus=64, memory=64 * GiB)
    master.submit(job_spec(kind="service", cpu=0.01, memory="6m", replicas=2000), 1.0)
    master.drain()
    before = len(passes)
    master.heartbeat(heartbeat("n0001", cpus=64, memory=64 * GiB, seq=1), 3.5)
    master.tick(4.5)  # n0000 has been silent for 4.5 s: down
    commands, _ = master.drain()
    assert master.state.nodes["n0000"].state == "down"
    moved = [c for c in commands if isinstance(c, StartCommand)]
    assert len(moved) == 1000 and {c.node_id for c in moved} == {"n0001"}
    assert len(passes) == before + 1
