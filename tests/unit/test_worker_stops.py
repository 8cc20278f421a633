"""The stopper's steps: SIGTERM, a timer for the grace period, then kill and remove.

A fake bus keeps timers and cross-thread calls in lists that the test runs by
hand, and a fake pool runs engine calls only when the test says so, so each
step can be observed between the others.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from schemas.messages import StopTask
from worker.containers import StopOutcome
from worker.stops import Stopper


@dataclass
class FakeTimer:
    delay: float
    fn: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeBus:
    timers: list[FakeTimer] = field(default_factory=list)
    calls: list[Callable[[], None]] = field(default_factory=list)

    def call_later(self, delay: float, fn: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, fn)
        self.timers.append(timer)
        return timer

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        self.calls.append(fn)

    def live_timers(self) -> list[FakeTimer]:
        return [timer for timer in self.timers if not timer.cancelled]

    def fire(self) -> None:
        """The grace period of the one live timer is over."""
        (timer,) = self.live_timers()
        timer.cancelled = True
        timer.fn()

    def run_calls(self) -> None:
        calls, self.calls = self.calls, []
        for call in calls:
            call()


class FakePool(Executor):
    def __init__(self) -> None:
        self.jobs: list[Callable[[], Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs.append(lambda: fn(*args, **kwargs))
        return Future()

    def run(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


@dataclass
class FakeRuntime:
    outcome: StopOutcome = "signalled"
    calls: list[str] = field(default_factory=list)

    def terminate(self, task_id: str) -> StopOutcome:
        self.calls.append(f"terminate {task_id}")
        return self.outcome

    def remove(self, task_id: str) -> bool:
        self.calls.append(f"remove {task_id}")
        return True


@dataclass
class Rig:
    bus: FakeBus = field(default_factory=FakeBus)
    pool: FakePool = field(default_factory=FakePool)
    runtime: FakeRuntime = field(default_factory=FakeRuntime)
    log: list[str] = field(default_factory=list)
    now: float = 100.0

    def __post_init__(self) -> None:
        self.stopper = Stopper(
            self.bus,
            self.runtime,
            self.pool,
            signalled=lambda command: self.log.append(f"signalled {command.task_id}"),
            removed=lambda command: self.log.append(f"removed {command.task_id}"),
            clock=lambda: self.now,
        )

    def step(self) -> None:
        """The pool does its engine calls, then the bus thread takes the results."""
        self.pool.run()
        self.bus.run_calls()


def stop(task_id: str = "t1", grace: float = 3600) -> StopTask:
    return StopTask(task_id=task_id, job_id="job", node_id="n1", grace=grace)


def test_sigterm_then_a_timer_not_a_thread_then_kill_at_the_deadline() -> None:
    rig = Rig()
    assert rig.stopper.stop(stop()) is True
    assert "t1" in rig.stopper
    rig.step()
    assert rig.runtime.calls == ["terminate t1"]
    assert rig.log == ["signalled t1"]
    assert [timer.delay for timer in rig.bus.live_timers()] == [3600]
    assert rig.pool.jobs == []  # nothing holds a thread through the grace period

    rig.bus.fire()
    rig.step()
    assert rig.runtime.calls == ["terminate t1", "remove t1"]
    assert rig.log == ["signalled t1", "removed t1"]
    assert "t1" not in rig.stopper


def test_a_die_event_removes_at_once_and_cancels_the_timer() -> None:
    rig = Rig()
    rig.stopper.stop(stop())
    rig.step()
    rig.stopper.exited("t1")
    assert rig.bus.live_timers() == []
    rig.step()
    assert rig.log == ["signalled t1", "removed t1"]


def test_a_die_event_before_sigterm_returns_is_not_lost() -> None:
    rig = Rig()
    rig.stopper.stop(stop())
    rig.stopper.exited("t1")  # the container ended while SIGTERM was on its way
    rig.step()
    assert rig.bus.live_timers() == []
    rig.step()
    assert rig.runtime.calls == ["terminate t1", "remove t1"]
    assert rig.log == ["signalled t1", "removed t1"]


def test_a_container_that_was_not_running_is_done_after_one_call() -> None:
    rig = Rig(runtime=FakeRuntime(outcome="removed"))
    rig.stopper.stop(stop())
    rig.step()
    assert rig.runtime.calls == ["terminate t1"]
    assert rig.log == ["signalled t1", "removed t1"]
    assert rig.bus.timers == []


def test_no_grace_removes_without_sigterm() -> None:
    rig = Rig()
    rig.stopper.stop(stop(grace=0))
    rig.step()
    assert rig.runtime.calls == ["remove t1"]
    assert rig.log == ["signalled t1", "removed t1"]


def test_a_second_stop_only_brings_the_deadline_forward() -> None:
    rig = Rig()
    rig.stopper.stop(stop(grace=3000))
    rig.step()
    rig.now += 10
    assert rig.stopper.stop(stop(grace=3600)) is False  # later: changes nothing
    assert [timer.delay for timer in rig.bus.live_timers()] == [3000]
    assert rig.stopper.stop(stop(grace=5)) is False
    assert [timer.delay for timer in rig.bus.live_timers()] == [5]
    assert rig.log == ["signalled t1"]
    rig.bus.fire()
    rig.step()
    assert rig.log == ["signalled t1", "removed t1"]


def test_a_shorter_grace_while_sigterm_is_on_its_way_is_kept() -> None:
    rig = Rig()
    rig.stopper.stop(stop(grace=3600))
    rig.stopper.stop(stop(grace=2))
    rig.step()
    assert [timer.delay for timer in rig.bus.live_timers()] == [2]


def test_an_engine_failure_is_retried_until_the_container_is_removed() -> None:
    """A container SIGTERM may not have ended must not be forgotten while it may run."""

    class Broken(FakeRuntime):
        failures = 2

        def terminate(self, task_id: str) -> StopOutcome:
            raise RuntimeError("engine down")

        def remove(self, task_id: str) -> bool:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("engine down")
            return super().remove(task_id)

    rig = Rig(runtime=Broken())
    rig.stopper.stop(stop())
    rig.step()  # SIGTERM fails: remove by force at once, which fails too
    rig.step()
    assert rig.log == ["signalled t1"] and "t1" in rig.stopper
    delays = []
    while "t1" in rig.stopper:
        (timer,) = rig.bus.live_timers()
        delays.append(timer.delay)
        rig.bus.fire()
        rig.step()
    assert delays == [1.0, 2.0]  # backoff between tries
    assert rig.log == ["signalled t1", "removed t1"]
    assert rig.runtime.calls[-1] == "remove t1"
