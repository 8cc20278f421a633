"""One AMQP connection owned by one thread: declare, consume, publish, timers, reconnect.

A daemon builds a `Bus`, registers its topology and consumers, then calls
`run(stop)`, which blocks on the calling thread until `stop` is set. Handlers,
timers and `call_threadsafe` callbacks all run on that thread, one at a time,
so the daemon's state has a single writer and needs no locks.

When the connection drops, or the broker closes one of its channels or
cancels one of its consumers, `run` reconnects with capped exponential
backoff and jitter, forever: every failure to connect or to declare, of any
type, is retried and logged once with its cause. It then declares the
topology again, restarts the consumers, re-sends every unconfirmed publish,
and calls the `on_connected` callbacks. Timers and queued threadsafe calls
wait while the bus is disconnected.

Every delivery is untrusted: an oversized body is dead-lettered unread, a
handler that raises has its delivery dead-lettered and its sender (if it gave
a usable `reply_to`) gets an error reply, and replies only ever go to reply
queues (`bus.replies`).

Its parts live beside it: `bus.sending` (what goes out), `bus.consumers` (the
consumers it restarts), `bus.reconnect` (how it retries), `bus.watch` (channels
the broker closed under it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from bus import consumers, topology
from bus.connevents import claim_vhost
from bus.consumers import Consumers
from bus.consuming import ConsumeArguments, Consumer, Handler, on_message_callback
from bus.declare import declare_queue
from bus.delivery import Delivery
from bus.errors import (
    CONNECTION_ERRORS,
    NOT_FOUND,
    RESOURCE_LOCKED,
    BusError,
    ConnectionLost,
    TopologyError,
)
from bus.params import connect_first, connection_parameters, redacted, split_urls
from bus.params import describe as _describe
from bus.reconnect import Reconnects
from bus.rpc import Requester
from bus.sending import Sending
from bus.subscription import Subscription
from bus.timers import Timer, Timers
from bus.tls import Tls
from bus.watch import ChannelBroken, ChannelWatch
from schemas.envelope import Message, decode
from schemas.messages import Payload

log = logging.getLogger("corral.bus")

MessageHandler = Callable[[Message, Delivery], None]


class Bus(Sending):
    """See the module docstring. `url` is an AMQP URL such as amqp://guest:guest@127.0.0.1/,
    or several, the nodes of one broker cluster, separated by commas (`bus.params`).

    Raises InvalidUrl at once for a malformed URL. `declare_topology=False` (clients)
    declares no exchange or queue of Corral's, only the caller's private queues.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "corral",
        window: int = 256,
        heartbeat: int = 10,
        max_backoff: float = 5.0,
        declare_topology: bool = True,
        tls: Tls | None = None,
        answers: bool = True,
    ) -> None:
        super().__init__(url, name, window, tls, answers)
        self.url = url
        self.generation = 0
        self.declare_topology = declare_topology
        self.tls = tls
        self._parameters = connection_parameters(url, name=name, heartbeat=heartbeat, tls=tls)
        for parameters in self._parameters:
            claim_vhost(parameters)  # the broker's connection.closed events do not say it
        self._urls = split_urls(url)  # one per broker node, in the order given
        self._node: int | None = None  # the node of the current connection
        self._next_node = 0  # the node the next connection attempt tries first
        self._connection: Any = None
        self._declared: list[topology.Queue] = []
        self._consumers = Consumers()
        self._on_connected: list[Callable[[bool], None]] = []
        self._on_lost: list[Callable[[], None]] = []
        self._timers = Timers()
        self._watch = ChannelWatch()
        self._reconnects = Reconnects(name, max_backoff)
        self._rpc = Requester(self)

    @property
    def max_backoff(self) -> float:
        """The longest pause between two attempts to connect, in seconds."""
        return self._reconnects.max_backoff

    # -- registration (before or after connect; replayed on every reconnect) --

    def declare(self, *queues: topology.Queue) -> None:
        """Declare these queues now (if connected) and after every reconnect."""
        self._declared.extend(queues)
        if self.connected:
            channel = self._connection.channel()
            for q in queues:
                channel, _ = declare_queue(self._connection, channel, q)
            channel.close()

    def consume(
        self,
        queue_decl: topology.Queue,
        handler: Handler,
        *,
        prefetch: int = 50,
        arguments: ConsumeArguments = None,
    ) -> Consumer:
        """Deliver messages from `queue_decl` to `handler` on the bus thread (manual ack).

        A body over MAX_MESSAGE_BYTES is dead-lettered without reaching the
        handler. A handler that raises has its delivery dead-lettered with the
        error as the reason, and a sender that gave `reply_to` gets an error
        reply; the consumer keeps running.

        `arguments` go to basic.consume each time the consumer (re)starts; a callable
        is called at each start, so a stream consumer can resume where it was:
        ``lambda: {"x-stream-offset": last_seen + 1}``. Returns the consumer: its
        `cancel()` stops it for good.
        """
        consumer = Consumer(queue_decl, handler, prefetch, arguments, stop=self._cancel)
        self._consumers.add(consumer)
        if self.connected:
            self._start_consumer(consumer)
        return consumer

    def consume_messages(
        self,
        queue_decl: topology.Queue,
        handler: MessageHandler,
        *,
        prefetch: int = 50,
        arguments: ConsumeArguments = None,
    ) -> Consumer:
        """Like `consume`, but decodes envelopes first.

        Undecodable or invalid messages are dead-lettered with the reason, and
        a sender that gave `reply_to` gets an error reply saying what was wrong.
        A handler may raise InvalidMessage for a valid envelope it cannot use
        (the wrong type here): the sender is told the same way.
        """

        def decode_then_handle(delivery: Delivery) -> None:
            handler(decode(delivery.body), delivery)

        return self.consume(queue_decl, decode_then_handle, prefetch=prefetch, arguments=arguments)

    def on_connected(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(reconnected)` on the bus thread after each (re)connect."""
        self._on_connected.append(callback)

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback()` on the bus thread each time `lost` drops the connection, before
        any reconnect (a master steps down at once). `close` does not call it."""
        self._on_lost.append(callback)

    def queue_name(self, queue_decl: topology.Queue) -> str:
        """The current name of a consumed queue (server-named queues change on reconnect)."""
        return self._consumers.queue_name(queue_decl)

    # -- publishing (see Sending for the rest) --

    def flush(self, timeout: float = 10.0) -> bool:
        """Pump I/O until every publish is confirmed; False on timeout. Bus thread only."""
        deadline = time.monotonic() + timeout
        while self._publisher.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.process(min(remaining, 0.05))
        return True

    # -- timers and cross-thread calls --

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        return self._timers.call_later(delay, fn)

    def every(self, interval: float, fn: Callable[[], None]) -> Timer:
        return self._timers.every(interval, fn)

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the bus thread soon. Safe from any thread, connected or not."""
        self._timers.call_soon(fn)
        connection = self._connection
        if connection is not None:
            # If it closed under us, run() drains the call after reconnecting.
            with contextlib.suppress(Exception):
                connection.add_callback_threadsafe(lambda: None)  # wakes the I/O wait

    # -- lifecycle --

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.is_open

    @property
    def connected_url(self) -> str | None:
        """The URL (password hidden) of the broker node this bus is connected to; None while
        disconnected. With several URLs, each (re)connect tries them in turn from the one after
        the node used last."""
        if self._node is None or not self.connected:
            return None
        return redacted(self._urls[self._node])

    def connect(self, stop: threading.Event | None = None, *, attempts: int | None = None) -> None:
        """Connect and declare, retrying every failure with backoff and jitter.

        With `attempts=None` it retries until it succeeds or `stop` is set. Raises the
        last failure (a BusError: ConnectionLost, AccessRefused, TopologyError) when out
        of attempts or stopped.
        """
        self._reconnects.retrying(stop or threading.Event(), attempts)(self._connect_once)

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set: I/O, handlers, timers, threadsafe calls, reconnects."""
        while not stop.is_set():
            if not self.connected:
                self._reconnects.pause(stop)
                try:
                    self.connect(stop)
                except BusError:
                    continue  # stop was set while waiting
            try:
                self.process(self._timers.idle_time())
                self._timers.run_due(self._guarded)
            except CONNECTION_ERRORS as exc:
                self.lost(exc)
        if self.connected:
            with contextlib.suppress(*CONNECTION_ERRORS):
                self.flush(timeout=2.0)  # what we published before stopping
        self.close()

    def close(self) -> None:
        """Close the connection. Unconfirmed publishes stay in the outbox (`leftovers`)."""
        self._drop_connection(channel_error=False, keep_all=True)

    # -- client side: request/reply and subscriptions --

    def request(
        self,
        payload: Payload,
        *,
        exchange: str = topology.DEFAULT_EXCHANGE,
        routing_key: str = topology.API_QUEUE,
        timeout: float = 10.0,
    ) -> Message:
        """Send a request (mandatory) and wait up to `timeout` s for its reply (direct reply-to).

        Blocks the calling thread, which must own this bus. Raises NoRoute at once if
        the broker cannot route it (its queue does not exist), RequestTimeout,
        MessageTooLarge, or ConnectionLost if the connection drops.
        """
        return self._rpc.request(
            payload, exchange=exchange, routing_key=routing_key, timeout=timeout
        )

    def consumer_count(self, queue: str) -> int | None:
        """How many consumers `queue` has (a passive declare), or None if it does not exist.

        Connects first if needed (3 attempts). Raises ConnectionLost."""
        return self._rpc.consumer_count(queue)

    def queue_depth(self, queue: str) -> int | None:
        """How many messages `queue` holds ready, or None if it does not exist. Raises
        ConnectionLost."""
        counts = self._rpc.queue_counts(queue)
        return None if counts is None else counts[0]

    def channel(self) -> Any:
        """A new channel on the connection, connecting first (3 attempts) if needed."""
        if not self.connected:
            self.connect(attempts=3)
        return self._connection.channel()

    def subscribe(self, queue_decl: topology.Queue) -> Subscription:
        """Open a private queue (not restored on reconnect) and read it with Subscription.get."""
        try:
            channel = self._connection.channel()
            channel, name = declare_queue(self._connection, channel, queue_decl)
        except CONNECTION_ERRORS as exc:
            raise ConnectionLost(str(exc)) from None
        return Subscription(self, channel, name)

    # -- internals: connecting --

    def _connect_once(self) -> None:
        """One attempt. Every failure, whatever pika raised, leaves as a BusError."""
        # From the node after the one used last: a node that just dropped us is tried last.
        start, self._next_node = self._next_node, (self._next_node + 1) % len(self._parameters)
        index, connection = connect_first(self._parameters, start, pika.BlockingConnection)
        self._node, self._next_node = index, (index + 1) % len(self._parameters)
        self._connection = connection
        self.generation += 1
        self._watch.reset(self.generation)
        reconnected = self.generation > 1
        try:
            self._setup()
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.close()
            if exc.reply_code == RESOURCE_LOCKED:
                # An exclusive queue still held by our previous connection, which the
                # broker has not yet noticed is gone: worth another try.
                raise ConnectionLost(f"queue still locked by an old connection: {exc}") from None
            if exc.reply_code == NOT_FOUND and not self.declare_topology:
                raise TopologyError(
                    f"Corral's exchanges do not exist on this vhost: {exc}"
                ) from None
            raise TopologyError(f"the broker refused Corral's topology: {exc}") from None
        except Exception as exc:
            self.close()
            raise ConnectionLost(_describe(exc)) from None
        self._reconnects.connected()
        again = " again" if reconnected else ""
        where = f" at {self.connected_url}" if len(self._urls) > 1 else ""
        log.info("%s: connected to the broker%s%s", self.name, again, where)
        try:
            for callback in self._on_connected:
                self._guarded(callback, reconnected)
        except CONNECTION_ERRORS as exc:
            self.lost(exc)  # callbacks may have acted on the connection: on_lost must hear of it
            raise ConnectionLost(_describe(exc)) from None

    def _setup(self) -> None:
        channel = self._connection.channel()
        if self.declare_topology:
            for exchange in topology.EXCHANGES:
                channel.exchange_declare(exchange.name, exchange.kind, durable=exchange.durable)
            for q in topology.CORE_QUEUES:
                channel, _ = declare_queue(self._connection, channel, q)
        for q in self._declared:
            channel, _ = declare_queue(self._connection, channel, q)
        channel.close()
        self._rpc.reset()
        # Publishing first: a consumer's handler may reply as soon as it is registered.
        publish_channel = self._connection.channel()
        self._watch.watch(publish_channel, "publishing", publishing=True)
        selected = threading.Event()
        publish_channel._impl.confirm_delivery(
            ack_nack_callback=self._publisher.on_confirm,
            callback=lambda _frame: selected.set(),
        )
        while not selected.is_set():
            self._connection.process_data_events(0.05)
        self._publisher.attach(publish_channel._impl)
        for consumer in self._consumers:
            self._start_consumer(consumer)

    # -- internals: consuming and I/O --

    def _start_consumer(self, consumer: Consumer) -> None:
        on_message = on_message_callback(self, consumer, self.generation)
        consumers.start(self._connection, consumer, on_message, self._watch.watch)

    def _cancel(self, consumer: Consumer) -> None:
        """`Consumer.cancel`: forget it (no restart on reconnect) and stop it now."""
        self._consumers.forget(consumer)
        consumers.stop(self, consumer)

    def process(self, time_limit: float) -> None:
        """Serve I/O for up to `time_limit` s on the owning thread. Raises ConnectionLost
        (or pika's errors) when the connection, or one of its channels, is gone."""
        if self._connection is None:
            raise ConnectionLost("not connected")
        self._connection.process_data_events(time_limit=time_limit)
        self._watch.check()

    @staticmethod
    def _guarded(fn: Callable[..., None], *args: Any) -> None:
        """Run a timer, threadsafe call or on_connected callback; a bug in one must not stop
        the daemon. A lost connection still propagates, for the caller to handle."""
        try:
            fn(*args)
        except CONNECTION_ERRORS:
            raise
        except Exception:
            log.exception("callback %r failed", fn)

    def lost(self, exc: BaseException) -> None:
        """Log why the connection is unusable and drop it; `run` reconnects."""
        log.warning("%s: lost the broker connection (%s)", self.name, _describe(exc))
        self._reconnects.lost()
        had_connection = self._connection is not None  # else on_lost has been told already
        broken = isinstance(exc, ChannelBroken) and exc.publishing
        refused = isinstance(exc, ChannelBroken) and exc.refused
        self._drop_connection(channel_error=broken, refused=refused)
        for callback in list(self._on_lost) if had_connection else []:
            try:
                callback()
            except Exception:
                log.exception("on_lost callback %r failed", callback)

    def _drop_connection(
        self, *, channel_error: bool, keep_all: bool = False, refused: bool = False
    ) -> None:
        connection, self._connection = self._connection, None
        self._rpc.reset()
        self._publisher.detach(channel_error=channel_error, keep_all=keep_all, refused=refused)
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                log.debug("error while closing", exc_info=True)
