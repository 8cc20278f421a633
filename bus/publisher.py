"""Windowed publisher confirms over one channel, with an outbox that survives reconnects.

pika's BlockingChannel waits for each confirm before the next publish (about
1.5k msg/s here). This publisher keeps up to `window` messages in flight on the
channel's asynchronous core and settles them as the broker's (possibly
multiple) acks arrive. A message leaves the outbox only when the broker has
confirmed it: on a nack or a lost connection it is sent again on the next
channel, so a publish made while the broker is down is delivered once it is
back (at least once). `transient` messages (heartbeats, replies) are
best-effort: dropped while disconnected and never re-sent after a lost
connection. After a channel the broker closed on a live connection they are
sent again: the client waiting for a reply is most likely still there.

A message in flight when the broker closed the channel (not the connection)
may be what the broker objected to; after MAX_CHANNEL_FAILURES such closes it
is dropped with an error, so one poisonous message cannot make the bus
reconnect forever.

Not thread-safe: it belongs to the bus thread.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
from pika.spec import Basic

log = logging.getLogger("corral.bus")

MAX_CHANNEL_FAILURES = 3


@dataclass
class Outgoing:
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool = False
    transient: bool = False
    on_returned: Callable[[], None] | None = None
    channel_failures: int = 0


class ConfirmingPublisher:
    def __init__(self, window: int = 256) -> None:
        self.window = window
        self._backlog: deque[Outgoing] = deque()
        self._in_flight: dict[int, Outgoing] = {}
        self._channel: Any = None  # pika's asynchronous Channel under a BlockingChannel
        self._seq = 0
        # The broker's last sign of progress: its last confirm, or when the window was
        # last empty (monotonic).
        self._progress_at = time.monotonic()

    @property
    def pending(self) -> int:
        """Messages not yet confirmed by the broker."""
        return len(self._backlog) + len(self._in_flight)

    def stalled_for(self) -> float:
        """How long messages have been in flight with no confirm from the broker at all
        (0: none in flight). A busy broker confirms slowly but steadily; a stalled
        channel confirms nothing."""
        if not self._in_flight:
            return 0.0
        return time.monotonic() - self._progress_at

    def attach(self, channel: Any) -> None:
        """Start publishing on `channel` (a pika Channel already in confirm mode)."""
        self._channel = channel
        self._seq = 0
        channel.add_on_return_callback(self._on_return)
        self._pump()

    def detach(
        self, *, channel_error: bool = False, keep_all: bool = False, refused: bool = False
    ) -> None:
        """The channel is gone: everything in flight goes back to the front of the outbox.

        `channel_error`: the broker closed the channel on a live connection; what was
        in flight counts a failure (see the module docstring). `refused`: it said 403
        ACCESS_REFUSED (a publish this user may not make): a message alone in flight was
        the one refused, and is dropped at once. `keep_all`: we closed it ourselves;
        nothing is dropped (`take_all` may hand it to another connection).
        """
        if keep_all:
            self._channel = None
            self._backlog = deque([*self.take_all()])
            return
        self._channel = None
        unconfirmed = []
        for _, out in sorted(self._in_flight.items()):
            if out.transient and not channel_error:
                continue
            out.channel_failures += channel_error
            if refused and len(self._in_flight) == 1:
                log.error(
                    "dropping a message to %s/%s: the broker refused it to this user",
                    out.exchange,
                    out.routing_key[:100],
                )
                continue
            if out.channel_failures >= MAX_CHANNEL_FAILURES:
                log.error(
                    "dropping a message to %s/%s: the broker closed the channel %d times "
                    "while it was in flight",
                    out.exchange,
                    out.routing_key[:100],
                    out.channel_failures,
                )
                continue
            unconfirmed.append(out)
        self._in_flight.clear()
        kept = (out for out in self._backlog if channel_error or not out.transient)
        self._backlog = deque([*unconfirmed, *kept])

    def take_all(self) -> list[Outgoing]:
        """Everything not yet confirmed, in order, leaving the outbox empty."""
        taken = [out for _, out in sorted(self._in_flight.items())] + list(self._backlog)
        self._in_flight.clear()
        self._backlog.clear()
        return taken

    def requeue(self, messages: list[Outgoing]) -> None:
        """Send `messages` first, once there is a channel (another connection's leftovers)."""
        self._backlog.extendleft(reversed(messages))
        self._pump()

    def publish(self, out: Outgoing) -> None:
        if self._channel is None and out.transient:
            return
        self._backlog.append(out)
        self._pump()

    def on_confirm(self, frame: Any) -> None:
        """pika's ack/nack callback. Acks may cover many messages (`multiple`)."""
        method = frame.method
        if method.multiple:
            tags = [tag for tag in self._in_flight if tag <= method.delivery_tag]
        else:
            tags = [method.delivery_tag]
        settled = [self._in_flight.pop(tag) for tag in tags if tag in self._in_flight]
        if settled:
            self._progress_at = time.monotonic()
        if isinstance(method, Basic.Nack):
            log.warning("broker nacked %d message(s); sending them again", len(settled))
            self._backlog.extendleft(reversed([out for out in settled if not out.transient]))
        self._pump()

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        for out in self._in_flight.values():
            if out.properties.message_id == properties.message_id:
                log.debug("unroutable: %s %s", method.exchange, method.routing_key)
                if out.on_returned is not None:
                    try:
                        out.on_returned()
                    except Exception:  # a caller's bug must not look like a lost connection
                        log.exception("on_returned callback for %s failed", method.routing_key)
                return

    def _pump(self) -> None:
        while self._channel is not None and self._backlog and len(self._in_flight) < self.window:
            out = self._backlog[0]
            self._channel.basic_publish(
                out.exchange,
                out.routing_key,
                out.body,
                properties=out.properties,
                mandatory=out.mandatory,
            )
            self._backlog.popleft()  # only now: a publish that raised stays in the outbox
            if not self._in_flight:
                self._progress_at = time.monotonic()
            self._seq += 1
            self._in_flight[self._seq] = out
