"""The log streamer's bounds: no reply queue, no work; a full node says so; a gone client
ends its stream.

The test plays the bus thread: cross-thread calls wait in a queue until it
runs them, and publishes are recorded with their return callback so the test
can play the broker returning a chunk.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from bus import topology
from bus.replies import usable_reply_queue
from schemas.messages import LogChunk, LogsRequest, Payload
from worker.logs import LogStreamer

QUEUE = "amq.gen-abc123"
# As the broker rewrites `amq.rabbitmq.reply-to` for a requester (its node and a key).
DIRECT = "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5NTAyNjUzAAAoLQAAAABrCZRx.i41LqndDIDt0fjRct0WvsA=="


@dataclass
class Sent:
    routing_key: str
    chunk: LogChunk
    mandatory: bool
    on_returned: Callable[[], None] | None


@dataclass
class FakeBus:
    sent: list[Sent] = field(default_factory=list)
    calls: queue.SimpleQueue[Callable[[], None]] = field(default_factory=queue.SimpleQueue)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        payload: Payload,
        *,
        mandatory: bool = False,
        transient: bool = False,
        correlation_id: str | None = None,
        on_returned: Callable[[], None] | None = None,
    ) -> None:
        assert isinstance(payload, LogChunk) and transient
        assert exchange == topology.REPLIES_EXCHANGE  # never the default exchange
        self.sent.append(Sent(routing_key, payload, mandatory, on_returned))

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        self.calls.put(fn)

    def run_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Be the bus thread until `done()`."""
        while not done():
            try:
                self.calls.get(timeout=timeout)()
            except queue.Empty:
                pytest.fail(f"nothing came within {timeout} s")


class FakePool(Executor):
    """Takes jobs and never runs them: streams that stay open."""

    def __init__(self) -> None:
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        return Future()


class QuietSource:
    """A followed container's output: `lines`, then nothing until closed."""

    def __init__(self, *lines: bytes) -> None:
        self._lines = list(lines)
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._lines:
            return self._lines.pop(0)
        self.closed.wait()
        raise StopIteration

    def close(self) -> None:
        self.closed.set()


@dataclass
class FakeRuntime:
    sources: dict[str, QuietSource] = field(default_factory=dict)

    def logs(self, task_id: str, *, follow: bool, tail: int | None) -> QuietSource:
        return self.sources[task_id]


def follow(task_id: str = "t1") -> LogsRequest:
    return LogsRequest(task_id=task_id, follow=True)


def test_reply_targets() -> None:
    assert usable_reply_queue(QUEUE)
    assert not usable_reply_queue(DIRECT)  # a worker may not write to the default exchange
    for unusable in (None, "", "corral.api", "amq.rabbitmq.reply-to", "amq.gen-", "corral.node.n1"):
        assert not usable_reply_queue(unusable)


@pytest.mark.parametrize("reply_to", [None, "", "corral.api", "corral.dead"])
def test_a_request_with_no_usable_reply_queue_costs_nothing(reply_to: str | None) -> None:
    bus, pool = FakeBus(), FakePool()
    streamer = LogStreamer(bus, FakeRuntime(), "n1", pool, limit=4)
    streamer.handle(follow(), reply_to, "c1")
    assert (bus.sent, pool.jobs, streamer.active) == ([], 0, 0)


def test_a_full_node_answers_busy_at_once() -> None:
    bus, pool = FakeBus(), FakePool()
    streamer = LogStreamer(bus, FakeRuntime(), "n1", pool, limit=2)
    for index in range(2):
        streamer.handle(follow(), f"{QUEUE}-{index}", None)
    streamer.handle(follow(), f"{QUEUE}-late", "c9")
    assert (pool.jobs, streamer.active) == (2, 2)
    (answer,) = [sent for sent in bus.sent if sent.routing_key == f"{QUEUE}-late"]
    assert answer.chunk.end is True
    assert "node n1 is busy" in answer.chunk.error


def test_a_direct_reply_to_name_gets_nothing() -> None:
    # Chunks go through corral.replies, which cannot reach a direct reply-to name.
    bus, pool = FakeBus(), FakePool()
    streamer = LogStreamer(bus, FakeRuntime(), "n1", pool, limit=1)
    streamer.handle(follow(), DIRECT, "c1")
    streamer.handle(LogsRequest(task_id="t1"), DIRECT, "c2")
    assert bus.sent == [] and pool.jobs == 0


def test_output_then_end_and_keepalives_meanwhile() -> None:
    bus, source = FakeBus(), QuietSource(b"one\n", b"two\n")
    with ThreadPoolExecutor(1) as pool:
        streamer = LogStreamer(bus, FakeRuntime({"t1": source}), "n1", pool, limit=1)
        streamer.handle(follow(), QUEUE, "c1")
        bus.run_until(lambda: len(bus.sent) == 3)
        streamer.keepalive()
        source.close()  # the container ended
        bus.run_until(lambda: streamer.active == 0)
    chunks = [(sent.chunk.data, sent.chunk.end) for sent in bus.sent]
    assert chunks == [("", False), ("one\n", False), ("two\n", False), ("", False), ("", True)]
    assert all(sent.mandatory for sent in bus.sent)


def test_a_returned_keepalive_ends_a_quiet_stream() -> None:
    bus, source = FakeBus(), QuietSource()
    with ThreadPoolExecutor(1) as pool:
        streamer = LogStreamer(bus, FakeRuntime({"t1": source}), "n1", pool, limit=1)
        streamer.handle(follow(), QUEUE, "c1")
        streamer.keepalive()
        returned = bus.sent[-1].on_returned
        assert returned is not None
        returned()  # the client's queue is gone
        assert source.closed.is_set()
        bus.run_until(lambda: streamer.active == 0)
    assert not any(sent.chunk.end for sent in bus.sent)  # nobody to tell
