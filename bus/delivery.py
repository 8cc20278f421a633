"""A message taken from a queue, and how it is settled."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bus import topology
from schemas.limits import DEAD_LETTER_BODY_BYTES

if TYPE_CHECKING:
    from bus.connection import Bus

log = logging.getLogger("corral.bus")

REASON_CHARS = 2000
# Dead letters waiting for the broker's confirm beyond which new ones are only logged: a
# flood of junk while corral.dead confirms slowly must not fill the outbox.
OUTBOX_LIMIT = 2000
# A flood of junk must not flood the log: at most this many dead-letter warnings a
# second per process (the rest are logged at debug; corral.dead keeps them all).
WARNINGS_PER_SECOND = 10


class _LogGate:
    """Lets through at most `rate` warnings per second, then one summary of the rest."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._second = 0
        self._count = 0
        self._dropped = 0

    def allow(self, now: float) -> bool:
        second = int(now)
        if second != self._second:
            if self._dropped:
                log.warning("… and %d more messages dead-lettered (logged at debug)", self._dropped)
            self._second, self._count, self._dropped = second, 0, 0
        self._count += 1
        if self._count > self.rate:
            self._dropped += 1
            return False
        return True


_LOG_GATE = _LogGate(WARNINGS_PER_SECOND)


@dataclass
class Delivery:
    """A message taken from a queue. Exactly one of ack / reject / dead_letter settles it.

    Settling must happen on the bus thread; from another thread use the
    `*_threadsafe` variants. Settling a delivery from before a reconnect, or from a
    consumer cancelled since, is a no-op: the broker has already put it back in the
    queue.

    `reply_to` is None unless the sender named a queue that may receive replies
    (`bus.replies.is_reply_queue`): handlers never answer anywhere else.
    """

    bus: Bus
    channel: Any
    delivery_tag: int
    generation: int
    queue: str
    exchange: str
    routing_key: str
    body: bytes
    redelivered: bool
    reply_to: str | None
    correlation_id: str | None
    headers: dict[str, Any]
    # The sender's broker user: RabbitMQ refuses a user_id that is not the connection's
    # own, and every Corral process sets it, so this is who sent the message (None: a
    # sender that did not say; no check accepts it).
    user_id: str | None = None
    settled: bool = False

    def ack(self) -> None:
        self._settle(lambda: self._frames.basic_ack(self.delivery_tag))

    def ack_through(self) -> None:
        """Ack this delivery and every earlier one on its channel not settled yet (one
        frame: `multiple`), for a consumer that acks in batches. The earlier deliveries'
        objects are not told: settle none of them afterwards."""
        self._settle(lambda: self._frames.basic_ack(self.delivery_tag, multiple=True))

    def reject(self, requeue: bool = False) -> None:
        self._settle(lambda: self._frames.basic_reject(self.delivery_tag, requeue=requeue))

    @property
    def _frames(self) -> Any:
        """Where to send the ack: the channel's asynchronous core, which queues the frame
        for the bus's next I/O instead of flushing the socket for each one (a blocking
        channel's basic_ack does: a quarter of a busy master's time went there)."""
        return getattr(self.channel, "_impl", self.channel)

    def dead_letter(self, reason: str) -> None:
        """Move the message to corral.dead with `reason` in a header, then ack it.

        At most DEAD_LETTER_BODY_BYTES of the body are kept (the header
        `x-corral-truncated` then gives the original size); the sender's own
        headers are not copied. While more than OUTBOX_LIMIT messages await the
        broker's confirms, the message is acked and logged, not copied.
        """
        if self.settled:
            return
        source = self.queue or self.exchange
        if _LOG_GATE.allow(time.monotonic()):
            log.warning("dead-lettering a message from %s: %s", source, reason[:300])
        else:
            log.debug("dead-lettering a message from %s: %s", source, reason[:300])
        headers: dict[str, Any] = {
            topology.REASON_HEADER: reason[:REASON_CHARS],
            topology.SOURCE_QUEUE_HEADER: self.queue,
            topology.SOURCE_EXCHANGE_HEADER: self.exchange,
            topology.SOURCE_KEY_HEADER: self.routing_key[:255],
        }
        if self.bus.unconfirmed > OUTBOX_LIMIT:
            log.error("not keeping a copy in corral.dead: %d messages await confirms", OUTBOX_LIMIT)
            self.ack()
            return
        body = self.body
        if len(body) > DEAD_LETTER_BODY_BYTES:
            headers[topology.TRUNCATED_HEADER] = len(body)
            body = body[:DEAD_LETTER_BODY_BYTES]
        self.bus.publish_raw(
            topology.DEAD_LETTER_EXCHANGE, self.routing_key[:255], body, headers=headers
        )
        self.ack()

    def ack_threadsafe(self) -> None:
        self.bus.call_threadsafe(self.ack)

    def _settle(self, action: Callable[[], None]) -> None:
        if self.settled:
            return
        self.settled = True
        if self.generation == self.bus.generation and self.channel.is_open:
            action()
