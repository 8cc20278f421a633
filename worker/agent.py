"""`corral worker`: the node agent.

Threads:
- the bus thread (`run`) owns the AMQP connection and all of the agent's
  state: it handles assignments, sends a heartbeat every interval, and
  publishes task status;
- a pool of `start_threads` threads makes the Docker calls (create, start,
  stop), so a burst of assignments is not serialised and the bus thread never
  blocks on Docker; results come back through `bus.call_threadsafe`;
- one thread follows Docker's event stream (container started / died);
- a small pool streams logs to clients.

Assignments are acked only once the container exists (or failed to start), so
a crash loses nothing: the broker redelivers and `DockerRuntime.start` finds
the container by label instead of making a second one. On start the agent
adopts the containers it already runs. Stopping the agent leaves its
containers running.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bus import Bus, Delivery, topology
from schemas.envelope import InvalidMessage, Message
from schemas.messages import (
    Heartbeat,
    LogChunk,
    LogsRequest,
    Resources,
    RunningTask,
    StartTask,
    StopTask,
    TaskStatus,
)
from worker.identity import resolve_node_id
from worker.runtime import ContainerInfo, DockerRuntime, RuntimeEvent, StartError
from worker.settings import WorkerSettings

log = logging.getLogger("corral.worker")

LOG_CHUNK_BYTES = 64 * 1024
_ORDER = {"running": 1, "exited": 2, "failed": 2, "stopped": 3}


@dataclass
class _Pending:
    """A task's Docker call under way: deliveries it settles, and commands queued behind it."""

    deliveries: list[Delivery] = field(default_factory=list)
    then: list[Callable[[], None]] = field(default_factory=list)

    def settle(self) -> None:
        for delivery in self.deliveries:
            delivery.ack()
        for follow_up in self.then:
            follow_up()


class WorkerAgent:
    def __init__(self, settings: WorkerSettings, runtime: DockerRuntime | None = None) -> None:
        self.settings = settings
        self.node_id = resolve_node_id(settings.node_id, settings.state_dir)
        self.runtime = runtime or DockerRuntime(
            self.node_id, extra_labels=settings.container_labels
        )
        self.capacity = Resources(
            cpus=settings.cpus or float(os.cpu_count() or 1),
            memory=settings.memory or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        )
        self.boot_id = uuid.uuid4().hex
        self.seq = 0
        self.max_epoch = 0
        self.containers: dict[str, ContainerInfo] = {}
        self._busy: dict[str, _Pending] = {}  # task id -> Docker call under way
        self._stopping: set[str] = set()
        self._reported: dict[str, str] = {}  # task id -> last state published
        self._docker = ThreadPoolExecutor(settings.start_threads, thread_name_prefix="docker")
        self._log_pool = ThreadPoolExecutor(4, thread_name_prefix="logs")

        self.bus = Bus(settings.amqp_url, name=f"worker:{self.node_id}")
        self.bus.consume_messages(
            topology.node_queue(self.node_id),
            self._on_assignment,
            prefetch=4 * settings.start_threads,
        )
        self.bus.consume_messages(topology.node_rpc_queue(self.node_id), self._on_rpc, prefetch=8)
        self.bus.on_connected(lambda _reconnected: self._beat())
        self.bus.every(settings.heartbeat_interval, self._beat)

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set. Raises RuntimeUnavailable if Docker does not answer."""
        self.runtime.ping()
        self._adopt()
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
            self._docker.shutdown(wait=False, cancel_futures=True)
            self._log_pool.shutdown(wait=False, cancel_futures=True)
            events.join(timeout=3)
            log.info("worker %s stopped; its containers keep running", self.node_id)

    # -- start-up --

    def _adopt(self) -> None:
        """Take over the containers a previous run of this node left behind."""
        for info in self.runtime.list_tasks():
            self.containers[info.task_id] = info
            if info.state in ("running", "exited"):
                self._report_container(info)
        if self.containers:
            log.info("adopted %d container(s) from a previous run", len(self.containers))

    def _follow_events(self, stop: threading.Event) -> None:
        for event in self.runtime.events(stop):
            self.bus.call_threadsafe(functools.partial(self._on_runtime_event, event))

    # -- heartbeat --

    def _beat(self) -> None:
        self.seq += 1
        running = [c for c in self.containers.values() if c.state == "running"]
        beat = Heartbeat(
            node_id=self.node_id,
            boot_id=self.boot_id,
            seq=self.seq,
            interval=self.settings.heartbeat_interval,
            capacity=self.capacity,
            allocated=Resources(
                cpus=round(sum(c.cpu for c in running), 6), memory=sum(c.memory for c in running)
            ),
            labels=self.settings.labels,
            tasks=[
                RunningTask(
                    task_id=c.task_id,
                    job_id=c.job_id,
                    container_id=c.container_id,
                    state=c.state,
                    cpu=c.cpu,
                    memory=c.memory,
                )
                for c in self.containers.values()
                if c.state != "created" and c.task_id not in self._stopping
            ],
            max_epoch=self.max_epoch,
        )
        self.bus.publish(topology.HEARTBEAT_EXCHANGE, "", beat, transient=True)

    # -- assignments --

    def _on_assignment(self, message: Message, delivery: Delivery) -> None:
        epoch = message.envelope.epoch or 0
        if epoch < self.max_epoch:
            delivery.dead_letter(
                f"stale command: epoch {epoch} is older than {self.max_epoch}, "
                "the newest master this node has heard from"
            )
            return
        self.max_epoch = epoch
        command = message.payload
        if not isinstance(command, StartTask | StopTask):
            raise InvalidMessage(f"{message.envelope.type!r} is not an assignment")
        if command.node_id != self.node_id:
            delivery.dead_letter(f"addressed to node {command.node_id}, not {self.node_id}")
            return
        busy = self._busy.get(command.task_id)
        if isinstance(command, StartTask):
            if busy is not None:
                busy.deliveries.append(delivery)  # a redelivery while the first is in hand
            else:
                self._start(command, epoch, delivery)
        elif busy is not None:
            busy.then.append(functools.partial(self._stop, command, delivery))  # after the start
        else:
            self._stop(command, delivery)

    def _start(self, command: StartTask, epoch: int, delivery: Delivery) -> None:
        existing = self.containers.get(command.task_id)
        if existing is not None:
            self._report_container(existing)
            delivery.ack()
            return
        self._busy[command.task_id] = _Pending([delivery])
        self._docker.submit(self._start_in_pool, command, epoch)

    def _start_in_pool(self, command: StartTask, epoch: int) -> None:
        try:
            result: ContainerInfo | StartError = self.runtime.start(command, epoch)
        except StartError as exc:
            result = exc
        except Exception as exc:
            log.exception("starting %s failed", command.task_id)
            result = StartError(f"docker error: {exc}", retryable=True)
        self.bus.call_threadsafe(functools.partial(self._started, command, result))

    def _started(self, command: StartTask, result: ContainerInfo | StartError) -> None:
        pending = self._busy.pop(command.task_id, _Pending())
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
                result = dataclasses.replace(result, state="exited")
            self.containers[command.task_id] = result
            self._report_container(result)
        pending.settle()

    def _stop(self, command: StopTask, delivery: Delivery) -> None:
        self._busy[command.task_id] = _Pending([delivery])
        self._stopping.add(command.task_id)
        self._docker.submit(self._stop_in_pool, command)

    def _stop_in_pool(self, command: StopTask) -> None:
        try:
            self.runtime.stop(command.task_id, timeout=command.grace)
        except Exception:
            log.exception("stopping %s failed", command.task_id)
        self.bus.call_threadsafe(functools.partial(self._stopped, command))

    def _stopped(self, command: StopTask) -> None:
        pending = self._busy.pop(command.task_id, _Pending())
        self._stopping.discard(command.task_id)
        info = self.containers.pop(command.task_id, None)
        if info is not None and self._reported.get(command.task_id) == "running":
            self._report(command.task_id, command.job_id, "stopped", reason=command.reason)
        self._reported.pop(command.task_id, None)
        pending.settle()

    # -- status --

    def _on_runtime_event(self, event: RuntimeEvent) -> None:
        if event.task_id in self._stopping:
            return  # the stop itself reports
        info = self.containers.get(event.task_id)
        if info is not None:
            self.containers[event.task_id] = dataclasses.replace(
                info, state=event.kind, exit_code=event.exit_code
            )
        self._report(
            event.task_id,
            event.job_id,
            event.kind,
            exit_code=event.exit_code,
            container_id=event.container_id,
        )

    def _report_container(self, info: ContainerInfo) -> None:
        if info.state != "created":
            self._report(
                info.task_id,
                info.job_id,
                info.state,
                exit_code=info.exit_code,
                container_id=info.container_id,
            )

    def _report(
        self,
        task_id: str,
        job_id: str,
        state: str,
        *,
        exit_code: int | None = None,
        reason: str = "",
        container_id: str = "",
        retryable: bool = True,
    ) -> None:
        """Publish a task's state, never going backwards (a late 'running' after 'exited')."""
        last = self._reported.get(task_id)
        if last is not None and _ORDER[state] <= _ORDER[last]:
            return
        self._reported[task_id] = state
        status = TaskStatus(
            task_id=task_id,
            job_id=job_id,
            node_id=self.node_id,
            state=state,
            exit_code=exit_code,
            reason=reason,
            container_id=container_id,
            retryable=retryable,
        )
        self.bus.publish(
            topology.STATUS_EXCHANGE, topology.task_key(job_id, task_id, state), status
        )

    # -- logs --

    def _on_rpc(self, message: Message, delivery: Delivery) -> None:
        request = message.expect(LogsRequest)
        delivery.ack()
        if delivery.reply_to:
            self._log_pool.submit(
                self._stream_logs, request, delivery.reply_to, delivery.correlation_id
            )

    def _stream_logs(self, request: LogsRequest, reply_to: str, correlation_id: str | None) -> None:
        gone = threading.Event()

        def send(chunk: LogChunk) -> None:
            self.bus.call_threadsafe(
                lambda: self.bus.publish(
                    topology.DEFAULT_EXCHANGE,
                    reply_to,
                    chunk,
                    mandatory=True,
                    transient=True,
                    correlation_id=correlation_id,
                    on_returned=gone.set,
                )
            )

        try:
            stream = self.runtime.logs(request.task_id, follow=request.follow, tail=request.tail)
        except KeyError:
            send(LogChunk(task_id=request.task_id, end=True, error="no container on this node"))
            return
        try:
            for data in stream:
                for start in range(0, len(data), LOG_CHUNK_BYTES):
                    piece = data[start : start + LOG_CHUNK_BYTES]
                    send(LogChunk(task_id=request.task_id, data=piece.decode(errors="replace")))
                if gone.is_set():
                    break
        finally:
            stream.close()
        send(LogChunk(task_id=request.task_id, end=True))


def serve(settings: WorkerSettings, stop: threading.Event | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT (or `stop` is set)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    WorkerAgent(settings).run(stop)
