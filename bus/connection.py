"""One AMQP connection owned by one thread: declare, consume, publish, timers, reconnect.

A daemon builds a `Bus`, registers its topology and consumers, then calls
`run(stop)`, which blocks on the calling thread until `stop` is set. Handlers,
timers and `call_threadsafe` callbacks all run on that thread, one at a time,
so the daemon's state has a single writer and needs no locks.

When the connection drops, `run` reconnects with exponential backoff and
jitter, declares the topology again, restarts the consumers, re-sends every
unconfirmed publish, and calls the `on_connected` callbacks. Timers and
queued threadsafe calls wait while the bus is disconnected.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from bus.errors import ConnectionLost, RequestTimeout, TopologyError
from bus.publisher import ConfirmingPublisher, Outgoing
from schemas.api import ApiError, Reply
from schemas.envelope import InvalidMessage, Message, decode, encode
from schemas.messages import Payload

log = logging.getLogger("corral.bus")

RESOURCE_LOCKED = 405

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.AMQPChannelError,
    ConnectionLost,
    OSError,
)


@dataclass
class Delivery:
    """A message taken from a queue. Exactly one of ack / reject / dead_letter settles it.

    Settling must happen on the bus thread; from another thread use the
    `*_threadsafe` variants. Settling a delivery from before a reconnect is a
    no-op: the broker has already put it back in the queue.
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
    settled: bool = False

    def ack(self) -> None:
        self._settle(lambda: self.channel.basic_ack(self.delivery_tag))

    def reject(self, requeue: bool = False) -> None:
        self._settle(lambda: self.channel.basic_reject(self.delivery_tag, requeue=requeue))

    def dead_letter(self, reason: str) -> None:
        """Move the message to corral.dead with `reason` in a header, then ack it."""
        if self.settled:
            return
        log.warning("dead-lettering a message from %s: %s", self.queue or self.exchange, reason)
        headers = {
            **self.headers,
            topology.REASON_HEADER: reason[:2000],
            topology.SOURCE_QUEUE_HEADER: self.queue,
            topology.SOURCE_EXCHANGE_HEADER: self.exchange,
            topology.SOURCE_KEY_HEADER: self.routing_key,
        }
        self.bus.publish_raw(
            topology.DEAD_LETTER_EXCHANGE, self.routing_key, self.body, headers=headers
        )
        self.ack()

    def ack_threadsafe(self) -> None:
        self.bus.call_threadsafe(self.ack)

    def _settle(self, action: Callable[[], None]) -> None:
        if self.settled:
            return
        self.settled = True
        if self.generation == self.bus.generation:
            action()


Handler = Callable[[Delivery], None]
MessageHandler = Callable[[Message, Delivery], None]


@dataclass
class _Consumer:
    queue: topology.Queue
    handler: Handler
    prefetch: int
    current_name: str = ""


@dataclass(order=True)
class _Timer:
    due: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    interval: float | None = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True


class Bus:
    """See the module docstring. `url` is an AMQP URL such as amqp://guest:guest@127.0.0.1/."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "corral",
        window: int = 256,
        heartbeat: int = 10,
        max_backoff: float = 5.0,
    ) -> None:
        self.url = url
        self.name = name
        self.generation = 0
        self.max_backoff = max_backoff
        self._heartbeat = heartbeat
        self._connection: Any = None
        self._publisher = ConfirmingPublisher(window)
        self._declared: list[topology.Queue] = []
        self._consumers: list[_Consumer] = []
        self._on_connected: list[Callable[[bool], None]] = []
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._timers: list[_Timer] = []
        self._timer_seq = itertools.count()
        self._rpc_channel: Any = None
        self._replies: dict[str, bytes] = {}

    # -- registration (before or after connect; replayed on every reconnect) --

    def declare(self, *queues: topology.Queue) -> None:
        """Declare these queues now (if connected) and after every reconnect."""
        self._declared.extend(queues)
        if self.connected:
            channel = self._connection.channel()
            for q in queues:
                self._declare_queue(channel, q)
            channel.close()

    def consume(self, queue_decl: topology.Queue, handler: Handler, *, prefetch: int = 50) -> None:
        """Deliver messages from `queue_decl` to `handler` on the bus thread (manual ack).

        A handler that raises has its delivery dead-lettered with the error as
        the reason; the consumer keeps running.
        """
        consumer = _Consumer(queue_decl, handler, prefetch)
        self._consumers.append(consumer)
        if self.connected:
            self._start_consumer(consumer)

    def consume_messages(
        self, queue_decl: topology.Queue, handler: MessageHandler, *, prefetch: int = 50
    ) -> None:
        """Like `consume`, but decodes envelopes first.

        Undecodable or invalid messages are dead-lettered with the reason, and
        a sender that gave `reply_to` gets an error reply saying what was wrong.
        """

        def decode_then_handle(delivery: Delivery) -> None:
            try:
                message = decode(delivery.body)
            except InvalidMessage as exc:
                if delivery.reply_to:
                    error = ApiError(code="invalid_message", message=str(exc))
                    self.reply(delivery, Reply(ok=False, error=error))
                delivery.dead_letter(f"invalid message: {exc}")
                return
            handler(message, delivery)

        self.consume(queue_decl, decode_then_handle, prefetch=prefetch)

    def on_connected(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(reconnected)` on the bus thread after each (re)connect."""
        self._on_connected.append(callback)

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
        could not be routed to any queue.
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
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=1 if transient else 2,
            message_id=uuid.uuid4().hex,
            headers=headers,
            reply_to=reply_to,
            correlation_id=correlation_id,
        )
        out = Outgoing(exchange, routing_key, body, properties, mandatory, transient, on_returned)
        try:
            self._publisher.publish(out)
        except CONNECTION_ERRORS:
            # The outbox kept it; run() notices the dead connection and reconnects.
            log.debug("publish deferred: connection is down")

    def reply(self, delivery: Delivery, payload: Payload) -> None:
        """Answer a request on its reply_to, best effort (a gone client just misses it)."""
        if delivery.reply_to:
            self.publish(
                topology.DEFAULT_EXCHANGE,
                delivery.reply_to,
                payload,
                transient=True,
                correlation_id=delivery.correlation_id,
            )

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
            self._process(min(remaining, 0.05))
        return True

    # -- timers and cross-thread calls --

    def call_later(self, delay: float, fn: Callable[[], None]) -> _Timer:
        timer = _Timer(time.monotonic() + delay, next(self._timer_seq), fn)
        heapq.heappush(self._timers, timer)
        return timer

    def every(self, interval: float, fn: Callable[[], None]) -> _Timer:
        timer = _Timer(time.monotonic() + interval, next(self._timer_seq), fn, interval)
        heapq.heappush(self._timers, timer)
        return timer

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the bus thread soon. Safe from any thread, connected or not."""
        self._calls.put(fn)
        connection = self._connection
        if connection is not None:
            # If it closed under us, run() drains the call after reconnecting.
            with contextlib.suppress(Exception):
                connection.add_callback_threadsafe(lambda: None)  # wakes the I/O wait

    # -- lifecycle --

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.is_open

    def connect(self, stop: threading.Event | None = None, *, attempts: int | None = None) -> None:
        """Connect, retrying with backoff and jitter; raises ConnectionLost when out of tries."""
        stop = stop or threading.Event()

        def give_up(state: RetryCallState) -> bool:
            return stop.is_set() or (attempts is not None and state.attempt_number >= attempts)

        def report(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.warning("%s: cannot reach the broker (%s); retrying", self.name, error)

        retrying = Retrying(
            retry=retry_if_exception_type(ConnectionLost),
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
                try:
                    self.connect(stop)
                except ConnectionLost:
                    continue  # stop was set while waiting
            try:
                self._process(self._idle_time())
                self._run_due()
            except CONNECTION_ERRORS as exc:
                self._lost(exc)
        if self.connected:
            with contextlib.suppress(*CONNECTION_ERRORS):
                self.flush(timeout=2.0)  # what we published before stopping
        self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        self._publisher.detach()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                log.debug("error while closing", exc_info=True)

    # -- client side: request/reply and subscriptions --

    def request(
        self,
        payload: Payload,
        *,
        exchange: str = topology.DEFAULT_EXCHANGE,
        routing_key: str = topology.API_QUEUE,
        timeout: float = 10.0,
    ) -> Message:
        """Send a request and wait up to `timeout` s for its reply (direct reply-to).

        Raises RequestTimeout, or ConnectionLost if the connection drops.
        """
        try:
            channel = self._reply_channel()
            correlation_id = uuid.uuid4().hex
            channel.basic_publish(
                exchange,
                routing_key,
                encode(payload, sender=self.name),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    reply_to=topology.DIRECT_REPLY_TO,
                    correlation_id=correlation_id,
                    # Nobody waits for the answer after that: don't let a late master act on it.
                    expiration=str(max(1, int(timeout * 1000))),
                ),
            )
            deadline = time.monotonic() + timeout
            while correlation_id not in self._replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout(f"no reply to {payload.TYPE} within {timeout:g} s")
                self._process(min(remaining, 0.1))
        except CONNECTION_ERRORS as exc:
            self._lost(exc)
            raise ConnectionLost(str(exc) or type(exc).__name__) from None
        return decode(self._replies.pop(correlation_id))

    def subscribe(self, queue_decl: topology.Queue) -> Subscription:
        """Open a private queue (not restored on reconnect) and read it with Subscription.get."""
        try:
            channel = self._connection.channel()
            name = self._declare_queue(channel, queue_decl)
        except CONNECTION_ERRORS as exc:
            raise ConnectionLost(str(exc)) from None
        return Subscription(self, channel, name)

    # -- internals --

    def _connect_once(self) -> None:
        parameters = pika.URLParameters(self.url)
        parameters.heartbeat = self._heartbeat
        parameters.blocked_connection_timeout = 30
        parameters.connection_attempts = 1
        parameters.socket_timeout = 5
        parameters.client_properties = {"connection_name": self.name}
        try:
            self._connection = pika.BlockingConnection(parameters)
        except pika.exceptions.ProbableAuthenticationError as exc:
            raise TopologyError(f"the broker refused the credentials in {self.url!r}") from exc
        except CONNECTION_ERRORS as exc:
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None
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
            raise TopologyError(f"the broker refused Corral's topology: {exc}") from exc
        except CONNECTION_ERRORS as exc:
            self.close()
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None
        log.info("%s: connected to the broker%s", self.name, " again" if reconnected else "")
        for callback in self._on_connected:
            callback(reconnected)

    def _setup(self) -> None:
        channel = self._connection.channel()
        for exchange in topology.EXCHANGES:
            channel.exchange_declare(exchange.name, exchange.kind, durable=exchange.durable)
        for q in (*topology.CORE_QUEUES, *self._declared):
            self._declare_queue(channel, q)
        channel.close()
        self._rpc_channel = None
        # Publishing first: a consumer's handler may reply as soon as it is registered.
        publish_channel = self._connection.channel()
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

    @staticmethod
    def _declare_queue(channel: Any, q: topology.Queue) -> str:
        result = channel.queue_declare(
            q.name,
            durable=q.durable,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=q.arguments or None,
        )
        name: str = result.method.queue
        for exchange, key in q.bindings:
            channel.queue_bind(name, exchange, routing_key=key)
        return name

    def _start_consumer(self, consumer: _Consumer) -> None:
        channel = self._connection.channel()
        channel.basic_qos(prefetch_count=consumer.prefetch)
        consumer.current_name = self._declare_queue(channel, consumer.queue)
        generation = self.generation

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            delivery = Delivery(
                bus=self,
                channel=ch,
                delivery_tag=method.delivery_tag,
                generation=generation,
                queue=consumer.current_name,
                exchange=method.exchange,
                routing_key=method.routing_key,
                body=body,
                redelivered=bool(method.redelivered),
                reply_to=properties.reply_to,
                correlation_id=properties.correlation_id,
                headers=dict(properties.headers or {}),
            )
            try:
                consumer.handler(delivery)
            except CONNECTION_ERRORS:
                raise
            except Exception as exc:
                log.exception("handler for %s failed", consumer.current_name)
                delivery.dead_letter(f"handler error: {type(exc).__name__}: {exc}")

        channel.basic_consume(consumer.current_name, on_message)

    def _reply_channel(self) -> Any:
        if not self.connected:
            self.connect(attempts=3)
        if self._rpc_channel is None:
            channel = self._connection.channel()

            def on_reply(_ch: Any, _method: Any, properties: Any, body: bytes) -> None:
                if properties.correlation_id:
                    self._replies[properties.correlation_id] = body

            channel.basic_consume(topology.DIRECT_REPLY_TO, on_reply, auto_ack=True)
            self._rpc_channel = channel
        return self._rpc_channel

    def _process(self, time_limit: float) -> None:
        if self._connection is None:
            raise ConnectionLost("not connected")
        self._connection.process_data_events(time_limit=time_limit)

    def _idle_time(self) -> float:
        if not self._calls.empty():
            return 0
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return 0.5
        return max(0.0, min(0.5, self._timers[0].due - time.monotonic()))

    def _run_due(self) -> None:
        while not self._calls.empty():
            self._guarded(self._calls.get_nowait())
        now = time.monotonic()
        while self._timers and self._timers[0].due <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.due = max(timer.due + timer.interval, now)
                heapq.heappush(self._timers, timer)
            self._guarded(timer.fn)

    @staticmethod
    def _guarded(fn: Callable[[], None]) -> None:
        """Run a timer or threadsafe call; a bug in one must not stop the daemon."""
        try:
            fn()
        except CONNECTION_ERRORS:
            raise
        except Exception:
            log.exception("callback %r failed", fn)

    def _lost(self, exc: BaseException) -> None:
        log.warning("%s: lost the broker connection (%s: %s)", self.name, type(exc).__name__, exc)
        self.close()


class Subscription:
    """A private queue read on the owning thread. `get` blocks up to `timeout` s."""

    def __init__(self, bus: Bus, channel: Any, name: str) -> None:
        self.bus = bus
        self.name = name
        self._channel = channel
        self._stream: Iterator[Any] | None = None

    def get(self, timeout: float) -> tuple[str, Message] | None:
        """The next (routing key, message), or None if nothing came within `timeout`.

        Undecodable messages are skipped (logged). Raises ConnectionLost.
        """
        if self._stream is None:
            self._stream = self._channel.consume(self.name, auto_ack=True, inactivity_timeout=0.1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                method, _properties, body = next(self._stream)
                if method is not None:
                    try:
                        return method.routing_key, decode(body)
                    except InvalidMessage as exc:
                        log.warning("skipping an invalid message on %s: %s", self.name, exc)
                if time.monotonic() >= deadline:
                    return None
        except CONNECTION_ERRORS as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from None

    def close(self) -> None:
        try:
            self._channel.close()
        except Exception:
            log.debug("closing subscription %s", self.name, exc_info=True)
