"""What a worker says of itself every interval: its heartbeat (a mixin of
`worker.agent.WorkerAgent`), at the interval the leader asks of a large fleet.

A heartbeat lists the node's capacity and what it has booked, its containers (running
ones first, at most MAX_NODE_TASKS), the newest master epoch it knows, whether it is
leaving, and its side of the cluster network. It carries the interval it was sent at:
the master judges the node by that interval (master/liveness.py).
"""

from __future__ import annotations

import logging

from bus import Bus, topology
from bus.timers import Timer
from schemas.limits import MAX_HEARTBEAT_INTERVAL, MAX_NODE_TASKS
from schemas.messages import Heartbeat, Resources, RunningTask
from worker.containers import ContainerInfo
from worker.network import ClusterNetwork
from worker.settings import WorkerSettings
from worker.stops import Stopper

log = logging.getLogger("corral.worker")


class Heartbeats:
    """The heartbeat half of a worker agent; `WorkerAgent` provides what is declared here."""

    settings: WorkerSettings
    bus: Bus
    node_id: str
    boot_id: str
    seq: int
    capacity: Resources
    containers: dict[str, ContainerInfo]
    stopper: Stopper
    max_epoch: int
    leaving: bool
    network: ClusterNetwork | None
    beat_interval: float
    _beat_timer: Timer

    def _running(self) -> list[ContainerInfo]:
        return [c for c in self.containers.values() if c.state == "running"]

    def _beat(self) -> None:
        self.seq += 1
        running = self._running()
        beat = Heartbeat(
            node_id=self.node_id,
            boot_id=self.boot_id,
            seq=self.seq,
            interval=self.beat_interval,
            capacity=self.capacity,
            allocated=Resources(
                cpus=round(sum(c.cpu for c in running), 6), memory=sum(c.memory for c in running)
            ),
            labels=self.settings.labels,
            tasks=self._listed(running),
            max_epoch=self.max_epoch,
            leaving=self.leaving,
            network=self.network.heartbeat() if self.network is not None else None,
        )
        key = topology.heartbeat_key(self.node_id)
        self.bus.publish(topology.HEARTBEAT_EXCHANGE, key, beat, transient=True)

    def _pace(self, asked: float | None) -> None:
        """Heartbeat every `asked` seconds, as the leader asks of a large fleet (never
        faster than this worker's own setting). A change is announced by a heartbeat at
        once, with the new interval: the master judges this node by it from then on, so
        a longer one never makes the node look late."""
        # Never slower than liveness honours: a forged announcement cannot silence it.
        interval = max(self.settings.heartbeat_interval, min(asked or 0.0, MAX_HEARTBEAT_INTERVAL))
        if interval == self.beat_interval:
            return
        log.info(
            "heartbeating every %g s (was %g s), as the master asks", interval, self.beat_interval
        )
        self.beat_interval = interval
        self._beat_timer.cancel()
        self._beat_timer = self.bus.every(interval, self._beat)
        self._beat()

    def _listed(self, running: list[ContainerInfo]) -> list[RunningTask]:
        """The containers a heartbeat lists: running ones first, at most MAX_NODE_TASKS
        (ended ones past that are left out: only fencing reads them)."""
        ended = [c for c in self.containers.values() if c.state == "exited"]
        listed = [c for c in (*running, *ended) if c.task_id not in self.stopper]
        return [
            RunningTask(
                task_id=c.task_id,
                job_id=c.job_id,
                container_id=c.container_id,
                state="running" if c.state == "running" else "exited",
                cpu=c.cpu,
                memory=c.memory,
                health=c.health,
                address=c.address,
            )
            for c in listed[:MAX_NODE_TASKS]
        ]
