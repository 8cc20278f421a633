"""Declaring queues and their bindings, tolerant of queues an older Corral declared."""

from __future__ import annotations

import logging
from typing import Any

import pika.exceptions

from bus import topology
from bus.errors import PRECONDITION_FAILED

log = logging.getLogger("corral.bus")


def declare_queue(connection: Any, channel: Any, q: topology.Queue) -> tuple[Any, str]:
    """Declare `q` and its bindings; returns the channel to go on with and the queue's name.

    A named durable queue that already exists with other arguments (an older
    Corral declared it) is used as it is, with a warning: refusing would stop
    the daemon, and the difference is a limit, not a different kind of queue.
    The broker closes the channel on such a refusal, so a new one is returned.
    Raises pika's errors for anything else.
    """
    try:
        result = channel.queue_declare(
            q.name,
            durable=q.durable,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=q.arguments or None,
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED or not q.name or not q.durable:
            raise
        log.warning(
            "queue %s exists with other arguments than this version declares (%s); using it "
            "as it is. Delete the queue (or apply a policy) to get %s",
            q.name,
            exc.reply_text,
            q.arguments,
        )
        channel = connection.channel()
        result = channel.queue_declare(q.name, passive=True)
    name: str = result.method.queue
    for exchange, key in q.bindings:
        channel.queue_bind(name, exchange, routing_key=name if key == topology.OWN_NAME else key)
    return channel, name
