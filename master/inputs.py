"""What a master term makes of its inputs: heartbeats, task statuses, closed worker
connections, API requests and log requests (a mixin of `master.term.Term`); and the
network view it sends the workers (`master.network`).

Each input is first checked for its sender (`master.senders`): a report about a node
must come from that node's worker user, an API request names its caller and role.
An active term then hands it to the controller and publishes what follows once it
is journaled (`Term._after`); a standby only observes heartbeats.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable

from bus import Bus, Delivery, topology
from bus.replies import usable_reply_queue
from master.access import Caller
from master.api import Api
from master.controller import Controller
from master.errors import ApiProblem
from master.network import NetView
from master.senders import caller_of, node_sender_refusal
from schemas.api import ApiError, GetLogs, Reply
from schemas.envelope import Message
from schemas.messages import Heartbeat, LogsRequest, TaskStatus

log = logging.getLogger("corral.master")


class Inputs:
    """The input handlers of a term; `Term` provides what is declared here."""

    role: str
    controller: Controller
    bus: Bus
    api: Api
    clock: Callable[[], float]
    over: threading.Event
    net: NetView | None  # while active
    # Defined by Term (declared only, so as not to shadow it): publish what the
    # controller produced, then `actions`, once journaled.
    _after: Callable[..., None]

    def _on_beats(self, beats: list[Heartbeat]) -> None:
        """The newest heartbeat of each node heard since the last call (`master.intake`
        read them, checked their senders and noted when each arrived)."""
        if not beats:
            return
        if self.role != "active":
            for beat in beats:
                self.controller.observe(beat, self.clock())
            return
        snapshots: list[Callable[[], None]] = []
        for beat in beats:
            now = self.clock()
            self.controller.heartbeat(beat, now)
            net, network = self.net, beat.network
            if net is not None and network and net.wants_snapshot(beat.node_id, network, now):
                # Once journaled: a subnet it names must survive a failover.
                snapshots.append(functools.partial(self._send_net_snapshot, beat.node_id))
        self._after(*snapshots)  # one journal batch for the whole lot, not one per beat

    def _on_status(self, message: Message, delivery: Delivery) -> None:
        if self.role != "active":
            return  # consumed only while active; the broker takes it back with the channel
        status = message.expect(TaskStatus)
        refusal = node_sender_refusal(delivery.user_id, status.node_id, self.bus.user)
        if refusal is not None:
            delivery.dead_letter(refusal)
            return
        self.controller.task_status(status, self.clock())
        self._after(delivery.ack)

    def _on_connection_closed(self, node_id: str) -> None:
        if self.role == "active" and not self.over.is_set():
            self.controller.connection_closed(node_id, self.clock())
            self._after()

    def _on_api(self, message: Message, delivery: Delivery) -> None:
        if self.role != "active":
            return
        caller = caller_of(delivery.user_id, delivery.exchange, delivery.routing_key, self.bus.user)
        if isinstance(caller, str):
            self.bus.reply(
                delivery, Reply(ok=False, error=ApiError(code="forbidden", message=caller))
            )
            delivery.ack()
            return
        if isinstance(message.payload, GetLogs):
            self._forward_logs(message.payload, caller, delivery)
            return
        try:
            reply = self.api.answer(
                message.payload,
                message_id=message.envelope.message_id,
                now=self.clock(),
                token=uuid.uuid4().hex[:6],
                caller=caller,
            )
        except Exception as exc:
            log.exception("request %s failed", message.envelope.type)
            reply = Reply(ok=False, error=ApiError(code="internal", message=f"master error: {exc}"))
        self._after(lambda: self.bus.reply(delivery, reply), delivery.ack)

    def _forward_logs(self, request: GetLogs, caller: Caller, delivery: Delivery) -> None:
        """Ask the task's worker to stream its logs to the caller's private queue, if the
        caller may read them; else answer why not, there."""
        delivery.ack()  # nothing to journal, nothing to redo: a client asks again
        if delivery.reply_to is None:
            return  # nowhere to stream to, nobody to tell
        if not usable_reply_queue(delivery.reply_to):
            why = (
                "logs are streamed to a private queue of yours (server-named, bound to "
                f"{topology.REPLIES_EXCHANGE} under its own name), not to direct reply-to"
            )
            self.bus.reply(delivery, Reply(ok=False, error=ApiError(code="invalid", message=why)))
            return
        try:
            node_id, task_id = self.api.logs_target(request, caller)
        except ApiProblem as problem:
            error = ApiError(code=problem.code, message=str(problem), field=problem.field)
            self.bus.reply(delivery, Reply(ok=False, error=error))
            return

        def not_connected() -> None:
            why = (
                f"worker {node_id} (where task {task_id} runs) is not connected: nothing "
                "takes its log requests; is `corral worker` running there?"
            )
            self.bus.reply(
                delivery, Reply(ok=False, error=ApiError(code="unavailable", message=why))
            )

        forwarded = LogsRequest(task_id=task_id, follow=request.follow, tail=request.tail)
        self.bus.publish(
            topology.RPC_EXCHANGE,
            node_id,
            forwarded,
            reply_to=delivery.reply_to,
            correlation_id=delivery.correlation_id,
            mandatory=True,
            transient=True,
            on_returned=not_connected,
        )

    # -- the network view --

    def _net_changes_due(self) -> None:
        """Every NET_CHANGES_EVERY s: send what changed in the network view, once what
        the state holds is journaled (a subnet it names must survive a failover)."""
        if self.role == "active" and self.net is not None:
            self._after(self._send_net_changes)

    def _send_net_changes(self) -> None:
        """Every worker gets what changed in the network view since the last call."""
        if self.role != "active" or self.net is None:
            return
        epoch = self.controller.epoch  # a worker ignores a deposed master's view
        for update in self.net.changes(self.controller.state, self.clock()):
            self.bus.publish(topology.CONTROL_EXCHANGE, "", update, transient=True, epoch=epoch)

    def _send_net_snapshot(self, node_id: str) -> None:
        """One worker gets the whole view (it missed an update, or holds another term's)."""
        if self.role != "active" or self.net is None:
            return
        self._send_net_changes()  # first, so that the snapshot is the newest view
        epoch = self.controller.epoch
        for part in self.net.snapshot():
            self.bus.publish(topology.RPC_EXCHANGE, node_id, part, transient=True, epoch=epoch)
