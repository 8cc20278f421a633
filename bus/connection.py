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
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from bus import topology
from bus.consuming import ConsumeArguments, Consumer, Handler, on_message_callback
from bus.declare import declare_queue
from bus.delivery import Delivery
from bus.errors import (
    CONNECTION_ERRORS,
    NOT_FOUND,
    RESOURCE_LOCKED,
    BusError,
    ConnectionLost,
    MessageTooLarge,
    TopologyError,
    check_size,
)
from bus.params import connect_first, connection_parameters, probe_parameters, redacted, split_urls
from bus.params import describe as _describe
from bus.publisher import ConfirmingPublisher, Outgoing
from bus.replies import ReplyGuard, is_direct_reply
from bus.rpc import Requester
from bus.streams import close_without_rejecting
from bus.subscription import Subscription
from bus.timers import Timer, Timers
from schemas.api import ApiError, Reply
from schemas.envelope import Message, decode, encode
from schemas.messages import Payload

log = logging.getLogger("corral.bus")

# The same failure to connect is logged again after this long (a new cause at once).
REPEAT_LOG_SECONDS = 60.0
# A connection lost sooner than this after it was made counts as short-lived: the next
# reconnect waits with backoff even though connecting itself succeeded.
SHORT_LIVED = 5.0

MessageHandler = Callable[[Message, Delivery], None]


class _ChannelBroken(ConnectionLost):
    """The broker closed one of our channels (or cancelled a consumer) on a live connection.

    `publishing`: it was the publishing channel, so what was in flight there may be the
    cause (see `ConfirmingPublisher.detach`).
    """

    def __init__(self, reason: str, *, publishing: bool) -> None:
        super().__init__(reason)
        self.publishing = publishing


class Bus:
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
    ) -> None:
        self.url = url
        self.name = name
        self.generation = 0
        self.max_backoff = max_backoff
        self.declare_topology = declare_topology
        self._parameters = connection_parameters(url, name=name, heartbeat=heartbeat)
        self._urls = split_urls(url)  # one per broker node, in the order given
        self._node: int | None = None  # the node of the current connection
        self._next_node = 0  # the node the next connection attempt tries first
        self._reply_guard = ReplyGuard(probe_parameters(url, name=f"{name} (reply)"))
        self._connection: Any = None
        self._publisher = ConfirmingPublisher(window)
        self._declared: list[topology.Queue] = []
        self._consumers: list[Consumer] = []
        self._on_connected: list[Callable[[bool], None]] = []
        self._on_lost: list[Callable[[], None]] = []
        self._timers = Timers()
        self._broken: tuple[str, bool] | None = None  # (why, the publishing channel?)
        self._connected_at = 0.0
        self._short_lived = 0  # connections in a row lost within SHORT_LIVED seconds
        self._last_failure: tuple[str, float] = ("", 0.0)
        self._rpc = Requester(self)

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
        self._consumers.append(consumer)
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
        for consumer in self._consumers:
            if consumer.queue is queue_decl:
                return consumer.current_name
        return queue_decl.name

    # -- publishing --

    def publish(
        self,
        exchange: str,
        routing_key: str,
        payload: Payload,
        *,
        epoch: int | None = None,
        mandatory: bool = False,
        transient: bool = False,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        on_returned: Callable[[], None] | None = None,
    ) -> None:
        """Queue a confirmed publish of `payload` in an envelope. Never blocks on the broker.

        The message is kept until the broker confirms it, across reconnects,
        unless `transient` (best effort: dropped while disconnected).
        `on_returned` is called (on the bus thread) if a `mandatory` message
        could not be routed to any queue. Raises MessageTooLarge (nothing sent)
        for a body over MAX_MESSAGE_BYTES.
        """
        body = encode(payload, sender=self.name, epoch=epoch)
        self.publish_raw(
            exchange,
            routing_key,
            body,
            mandatory=mandatory,
            transient=transient,
            reply_to=reply_to,
            correlation_id=correlation_id,
            on_returned=on_returned,
        )

    def publish_raw(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: dict[str, Any] | None = None,
        mandatory: bool = False,
        transient: bool = False,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        on_returned: Callable[[], None] | None = None,
    ) -> None:
        """`publish` for a body already encoded. Direct reply-to names the bus has not yet
        seen work are sent through `bus.replies.ReplyGuard`, never on this connection."""
        check_size(body, f"a message to {exchange or 'the default exchange'} ({routing_key[:100]})")
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=1 if transient else 2,
            message_id=uuid.uuid4().hex,
            headers=headers,
            reply_to=reply_to,
            correlation_id=correlation_id,
        )
        direct = exchange == topology.DEFAULT_EXCHANGE and is_direct_reply(routing_key)
        if direct and not self._reply_guard.trusted(routing_key):
            self._reply_guard.send_untrusted(routing_key, body, properties)
            return
        out = Outgoing(exchange, routing_key, body, properties, mandatory, transient, on_returned)
        try:
            self._publisher.publish(out)
        except CONNECTION_ERRORS:
            # The outbox kept it; run() notices the dead channel or connection and reconnects.
            log.debug("publish deferred: connection is down")

    def reply(self, delivery: Delivery, payload: Payload) -> None:
        """Answer a request on its reply_to, best effort (a gone client just misses it).

        An answer too large to send becomes an error reply with code `too_large`.
        """
        if not delivery.reply_to:
            return
        try:
            self._send_reply(delivery, payload)
        except MessageTooLarge as exc:
            log.warning("a reply to %s was too large: %s", delivery.queue, exc)
            error = ApiError(
                code="too_large",
                message=f"the answer does not fit in one message ({exc}); ask for less, "
                "e.g. a smaller page (limit)",
            )
            self._send_reply(delivery, Reply(ok=False, error=error))

    def _send_reply(self, delivery: Delivery, payload: Payload) -> None:
        assert delivery.reply_to is not None
        self.publish(
            topology.DEFAULT_EXCHANGE,
            delivery.reply_to,
            payload,
            transient=True,
            correlation_id=delivery.correlation_id,
        )

    def leftovers(self) -> list[Outgoing]:
        """Take every publish not yet confirmed (the bus should be closed): a daemon that
        replaces its bus hands them to the next one with `requeue`."""
        return self._publisher.take_all()

    def requeue(self, messages: list[Outgoing]) -> None:
        """Publish another bus's `leftovers` before anything else, once connected."""
        self._publisher.requeue(messages)

    @property
    def unconfirmed(self) -> int:
        return self._publisher.pending

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
        stop = stop or threading.Event()

        def give_up(state: RetryCallState) -> bool:
            return stop.is_set() or (attempts is not None and state.attempt_number >= attempts)

        def report(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            self._report_failure(error, state.upcoming_sleep)

        retrying = Retrying(
            retry=retry_if_exception_type(BusError),
            wait=wait_exponential_jitter(multiplier=0.2, max=self.max_backoff, jitter=0.5),
            stop=give_up,
            sleep=stop.wait,  # type: ignore[arg-type]  # interruptible; its bool is ignored
            before_sleep=report,
            reraise=True,
        )
        retrying(self._connect_once)

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set: I/O, handlers, timers, threadsafe calls, reconnects."""
        while not stop.is_set():
            if not self.connected:
                if self._short_lived:  # connections that die at once: don't spin
                    stop.wait(min(self.max_backoff, 0.2 * 2.0 ** min(self._short_lived, 8)))
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
        self._broken = None
        self.generation += 1
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
        self._last_failure = ("", 0.0)
        again = " again" if reconnected else ""
        where = f" at {self.connected_url}" if len(self._urls) > 1 else ""
        log.info("%s: connected to the broker%s%s", self.name, again, where)
        self._connected_at = time.monotonic()
        try:
            for callback in self._on_connected:
                self._guarded(callback, reconnected)
        except CONNECTION_ERRORS as exc:
            self.lost(exc)  # callbacks may have acted on the connection: on_lost must hear of it
            raise ConnectionLost(_describe(exc)) from None

    def _report_failure(self, error: BaseException | None, pause: float | None) -> None:
        text = f"{type(error).__name__}: {error}" if error is not None else "unknown failure"
        previous, at = self._last_failure
        now = time.monotonic()
        if text != previous or now - at >= REPEAT_LOG_SECONDS:
            self._last_failure = (text, now)
            log.warning(
                "%s: cannot connect to the broker (%s); retrying every few seconds",
                self.name,
                text,
            )
        else:
            log.debug("%s: still cannot connect (%s); next try in %.1f s", self.name, text, pause)

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
        self._watch(publish_channel, "publishing", publishing=True)
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

    def _watch(self, channel: Any, what: str, *, publishing: bool = False) -> None:
        """Turn the broker closing `channel`, or cancelling its consumer, into a reconnect.

        Without this a master whose publishing channel the broker closed went on
        consuming and acking requests while sending nothing at all.
        """
        generation = self.generation

        def closed(_channel: Any, reason: BaseException) -> None:
            if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
                why = f"the broker closed the {what} channel ({reason})"
                self._break(generation, why, publishing=publishing)

        channel._impl.add_on_close_callback(closed)
        channel.add_on_cancel_callback(
            lambda _frame: self._break(generation, f"the broker cancelled the {what} consumer")
        )

    def _break(self, generation: int, reason: str, *, publishing: bool = False) -> None:
        if generation == self.generation and self._broken is None:
            self._broken = (reason, publishing)

    # -- internals: consuming and I/O --

    def _start_consumer(self, consumer: Consumer) -> None:
        channel = self._connection.channel()
        channel, consumer.current_name = declare_queue(self._connection, channel, consumer.queue)
        channel.basic_qos(prefetch_count=consumer.prefetch)  # on the channel declare returned
        self._watch(channel, f"{consumer.queue.name or 'private'} queue's")
        on_message = on_message_callback(self, consumer, self.generation)
        consumer.channel = channel
        consumer.tag = channel.basic_consume(
            consumer.current_name, on_message, arguments=consumer.start_arguments()
        )

    def _cancel(self, consumer: Consumer) -> None:
        """`Consumer.cancel`: forget it (no restart on reconnect) and stop it now."""
        if consumer in self._consumers:
            self._consumers.remove(consumer)
        channel, consumer.channel = consumer.channel, None
        if channel is None or not self.connected or not channel.is_open:
            return  # gone with its connection: there is nothing to stop
        try:
            if consumer.queue.arguments.get("x-queue-type") == "stream":
                # A stream takes no rejects (pika's cancel sends them): close underneath.
                close_without_rejecting(self, channel)
                return
            channel.basic_cancel(consumer.tag)  # unhandled deliveries go back to the queue
            channel.close()  # and so do the handled ones not yet settled
        except CONNECTION_ERRORS as exc:
            # The connection is going: run() notices; the consumer will not come back.
            log.debug("cancelling a consumer of %s: %s", consumer.current_name, _describe(exc))

    def process(self, time_limit: float) -> None:
        """Serve I/O for up to `time_limit` s on the owning thread. Raises ConnectionLost
        (or pika's errors) when the connection, or one of its channels, is gone."""
        if self._connection is None:
            raise ConnectionLost("not connected")
        self._connection.process_data_events(time_limit=time_limit)
        if self._broken is not None:
            (reason, publishing), self._broken = self._broken, None
            raise _ChannelBroken(reason, publishing=publishing)

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
        if time.monotonic() - self._connected_at < SHORT_LIVED:
            self._short_lived += 1
        else:
            self._short_lived = 0
        had_connection = self._connection is not None  # else on_lost has been told already
        self._drop_connection(channel_error=isinstance(exc, _ChannelBroken) and exc.publishing)
        for callback in list(self._on_lost) if had_connection else []:
            try:
                callback()
            except Exception:
                log.exception("on_lost callback %r failed", callback)

    def _drop_connection(self, *, channel_error: bool, keep_all: bool = False) -> None:
        connection, self._connection = self._connection, None
        self._rpc.reset()
        self._publisher.detach(channel_error=channel_error, keep_all=keep_all)
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                log.debug("error while closing", exc_info=True)
