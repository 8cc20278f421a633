"""A bus's consumers: which it has, starting one on a connection, stopping one for good.

The bus starts every registered consumer again after each reconnect; a
cancelled one leaves the registry and is never started again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bus import topology
from bus.consuming import Consumer
from bus.declare import declare_queue
from bus.errors import CONNECTION_ERRORS
from bus.params import describe
from bus.streams import close_without_rejecting

if TYPE_CHECKING:
    from bus.connection import Bus

log = logging.getLogger("corral.bus")


class Consumers:
    """The consumers registered with one bus, in the order they were added."""

    def __init__(self) -> None:
        self._all: list[Consumer] = []

    def __iter__(self) -> Iterator[Consumer]:
        return iter(list(self._all))  # a copy: starting one may cancel another

    def add(self, consumer: Consumer) -> None:
        self._all.append(consumer)

    def forget(self, consumer: Consumer) -> None:
        if consumer in self._all:
            self._all.remove(consumer)

    def queue_name(self, queue_decl: topology.Queue) -> str:
        """The current name of a consumed queue (server-named queues change on reconnect)."""
        for consumer in self._all:
            if consumer.queue is queue_decl:
                return consumer.current_name
        return queue_decl.name


def start(
    connection: Any,
    consumer: Consumer,
    on_message: Callable[..., None],
    watch: Callable[[Any, str], None],
) -> None:
    """Declare the consumer's queue on a new channel of `connection` and consume it.
    Raises pika's errors."""
    channel = connection.channel()
    channel, consumer.current_name = declare_queue(connection, channel, consumer.queue)
    channel.basic_qos(prefetch_count=consumer.prefetch)  # on the channel declare returned
    watch(channel, f"{consumer.queue.name or 'private'} queue's")
    consumer.channel = channel
    consumer.tag = channel.basic_consume(
        consumer.current_name, on_message, arguments=consumer.start_arguments()
    )


def stop(bus: Bus, consumer: Consumer) -> None:
    """Stop a started consumer now: its deliveries not yet settled go back to the queue.

    Nothing to do if its connection is gone. Never raises for a connection going:
    the bus notices that itself.
    """
    channel, consumer.channel = consumer.channel, None
    if channel is None or not bus.connected or not channel.is_open:
        return
    try:
        if consumer.queue.arguments.get("x-queue-type") == "stream":
            # A stream takes no rejects (pika's cancel sends them): close underneath.
            close_without_rejecting(bus, channel)
            return
        channel.basic_cancel(consumer.tag)  # unhandled deliveries go back to the queue
        channel.close()  # and so do the handled ones not yet settled
    except CONNECTION_ERRORS as exc:
        # The connection is going: run() notices; the consumer will not come back.
        log.debug("cancelling a consumer of %s: %s", consumer.current_name, describe(exc))
