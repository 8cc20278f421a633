"""Bus hooks with the real broker: consumer arguments on a stream queue (x-stream-offset),
cancelling a consumer, and `on_lost` when the broker closes the connection."""

from __future__ import annotations

import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bus import topology
from bus.connection import Bus
from bus.delivery import Delivery
from bus.errors import ConnectionLost
from tests.cluster import wait_until
from tests.conftest import Broker

pytestmark = pytest.mark.integration

OFFSET = "x-stream-offset"


@pytest.fixture
def bus(vhost_url: str) -> Iterator[Bus]:
    made = Bus(vhost_url, name=f"test-streams-{uuid.uuid4().hex[:8]}", declare_topology=False)
    made.connect(attempts=3)
    yield made
    made.close()


@pytest.fixture
def stream(bus: Bus) -> Iterator[topology.Queue]:
    """A stream queue of its own, deleted afterwards."""
    queue = topology.Queue(
        f"test.stream.{uuid.uuid4().hex[:10]}", arguments={"x-queue-type": "stream"}
    )
    bus.declare(queue)
    yield queue
    channel = bus.channel()
    channel.queue_delete(queue.name)
    channel.close()


def publish(bus: Bus, queue: topology.Queue, *bodies: str) -> None:
    for body in bodies:
        bus.publish_raw(topology.DEFAULT_EXCHANGE, queue.name, body.encode())
    assert bus.flush(10)


def pump(bus: Bus, until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Serve the bus on this thread until `until()` (fail after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out pumping the bus"
        bus.process(0.05)


def drain(bus: Bus, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        bus.process(0.05)


class Offsets:
    """A handler that records each delivery's stream offset and acks it."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.bodies: list[bytes] = []

    def __call__(self, delivery: Delivery) -> None:
        self.seen.append(int(delivery.headers[OFFSET]))
        self.bodies.append(delivery.body)
        delivery.ack()


def test_a_stream_consumer_starts_at_the_offset_its_arguments_give(
    bus: Bus, stream: topology.Queue
) -> None:
    publish(bus, stream, *(f"m{n}" for n in range(5)))
    offsets = Offsets()
    bus.consume(stream, offsets, prefetch=10, arguments={OFFSET: 2})
    pump(bus, lambda: len(offsets.seen) >= 3)
    drain(bus, 0.5)  # nothing more comes
    assert offsets.seen == [2, 3, 4]
    assert offsets.bodies == [b"m2", b"m3", b"m4"]


def test_callable_arguments_resume_a_stream_after_a_reconnect(
    bus: Bus, stream: topology.Queue
) -> None:
    publish(bus, stream, "m0", "m1", "m2")
    offsets = Offsets()
    starts: list[Any] = []

    def resume() -> dict[str, Any]:
        start: Any = offsets.seen[-1] + 1 if offsets.seen else "first"
        starts.append(start)
        return {OFFSET: start}

    bus.consume(stream, offsets, prefetch=10, arguments=resume)
    pump(bus, lambda: len(offsets.seen) >= 3)
    bus.lost(ConnectionLost("a test drops the connection"))
    bus.connect(attempts=3)
    publish(bus, stream, "m3", "m4")
    pump(bus, lambda: len(offsets.seen) >= 5)
    drain(bus, 0.5)
    assert starts == ["first", 3]
    assert offsets.seen == [0, 1, 2, 3, 4]  # none twice


def test_cancel_stops_a_consumer_now_and_after_reconnects(bus: Bus, stream: topology.Queue) -> None:
    offsets = Offsets()
    consumer = bus.consume(stream, offsets, prefetch=10, arguments={OFFSET: "next"})
    drain(bus, 0.3)  # the consumer is attached before anything is published
    publish(bus, stream, "m0")
    pump(bus, lambda: len(offsets.seen) == 1)
    consumer.cancel()
    consumer.cancel()  # idempotent
    publish(bus, stream, "m1")
    drain(bus, 0.5)
    bus.lost(ConnectionLost("a test drops the connection"))
    bus.connect(attempts=3)  # a cancelled consumer is not restarted
    publish(bus, stream, "m2")
    drain(bus, 0.5)
    assert offsets.seen == [0]
    assert bus.consumer_count(stream.name) == 0


def test_cancel_from_inside_the_handler(bus: Bus, vhost_url: str) -> None:
    queue = topology.Queue(f"test.cancel.{uuid.uuid4().hex[:10]}", auto_delete=False)
    bus.declare(queue)
    handled: list[bytes] = []
    consumers: list[Any] = []

    def first_only(delivery: Delivery) -> None:
        handled.append(delivery.body)
        consumers[0].cancel()
        delivery.ack()  # after the cancel: a no-op, the message goes back to the queue

    consumers.append(bus.consume(queue, first_only, prefetch=5))
    publish(bus, queue, "a", "b", "c")
    pump(bus, lambda: bool(handled))
    drain(bus, 0.5)
    assert handled == [b"a"]
    assert bus.connected
    channel = bus.channel()
    ready = channel.queue_declare(queue.name, passive=True).method.message_count
    channel.queue_delete(queue.name)
    channel.close()
    assert ready == 3  # nothing was lost: the unsettled ones were put back


def connections_named(broker: Broker, name: str) -> list[dict[str, Any]]:
    return [
        c
        for c in broker.api("GET", "connections")
        if (c.get("client_properties") or {}).get("connection_name") == name
    ]


def force_close(broker: Broker, name: str) -> None:
    """Close, through the management API, every connection whose client-given name is `name`."""
    found = wait_until(lambda: connections_named(broker, name), what=f"the connection {name}")
    for connection in found:
        quoted = urllib.parse.quote(connection["name"], safe="")
        broker.api("DELETE", f"connections/{quoted}")


def test_on_lost_fires_when_the_broker_closes_the_connection(
    vhost_url: str, broker: Broker
) -> None:
    name = f"test-on-lost-{uuid.uuid4().hex[:8]}"
    bus = Bus(vhost_url, name=name, declare_topology=False, max_backoff=0.5)
    lost: list[str] = []
    connected: list[bool] = []
    bus.on_lost(lambda: lost.append(threading.current_thread().name))
    bus.on_connected(connected.append)
    stop = threading.Event()
    thread = threading.Thread(target=bus.run, args=(stop,), name="bus-thread")
    thread.start()
    try:
        wait_until(lambda: connected == [False], what="the first connection")
        force_close(broker, name)
        wait_until(lambda: lost, what="on_lost")
        wait_until(lambda: connected == [False, True], what="the reconnect")
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert lost == ["bus-thread"]  # once, on the bus thread; not when run() ended
