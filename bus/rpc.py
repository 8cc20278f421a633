"""The client side of the bus: requests with a reply, and asking the broker about a queue."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from bus import topology
from bus.errors import (
    CONNECTION_ERRORS,
    NOT_FOUND,
    AccessRefused,
    ConnectionLost,
    NoRoute,
    RequestTimeout,
    check_size,
)
from schemas.envelope import Message, decode, encode
from schemas.messages import Payload

if TYPE_CHECKING:
    from bus.connection import Bus


class Requester:
    """Request/reply over direct reply-to, on one channel of the bus's connection."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._channel: Any = None
        self._replies: dict[str, bytes] = {}
        self._returned: set[str] = set()
        self._pending: set[str] = set()  # replies and returns for anything else are dropped

    def reset(self) -> None:
        """The connection is gone: so is the reply channel."""
        self._channel = None

    def request(
        self, payload: Payload, *, exchange: str, routing_key: str, timeout: float
    ) -> Message:
        """See `Bus.request`."""
        body = encode(payload, sender=self.bus.name)
        check_size(body, f"the {payload.TYPE} request")
        correlation_id = uuid.uuid4().hex
        self._pending.add(correlation_id)
        try:
            channel = self._reply_channel()
            channel.basic_publish(
                exchange,
                routing_key,
                body,
                mandatory=True,
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    reply_to=topology.DIRECT_REPLY_TO,
                    correlation_id=correlation_id,
                    user_id=self.bus.user,
                    # Nobody waits for the answer after that: don't let a late master act on it.
                    expiration=str(max(1, int(timeout * 1000))),
                ),
            )
            deadline = time.monotonic() + timeout
            while correlation_id not in self._replies:
                if channel.is_closed:  # the broker refused the publish (403)
                    self._channel = None
                    why = getattr(channel, "_closing_reason", None) or "the channel was closed"
                    raise AccessRefused(f"the broker refused {routing_key!r} on {exchange}: {why}")
                if correlation_id in self._returned:
                    self._returned.discard(correlation_id)
                    raise NoRoute(f"nothing on this vhost takes {routing_key!r} messages")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout(f"no reply to {payload.TYPE} within {timeout:g} s")
                self.bus.process(min(remaining, 0.1))
        except CONNECTION_ERRORS as exc:
            self.bus.lost(exc)
            raise ConnectionLost(str(exc) or type(exc).__name__) from None
        finally:
            self._pending.discard(correlation_id)
            self._returned.discard(correlation_id)
        return decode(self._replies.pop(correlation_id))

    def consumer_count(self, queue: str) -> int | None:
        """See `Bus.consumer_count`."""
        counts = self.queue_counts(queue)
        return None if counts is None else counts[1]

    def queue_counts(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of `queue`, or None if it does not exist."""
        try:
            channel = self.bus.channel()
            try:
                result = channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == NOT_FOUND:
                    return None
                raise
            channel.close()
        except CONNECTION_ERRORS as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from None
        messages: int = result.method.message_count
        consumers: int = result.method.consumer_count
        return messages, consumers

    def _reply_channel(self) -> Any:
        if self._channel is None or not self.bus.connected:
            channel = self.bus.channel()

            def on_reply(_ch: Any, _method: Any, properties: Any, body: bytes) -> None:
                if properties.correlation_id in self._pending:
                    self._replies[properties.correlation_id] = body

            def on_return(_ch: Any, _method: Any, properties: Any, _body: bytes) -> None:
                if properties.correlation_id in self._pending:
                    self._returned.add(properties.correlation_id)

            channel.add_on_return_callback(on_return)
            channel.basic_consume(topology.DIRECT_REPLY_TO, on_reply, auto_ack=True)
            self._channel = channel
        return self._channel
