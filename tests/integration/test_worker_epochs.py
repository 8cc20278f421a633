"""A worker believes the newest master's epoch and reports what it refuses.

Each test runs one worker process and no master at all (so it also shows the
worker carrying on headless), and plays the masters with raw pika: a leader's
announcement on corral.control, commands with chosen epochs on corral.assignments,
as the masters' broker user (the test URL's, which the worker trusts) unless a
test plays a sender without one. It watches the worker through a heartbeat
subscription, a `refused.#` status subscription and corral.dead, and the
containers through the Docker engine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import topology
from schemas.envelope import encode
from schemas.job import JobSpec
from schemas.messages import CommandRefused, Heartbeat, LeaderAnnounced, Payload, StartTask
from tests.cluster import RUN_LABEL, Cluster, wait_until
from tests.conftest import TEST_IMAGE
from tests.rawamqp import RawMaster

pytestmark = pytest.mark.integration

HUGE_EPOCH = 2**62


class Masters(RawMaster):
    """Raw pika playing the masters, with private queues on the heartbeats, on
    `refused.#` status events and on nothing else."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.beats = self.subscribe(topology.HEARTBEAT_EXCHANGE, "#")
        self.refused = self.subscribe(topology.STATUS_EXCHANGE, "refused.#")

    def send(
        self,
        exchange: str,
        key: str,
        payload: Payload,
        *,
        epoch: int | None,
        user_id: str | None = "",
    ) -> None:
        """Send `payload` as a master (`user_id` "": the masters' user; None: no user_id)."""
        body = encode(payload, sender="raw-master", epoch=epoch)
        self.publish(exchange, key, body, user_id=user_id)

    def beat_of(self, node_id: str) -> dict[str, Any] | None:
        """The newest waiting heartbeat payload of `node_id`, if any."""
        beats = [m["payload"] for m in self.messages(self.beats) if m["type"] == Heartbeat.TYPE]
        ours = [beat for beat in beats if beat["node_id"] == node_id]
        return ours[-1] if ours else None

    def dead_letters(self, header: str, value: str) -> int:
        """How many dead letters whose `header` is `value` were waiting (read destructively)."""
        count = 0
        while True:
            method, properties, _body = self.channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
            if method is None:
                return count
            if (properties.headers or {}).get(header) == value:
                count += 1


@pytest.fixture
def headless(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    """One worker (`w1`) and no master."""
    running = Cluster(vhost_url, tmp_path)
    try:
        yield running
    finally:
        print(running.logs())  # shown by pytest only when the test failed
        running.close()


@pytest.fixture
def masters(headless: Cluster) -> Iterator[Masters]:
    client = Masters(headless.amqp_url)
    yield client
    client.close()


def started_worker(cluster: Cluster, masters: Masters) -> str:
    """Start `w1` and wait for its first heartbeat (its consumers are up by then)."""
    cluster.start_worker("w1")
    node_id = cluster.node_id("w1")
    wait_until(lambda: masters.beat_of(node_id), what=f"a first heartbeat of {node_id}")
    return node_id


def start_task(node_id: str, job_id: str) -> StartTask:
    # No cluster network: a headless worker never gets the master's network view.
    spec = JobSpec(name=job_id, image=TEST_IMAGE, command=["sleep", "600"], network="none")
    return StartTask(task_id=f"{job_id}-0-0", job_id=job_id, slot=0, node_id=node_id, spec=spec)


def task_containers(cluster: Cluster, task_id: str) -> list[Any]:
    labels = [f"{RUN_LABEL}={cluster.run_id}", f"corral.task={task_id}"]
    return list(cluster.docker.containers.list(all=True, filters={"label": labels}))


def test_a_deposed_masters_command_is_refused_reported_and_not_run(
    headless: Cluster, masters: Masters
) -> None:
    node_id = started_worker(headless, masters)
    masters.send(
        topology.CONTROL_EXCHANGE, "", LeaderAnnounced(master="m-new", epoch=100), epoch=100
    )
    # (b) The announcement alone raised the node's epoch: its heartbeats say so.
    wait_until(
        lambda: (masters.beat_of(node_id) or {}).get("max_epoch") == 100,
        what="a heartbeat with max_epoch 100",
    )

    suffix = uuid.uuid4().hex[:8]
    stale = start_task(node_id, f"stale-{suffix}")
    fresh = start_task(node_id, f"fresh-{suffix}")
    masters.send(topology.ASSIGN_EXCHANGE, node_id, stale, epoch=50)
    masters.send(topology.ASSIGN_EXCHANGE, node_id, fresh, epoch=100)

    # (a) The stale command is reported on refused.<node> ...
    (event,) = wait_until(lambda: masters.messages(masters.refused), what="a command.refused event")
    assert event["type"] == CommandRefused.TYPE
    refused = event["payload"]
    assert refused["node_id"] == node_id
    assert (refused["command"], refused["task_id"]) == ("assign.start", stale.task_id)
    assert (refused["epoch"], refused["max_epoch"]) == (50, 100)
    assert "stale" in refused["reason"]
    # ... and dead-lettered as before.
    node_queue = topology.node_queue_name(node_id)
    wait_until(
        lambda: masters.dead_letters(topology.SOURCE_QUEUE_HEADER, node_queue),
        what="the stale command's dead letter",
    )

    # (c) The current master's command, handled after the stale one, runs; the stale one not.
    wait_until(lambda: task_containers(headless, fresh.task_id), what="the fresh task's container")
    assert task_containers(headless, stale.task_id) == []
    assert masters.messages(masters.refused) == []

    # Headless all along: the worker keeps beating, with the epoch it was told.
    masters.messages(masters.beats)
    beat = wait_until(lambda: masters.beat_of(node_id), what="a later heartbeat")
    assert beat["max_epoch"] == 100
    assert [task["task_id"] for task in beat["tasks"]] == [fresh.task_id]


def test_a_flood_of_refused_commands_makes_few_events_and_one_warning(
    headless: Cluster, masters: Masters
) -> None:
    node_id = started_worker(headless, masters)
    node_queue = topology.node_queue_name(node_id)
    forged = start_task("elsewhere", f"forged-{uuid.uuid4().hex[:8]}")
    flood = 300
    began = time.monotonic()
    for _ in range(flood):
        masters.send(topology.DEFAULT_EXCHANGE, node_queue, forged, epoch=HUGE_EPOCH)

    dead = 0

    def all_dead_lettered() -> bool:
        nonlocal dead
        dead += masters.dead_letters(topology.SOURCE_QUEUE_HEADER, node_queue)
        return dead >= flood

    wait_until(all_dead_lettered, timeout=60, what=f"{flood} dead letters")
    # A heartbeat sent after the last refusal: every event is in our queue by now.
    masters.messages(masters.beats)
    beat = wait_until(lambda: masters.beat_of(node_id), what="a heartbeat after the flood")
    elapsed = time.monotonic() - began

    events = masters.messages(masters.refused)
    assert 1 <= len(events) <= 20 + 20 * elapsed + 1, (len(events), elapsed)
    assert all(e["payload"]["reason"].startswith("addressed to node elsewhere") for e in events)
    assert beat["max_epoch"] == 0  # nothing forged was believed
    log = (headless.workdir / "w1.log").read_text()
    assert log.count("refusing commands from") == 1, log[-3000:]


def test_other_messages_on_control_change_nothing(headless: Cluster, masters: Masters) -> None:
    node_id = started_worker(headless, masters)
    masters.send(topology.CONTROL_EXCHANGE, "", start_task(node_id, "ctl-x"), epoch=HUGE_EPOCH)
    masters.channel.basic_publish(topology.CONTROL_EXCHANGE, "", b"not json")
    masters.send(topology.CONTROL_EXCHANGE, "", LeaderAnnounced(master="m1", epoch=7), epoch=7)
    wait_until(
        lambda: (masters.beat_of(node_id) or {}).get("max_epoch") == 7,
        what="a heartbeat with max_epoch 7",
    )
    assert task_containers(headless, "ctl-x-0-0") == []
    # Both were acked, none redelivered; only the body that is not a message is kept.
    assert masters.dead_letters(topology.SOURCE_EXCHANGE_HEADER, topology.CONTROL_EXCHANGE) == 1


def test_announcements_and_commands_no_broker_user_vouches_for_change_nothing(
    headless: Cluster, masters: Masters
) -> None:
    """A worker believes only messages whose user_id is the master's (or its own): one
    without any is ignored (an announcement) or refused and reported (a command)."""
    node_id = started_worker(headless, masters)
    announced = LeaderAnnounced(master="m-forged", epoch=HUGE_EPOCH)
    masters.send(topology.CONTROL_EXCHANGE, "", announced, epoch=HUGE_EPOCH, user_id=None)
    unsigned = start_task(node_id, f"unsigned-{uuid.uuid4().hex[:8]}")
    masters.send(topology.ASSIGN_EXCHANGE, node_id, unsigned, epoch=HUGE_EPOCH, user_id=None)
    masters.send(topology.CONTROL_EXCHANGE, "", LeaderAnnounced(master="m1", epoch=7), epoch=7)

    # Handled in order: once the real announcement shows, the forged one was ignored.
    wait_until(
        lambda: (masters.beat_of(node_id) or {}).get("max_epoch") == 7,
        what="a heartbeat with max_epoch 7",
    )
    (event,) = wait_until(lambda: masters.messages(masters.refused), what="a command.refused event")
    refused = event["payload"]
    assert (refused["command"], refused["task_id"]) == ("assign.start", unsigned.task_id)
    assert refused["epoch"] == HUGE_EPOCH and "sent by broker user None" in refused["reason"]
    node_queue = topology.node_queue_name(node_id)
    wait_until(
        lambda: masters.dead_letters(topology.SOURCE_QUEUE_HEADER, node_queue),
        what="the unsigned command's dead letter",
    )
    assert task_containers(headless, unsigned.task_id) == []
    masters.messages(masters.beats)
    beat = wait_until(lambda: masters.beat_of(node_id), what="a later heartbeat")
    assert beat["max_epoch"] == 7
