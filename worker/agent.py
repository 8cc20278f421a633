"""`corral worker`: the node agent.

Threads:
- the bus thread (`run`) owns the AMQP connection and all of the agent's
  state: it handles assignments and leader announcements, sends a heartbeat
  every interval, publishes task status and refusals, and runs the timers that
  end stops (`worker.stops`);
- three bounded pools make the blocking Docker calls, so that no kind of
  work can starve another: `start_threads` threads create and start
  containers, `stop_threads` threads make the short calls (send signals,
  remove containers, never waiting out a grace period; read why a health
  check failed), and `log_streams` threads stream logs (`worker.logs`).
  Results come back through `bus.call_threadsafe`; the bus thread never
  blocks on Docker, so heartbeats go on whatever the pools do;
- one thread follows Docker's event stream (container started / died /
  judged healthy or unhealthy by its health check);
- the cluster network (`worker.network`, unless `--no-network`): one thread sets
  the host up (bridge, routes, firewall rules), and the DNS server has threads of
  its own (`worker.dns`).

Assignments are acked only once the container exists (or failed to start), so
a crash loses nothing: the broker redelivers and `DockerRuntime.start` finds
the container by label instead of making a second one. A stop is acked once
SIGTERM is sent. Which assignments are carried out at all is decided by
`worker.commands.accept`, against the newest epoch the node has accepted or
heard announced on `corral.control`; a refused one is dead-lettered and, at a
bounded rate, reported as a `CommandRefused` event (key `refused.<node>`).

Health checks are Docker's own (`worker.health`). Each change of verdict of a
running task is published as a `TaskStatus` that is still "running", with
`health` set (for "unhealthy", `reason` quotes the last check's output); the
heartbeat lists each task's current verdict.

On start the agent adopts the containers it already runs. Stopping the agent
leaves its containers running, and so does having no master at all: the
agent keeps heartbeating until one comes back. Leaving the cluster is explicit
(`leave_on_terminate`, see `serve`): the agent then says `leaving` in every
heartbeat, refuses new tasks, and waits until the master has moved its tasks
away and stopped them here; after `leave_timeout` it stops what remains itself.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

from bus import Bus, Delivery, topology
from bus.connevents import worker_connection_name
from schemas.envelope import Message
from schemas.messages import (
    Health,
    Resources,
    StartTask,
    StopTask,
)
from worker.beats import Heartbeats
from worker.commands import RefusalGate, Refused, accept
from worker.containers import ContainerInfo, StartError
from worker.control import Control
from worker.identity import check_user, resolve_node_id
from worker.leaving import Leaving
from worker.logs import LogStreamer
from worker.network import RECHECK_EVERY, ClusterNetwork
from worker.reports import StatusReports
from worker.runtime import DockerRuntime
from worker.settings import WorkerSettings
from worker.standbys import Pending, Spare, Standbys, stale
from worker.stops import Stopper

log = logging.getLogger("corral.worker")

# How often the bus thread looks whether a signal asked it to leave the cluster.
LEAVE_POLL = 0.2


class WorkerAgent(StatusReports, Leaving, Control, Standbys, Heartbeats):
    """One node: built from its settings (resolving and saving its node id, connecting
    to Docker: raises `IdentityError` or `RuntimeUnavailable`), then served by `run`."""

    def __init__(self, settings: WorkerSettings, runtime: DockerRuntime | None = None) -> None:
        self.settings = settings
        self.node_id = resolve_node_id(settings.node_id, settings.state_dir)
        self.runtime = runtime or DockerRuntime(
            self.node_id, extra_labels=settings.container_labels
        )
        # Raises hostnet.HostNetError if no advertise address is given or found.
        self.network = (
            ClusterNetwork(self.node_id, settings, self.runtime) if settings.network else None
        )
        self.capacity = Resources(
            cpus=settings.cpus or float(os.cpu_count() or 1),
            memory=settings.memory or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        )
        self.boot_id = uuid.uuid4().hex
        self.seq = 0
        self.max_epoch = 0  # the newest master epoch accepted or announced
        self._refusals = RefusalGate()
        self.containers: dict[str, ContainerInfo] = {}
        self._busy: dict[str, Pending] = {}  # task id -> start or SIGTERM under way
        self.spares: dict[str, Spare] = {}  # standbys, paused
        self._reported: dict[str, str] = {}  # task id -> last state published
        self._health: dict[str, Health] = {}  # task id -> last health published
        self._early_health: dict[str, Health] = {}  # verdicts that came before the start result
        self.leaving = False  # announced in every heartbeat once set
        self._evicting = False  # the leave timed out: stopping what is left
        self._end = threading.Event()  # run's `stop`: set to end it
        self._pools = (
            ThreadPoolExecutor(settings.start_threads, thread_name_prefix="start"),
            ThreadPoolExecutor(settings.stop_threads, thread_name_prefix="stop"),
            ThreadPoolExecutor(settings.log_streams, thread_name_prefix="logs"),
        )
        self._starts, self._short_calls, logs = self._pools

        # Declares only its own queues: the master (or `corral admin bootstrap`) declares the
        # rest, which a worker's broker user may not.
        self.bus = Bus(
            settings.amqp_url,
            name=worker_connection_name(self.node_id),
            declare_topology=False,
            tls=settings.tls,
            answers=False,  # a worker may not write to the default exchange, where replies go
        )
        check_user(self.bus.user, self.node_id)
        self.stopper = Stopper(
            self.bus,
            self.runtime,
            self._short_calls,
            signalled=self._signalled,
            removed=self._stopped,
        )
        self.logs = LogStreamer(
            self.bus, self.runtime, self.node_id, logs, limit=settings.log_streams
        )
        self.bus.consume_messages(
            topology.node_queue(self.node_id),
            self._on_assignment,
            prefetch=4 * settings.start_threads,
        )
        self.bus.consume_messages(topology.node_rpc_queue(self.node_id), self._on_rpc, prefetch=8)
        self.bus.consume_messages(topology.control_queue(), self._on_control, prefetch=16)
        self.bus.on_connected(lambda _reconnected: self._beat())
        self.beat_interval = settings.heartbeat_interval  # the leader may ask for longer
        self._beat_timer = self.bus.every(settings.heartbeat_interval, self._beat)
        self.bus.every(settings.log_keepalive, self.logs.keepalive)
        if self.network is not None:
            self.bus.every(RECHECK_EVERY, self.network.recheck)

    def run(self, stop: threading.Event, leave: threading.Event | None = None) -> None:
        """Serve until `stop` is set, or, once `leave` is set, until this node has left the
        cluster: until it runs no container (the master stopped them all), or, at most
        `leave_timeout` s later, once it has stopped the remaining ones itself (bounded by
        LEAVE_STOP_GRACE + LEAVE_STOP_SLACK s more). Raises RuntimeUnavailable if Docker
        does not answer. Timers (hence the leave's) wait while the broker is unreachable;
        `stop` always works."""
        self._end = stop
        self.runtime.ping()
        self._adopt()
        if leave is not None:
            self.bus.every(LEAVE_POLL, functools.partial(self._leave_if_asked, leave))
        events = threading.Thread(
            target=self._follow_events, args=(stop,), name="docker-events", daemon=True
        )
        events.start()
        log.info(
            "worker %s up: %g CPUs, %d MiB, labels %s",
            self.node_id,
            self.capacity.cpus,
            self.capacity.memory // 2**20,
            self.settings.labels,
        )
        try:
            self.bus.run(stop)
        finally:
            stop.set()  # also when the bus gave up: the events thread ends with it
            self.logs.close()
            for pool in self._pools:
                pool.shutdown(wait=False, cancel_futures=True)
            events.join(timeout=3)
            if self.network is not None:
                self.network.close()
            self._log_end()

    def _log_end(self) -> None:
        running = len(self._running())
        if not self.leaving:
            log.info("worker %s stopped; its containers keep running", self.node_id)
        elif running:
            log.warning(
                "worker %s stopped before it could leave: %d container(s) keep running",
                self.node_id,
                running,
            )
        else:
            log.info("worker %s left the cluster", self.node_id)

    # -- start-up --

    def _adopt(self) -> None:
        """Take over the containers a previous run of this node left behind."""
        for info in self._remove_paused(self.runtime.list_tasks()):
            self.containers[info.task_id] = info
            if info.state in ("running", "exited"):
                self._report_container(info)
        if self.containers:
            log.info("adopted %d container(s) from a previous run", len(self.containers))

    def _follow_events(self, stop: threading.Event) -> None:
        for event in self.runtime.events(stop):
            self.bus.call_threadsafe(functools.partial(self._on_runtime_event, event))

    # -- assignments --

    def _on_assignment(self, message: Message, delivery: Delivery) -> None:
        # InvalidMessage (not an assignment) propagates: the bus dead-letters it.
        try:
            command, epoch = accept(message, self.node_id, self.max_epoch, self._refusal(delivery))
        except Refused as refusal:
            delivery.dead_letter(refusal.reason)
            self._report_refusal(refusal, message.envelope.sender)
            return
        self.max_epoch = epoch  # only now: the whole command has been checked
        busy = self._busy.get(command.task_id)
        if isinstance(command, StartTask):
            if command.standby and stale(message.envelope.sent_at):
                log.info("standby %s arrived too late to be of use: ignored", command.task_id)
                delivery.ack()
            elif busy is not None and busy.standby and not command.standby:
                busy.then.append(functools.partial(self._start, command, epoch, delivery))
            elif busy is not None:
                busy.deliveries.append(delivery)  # a redelivery while the first is in hand
            else:
                self._start(command, epoch, delivery)
        elif busy is not None:
            busy.then.append(functools.partial(self._stop, command, delivery))  # after the start
        else:
            self._stop(command, delivery)

    def _report_refusal(self, refusal: Refused, sender: str) -> None:
        """Publish a `CommandRefused` event, unless refusals come faster than the gate
        lets through; warn once per kind and epoch, not once per command."""
        if not self._refusals.report(time.monotonic()):
            log.debug("refusal of a %s not reported: too many refusals", refusal.command)
            return
        if self._refusals.warn(refusal):
            log.warning(
                "refusing commands from %r with epoch %s (newest %d): %s",
                sender,
                refusal.epoch,
                refusal.max_epoch,
                refusal.reason,
            )
        self.bus.publish(
            topology.STATUS_EXCHANGE,
            topology.refused_key(self.node_id),
            refusal.event(self.node_id),
            transient=True,  # a report for people, not state: never kept while disconnected
        )

    def _start(self, command: StartTask, epoch: int, delivery: Delivery) -> None:
        existing = self.containers.get(command.task_id)
        if existing is not None:
            self._report_container(existing)
            delivery.ack()
            return
        if command.standby:
            self._prepare(command, epoch, delivery)
            return
        if self.leaving:  # the master had not heard yet: it places the task elsewhere
            reason = f"node {self.node_id} is leaving the cluster"
            self._report(command.task_id, command.job_id, "failed", reason=reason)
            delivery.ack()
            return
        if self._take_spare(command, epoch, delivery):
            return
        self._busy[command.task_id] = Pending([delivery])
        self._starts.submit(self._start_in_pool, command, epoch)

    def _start_in_pool(self, command: StartTask, epoch: int) -> None:
        result = self._run_start(command, epoch)
        self.bus.call_threadsafe(functools.partial(self._started, command, result))

    def _started(self, command: StartTask, result: ContainerInfo | StartError) -> None:
        pending = self._busy.pop(command.task_id, Pending())
        early_health = self._early_health.pop(command.task_id, None)
        if isinstance(result, StartError):
            log.warning("task %s failed to start: %s", command.task_id, result.reason)
            self._report(
                command.task_id,
                command.job_id,
                "failed",
                reason=result.reason,
                retryable=result.retryable,
            )
        else:
            if self._reported.get(command.task_id) == "exited":  # its die event came first
                result = dataclasses.replace(result, state="exited", health="")
            elif early_health is not None:  # so did a health event
                result = dataclasses.replace(result, health=early_health)
            self.containers[command.task_id] = result
            self._report_container(result)
            if self._evicting:
                self._evict(result)
        pending.settle()
        self._check_left()

    def _stop(self, command: StopTask, delivery: Delivery | None) -> None:
        self._drop_spare(command.task_id)  # a standby goes as any container
        deliveries = [delivery] if delivery is not None else []
        if self.stopper.stop(command):
            self._busy[command.task_id] = Pending(deliveries)  # until SIGTERM is sent
        else:
            Pending(deliveries).settle()  # already being stopped (at most sooner now)

    def _signalled(self, command: StopTask) -> None:
        self._busy.pop(command.task_id, Pending()).settle()

    def _stopped(self, command: StopTask) -> None:
        info = self.containers.pop(command.task_id, None)
        if info is not None and self._reported.get(command.task_id) == "running":
            self._report(command.task_id, command.job_id, "stopped", reason=command.reason)
        self._reported.pop(command.task_id, None)
        self._health.pop(command.task_id, None)
        self._check_left()


def serve(settings: WorkerSettings, stop: threading.Event | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT (or `stop` is set); its containers keep running.

    With `settings.leave_on_terminate` the first signal makes the node leave the
    cluster instead (see `WorkerAgent.run`), and a second one stops it at once."""
    stop = stop or threading.Event()
    leave = threading.Event() if settings.leave_on_terminate else None

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # Only flags here: the bus thread looks at them between I/O waits.
        if leave is not None and not leave.is_set():
            leave.set()
        else:
            stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    WorkerAgent(settings).run(stop, leave)
