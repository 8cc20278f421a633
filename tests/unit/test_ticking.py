"""The active master's journal guards (master/ticking.py): a broker that confirms nothing,
or a journal that takes no batch, makes the leader step down, but not for the time its
own loop was too busy to read the confirms (a large submit on a large fleet stalled it
4-8 s, and the broker was blamed)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from master.controller import Controller
from master.settings import MasterSettings
from master.ticking import JOURNAL_STUCK, REATTACH_AFTER, Ticking
from tests.unit.factories import heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeBus:
    connected = True

    def __init__(self) -> None:
        self.unconfirmed = 0
        self.silent_since: float | None = None
        self.clock: Clock | None = None

    def confirms_stalled_for(self) -> float:
        assert self.clock is not None
        return 0.0 if self.silent_since is None else self.clock.now - self.silent_since

    def call_later(self, delay: float, callback: Any) -> None:
        return None


class FakeWriter:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.in_flight_since: float | None = None

    def stuck_for(self) -> float:
        return 0.0 if self.in_flight_since is None else self.clock.now - self.in_flight_since


class Term(Ticking):
    def __init__(self, clock: Clock) -> None:
        self.role = "active"
        self.settings = MasterSettings(amqp_url="amqp://x")
        self.controller = Controller(self.settings, epoch=1)
        self.bus = FakeBus()  # type: ignore[assignment]
        self.bus.clock = clock  # type: ignore[attr-defined]
        self.writer = FakeWriter(clock)  # type: ignore[assignment]
        self.clock = clock
        self._claimed_at = self._journal_read_at = self._attached_at = clock.now
        self._journal_consumer = None
        self._due_tick = None
        self._intake = None
        self._ticked_at = clock.now
        self._free_since = 0.0
        self.reasons: list[str] = []
        self._step_down = self.reasons.append
        self._after = lambda *actions: None
        self._tail_journal = lambda: None


@pytest.fixture
def term(monkeypatch: pytest.MonkeyPatch) -> Term:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)  # master.ticking's clock
    return Term(clock)


def tick_after(term: Term, seconds: float) -> None:
    term.clock.now += seconds  # type: ignore[attr-defined]
    term._on_tick()


@pytest.mark.parametrize("loop_busy", [False, True])
def test_silent_confirms_step_down_unless_the_loop_was_busy_meanwhile(
    term: Term, loop_busy: bool
) -> None:
    bus: Any = term.bus
    bus.unconfirmed = 5
    bus.silent_since = term.clock()
    term.writer.in_flight_since = term.clock()  # type: ignore[union-attr]
    if loop_busy:
        tick_after(term, REATTACH_AFTER + 1.0)  # one input held the loop: no tick meanwhile
    else:
        for _ in range(int((REATTACH_AFTER + 1.0) / 0.25)):
            tick_after(term, 0.25)
    if loop_busy:
        assert term.reasons == []
        for _ in range(int(REATTACH_AFTER / 0.25) + 2):  # the broker's own silence now
            tick_after(term, 0.25)
    assert len(term.reasons) >= 1 and "confirmed nothing" in term.reasons[0]


def test_a_journal_that_takes_no_batch_is_judged_on_the_time_the_loop_was_free(
    term: Term,
) -> None:
    term.writer.in_flight_since = term.clock()  # type: ignore[union-attr]
    # Busy stretches of 5 s with short free spells between: never 15 s of waiting
    # that the broker alone is to blame for.
    for _ in range(5):
        tick_after(term, 5.0)
        tick_after(term, 0.25)
    assert term.reasons == []
    for _ in range(int(JOURNAL_STUCK / 0.25) + 2):
        tick_after(term, 0.25)
    assert term.reasons and "did not take a batch" in term.reasons[0]


class FakeIntake:
    listening = False


def test_no_node_is_judged_while_the_heartbeat_intake_is_deaf(term: Term) -> None:
    """Before the heartbeat intake's first connect nothing can be heard: no silence
    counts, and once it listens every node gets dead_after to be heard."""
    term.controller.heartbeat(heartbeat("n1"), term.clock())
    intake = FakeIntake()
    term._intake = intake  # type: ignore[assignment]
    for _ in range(40):  # 10 s deaf
        tick_after(term, 0.25)
    assert term.controller.state.nodes["n1"].state == "ready"
    intake.listening = True
    states = set()
    for _ in range(int(term.settings.dead_after / 0.25) + 1):
        tick_after(term, 0.25)
        states.add(term.controller.state.nodes["n1"].state)
    assert states == {"ready", "suspect", "down"}
