"""Reading a stream queue synchronously, from a given offset (a master loading a snapshot).

A stream has no "end of stream" signal over AMQP 0-9-1: `read` stops when it
has `count` messages, or when nothing more arrived for `idle` seconds (the
broker sends what it has at once), or after `timeout`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bus.errors import CONNECTION_ERRORS, ConnectionLost

OFFSET_HEADER = "x-stream-offset"


@dataclass(frozen=True)
class StreamMessage:
    offset: int
    headers: dict[str, Any]
    body: bytes


def offset_of(headers: dict[str, Any] | None) -> int | None:
    """The stream offset the broker put in a delivery's headers, if any."""
    value = (headers or {}).get(OFFSET_HEADER)
    return value if isinstance(value, int) and value >= 0 else None


def close_without_rejecting(bus: Any, channel: Any) -> None:
    """Close a stream consumer's channel. pika's BlockingChannel.close (and basic_cancel)
    would reject the deliveries it holds, and RabbitMQ answers a reject on a stream by
    closing the whole connection (540 NOT_IMPLEMENTED): so close the channel underneath,
    where deliveries still arriving are dropped, and the broker forgets them with it."""
    impl = channel._impl
    impl.close()
    deadline = time.monotonic() + 5.0
    while not impl.is_closed and time.monotonic() < deadline:
        bus.process(0.05)


def read(
    bus: Any,
    queue: str,
    offset: int | str,
    *,
    count: int | None = None,
    idle: float = 0.3,
    timeout: float = 30.0,
) -> list[StreamMessage]:
    """Messages of stream `queue` from `offset` ("first", "last", "next" or a number).

    `bus` is a connected `bus.Bus`, used on its own thread. Raises ConnectionLost.
    """
    messages: list[StreamMessage] = []
    last_arrival = time.monotonic()
    deadline = last_arrival + timeout

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal last_arrival
        last_arrival = time.monotonic()
        at = offset_of(properties.headers)
        if at is not None and (count is None or len(messages) < count):
            messages.append(StreamMessage(at, dict(properties.headers or {}), body))
        channel.basic_ack(method.delivery_tag)

    try:
        channel = bus.channel()
        channel.basic_qos(prefetch_count=min(count or 100, 100))
        channel.basic_consume(queue, on_message, arguments={OFFSET_HEADER: offset})
        while (count is None or len(messages) < count) and time.monotonic() < deadline:
            if time.monotonic() - last_arrival >= idle:
                break
            bus.process(0.05)
        close_without_rejecting(bus, channel)
    except CONNECTION_ERRORS as exc:
        raise ConnectionLost(f"reading {queue}: {exc}") from None
    return messages
