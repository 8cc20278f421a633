"""A leader driven the way the active master's daemon drives it, recording what a
standby would see: its journaled events and the heartbeats, in the order it applied
them. Standbys are then built from that record, as the HA daemon builds them.

`Leader` plays the workers too, simply: a StartCommand queues a task on its node,
`start` reports it running (a container), `exit` ends a container, a StopCommand
removes one, a reboot loses them all, and a silent node neither beats nor reports.
Every step takes small integers and picks what it acts on from them, so a
hypothesis-drawn list of steps is always a valid run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from master import events as ev
from master import snapshot
from master.api import Api
from master.controller import Controller, StartCommand, StopCommand
from master.settings import MasterSettings
from master.state import ClusterState
from schemas.api import (
    CancelJob,
    PurgeJob,
    RollbackJob,
    ScaleJob,
    SetNodeSchedule,
    SubmitJob,
    UpdateJob,
)
from schemas.job import UpdatePolicy
from schemas.messages import Heartbeat, Payload, Resources, TaskStatus
from tests.unit.factories import ADMIN, GiB, job_spec, running

SETTINGS = MasterSettings(
    amqp_url="amqp://x",
    keep_ended_jobs=1,
    keep_attempts=1,
    remember_requests=6,
    forget_down_nodes_after=5,
    unroutable_hold=2,
    takeover_grace=3,
    agent_grace=2,
    keep_containers=0,
)
NAMES = ("web", "batch", "db")
NODES = ("n0", "n1", "n2")

Beat = tuple[Heartbeat, float]
Record = ev.Event | Beat

STEPS = (
    "submit",
    "submit",
    "redeliver",
    "cancel",
    "scale",
    "beat",
    "tick",
    "tick",
    "tick",
    "wait",
    "blackout",
    "start",
    "start",
    "exit",
    "fail",
    "silence",
    "reboot",
    "unroutable",
    "snapshot",
    "update",
    "rollback",
    "health",
    "schedule",
    "close",
    "purge",
)
Step = tuple[str, int, int]


class Leader:
    def __init__(self, settings: MasterSettings = SETTINGS) -> None:
        self.settings = settings
        self.controller = Controller(settings, epoch=1)
        self.api = Api(self.controller)
        self.timeline: list[Record] = []
        self.controller.journal = self.timeline.append
        self.now = 0.0
        self.seq = 0
        self.boots = dict.fromkeys(NODES, 0)
        self.silent: set[str] = set()
        self.queued: dict[str, str] = {}  # task id -> node: sent a start, not running yet
        self.running: dict[str, tuple[str, str]] = {}  # task id -> (node, job): containers
        self.requests: list[tuple[str, Payload]] = []  # (message id, request), as sent
        self.snapshots: list[tuple[int, bytes]] = []  # (timeline length, snapshot)
        self.last_beats: dict[str, Beat] = {}

    # -- running steps --

    def run(self, steps: Iterable[Step]) -> None:
        for name, a, b in steps:
            getattr(self, name)(a, b)
            self._collect()

    def _collect(self) -> None:
        """What the workers do with the commands: queue starts, remove stopped containers."""
        commands, _ = self.controller.drain()
        for command in commands:
            if isinstance(command, StartCommand):
                self.queued[command.task_id] = command.node_id
            elif isinstance(command, StopCommand):
                if self.queued.get(command.task_id) == command.node_id:
                    del self.queued[command.task_id]
                if self.running.get(command.task_id, ("", ""))[0] == command.node_id:
                    del self.running[command.task_id]

    # -- requests --

    def _request(self, request: Payload, message_id: str) -> None:
        token = f"t{len(self.timeline)}"
        self.api.answer(request, message_id=message_id, now=self.now, token=token, caller=ADMIN)

    def _send(self, request: Payload) -> None:
        message_id = f"m{len(self.requests)}"
        self.requests.append((message_id, request))
        self._request(request, message_id)

    def _spec(self, name: str, a: int, b: int, **fields: Any) -> Any:
        return job_spec(
            name,
            kind="batch" if b % 2 else "service",
            replicas=(a // 3) % 4,
            cpu=0.5 if name != "db" else 1.5,
            ports=["5432:5432"] if name == "db" else [],
            restart={"max_retries": 1, "backoff_initial": 0.5, "backoff_max": 2},
            **fields,
        )

    def submit(self, a: int, b: int) -> None:
        self._send(SubmitJob(spec=self._spec(NAMES[a % len(NAMES)], a, b)))

    def update(self, a: int, b: int) -> None:
        """A service's new version: another env, start-first or stop-first by `b`."""
        job = self.controller.state.jobs.get(NAMES[a % len(NAMES)])
        if job is None:
            return
        order: Literal["stop-first", "start-first"] = "start-first" if b % 2 else "stop-first"
        policy = UpdatePolicy(order=order, parallelism=1 + b % 2)
        spec = job.spec.model_copy(update={"env": {"V": str(b)}, "update": policy})
        self._send(UpdateJob(job_id=job.job_id, spec=spec))

    def rollback(self, a: int, b: int) -> None:
        self._send(RollbackJob(job_id=NAMES[a % len(NAMES)]))

    def purge(self, a: int, b: int) -> None:
        self._send(PurgeJob(job_id=NAMES[a % len(NAMES)]))

    def schedule(self, a: int, b: int) -> None:
        action: Literal["cordon", "uncordon", "drain"] = ("cordon", "uncordon", "drain")[b % 3]
        self.api.answer(
            SetNodeSchedule(node_id=NODES[a % len(NODES)], action=action),
            message_id="",
            now=self.now,
            token="",
            caller=ADMIN,
        )

    def health(self, a: int, b: int) -> None:
        """Docker's verdict on a running container's health check."""
        task_id = self._pick(self.running, a)
        if task_id is None or self.running[task_id][0] in self.silent:
            return
        verdict = ("starting", "healthy", "unhealthy")[b % 3]
        self._status(task_id, self.running[task_id][0], "running", health=verdict)

    def close(self, a: int, b: int) -> None:
        """A node's agent stops (its connection closes); it is silent until `silence`."""
        node_id = NODES[a % len(NODES)]
        self.silent.add(node_id)
        self.controller.connection_closed(node_id, self.now)

    def redeliver(self, a: int, b: int) -> None:
        if self.requests:
            message_id, request = self.requests[a % len(self.requests)]
            self._request(request, message_id)

    def cancel(self, a: int, b: int) -> None:
        self._send(CancelJob(job_id=NAMES[a % len(NAMES)]))

    def scale(self, a: int, b: int) -> None:
        self._send(ScaleJob(job_id=NAMES[a % len(NAMES)], replicas=b % 4))

    # -- workers --

    def heartbeat_of(self, node_id: str) -> Heartbeat:
        self.seq += 1
        return Heartbeat(
            node_id=node_id,
            boot_id=f"{node_id}-boot{self.boots[node_id]}",
            seq=self.seq,
            interval=1.0,
            capacity=Resources(cpus=2.0, memory=8 * GiB),
            allocated=Resources(cpus=0, memory=0),
            labels={"rack": node_id[-1]},
            tasks=[running(t, job) for t, (n, job) in sorted(self.running.items()) if n == node_id],
        )

    def beat(self, a: int, b: int) -> None:
        node_id = NODES[a % len(NODES)]
        if node_id not in self.silent:
            beat = self.heartbeat_of(node_id)
            self.timeline.append((beat, self.now))
            self.last_beats[node_id] = (beat, self.now)
            self.controller.heartbeat(beat, self.now)

    def tick(self, a: int, b: int) -> None:
        """Half a second: every node that is not silent beats, then the master ticks."""
        self.now += 0.5
        for index in range(len(NODES)):
            self.beat(index, 0)
            self._collect()
        self.controller.tick(self.now)

    def wait(self, a: int, b: int) -> None:
        """A few ticks (silent nodes go suspect, then down)."""
        for _ in range(1 + a % 8):
            self.tick(0, 0)
            self._collect()

    def blackout(self, a: int, b: int) -> None:
        """Nobody is heard for a while (the partition guard holds the nodes, or not)."""
        self.now += 1.0 + a % 6
        self.controller.tick(self.now)

    def _pick(self, tasks: dict[str, Any], a: int) -> str | None:
        choices = sorted(tasks)
        return choices[a % len(choices)] if choices else None

    def _status(self, task_id: str, node_id: str, state: Any, **fields: Any) -> None:
        job_id = task_id.split("-")[0]
        status = TaskStatus(task_id=task_id, job_id=job_id, node_id=node_id, state=state, **fields)
        self.controller.task_status(status, self.now)

    def start(self, a: int, b: int) -> None:
        task_id = self._pick(self.queued, a)
        if task_id is None or self.queued[task_id] in self.silent:
            return
        node_id = self.queued.pop(task_id)
        self.running[task_id] = (node_id, task_id.split("-")[0])
        self._status(task_id, node_id, "running", container_id=f"c-{task_id}")

    def exit(self, a: int, b: int) -> None:
        task_id = self._pick(self.running, a)
        if task_id is None or self.running[task_id][0] in self.silent:
            return
        node_id, _ = self.running.pop(task_id)
        self._status(task_id, node_id, "exited", exit_code=b % 2)

    def fail(self, a: int, b: int) -> None:
        task_id = self._pick(self.queued, a)
        if task_id is None or self.queued[task_id] in self.silent:
            return
        node_id = self.queued.pop(task_id)
        self._status(task_id, node_id, "failed", reason="no such image", retryable=b % 3 > 0)

    def silence(self, a: int, b: int) -> None:
        self.silent ^= {NODES[a % len(NODES)]}

    def reboot(self, a: int, b: int) -> None:
        node_id = NODES[a % len(NODES)]
        self.boots[node_id] += 1
        self.running = {t: where for t, where in self.running.items() if where[0] != node_id}

    def unroutable(self, a: int, b: int) -> None:
        task_id = self._pick(self.queued, a)
        if task_id is not None:
            del self.queued[task_id]
            self.controller.assignment_unroutable(task_id, self.now)

    def snapshot(self, a: int, b: int) -> None:
        self.snapshots.append((len(self.timeline), snapshot.dump(self.controller.state)))


# -- standbys --


def standby(state: ClusterState | None = None) -> Controller:
    if state is None:
        state = ClusterState(remember_requests=SETTINGS.remember_requests)
    return Controller(SETTINGS, epoch=0, state=state)


def feed(controller: Controller, records: Iterable[Record]) -> None:
    """What a standby does with the journal and the heartbeat fanout."""
    for record in records:
        if isinstance(record, ev.Event):
            controller.replay(record)
        else:
            beat, now = record
            controller.observe(beat, now)


def events_of(records: Iterable[Record]) -> list[ev.Event]:
    return [record for record in records if isinstance(record, ev.Event)]
