"""What happens to each delivery before and after a consumer's handler sees it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus import topology
from bus.delivery import Delivery
from bus.errors import CONNECTION_ERRORS
from bus.replies import is_reply_queue
from schemas.api import ApiError, Reply
from schemas.envelope import InvalidMessage
from schemas.limits import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from bus.connection import Bus

log = logging.getLogger("corral.bus")

Handler = Callable[[Delivery], None]
# basic.consume arguments, or what gives them at each (re)start of the consumer.
ConsumeArguments = dict[str, Any] | Callable[[], dict[str, Any]] | None


@dataclass(eq=False)
class Consumer:
    """A consumer registered with `Bus.consume`, restarted on every reconnect until cancelled.

    For a stream queue (x-queue-type stream), `arguments` may say where to start:
    {"x-stream-offset": "first" | "last" | "next" | <offset>}; each delivery's
    `headers["x-stream-offset"]` is its offset.
    """

    queue: topology.Queue
    handler: Handler
    prefetch: int
    arguments: ConsumeArguments = None
    stop: Callable[[Consumer], None] | None = field(default=None, repr=False)
    current_name: str = ""
    channel: Any = field(default=None, repr=False)  # while started on a connection
    tag: str = ""

    def start_arguments(self) -> dict[str, Any] | None:
        """The basic.consume arguments for starting now."""
        arguments = self.arguments() if callable(self.arguments) else self.arguments
        return dict(arguments) if arguments else None

    def cancel(self) -> None:
        """Stop this consumer now and for good: no more deliveries, no restart on reconnect.

        Its deliveries not yet settled go back to the queue (settling one later does
        nothing). Bus thread only, like every consumer's handler; idempotent.
        """
        stop, self.stop = self.stop, None
        if stop is not None:
            stop(self)


def on_message_callback(bus: Bus, consumer: Consumer, generation: int) -> Callable[..., None]:
    """pika's on_message for `consumer`: wrap the delivery, check it, run the handler."""

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        reply_to = properties.reply_to if is_reply_queue(properties.reply_to) else None
        delivery = Delivery(
            bus=bus,
            channel=channel,
            delivery_tag=method.delivery_tag,
            generation=generation,
            queue=consumer.current_name,
            exchange=method.exchange,
            routing_key=method.routing_key,
            body=body,
            redelivered=bool(method.redelivered),
            reply_to=reply_to,
            correlation_id=properties.correlation_id,
            headers=dict(properties.headers or {}),
            user_id=properties.user_id,
        )
        handle(bus, consumer, delivery)

    return on_message


def handle(bus: Bus, consumer: Consumer, delivery: Delivery) -> None:
    """Run the handler; whatever it raises (but a lost connection) is settled here."""
    if len(delivery.body) > MAX_MESSAGE_BYTES:
        refuse(
            bus,
            delivery,
            "too_large",
            f"the message is {len(delivery.body)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
        )
        return
    try:
        consumer.handler(delivery)
    except CONNECTION_ERRORS:
        raise
    except InvalidMessage as exc:
        refuse(bus, delivery, "invalid_message", f"invalid message: {exc}")
    except Exception as exc:
        log.exception("handler for %s failed", consumer.current_name)
        refuse(bus, delivery, "internal", f"handler error: {type(exc).__name__}: {exc}")


def refuse(bus: Bus, delivery: Delivery, code: str, reason: str) -> None:
    """Dead-letter a delivery; tell its sender why, if it asked for a reply."""
    if delivery.settled:
        return
    if delivery.reply_to:
        bus.reply(delivery, Reply(ok=False, error=ApiError(code=code, message=reason)))
    delivery.dead_letter(reason)
