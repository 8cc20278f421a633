"""Warm standbys (master/standby.py): a suspect node's replacements started paused elsewhere,
taken up when it goes down, stopped when it is heard again."""

from __future__ import annotations

import pytest

from master import events as ev
from master import scheduler, standby
from master.controller import Command, Controller, StandbyCommand, StartCommand, StopCommand
from schemas.messages import TaskStatus
from tests.unit.factories import heartbeat, job_spec
from tests.unit.test_lifecycle import controller


def run(master: Controller, task_id: str, now: float) -> None:
    node_id = master.state.tasks[task_id].node_id or "?"
    status = TaskStatus(
        task_id=task_id, job_id=master.state.tasks[task_id].job_id, node_id=node_id, state="running"
    )
    master.task_status(status, now)


def standbys(commands: list[Command]) -> dict[str, str]:
    return {c.task_id: c.node_id for c in commands if isinstance(c, StandbyCommand)}


def starts(commands: list[Command]) -> dict[str, str]:
    return {c.task_id: c.node_id for c in commands if isinstance(c, StartCommand)}


def stops(commands: list[Command]) -> dict[str, tuple[str, str]]:
    return {c.task_id: (c.node_id, c.reason) for c in commands if isinstance(c, StopCommand)}


def service_on_a(master: Controller, name: str = "web", **fields: object) -> None:
    """A job placed on node a (the others are cordoned meanwhile), its tasks running."""
    for node_id in master.state.nodes:
        if node_id != "a":
            master.set_schedule(node_id, "cordon", 0.1)
    master.submit(job_spec(name, **fields), 0.2)
    for task_id, task in list(master.state.tasks.items()):
        assert task.node_id == "a"
        run(master, task_id, 0.3)
    for node_id in master.state.nodes:
        if node_id != "a":
            master.set_schedule(node_id, "uncordon", 0.4)
    master.drain()


def beat_all_but_a(master: Controller, now: float) -> None:
    for node_id in master.state.nodes:
        if node_id != "a":
            master.heartbeat(heartbeat(node_id, seq=int(now * 10)), now)


def test_a_suspect_nodes_replacement_waits_paused_and_is_started_there_at_down() -> None:
    master = controller("a", "b")
    service_on_a(master, kind="service")
    beat_all_but_a(master, 1.9)
    master.tick(2.0)  # a: silent for 2 s, suspect
    assert standbys(master.drain()[0]) == {"web-0-1": "b"}
    beat_all_but_a(master, 2.9)
    master.tick(3.0)  # a: down; the replacement is web-0-1, as the standby was named
    commands = master.drain()[0]
    assert master.state.tasks["web-0-0"].state == "lost"
    assert starts(commands) == {"web-0-1": "b"}
    assert stops(commands) == {}  # the standby is taken up, not stopped
    assert master.standbys == {}


def test_a_standby_is_stopped_when_the_suspect_node_is_heard_again() -> None:
    master = controller("a", "b")
    service_on_a(master, kind="service")
    beat_all_but_a(master, 1.9)
    master.tick(2.0)
    assert standbys(master.drain()[0]) == {"web-0-1": "b"}
    master.heartbeat(heartbeat("a", seq=5, tasks=[]), 2.5)  # a is back
    commands = master.drain()[0]
    assert stops(commands) == {"web-0-1": ("b", "standby not needed")}
    assert starts(commands) == {}
    assert master.state.nodes["a"].state == "ready"
    assert master.standbys == {}


def test_a_replacement_placed_elsewhere_stops_its_standby() -> None:
    master = controller("a", "b", "c")
    service_on_a(master, kind="service")
    beat_all_but_a(master, 1.9)
    master.tick(2.0)
    [(task_id, node_id)] = standbys(master.drain()[0]).items()
    # The standby's node is cordoned before a goes down: the replacement goes to the other.
    master.set_schedule(node_id, "cordon", 2.5)
    other = ({"b", "c"} - {node_id}).pop()
    beat_all_but_a(master, 2.9)
    master.tick(3.0)
    commands = master.drain()[0]
    assert starts(commands) == {task_id: other}
    assert stops(commands) == {task_id: (node_id, "standby not needed")}


def test_no_standby_for_a_batch_job_nor_with_standby_hold_zero() -> None:
    master = controller("a", "b")
    service_on_a(master, "batch", kind="batch")
    beat_all_but_a(master, 1.9)
    master.tick(2.0)
    assert standbys(master.drain()[0]) == {}

    master = controller("a", "b", standby_hold=0.0)
    service_on_a(master, kind="service")
    beat_all_but_a(master, 1.9)
    master.tick(2.0)
    assert standbys(master.drain()[0]) == {}


def test_no_standby_on_a_node_not_heard_lately_nor_in_a_wave_of_silence() -> None:
    master = controller("a", "b", "c")
    service_on_a(master, kind="service")
    master.heartbeat(heartbeat("c", seq=1), 0.45)  # at 2.0: not suspect, nor fresh
    master.heartbeat(heartbeat("b", seq=1), 1.9)
    master.tick(2.0)
    assert standbys(master.drain()[0]) == {"web-0-1": "b"}

    master = controller("a", "b", "c", "d")
    service_on_a(master, kind="service")
    for node_id in ("b", "d"):
        master.heartbeat(heartbeat(node_id, seq=1), 1.9)
    master.tick(2.0)  # a and c silent at once: a wave (the master stalled?), not lost hosts
    states = {n.node_id: n.state for n in master.state.nodes.values()}
    assert states == {"a": "suspect", "b": "ready", "c": "suspect", "d": "ready"}
    assert standbys(master.drain()[0]) == {}


def test_standbys_take_room_one_after_another() -> None:
    """Two tasks of a suspect node: the standbys spread, as the scheduler would place them."""
    master = controller("a", "b", "c")
    service_on_a(master, kind="service", replicas=2)
    beat_all_but_a(master, 1.9)
    master.tick(2.0)
    assert standbys(master.drain()[0]) == {"web-0-1": "b", "web-1-1": "c"}


def test_an_expired_standby_is_forgotten() -> None:
    master = controller("a", "b", standby_hold=0.5)
    service_on_a(master, kind="service")
    beat_all_but_a(master, 1.9)
    master.tick(2.0)
    assert standbys(master.drain()[0]) == {"web-0-1": "b"}
    beat_all_but_a(master, 2.6)
    master.tick(2.6)
    assert master.standbys == {}  # past its hold: its worker removes it itself
    beat_all_but_a(master, 2.9)
    master.tick(3.0)  # a goes down: the replacement is placed and started as usual
    commands = master.drain()[0]
    assert starts(commands) == {"web-0-1": "b"}
    assert stops(commands) == {}


def test_the_scheduler_prefers_a_standbys_node_when_it_may_take_the_task() -> None:
    master = controller("a", "b")
    master.set_schedule("b", "cordon", 0.1)
    master.submit(job_spec("web", kind="service", replicas=2), 0.2)  # both on a
    master.set_schedule("b", "uncordon", 0.3)
    master.state.tasks["web-1-0"].state = "pending"  # as if lost, not yet placed
    state = master.state
    task = state.tasks["web-1-0"]
    state.pending[task.task_id] = task
    events = list(scheduler.plan(state, epoch=7, now=1.0, preferred={"web-1-0": "a"}))
    assert events == [ev.TaskAssigned(at=1.0, task_id="web-1-0", node_id="a", epoch=7)]
    # A preferred node that may not take it is passed over.
    master.set_schedule("a", "cordon", 1.0)
    events = list(scheduler.plan(state, epoch=7, now=1.0, preferred={"web-1-0": "a"}))
    assert events == [ev.TaskAssigned(at=1.0, task_id="web-1-0", node_id="b", epoch=7)]


def test_standbys_are_capped_cluster_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standby, "MAX_STANDBYS", 1)
    master = controller("a", "b", "c")
    service_on_a(master, kind="service", replicas=2)
    beat_all_but_a(master, 1.9)
    master.tick(2.0)
    assert len(standbys(master.drain()[0])) == 1
