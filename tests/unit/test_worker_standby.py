"""Warm standbys on the worker (worker/standbys.py): started paused and reported to no one,
unpaused by a later start, removed by a stop or after their hold, ignored when late.

The agent's handlers are called as the bus thread would call them, with a recording
bus, a fake runtime and executors that run at once (tests/unit/test_worker_health.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from schemas.envelope import Envelope, Message
from schemas.messages import Heartbeat, StartTask, StopTask
from tests.unit.factories import MiB, job_spec
from tests.unit.test_worker_health import InlineExecutor, RecordingBus
from tests.unit.test_worker_stops import FakeTimer
from worker.agent import WorkerAgent
from worker.containers import ContainerInfo, container_info
from worker.runtime import DockerRuntime
from worker.settings import WorkerSettings
from worker.standbys import STANDBY_FRESH, stale
from worker.stops import Stopper

NODE = "n1"
TASK_ID = "web-0-1"


@dataclass
class TimedBus(RecordingBus):
    timers: list[FakeTimer] = field(default_factory=list)
    user: str = "corral-worker-n1"

    def call_later(self, delay: float, fn: Callable[[], None]) -> FakeTimer:
        self.timers.append(FakeTimer(delay, fn))
        return self.timers[-1]

    def every(self, interval: float, fn: Callable[[], None]) -> FakeTimer:
        return FakeTimer(interval, fn)


@dataclass
class StandbyRuntime:
    """Containers by task id; what was asked of the engine, in order."""

    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def start(
        self, task: StartTask, epoch: int, attachment: Any = None, *, paused: bool = False
    ) -> ContainerInfo:
        self.calls.append(f"start {task.task_id}" + (" paused" if paused else ""))
        info = ContainerInfo(
            task.task_id,
            task.job_id,
            f"c-{task.task_id}",
            "running",
            None,
            cpu=0.1,
            memory=16 * MiB,
            epoch=epoch,
            paused=paused,
        )
        self.containers[task.task_id] = info
        return info

    def unpause(self, standby: ContainerInfo) -> ContainerInfo:
        self.calls.append(f"unpause {standby.task_id}")
        info = dataclasses.replace(standby, paused=False)
        self.containers[standby.task_id] = info
        return info

    def terminate(self, task_id: str) -> str:
        self.calls.append(f"terminate {task_id}")
        return "removed" if self.containers.pop(task_id, None) else "gone"

    def remove(self, task_id: str) -> bool:
        self.calls.append(f"remove {task_id}")
        return self.containers.pop(task_id, None) is not None


@dataclass
class FakeDelivery:
    user_id: str = "corral-master"
    acked: int = 0

    def ack(self) -> None:
        self.acked += 1

    def dead_letter(self, reason: str) -> None:
        raise AssertionError(f"dead-lettered: {reason}")


@dataclass
class Agent:
    worker: WorkerAgent
    bus: TimedBus
    runtime: StandbyRuntime

    def send(self, command: StartTask | StopTask, *, age: float = 0.0) -> FakeDelivery:
        """The command reaches the node queue `age` seconds after the master sent it."""
        sent_at = datetime.now(UTC) - timedelta(seconds=age)
        envelope = Envelope(type=command.TYPE, epoch=7, sent_at=sent_at)
        delivery = FakeDelivery()
        self.worker._on_assignment(Message(envelope=envelope, payload=command), cast(Any, delivery))
        return delivery

    def settle(self) -> None:
        self.bus.run_calls()


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    settings = WorkerSettings(
        amqp_url="amqp://127.0.0.1/", node_id=NODE, state_dir=tmp_path, network=False
    )
    runtime = StandbyRuntime()
    worker = WorkerAgent(settings, runtime=cast(DockerRuntime, runtime))
    bus = TimedBus()
    worker.bus = cast(Any, bus)
    worker._short_calls = worker._starts = cast(Any, InlineExecutor())
    worker.stopper = Stopper(
        cast(Any, bus),
        cast(Any, runtime),
        worker._short_calls,
        signalled=worker._signalled,
        removed=worker._stopped,
    )
    return Agent(worker, bus, runtime)


def start(standby: float = 0.0) -> StartTask:
    spec = job_spec("web", kind="service")
    return StartTask(
        task_id=TASK_ID, job_id="web", slot=0, node_id=NODE, spec=spec, standby=standby
    )


def stop(reason: str = "standby not needed") -> StopTask:
    return StopTask(task_id=TASK_ID, job_id="web", node_id=NODE, reason=reason, grace=0)


def test_a_standby_starts_paused_and_is_reported_to_no_one(agent: Agent) -> None:
    delivery = agent.send(start(standby=10))
    agent.settle()
    assert agent.runtime.calls == [f"start {TASK_ID} paused"]
    assert delivery.acked == 1
    assert agent.bus.statuses() == []
    assert TASK_ID in agent.worker.spares and TASK_ID not in agent.worker.containers
    agent.worker._beat()
    (beat,) = [p for p in agent.bus.published if isinstance(p, Heartbeat)]
    assert beat.tasks == []


def test_a_start_without_standby_unpauses_it_and_reports_running(agent: Agent) -> None:
    agent.send(start(standby=10))
    agent.settle()
    delivery = agent.send(start())
    agent.settle()
    assert agent.runtime.calls == [f"start {TASK_ID} paused", f"unpause {TASK_ID}"]
    assert delivery.acked == 1
    (status,) = agent.bus.statuses()
    assert (status.task_id, status.state) == (TASK_ID, "running")
    assert agent.worker.spares == {}
    assert agent.bus.timers[0].cancelled  # no expiry for a container now in use


def test_a_start_while_the_standby_is_still_starting_waits_for_it(agent: Agent) -> None:
    agent.send(start(standby=10))  # its result is not back on the bus thread yet
    delivery = agent.send(start())
    assert delivery.acked == 0
    agent.settle()
    assert agent.runtime.calls == [f"start {TASK_ID} paused", f"unpause {TASK_ID}"]
    assert delivery.acked == 1
    assert [s.state for s in agent.bus.statuses()] == ["running"]


def test_a_stop_removes_a_standby_quietly(agent: Agent) -> None:
    agent.send(start(standby=10))
    agent.settle()
    delivery = agent.send(stop())
    agent.settle()
    assert agent.runtime.calls == [f"start {TASK_ID} paused", f"remove {TASK_ID}"]
    assert delivery.acked == 1
    assert agent.bus.statuses() == []
    assert agent.worker.spares == {} and agent.runtime.containers == {}


def test_a_standby_not_needed_within_its_hold_is_removed(agent: Agent) -> None:
    agent.send(start(standby=10))
    agent.settle()
    (timer,) = agent.bus.timers
    assert timer.delay == 10
    timer.fn()
    agent.settle()
    assert agent.runtime.calls[-1] == f"remove {TASK_ID}"
    assert agent.worker.spares == {} and agent.runtime.containers == {}
    assert agent.bus.statuses() == []


def test_a_late_standby_is_ignored(agent: Agent) -> None:
    delivery = agent.send(start(standby=10), age=STANDBY_FRESH + 0.5)
    agent.settle()
    assert agent.runtime.calls == []
    assert delivery.acked == 1
    assert stale(datetime.now(UTC) - timedelta(seconds=STANDBY_FRESH + 0.1))
    assert not stale(datetime.now(UTC))


def test_a_start_with_no_standby_held_starts_a_container(agent: Agent) -> None:
    agent.send(start())
    agent.settle()
    assert agent.runtime.calls == [f"start {TASK_ID}"]
    assert [s.state for s in agent.bus.statuses()] == ["running"]


def test_a_paused_container_left_by_a_previous_run_is_removed_not_adopted(agent: Agent) -> None:
    labels = {"corral.task": TASK_ID, "corral.job": "web"}
    paused = container_info({"Labels": labels, "State": "paused"}, "c1")
    other = container_info(
        {"Labels": {**labels, "corral.task": "web-1-0"}, "State": "running"}, "c2"
    )
    assert paused.paused and paused.state == "running" and not other.paused
    agent.runtime.containers[TASK_ID] = paused
    agent.worker.runtime.list_tasks = lambda: [paused, other]  # type: ignore[method-assign]
    agent.worker._adopt()
    agent.settle()
    assert f"remove {TASK_ID}" in agent.runtime.calls
    assert list(agent.worker.containers) == ["web-1-0"]


def test_a_start_with_another_spec_replaces_the_standby_instead_of_unpausing_it(
    agent: Agent,
) -> None:
    agent.send(start(standby=10))
    agent.settle()
    updated = start().model_copy(update={"spec": job_spec("web", kind="service", cpu=0.5)})
    agent.send(updated)
    agent.settle()
    assert agent.runtime.calls == [
        f"start {TASK_ID} paused",
        f"remove {TASK_ID}",
        f"start {TASK_ID}",
    ]
    assert [s.state for s in agent.bus.statuses()] == ["running"]
    assert agent.worker.spares == {}
