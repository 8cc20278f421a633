"""Epochs a worker learns from announcements, and how it reports the commands it refuses.

The pure parts (`accept`'s refusals, `RefusalGate`) are called directly; the
agent's handlers are called with a recording bus and delivery in place of the
broker, as the bus thread would call them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from bus import Delivery, topology
from schemas.envelope import Message, decode, encode
from schemas.messages import CommandRefused, LeaderAnnounced, Payload, StartTask, StopTask
from tests.unit.factories import heartbeat, job_spec
from worker.agent import WorkerAgent
from worker.commands import REFUSALS_PER_SECOND, RefusalGate, Refused, accept, trusted_sender
from worker.runtime import DockerRuntime
from worker.settings import WorkerSettings

NODE = "n1"
MASTER_USER = "corral-master"  # WorkerSettings' default master_user
OWN_USER = "guest"  # the user of the agent's URL below (pika's default)


def message(payload: Payload, epoch: int | None) -> Message:
    return decode(encode(payload, sender="master-a", epoch=epoch))


def start(node_id: str = NODE) -> StartTask:
    return StartTask(task_id="web-0-0", job_id="web", slot=0, node_id=node_id, spec=job_spec())


def stop(node_id: str = NODE) -> StopTask:
    return StopTask(task_id="web-0-1", job_id="web", node_id=node_id, grace=1)


def refusal(command: Payload, epoch: int | None, max_epoch: int) -> Refused:
    with pytest.raises(Refused) as raised:
        accept(message(command, epoch), NODE, max_epoch)
    return raised.value


# -- what a refusal says --


def test_a_stale_command_is_refused_with_its_fields() -> None:
    refused = refusal(start(), 50, 100)
    assert (refused.kind, refused.command, refused.task_id) == ("stale", "assign.start", "web-0-0")
    assert (refused.epoch, refused.max_epoch) == (50, 100)
    assert "stale" in refused.reason


def test_a_command_without_an_epoch_is_refused_with_no_epoch() -> None:
    refused = refusal(stop(), None, 3)
    assert (refused.kind, refused.task_id) == ("no_epoch", "web-0-1")
    assert refused.command == "assign.stop"
    assert (refused.epoch, refused.max_epoch) == (None, 3)


def test_a_misaddressed_command_is_refused_whatever_its_epoch() -> None:
    refused = refusal(start("n2"), 2**62, 3)
    assert refused.kind == "misaddressed"
    assert refused.epoch == 2**62
    assert "addressed to node n2" in refused.reason


def test_only_the_masters_user_and_the_workers_own_are_trusted() -> None:
    trusted = (MASTER_USER, OWN_USER)
    assert trusted_sender(MASTER_USER, trusted) is None
    assert trusted_sender(OWN_USER, trusted) is None
    for stranger in ("mallory", "worker-n2", None, ""):
        why = trusted_sender(stranger, trusted)
        assert why is not None and f"broker user {stranger!r}" in why and MASTER_USER in why


def test_a_command_from_another_user_is_refused_before_anything_else() -> None:
    why = "sent by broker user 'mallory'"
    with pytest.raises(Refused) as raised:
        accept(message(start(), 2**62), NODE, 3, why)  # otherwise a good command
    assert (raised.value.kind, raised.value.reason) == ("sender", why)
    with pytest.raises(Refused) as raised:
        accept(message(start("n2"), None), NODE, 3, why)
    assert raised.value.kind == "sender"


def test_the_event_is_a_valid_command_refused_from_this_node() -> None:
    event = refusal(start(), 50, 100).event(NODE)
    assert decode(encode(event)).payload == event
    assert event == CommandRefused(
        node_id=NODE,
        command="assign.start",
        task_id="web-0-0",
        epoch=50,
        max_epoch=100,
        reason=event.reason,
    )


# -- the gate --


def test_the_gate_lets_a_burst_through_then_the_rate() -> None:
    gate = RefusalGate(rate=20)
    assert sum(gate.report(0.0) for _ in range(100)) == 20
    assert not gate.report(0.01)
    assert gate.report(0.06)  # a token every 50 ms
    assert sum(gate.report(10.0) for _ in range(100)) == 20  # refills up to the burst only


def test_the_gate_never_refills_on_a_clock_going_backwards() -> None:
    gate = RefusalGate(rate=1)
    assert gate.report(100.0)
    assert not gate.report(50.0)
    assert not gate.report(50.5)


def test_a_flood_over_one_second_makes_at_most_rate_plus_burst_events() -> None:
    gate = RefusalGate()
    reported = sum(gate.report(i / 10_000) for i in range(10_000))
    assert reported <= 2 * REFUSALS_PER_SECOND + 1


def test_a_warning_once_per_kind_and_epoch() -> None:
    gate = RefusalGate()
    stale_50 = refusal(start(), 50, 100)
    assert gate.warn(stale_50)
    assert not gate.warn(refusal(stop(), 50, 100))
    assert gate.warn(refusal(start(), 60, 100))
    assert gate.warn(refusal(start("n2"), 50, 100))  # another kind, same epoch


def test_warnings_remember_only_the_newest_epochs() -> None:
    gate = RefusalGate(remember=2)
    first, second, third = (refusal(start(), epoch, 100) for epoch in (1, 2, 3))
    assert gate.warn(first) and gate.warn(second) and gate.warn(third)
    assert not gate.warn(third)
    assert gate.warn(first)  # forgotten: warned about again


# -- the agent's handlers --


@dataclass
class RecordingBus:
    published: list[tuple[str, str, Payload]] = field(default_factory=list)
    user: str = OWN_USER

    def publish(self, exchange: str, routing_key: str, payload: Payload, **_: Any) -> None:
        self.published.append((exchange, routing_key, payload))


@dataclass
class RecordingDelivery:
    settled: list[str] = field(default_factory=list)
    user_id: str | None = MASTER_USER

    def ack(self) -> None:
        self.settled.append("ack")

    def dead_letter(self, reason: str) -> None:
        self.settled.append(f"dead: {reason}")


@pytest.fixture
def agent(tmp_path: Path) -> tuple[WorkerAgent, RecordingBus]:
    settings = WorkerSettings(
        amqp_url="amqp://127.0.0.1/", node_id=NODE, state_dir=tmp_path, network=False
    )
    built = WorkerAgent(settings, runtime=cast(DockerRuntime, object()))
    bus = RecordingBus()
    built.bus = cast(Any, bus)
    return built, bus


def deliver(
    handler: Any, payload: Payload, epoch: int | None = None, user_id: str | None = MASTER_USER
) -> RecordingDelivery:
    delivery = RecordingDelivery(user_id=user_id)
    handler(message(payload, epoch), cast(Delivery, delivery))
    return delivery


def test_an_announcement_raises_the_epoch_and_never_lowers_it(
    agent: tuple[WorkerAgent, RecordingBus],
) -> None:
    worker, _bus = agent
    assert deliver(worker._on_control, LeaderAnnounced(master="m1", epoch=100)).settled == ["ack"]
    assert worker.max_epoch == 100
    deliver(worker._on_control, LeaderAnnounced(master="m0", epoch=40))
    assert worker.max_epoch == 100


def test_other_messages_on_control_are_acked_and_ignored(
    agent: tuple[WorkerAgent, RecordingBus],
) -> None:
    worker, bus = agent
    assert deliver(worker._on_control, heartbeat(NODE), epoch=2**62).settled == ["ack"]
    assert worker.max_epoch == 0
    assert bus.published == []


def test_a_stale_command_is_dead_lettered_and_reported(
    agent: tuple[WorkerAgent, RecordingBus],
) -> None:
    worker, bus = agent
    deliver(worker._on_control, LeaderAnnounced(master="m1", epoch=100))
    delivery = deliver(worker._on_assignment, start(), epoch=50)
    assert len(delivery.settled) == 1 and delivery.settled[0].startswith("dead: stale command")
    ((exchange, key, event),) = bus.published
    assert (exchange, key) == (topology.STATUS_EXCHANGE, topology.refused_key(NODE))
    assert isinstance(event, CommandRefused)
    assert (event.node_id, event.command, event.task_id) == (NODE, "assign.start", "web-0-0")
    assert (event.epoch, event.max_epoch) == (50, 100)
    assert worker.max_epoch == 100


def test_a_flood_of_refusals_is_reported_at_a_bounded_rate(
    agent: tuple[WorkerAgent, RecordingBus],
) -> None:
    worker, bus = agent
    for _ in range(500):
        deliver(worker._on_assignment, start("elsewhere"), epoch=2**62)
    assert 0 < len(bus.published) <= 2 * REFUSALS_PER_SECOND
    assert worker.max_epoch == 0


def test_an_announcement_from_another_user_is_acked_and_ignored(
    agent: tuple[WorkerAgent, RecordingBus],
) -> None:
    worker, bus = agent
    forged = LeaderAnnounced(master="m-forged", epoch=2**62)
    for stranger in ("mallory", None):
        assert deliver(worker._on_control, forged, user_id=stranger).settled == ["ack"]
    assert worker.max_epoch == 0
    # Its own user is trusted (the single-user setup: everything runs as one user).
    deliver(worker._on_control, LeaderAnnounced(master="m1", epoch=5), user_id=OWN_USER)
    assert worker.max_epoch == 5
    assert bus.published == []


def test_a_command_from_another_user_is_dead_lettered_and_reported(
    agent: tuple[WorkerAgent, RecordingBus],
) -> None:
    worker, bus = agent
    delivery = deliver(worker._on_assignment, start(), epoch=2**62, user_id="mallory")
    (settled,) = delivery.settled
    assert settled.startswith("dead: sent by broker user 'mallory'")
    ((exchange, key, event),) = bus.published
    assert (exchange, key) == (topology.STATUS_EXCHANGE, topology.refused_key(NODE))
    assert isinstance(event, CommandRefused) and event.task_id == "web-0-0"
    assert "sent by broker user 'mallory'" in event.reason
    assert worker.max_epoch == 0  # its epoch was not believed either
