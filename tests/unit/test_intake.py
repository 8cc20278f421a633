"""The master's heartbeat intake (`master.intake`): arrival times, one beat per node for
the loop, senders checked, a bounded memory. No broker: `take` and `_deliver` directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from master import intake
from master.intake import HeartbeatIntake
from schemas.envelope import Envelope, Message
from schemas.messages import Heartbeat
from tests.unit.factories import heartbeat

MASTER = "corral-master"


class Owner:
    """The master's side: what it was posted, and the beats it was given."""

    def __init__(self) -> None:
        self.posted: list[Callable[[], None]] = []
        self.given: list[list[Heartbeat]] = []
        self.losses = 0

    def lost(self) -> None:
        self.losses += 1

    def run_posted(self) -> None:
        posted, self.posted = self.posted, []
        for fn in posted:
            fn()


def make(now: list[float]) -> tuple[HeartbeatIntake, Owner]:
    owner = Owner()
    taken = HeartbeatIntake(
        "amqp://guest:guest@127.0.0.1:5672/",
        MASTER,
        owner.given.append,
        owner.lost,
        owner.posted.append,
        clock=lambda: now[0],
    )
    return taken, owner


def feed(taken: HeartbeatIntake, owner: Owner, beat: Heartbeat, user: str | None) -> None:
    if taken.take(beat, user):
        owner.posted.append(taken._deliver)


def test_arrival_is_noted_at_once_and_the_loop_gets_the_newest_beat_of_each_node() -> None:
    now = [100.0]
    taken, owner = make(now)
    feed(taken, owner, heartbeat("n1", seq=1), "worker-n1")
    now[0] = 101.0
    feed(taken, owner, heartbeat("n1", seq=2), "worker-n1")
    feed(taken, owner, heartbeat("n2", seq=7), MASTER)  # the master's user may name any node
    assert taken.heard == {"n1": 101.0, "n2": 101.0}
    assert len(owner.posted) == 1  # one call on its way, whatever comes meanwhile
    owner.run_posted()
    assert [[(b.node_id, b.seq) for b in beats] for beats in owner.given] == [
        [("n1", 2), ("n2", 7)]
    ]
    feed(taken, owner, heartbeat("n1", seq=3), "worker-n1")
    assert len(owner.posted) == 1  # the next beat asks again


def test_a_beat_about_another_node_is_ignored() -> None:
    taken, owner = make([5.0])
    feed(taken, owner, heartbeat("n2"), "worker-n1")
    feed(taken, owner, heartbeat("n3"), None)
    assert taken.heard == {}
    assert owner.posted == []


def test_nodes_tracked_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "HEARD_MAX", 2)
    taken, owner = make([5.0])
    for node in ("n1", "n2", "n3"):
        feed(taken, owner, heartbeat(node), MASTER)
    feed(taken, owner, heartbeat("n1", seq=4), MASTER)  # a node already tracked goes on
    owner.run_posted()
    assert set(taken.heard) == {"n1", "n2"}
    assert [(b.node_id, b.seq) for b in owner.given[0]] == [("n1", 4), ("n2", 0)]


def test_nothing_reaches_the_owner_after_stop() -> None:
    taken, owner = make([5.0])
    feed(taken, owner, heartbeat("n1"), MASTER)
    taken.stop()
    owner.run_posted()
    assert owner.given == []


def test_a_lost_connection_is_told_to_the_owner_and_it_is_deaf_until_connected() -> None:
    taken, owner = make([5.0])
    assert not taken.listening
    taken._connected(False)
    assert taken.listening
    taken._lost()
    assert not taken.listening
    owner.run_posted()
    assert owner.losses == 1
    taken._connected(True)
    taken._lost()
    taken.stop()
    owner.run_posted()
    assert owner.losses == 1  # not after stop


class Acks:
    """A delivery's stand-in: which deliveries were acked through, in one frame each."""

    def __init__(self) -> None:
        self.through: list[int] = []

    def delivery(self, tag: int, user: str) -> Any:
        acks = self

        class Delivery:
            delivery_tag = tag
            user_id = user

            def ack_through(self) -> None:
                acks.through.append(tag)

        return Delivery()


def test_beats_are_acked_in_batches_one_frame_for_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "ACK_EVERY", 3)
    taken, _owner = make([100.0])
    acks = Acks()

    def beat(tag: int) -> None:
        payload = heartbeat(f"n{tag}", seq=tag)
        message = Message(envelope=Envelope(type=payload.TYPE), payload=payload)
        taken._on_heartbeat(message, acks.delivery(tag, MASTER))

    for tag in range(1, 8):
        beat(tag)
    assert acks.through == [3, 6]  # every ACK_EVERY beats, the newest acks the earlier
    taken._ack()  # the timer: the rest, in one frame
    assert acks.through == [3, 6, 7]
    taken._ack()  # nothing new: nothing sent
    assert acks.through == [3, 6, 7]
    beat(8)
    taken._lost()  # the broker takes unacked beats back with the connection
    taken._ack()
    assert acks.through == [3, 6, 7]
