"""What a worker agent takes from the master besides assignments (a mixin of
`worker.agent.WorkerAgent`): leader announcements and network view changes on
corral.control, log requests and network view snapshots on its rpc queue.

Only the master's broker user (and the worker's own) is believed; anything else
is ignored (announcements) or dead-lettered (requests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bus import Bus, Delivery
from schemas.envelope import Message
from schemas.messages import LeaderAnnounced, LogsRequest, NetUpdate
from worker.commands import trusted_sender
from worker.logs import LogStreamer
from worker.network import ClusterNetwork
from worker.settings import WorkerSettings

log = logging.getLogger("corral.worker")


class Control:
    """The control inputs of a worker agent; `WorkerAgent` provides what is declared here."""

    settings: WorkerSettings
    bus: Bus
    logs: LogStreamer
    network: ClusterNetwork | None
    max_epoch: int
    # Defined by the agent: heartbeat at the interval the leader asks for.
    _pace: Callable[[float | None], None]

    def _on_control(self, message: Message, delivery: Delivery) -> None:
        """A message on corral.control: a leader's announcement or a network view change;
        other valid types are ignored (invalid ones never get here: the bus
        dead-letters them)."""
        delivery.ack()
        if self._refusal(delivery) is not None:
            return  # not from the master: nothing to believe
        payload = message.payload
        if isinstance(payload, LeaderAnnounced) and payload.epoch >= self.max_epoch:
            if payload.epoch > self.max_epoch:
                log.info("master %s leads with epoch %d", payload.master, payload.epoch)
                self.max_epoch = payload.epoch
            self._pace(payload.heartbeat_interval)
        elif isinstance(payload, NetUpdate):
            self._on_net_update(payload, message.envelope.epoch)

    def _on_net_update(self, update: NetUpdate, epoch: int | None) -> None:
        if self.network is None:
            return
        if epoch is not None and epoch < self.max_epoch:
            log.debug("ignoring a network view of epoch %d (newest %d)", epoch, self.max_epoch)
            return  # a deposed master's, sent before it knew
        self.network.on_update(update)

    def _refusal(self, delivery: Delivery) -> str | None:
        return trusted_sender(delivery.user_id, (self.settings.master_user, self.bus.user))

    def _on_rpc(self, message: Message, delivery: Delivery) -> None:
        """A log request, or a snapshot of the network view; anything else is
        dead-lettered by the bus."""
        if isinstance(message.payload, NetUpdate):
            delivery.ack()
            if self._refusal(delivery) is None:
                self._on_net_update(message.payload, message.envelope.epoch)
            return
        request = message.expect(LogsRequest)
        refusal = self._refusal(delivery)
        if refusal is not None:
            delivery.dead_letter(refusal)  # the master checks who may read which logs
            return
        delivery.ack()
        self.logs.handle(request, delivery.reply_to, delivery.correlation_id)
