"""A worker heartbeats at the interval the leader asks of a large fleet (master/liveness.py),
never faster than its own setting, and says so at once with a heartbeat."""

from __future__ import annotations

from typing import Any, cast

from schemas.envelope import Envelope, Message
from schemas.messages import Heartbeat, LeaderAnnounced
from tests.unit.test_worker_standby import Agent, FakeDelivery, agent

__all__ = ["agent"]  # the fixture


def announce(agent: Agent, epoch: int, interval: float | None) -> None:
    note = LeaderAnnounced(master="m1", epoch=epoch, heartbeat_interval=interval)
    message = Message(envelope=Envelope(type=note.TYPE, epoch=epoch), payload=note)
    agent.worker._on_control(message, cast(Any, FakeDelivery()))


def beats(agent: Agent) -> list[float]:
    found = [p.interval for p in agent.bus.published if isinstance(p, Heartbeat)]
    agent.bus.published.clear()
    return found


def test_a_longer_interval_is_taken_and_announced_by_a_heartbeat_at_once(agent: Agent) -> None:
    assert agent.worker.beat_interval == 1.0
    announce(agent, 3, 2.5)
    assert agent.worker.beat_interval == 2.5
    assert beats(agent) == [2.5]
    assert agent.worker.max_epoch == 3
    announce(agent, 3, 2.5)  # the same again: nothing new
    assert beats(agent) == []


def test_never_faster_than_its_own_setting_and_back_to_it_when_not_asked(agent: Agent) -> None:
    announce(agent, 1, 0.2)
    assert agent.worker.beat_interval == 1.0 and beats(agent) == []
    announce(agent, 1, 4.0)
    announce(agent, 1, None)  # a leader that asks nothing (an older one)
    assert agent.worker.beat_interval == 1.0
    assert beats(agent) == [4.0, 1.0]


def test_a_deposed_leaders_interval_is_ignored(agent: Agent) -> None:
    announce(agent, 5, None)
    announce(agent, 4, 10.0)
    assert agent.worker.beat_interval == 1.0 and beats(agent) == []
