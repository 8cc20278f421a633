"""A simulated fleet: many worker nodes over a few broker connections, no containers.

    python -m bench.sim --amqp URL --nodes 1000 [--connections 4] [--start-delay 0.05]
                        [--fail-rate 0] [--cpus 8] [--memory 32g] [--label zone=sim]
                        [--report FILE]

Each simulated node is a real protocol participant (docs/protocol.md): it has its own
assignment queue (`corral.node.<id>`), sends a heartbeat every `--interval` seconds (or the
longer interval the leader announces for a large fleet, as a worker does) on
`corral.heartbeats` under its node id (listing its tasks, as a worker does), and
publishes a `task.status` on `corral.status` for each task it "starts" (after
`--start-delay`; `--fail-rate` of them fail instead) and each it "stops". Its runtime
only pretends: nothing runs, so thousands of nodes fit on one machine.

`--queue-type classic` declares the assignment queues as classic (durable) queues
instead of quorum queues: one RabbitMQ node refuses quorum queues past about 6,000
(docs/benchmarks.md, heartbeat load), so a benchmark of a larger fleet on one broker
node uses classic ones. The master publishes to them as to any node's queue.

With `--report FILE` it rewrites FILE twice a second with what runs on the fleet, as JSON
(`running`: tasks running; `distinct`: distinct task ids held; `twice`: ids held by more
than one node; `beats`: heartbeats sent), for a benchmark that runs the fleet as a
process of its own.

A connection serves many nodes, so it logs in as one user for all of them: the
master's (which the master trusts as any node). This is a tool for scale tests and
benchmarks only; it never stands in for Docker in the integration tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from bus import Bus, Delivery, topology
from schemas.envelope import Message
from schemas.messages import (
    Heartbeat,
    LeaderAnnounced,
    Resources,
    RunningTask,
    StartTask,
    StopTask,
    TaskStatus,
)

log = logging.getLogger("corral.sim")

GiB = 1024**3


@dataclass
class SimTask:
    task_id: str
    job_id: str
    cpu: float
    memory: int
    state: str = "starting"  # then running (reported), or gone


@dataclass
class SimNode:
    node_id: str
    capacity: Resources
    labels: Mapping[str, str]
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seq: int = 0
    max_epoch: int = 0
    tasks: dict[str, SimTask] = field(default_factory=dict)

    def heartbeat(self, interval: float) -> Heartbeat:
        self.seq += 1
        running = [t for t in self.tasks.values() if t.state == "running"]
        return Heartbeat(
            node_id=self.node_id,
            boot_id=self.boot_id,
            seq=self.seq,
            interval=interval,
            capacity=self.capacity,
            allocated=Resources(
                cpus=round(sum(t.cpu for t in running), 6), memory=sum(t.memory for t in running)
            ),
            labels=dict(self.labels),
            tasks=[
                RunningTask(
                    task_id=t.task_id,
                    job_id=t.job_id,
                    container_id=f"sim{t.task_id[-12:]}",
                    state="running",
                    cpu=t.cpu,
                    memory=t.memory,
                )
                for t in running
            ],
            max_epoch=self.max_epoch,
        )


@dataclass(frozen=True)
class FleetSettings:
    amqp_url: str
    nodes: int
    connections: int = 4
    prefix: str = "sim"
    cpus: float = 8.0
    memory: int = 32 * GiB
    labels: Mapping[str, str] = field(default_factory=dict)
    interval: float = 1.0  # heartbeat interval
    start_delay: float = 0.05  # seconds a pretend start takes
    fail_rate: float = 0.0  # the share of starts that fail
    queue_type: str = "quorum"  # of the assignment queues: quorum (as a worker's) or classic


def assignment_queue(node_id: str, queue_type: str) -> topology.Queue:
    """A node's assignment queue as a worker declares it, or as a classic queue (durable,
    with the same bindings and dead-letter exchange) for fleets one broker node cannot
    hold as quorum queues."""
    queue = topology.node_queue(node_id)
    if queue_type == "quorum":
        return queue
    if queue_type != "classic":
        raise ValueError(f"queue type {queue_type!r}: use quorum or classic")
    kept = {"x-dead-letter-exchange": queue.arguments["x-dead-letter-exchange"]}
    return replace(queue, arguments={**kept, "x-queue-type": "classic"})


class Shard:
    """The nodes one connection serves, on the thread that owns that connection."""

    def __init__(self, settings: FleetSettings, nodes: list[SimNode], index: int) -> None:
        self.settings = settings
        self.nodes = {node.node_id: node for node in nodes}
        self.bus = Bus(settings.amqp_url, name=f"sim-{index}", declare_topology=False)
        self.random = random.Random(index)
        self.started = 0
        self.failed = 0
        for node in nodes:
            self.bus.consume_messages(
                assignment_queue(node.node_id, settings.queue_type),
                self._handler(node),
                prefetch=64,
            )
        # Beats spread over the interval, one node at a time, as real workers' would be.
        self._order: Iterator[SimNode] = iter(())
        self.interval = settings.interval  # longer if the leader asks it of a large fleet
        self._due: float | None = None  # when the next node's beat is due
        self._timer = self.bus.every(self._step(), self._beat_next)
        self.bus.on_connected(lambda _again: self._beat_all())
        self.bus.consume_messages(topology.control_queue(), self._on_control, prefetch=16)

    def _step(self) -> float:
        return self.interval / max(1, len(self.nodes))

    def _on_control(self, message: Message, delivery: Delivery) -> None:
        """The leader's announcement: heartbeat at the interval it asks (as a worker does:
        never faster than the fleet's own, and said at once by a beat of every node)."""
        delivery.ack()
        note = message.payload
        if not isinstance(note, LeaderAnnounced):
            return
        interval = max(self.settings.interval, note.heartbeat_interval or 0.0)
        if interval != self.interval:
            self.interval = interval
            self._timer.cancel()
            self._due = None
            self._timer = self.bus.every(self._step(), self._beat_next)
            self._beat_all()

    def _handler(self, node: SimNode) -> Callable[[Message, Delivery], None]:
        return lambda message, delivery: self._on_command(node, message, delivery)

    def _beat_next(self) -> None:
        """Beat the nodes now due, one per step on average. A late turn catches up (the
        bus's timer does not), so each node beats once per interval, as a worker does;
        one over an interval late starts afresh rather than in a burst."""
        now = time.monotonic()
        if self._due is None or now - self._due > self.interval:
            self._due = now
        while self._due <= now:
            node = next(self._order, None)
            if node is None:
                self._order = iter(list(self.nodes.values()))
                node = next(self._order, None)
                if node is None:
                    return
            self._beat(node)
            self._due += self._step()

    def _beat_all(self) -> None:
        for node in self.nodes.values():
            self._beat(node)

    def _beat(self, node: SimNode) -> None:
        beat = node.heartbeat(self.interval)
        key = topology.heartbeat_key(node.node_id)
        self.bus.publish(topology.HEARTBEAT_EXCHANGE, key, beat, transient=True)

    def _on_command(self, node: SimNode, message: Message, delivery: Delivery) -> None:
        command = message.payload
        epoch = message.envelope.epoch or 0
        delivery.ack()
        if not isinstance(command, StartTask | StopTask) or command.node_id != node.node_id:
            return
        if epoch < node.max_epoch:
            return  # an older master's
        node.max_epoch = epoch
        if isinstance(command, StartTask):
            if command.task_id in node.tasks:
                return  # a redelivery
            spec = command.spec
            task = SimTask(command.task_id, command.job_id, spec.cpu, spec.memory)
            node.tasks[task.task_id] = task
            self.bus.call_later(self.settings.start_delay, lambda: self._started(node, task))
        else:
            stopped = node.tasks.pop(command.task_id, None)
            if stopped is not None:
                self._report(node, stopped, "stopped")

    def _started(self, node: SimNode, task: SimTask) -> None:
        if node.tasks.get(task.task_id) is not task:
            return  # stopped meanwhile
        if self.random.random() < self.settings.fail_rate:
            node.tasks.pop(task.task_id)
            self.failed += 1
            self._report(node, task, "failed", reason="simulated failure", exit_code=1)
            return
        task.state = "running"
        self.started += 1
        self._report(node, task, "running")

    def _report(
        self,
        node: SimNode,
        task: SimTask,
        state: str,
        *,
        reason: str = "",
        exit_code: int | None = None,
    ) -> None:
        status = TaskStatus.model_validate(
            {
                "task_id": task.task_id,
                "job_id": task.job_id,
                "node_id": node.node_id,
                "state": state,
                "reason": reason,
                "exit_code": exit_code,
                "container_id": f"sim{task.task_id[-12:]}",
            }
        )
        key = topology.task_key(task.job_id, task.task_id, state, node.node_id)
        self.bus.publish(topology.STATUS_EXCHANGE, key, status)


class Fleet:
    """`settings.nodes` simulated nodes over `settings.connections` connections (threads).
    Use as a context manager, or `start()` then `close()`."""

    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        nodes = [
            SimNode(
                f"{settings.prefix}-{index}",
                Resources(cpus=settings.cpus, memory=settings.memory),
                settings.labels,
            )
            for index in range(settings.nodes)
        ]
        count = max(1, min(settings.connections, len(nodes)))
        self.shards = [Shard(settings, nodes[index::count], index) for index in range(count)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def node_ids(self) -> list[str]:
        return [node_id for shard in self.shards for node_id in shard.nodes]

    @property
    def started(self) -> int:
        return sum(shard.started for shard in self.shards)

    def report(self) -> dict[str, int]:
        """What runs on the fleet now (read from other threads: a moment's view)."""
        held: Counter[str] = Counter()
        running = beats = 0
        for shard in self.shards:
            for node in list(shard.nodes.values()):
                beats += node.seq
                for task in list(node.tasks.values()):
                    held[task.task_id] += 1
                    running += task.state == "running"
        twice = sum(1 for count in held.values() if count > 1)
        return {"running": running, "distinct": len(held), "twice": twice, "beats": beats}

    def running(self) -> int:
        """Tasks running on the fleet now (read from other threads: a moment's view)."""
        return sum(
            sum(1 for t in list(node.tasks.values()) if t.state == "running")
            for shard in self.shards
            for node in list(shard.nodes.values())
        )

    def start(self) -> Fleet:
        for shard in self.shards:
            shard.bus.connect(self._stop, attempts=10)  # declares the nodes' queues
        for shard in self.shards:
            thread = threading.Thread(
                target=shard.bus.run, args=(self._stop,), name=shard.bus.name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()


def bench_fleet(amqp_url: str, nodes: int, queue_type: str = "quorum") -> Fleet:
    """A benchmark's in-process fleet: `nodes` idle nodes over 8 connections, with a fresh
    node id prefix (not started)."""
    return Fleet(
        FleetSettings(
            amqp_url=amqp_url,
            nodes=nodes,
            connections=8,
            prefix=f"sim{uuid.uuid4().hex[:4]}",
            queue_type=queue_type,
        )
    )


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": GiB, "t": 1024**4}
    text = text.strip().lower().rstrip("ib")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", required=True, help="the master user's URL")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--prefix", default="sim")
    parser.add_argument("--cpus", type=float, default=8.0)
    parser.add_argument("--memory", default="32g")
    parser.add_argument("--label", action="append", default=[], metavar="K=V")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--start-delay", type=float, default=0.05)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--queue-type", choices=("quorum", "classic"), default="quorum")
    parser.add_argument("--report", default=None, metavar="FILE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = FleetSettings(
        amqp_url=args.amqp,
        nodes=args.nodes,
        connections=args.connections,
        prefix=args.prefix,
        cpus=args.cpus,
        memory=_size(args.memory),
        labels=dict(pair.split("=", 1) for pair in args.label),
        interval=args.interval,
        start_delay=args.start_delay,
        fail_rate=args.fail_rate,
        queue_type=args.queue_type,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Fleet(settings) as fleet:
        log.info("%d simulated nodes up over %d connections", args.nodes, len(fleet.shards))
        turns = 0
        while not stop.wait(0.5 if args.report else 10):
            turns += 1
            if args.report:
                _write_report(args.report, fleet.report())
            if not args.report or turns % 20 == 0:
                log.info("%d tasks running", fleet.running())
        if args.report:
            _write_report(args.report, fleet.report())


def _write_report(path: str, report: dict[str, int]) -> None:
    with open(f"{path}.tmp", "w") as out:
        json.dump(report, out)
    os.replace(f"{path}.tmp", path)


if __name__ == "__main__":
    main()
