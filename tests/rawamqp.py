"""A plain pika client for tests that play a hostile or careless sender (no Corral code
but the topology's names).

Every message these clients publish carries the AMQP `user_id` of the URL's user
unless told otherwise, as every Corral process does: the master and the workers
refuse what no broker user vouches for. A test's URL logs in as the master's user
(`tests.accounts`; in the single-user setup, everyone's), which the master and the
workers trust, so these clients can play the master or any worker; a test that
plays a stranger says so (`user_id=None`, or a broker user of its own).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from types import TracebackType
from typing import Any

import pika

from bus import topology
from bus.sending import broker_user

DIRECT = "amq.rabbitmq.reply-to"


def url_user(url: str) -> str:
    """The broker user `url` logs in as (pika's default: guest), as the bus sets user_id."""
    return broker_user(url)


def api_route(body: bytes | dict[str, Any], role: str = "admin") -> str:
    """The routing key on corral.requests for `body`: `<role>.<its type>` ("unknown" when
    it has none: garbage is routed too, the binding is `#`)."""
    if isinstance(body, bytes):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read
            body = {}
    kind = body.get("type") if isinstance(body, dict) else None
    if not isinstance(kind, str) or not kind or len(kind.encode()) > 200:
        kind = "unknown"
    return topology.api_key(role, kind)


class RawClient:
    """One connection with direct reply-to consumed, so replies can be awaited.

    Requests go to corral.requests, keyed `admin.<type>` (`api_route`), as the URL's
    user: the master's own in the tests, which the master answers as an admin."""

    def __init__(self, url: str) -> None:
        self.user = url_user(url)
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.replies: dict[str, bytes] = {}
        self.channel.basic_consume(
            DIRECT,
            lambda _ch, _m, props, body: self.replies.update({props.correlation_id: body}),
            auto_ack=True,
        )

    def __enter__(self) -> RawClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def publish(
        self,
        body: bytes | dict[str, Any],
        *,
        exchange: str = topology.API_EXCHANGE,
        routing_key: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        user_id: str | None = "",
    ) -> str:
        """Publish `body`; its correlation id. `routing_key` None: `api_route(body)`.
        `user_id` "": this connection's user; None: none at all."""
        correlation_id = correlation_id or uuid.uuid4().hex
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.channel.basic_publish(
            exchange,
            api_route(body) if routing_key is None else routing_key,
            data,
            properties=pika.BasicProperties(
                reply_to=reply_to,
                correlation_id=correlation_id,
                user_id=self.user if user_id == "" else user_id,
            ),
        )
        return correlation_id

    def call(self, body: bytes | dict[str, Any], timeout: float = 10, **options: Any) -> Any:
        """Publish with direct reply-to and return the decoded reply envelope."""
        correlation_id = self.publish(body, reply_to=DIRECT, **options)
        deadline = time.monotonic() + timeout
        while correlation_id not in self.replies:
            assert time.monotonic() < deadline, f"no reply within {timeout} s"
            self.connection.process_data_events(time_limit=0.1)
        return json.loads(self.replies.pop(correlation_id))

    def own_reply_name(self) -> str:
        """The direct reply-to name the broker gives this connection (as a replier sees it)."""
        probe = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.basic_publish(
            "", probe, b"x", properties=pika.BasicProperties(reply_to=DIRECT)
        )
        for _ in range(50):
            method, properties, _body = self.channel.basic_get(probe, auto_ack=True)
            if method is not None:
                return str(properties.reply_to)
            time.sleep(0.05)
        raise AssertionError("the probe message did not come back")


def forged_reply_names(real: str) -> list[str]:
    """Direct reply-to names that look right but name a broker node that does not exist."""
    prefix, pid, key = real.rsplit(".", 2)
    term = base64.b64decode(pid)
    names = []
    for digit in "12345":
        # The node atom is `reply@<digits>`; change its last digit.
        at = term.index(b"@")
        end = at + 1
        while end < len(term) and chr(term[end]).isdigit():
            end += 1
        forged = term[: end - 1] + digit.encode() + term[end:]
        if forged != term:
            names.append(f"{prefix}.{base64.b64encode(forged).decode()}.{key}")
    return names


class Tap:
    """A private queue bound to an exchange, read with `first` (a test's view of traffic)."""

    def __init__(self, url: str, exchange: str, *keys: str) -> None:
        self.user = url_user(url)
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        declared = self.channel.queue_declare("", exclusive=True, auto_delete=True)
        self.queue = declared.method.queue
        for key in keys or ("",):
            self.channel.queue_bind(self.queue, exchange, key)

    def first(self, wanted: Any, timeout: float = 10.0) -> bytes:
        """The body of the first message for which `wanted(body)` is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, _properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.connection.process_data_events(0.05)
                continue
            if wanted(body):
                return bytes(body)
        raise AssertionError(f"no wanted message on the tap within {timeout:g} s")

    def publish(self, exchange: str, routing_key: str, body: bytes) -> None:
        """Publish `body` as the URL's user (the master's own in the tests: a replay of
        the master's traffic is taken for the master's)."""
        properties = pika.BasicProperties(user_id=self.user)
        self.channel.basic_publish(exchange, routing_key, body, properties=properties)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


class RawMaster:
    """Raw pika in the masters' place, for tests of a worker alone: it declares what a
    master declares (the exchanges and the core queues, corral.dead among them: a
    worker declares only its own queues) and reads private queues. Start it before
    the worker."""

    def __init__(self, url: str) -> None:
        self.user = url_user(url)  # the master's user: the workers trust it
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        for exchange in topology.EXCHANGES:
            self.channel.exchange_declare(exchange.name, exchange.kind, durable=exchange.durable)
        for queue in topology.CORE_QUEUES:
            self.channel.queue_declare(
                queue.name, durable=queue.durable, arguments=queue.arguments or None
            )
            for bound_to, key in queue.bindings:
                self.channel.queue_bind(queue.name, bound_to, routing_key=key)

    def publish(
        self, exchange: str, routing_key: str, body: bytes, *, user_id: str | None = ""
    ) -> None:
        """Publish `body` as the master would: with the master's user as user_id ("", the
        default), or as another sender (`user_id`; None: none at all)."""
        properties = pika.BasicProperties(user_id=self.user if user_id == "" else user_id)
        self.channel.basic_publish(exchange, routing_key, body, properties=properties)

    def subscribe(self, exchange: str, key: str) -> str:
        """A private queue bound to `exchange` with `key`; its name."""
        queue: str = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(queue, exchange, routing_key=key)
        return queue

    def messages(self, queue: str) -> list[dict[str, Any]]:
        """Every envelope waiting in `queue`, decoded (read destructively)."""
        taken: list[dict[str, Any]] = []
        while True:
            method, _props, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return taken
            taken.append(json.loads(body))

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
