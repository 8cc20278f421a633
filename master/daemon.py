"""`corral master`: the I/O around the controller.

One thread owns the bus. Every input — an API request (answered by
`master.api.Api`), a heartbeat, a task status, a timer tick, an assignment the
broker returned as unroutable — is handed to the `Controller` on that thread
(the single writer), then the commands and notifications it produced are
published: assignments to `corral.assign` (mandatory, confirmed, with this
master's epoch), status events to `corral.status`.

This issue runs one master. Its epoch is its start time in milliseconds, so a
restarted master always outranks the previous one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable

from bus import Bus, Delivery, topology
from master.api import Api
from master.controller import Command, Controller, StartCommand, StopCommand
from master.settings import MasterSettings
from schemas.api import ApiError, Reply
from schemas.envelope import Message
from schemas.messages import (
    Heartbeat,
    JobEvent,
    NodeEvent,
    Payload,
    StartTask,
    StopTask,
    TaskStatus,
)

log = logging.getLogger("corral.master")


class MasterDaemon:
    def __init__(self, settings: MasterSettings, *, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self.epoch = int(clock() * 1000)
        self.controller = Controller(settings, self.epoch)
        self.api = Api(self.controller)
        self.bus = Bus(settings.amqp_url, name=f"master:{settings.name}")
        self.bus.consume_messages(topology.API_QUEUE_DECL, self._on_api, prefetch=64)
        self.bus.consume_messages(topology.heartbeat_queue(), self._on_heartbeat, prefetch=1000)
        self.bus.consume_messages(topology.MASTER_STATUS_QUEUE_DECL, self._on_status, prefetch=500)
        self.bus.on_connected(self._on_connected)
        self.bus.every(settings.tick, self._on_tick)

    def run(self, stop: threading.Event) -> None:
        log.info("master %s starting with epoch %d", self.settings.name, self.epoch)
        self.bus.run(stop)
        log.info("master %s stopped", self.settings.name)

    # -- inputs --

    def _on_connected(self, reconnected: bool) -> None:
        self.controller.reconnected(self.clock())

    def _on_tick(self) -> None:
        self.controller.tick(self.clock())
        self._publish_outputs()

    def _on_heartbeat(self, message: Message, delivery: Delivery) -> None:
        self.controller.heartbeat(message.expect(Heartbeat), self.clock())
        self._publish_outputs()
        delivery.ack()

    def _on_status(self, message: Message, delivery: Delivery) -> None:
        self.controller.task_status(message.expect(TaskStatus), self.clock())
        self._publish_outputs()
        delivery.ack()

    def _on_api(self, message: Message, delivery: Delivery) -> None:
        try:
            reply = self.api.answer(
                message.payload,
                message_id=message.envelope.message_id,
                now=self.clock(),
                token=uuid.uuid4().hex[:6],
            )
        except Exception as exc:
            log.exception("request %s failed", message.envelope.type)
            reply = Reply(ok=False, error=ApiError(code="internal", message=f"master error: {exc}"))
        self._publish_outputs()
        self.bus.reply(delivery, reply)
        delivery.ack()

    # -- outputs --

    def _publish_outputs(self) -> None:
        commands, notifications = self.controller.drain()
        for command in commands:
            self._send(command)
        for note in notifications:
            if isinstance(note, JobEvent):
                key = topology.job_key(note.job_id, note.state)
            elif isinstance(note, NodeEvent):
                key = topology.node_key(note.node_id, note.state)
            else:
                continue
            self.bus.publish(topology.STATUS_EXCHANGE, key, note, epoch=self.epoch)

    def _send(self, command: Command) -> None:
        state = self.controller.state
        if isinstance(command, StartCommand):
            task = state.tasks.get(command.task_id)
            if task is None:  # forgotten within the same input: nothing to start
                return
            payload: Payload = StartTask(
                task_id=task.task_id,
                job_id=task.job_id,
                slot=task.slot,
                node_id=command.node_id,
                spec=state.jobs[task.job_id].spec,
            )
            on_returned = self._unroutable(task.task_id)
        elif isinstance(command, StopCommand):
            payload = StopTask(
                task_id=command.task_id,
                job_id=command.job_id,
                node_id=command.node_id,
                reason=command.reason,
                grace=command.grace,
            )
            on_returned = None
        self.bus.publish(
            topology.ASSIGN_EXCHANGE,
            command.node_id,
            payload,
            epoch=self.epoch,
            mandatory=True,
            on_returned=on_returned,
        )

    def _unroutable(self, task_id: str) -> Callable[[], None]:
        def lost() -> None:
            self.controller.assignment_unroutable(task_id, self.clock())
            self._publish_outputs()

        return lost


def serve(settings: MasterSettings, stop: threading.Event | None = None) -> None:
    """Run a master until SIGTERM/SIGINT (or `stop` is set)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    MasterDaemon(settings).run(stop)
