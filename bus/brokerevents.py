"""Worker connections closing, as the broker tells it at once, handed to their owner's thread.

::

    broker ──connection.created/closed──▶ [amq.rabbitmq.event topic, on the events vhost]
        ──▶ (server-named, exclusive) ──▶ ConnectionWatch thread ──post──▶ owner's bus thread

The rabbitmq_event_exchange plugin publishes the events of every vhost on one
exchange in one vhost ("/" by default), which is not the vhost Corral runs in. A
`Bus` is one connection owned by one thread, so the watch runs a second `Bus`, on
the events vhost, on a thread of its own, and hands each node id to its owner
through `post` (the owner bus's `call_threadsafe`). `bus.connevents` says which
events count.

Without the plugin (no such exchange) or without access to the events vhost, the
watch logs one warning and stops: nothing is retried, nothing is raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika.exceptions

from bus import topology
from bus.background import BusThread
from bus.connection import Bus
from bus.connevents import WorkerConnections, parse_event
from bus.consuming import Consumer
from bus.delivery import Delivery
from bus.errors import NOT_FOUND, AccessRefused, BusError
from bus.params import connection_parameters, split_urls
from bus.tls import Tls

log = logging.getLogger("corral.bus")

PREFETCH = 500
CONSEQUENCE = "agent crashes will be treated as host losses after dead_after"


def events_url(url: str, vhost: str = topology.EVENTS_VHOST) -> str:
    """`url` (one AMQP URL or several) with `vhost` in place of each URL's own."""
    path = "/" + quote(vhost, safe="")
    return ",".join(urlunsplit(urlsplit(one)._replace(path=path)) for one in split_urls(url))


class ConnectionWatch(BusThread):
    """Calls `on_closed(node_id)` through `post` each time a worker connection of `url`'s
    vhost closes, from `start()` until `stop()`.

    `url` is the owner's broker URL (one or several); the events are read from the
    same nodes on `events_vhost`. `post(fn)` must run `fn` on the owner's thread
    (`Bus.call_threadsafe`); `on_closed` is never called after `stop()` returned,
    if `stop()` runs on that thread. Raises InvalidUrl at once for a malformed `url`.
    """

    def __init__(
        self,
        url: str,
        on_closed: Callable[[str], None],
        post: Callable[[Callable[[], None]], None],
        *,
        name: str = "corral",
        events_vhost: str = topology.EVENTS_VHOST,
        heartbeat: int = 10,
        tls: Tls | None = None,
    ) -> None:
        vhosts = {
            p.virtual_host for p in connection_parameters(url, name=name, heartbeat=0, tls=tls)
        }
        self.name = name
        self.events_vhost = events_vhost
        self._on_closed = on_closed
        self._post = post
        self._workers = WorkerConnections(vhosts)
        super().__init__(
            Bus(
                events_url(url, events_vhost),
                name=f"{name} (events)",
                heartbeat=heartbeat,
                declare_topology=False,
                tls=tls,
            )
        )
        self._consumer: Consumer | None = None
        self.subscribed = threading.Event()  # set while events are being read (tests)

    # -- the watch's thread --

    def _serve(self) -> None:
        bus = self._bus
        bus.on_connected(self._subscribe)
        bus.on_lost(self._unsubscribe)
        try:
            bus.connect(self._stopping, attempts=1)
        except AccessRefused as exc:
            self._give_up(f"the broker refused access to vhost {self.events_vhost!r} ({exc})")
            bus.close()
            return
        except BusError:
            pass  # unreachable for now: run() goes on trying, as every bus does
        bus.run(self._stopping)

    def _subscribe(self, _reconnected: bool) -> None:
        """On each (re)connect: check that the exchange exists, then read a fresh queue."""
        self._unsubscribe()
        try:
            if not self._exchange_exists():
                self._give_up(
                    "rabbitmq_event_exchange is not enabled (no exchange "
                    f"{topology.EVENT_EXCHANGE} on vhost {self.events_vhost!r})"
                )
                return
            self._consumer = self._bus.consume(
                topology.broker_events_queue(), self._on_event, prefetch=PREFETCH
            )
        except pika.exceptions.ChannelClosedByBroker as exc:
            # A refusal (permissions on the exchange, a policy…) says the same next time.
            self._give_up(f"the broker refused the subscription to its events ({exc})")
            return
        self.subscribed.set()

    def _unsubscribe(self) -> None:
        # Before any reconnect: the bus must not restart this consumer on its own, ahead of
        # the check that the exchange still exists.
        self.subscribed.clear()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.cancel()

    def _exchange_exists(self) -> bool:
        channel: Any = self._bus.channel()
        try:
            channel.exchange_declare(topology.EVENT_EXCHANGE, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == NOT_FOUND:
                return False
            raise
        channel.close()
        return True

    def _give_up(self, why: str) -> None:
        log.warning("%s: %s: %s", self.name, why, CONSEQUENCE)
        self._stopping.set()

    def _on_event(self, delivery: Delivery) -> None:
        delivery.ack()
        event = parse_event(delivery.routing_key, delivery.headers)
        node_id = self._workers.feed(event) if event is not None else None
        if node_id is not None:
            self._post(lambda: self._deliver(node_id))

    # -- the owner's thread --

    def _deliver(self, node_id: str) -> None:
        if not self._stopped:
            self._on_closed(node_id)
