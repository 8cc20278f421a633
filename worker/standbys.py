"""Warm standbys on a worker: a replacement started paused before it is needed (a mixin
of `worker.agent.WorkerAgent`).

When another node turns suspect, the active master may send this node an
`assign.start` with `standby` > 0 for the replacement of one of that node's tasks
(master/standby.py). The worker creates and starts the container, pauses it at once,
and tells no one: it is in no heartbeat and no status event, so no one counts it or
routes to it. Then one of:
- an `assign.start` for the same task without `standby` (the node went down and the
  replacement was placed here): the container is unpaused, 20 to 60 ms instead of a
  start's 0.3-0.5 s, and reported running as any start;
- an `assign.stop` (the node was heard again): it is removed, as any stop;
- nothing for `standby` seconds: the worker removes it itself.

A standby that reaches the worker more than STANDBY_FRESH after it was sent (by the
envelope's `sent_at`: this worker was frozen, or its queue backed up) is ignored: it
would start a container late, for a node whose fate is decided by now. A paused
container found when the agent starts is a standby of its previous run: it is
removed (Corral pauses containers for nothing else).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bus import Bus, Delivery
from bus.timers import Timer
from schemas.job import JobSpec
from schemas.messages import StartTask, StopTask
from worker.containers import Attachment, ContainerInfo, StartError
from worker.network import ClusterNetwork
from worker.runtime import DockerRuntime

log = logging.getLogger("corral.worker")

# A standby older than this when it arrives (seconds since it was sent) is ignored.
STANDBY_FRESH = 1.0
# How long a start waits for the node's bridge (the master sends the network view with
# the node's subnet when it first hears of it) before it fails, to be retried.
NETWORK_WAIT = 10.0


@dataclass
class Pending:
    """A task's Docker call under way: deliveries it settles, and commands queued behind it."""

    deliveries: list[Delivery] = field(default_factory=list)
    then: list[Callable[[], None]] = field(default_factory=list)
    standby: bool = False  # a standby being started (paused)

    def settle(self) -> None:
        for delivery in self.deliveries:
            delivery.ack()
        for follow_up in self.then:
            follow_up()


@dataclass
class Spare:
    """A standby held paused: its container, its expiry, and the spec it was started with
    (a start with another spec, after an update, must not unpause it)."""

    info: ContainerInfo
    timer: Timer
    spec: JobSpec


def stale(sent_at: datetime, now: datetime | None = None) -> bool:
    """Whether a standby sent at `sent_at` arrives too late to be started."""
    age = ((now or datetime.now(UTC)) - sent_at).total_seconds()
    return age > STANDBY_FRESH


class Standbys:
    """The standby half of a worker agent; `WorkerAgent` provides what is declared here."""

    node_id: str
    bus: Bus
    runtime: DockerRuntime
    network: ClusterNetwork | None
    leaving: bool
    _busy: dict[str, Pending]
    _starts: Executor
    _short_calls: Executor
    spares: dict[str, Spare]
    # Methods it calls that the agent (or another of its mixins) defines.
    _started: Callable[[StartTask, ContainerInfo | StartError], None]
    _stop: Callable[[StopTask, Delivery | None], None]

    def _attachment(self, command: StartTask) -> Attachment | None:
        if self.network is None or command.spec.network != "cluster":
            return None
        return self.network.attachment(wait=NETWORK_WAIT)

    def _prepare(self, command: StartTask, epoch: int, delivery: Delivery) -> None:
        """Start a standby, paused (on the start pool); acked once it is (or failed)."""
        if self.leaving or command.task_id in self.spares:
            delivery.ack()
            return
        self._busy[command.task_id] = Pending([delivery], standby=True)
        self._starts.submit(self._prepare_in_pool, command, epoch)

    def _run_start(
        self, command: StartTask, epoch: int, *, paused: bool = False
    ) -> ContainerInfo | StartError:
        """Create and start the task's container (on a pool thread): its state, or why not."""
        try:
            return self.runtime.start(command, epoch, self._attachment(command), paused=paused)
        except StartError as exc:
            return exc
        except Exception as exc:
            log.exception("starting %s failed", command.task_id)
            return StartError(f"docker error: {exc}", retryable=True)

    def _prepare_in_pool(self, command: StartTask, epoch: int) -> None:
        result = self._run_start(command, epoch, paused=True)
        self.bus.call_threadsafe(functools.partial(self._prepared, command, result))

    def _prepared(self, command: StartTask, result: ContainerInfo | StartError) -> None:
        pending = self._busy.pop(command.task_id, Pending())
        if isinstance(result, StartError):
            log.info("standby %s could not start: %s", command.task_id, result.reason)
        elif not result.paused:  # the task's container ran already: not ours to hold
            log.info("standby %s: the task's container already runs here", command.task_id)
        else:
            expire = functools.partial(self._expire_spare, command, result.container_id)
            timer = self.bus.call_later(command.standby, expire)
            self.spares[command.task_id] = Spare(result, timer, command.spec)
            log.info(
                "standby %s started, paused (for %g s at most)", command.task_id, command.standby
            )
        pending.settle()

    def _take_spare(self, command: StartTask, epoch: int, delivery: Delivery) -> bool:
        """Start the task from its standby, if this node holds one: unpause it."""
        held = self.spares.pop(command.task_id, None)
        if held is None:
            return False
        held.timer.cancel()
        self._busy[command.task_id] = Pending([delivery])
        if held.spec != command.spec:  # the job changed since: a container of its new spec
            log.info("standby %s has an older spec: starting the task afresh", command.task_id)
            self._starts.submit(self._replace_spare, command, epoch)
        else:
            self._starts.submit(self._unpause_in_pool, command, epoch, held.info)
        return True

    def _replace_spare(self, command: StartTask, epoch: int) -> None:
        self._remove_quietly(command.task_id)
        result = self._run_start(command, epoch)
        self.bus.call_threadsafe(functools.partial(self._started, command, result))

    def _unpause_in_pool(self, command: StartTask, epoch: int, spare: ContainerInfo) -> None:
        result: ContainerInfo | StartError
        try:
            result = self.runtime.unpause(spare)
        except StartError as exc:  # it died meanwhile, or was removed: start it afresh
            log.warning("standby %s could not be unpaused (%s): starting it", command.task_id, exc)
            self._remove_quietly(command.task_id)
            result = self._run_start(command, epoch)
        except Exception as exc:
            result = StartError(f"docker error: {exc}", retryable=True)
        self.bus.call_threadsafe(functools.partial(self._started, command, result))

    def _drop_spare(self, task_id: str) -> bool:
        """Forget the task's standby, if any (its container is removed by the caller)."""
        held = self.spares.pop(task_id, None)
        if held is not None:
            held.timer.cancel()
        return held is not None

    def _expire_spare(self, command: StartTask, container_id: str) -> None:
        held = self.spares.get(command.task_id)
        if held is None or held.info.container_id != container_id:
            return
        log.info(
            "standby %s was not needed within %g s: removing it", command.task_id, command.standby
        )
        self._stop(
            StopTask(
                task_id=command.task_id,
                job_id=command.job_id,
                node_id=self.node_id,
                reason="standby expired",
                grace=0,
            ),
            None,
        )

    def _remove_paused(self, infos: list[ContainerInfo]) -> list[ContainerInfo]:
        """At start-up: remove the standbys a previous run left (paused containers);
        the others are returned."""
        kept = []
        for info in infos:
            if info.paused:
                log.info("removing standby %s left by a previous run", info.task_id)
                self._short_calls.submit(self._remove_quietly, info.task_id)
            else:
                kept.append(info)
        return kept

    def _remove_quietly(self, task_id: str) -> bool:
        try:
            return self.runtime.remove(task_id)
        except Exception as exc:  # a start of the task joins or replaces it
            log.warning("removing standby %s failed: %s", task_id, exc)
            return False
