"""The broker tells the active master at once that a worker's connection closed.

Against the real broker, with its rabbitmq_event_exchange plugin (scripts/bootstrap.sh
enables it): `bus.brokerevents.ConnectionWatch` reads the events of every vhost from
the vhost "/" and hands the node ids of its own vhost's workers to its owner's thread.
To show that an event was ignored, each test closes a "marker" worker connection last:
events arrive in order, so whatever was heard before the marker is all there was.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from bus import Bus
from bus.brokerevents import ConnectionWatch
from bus.connevents import VHOST_PROPERTY, vhost_claim, worker_connection_name
from master.controller import Controller
from master.daemon import MasterDaemon
from master.settings import MasterSettings
from tests.cluster import wait_until
from tests.conftest import Broker

pytestmark = pytest.mark.integration

Heard = queue.Queue[tuple[str, str]]  # (node id, the thread it was heard on)


def unique(prefix: str = "n") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def open_as(url: str, name: str) -> Bus:
    """A connection as Corral's daemons make them (named, with the vhost claim)."""
    bus = Bus(url, name=name, declare_topology=False)
    bus.connect(attempts=3)
    return bus


def open_and_close(url: str, name: str) -> None:
    open_as(url, name).close()


def open_raw(url: str, properties: dict[str, Any]) -> Any:
    """A connection with exactly these client properties (no claim unless given)."""
    parameters = pika.URLParameters(url)
    parameters.client_properties = properties
    return pika.BlockingConnection(parameters)


def vhost_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])


@pytest.fixture
def owner(vhost_url: str) -> Iterator[Bus]:
    """A bus serving on a thread of its own, as a master's term does."""
    bus = Bus(vhost_url, name=unique("owner-"), declare_topology=False)
    stop = threading.Event()
    bus.connect(stop, attempts=3)
    thread = threading.Thread(target=bus.run, args=(stop,), name="owner-thread")
    thread.start()
    yield bus
    stop.set()
    thread.join(timeout=10)


@pytest.fixture
def heard() -> Heard:
    return queue.Queue()


@pytest.fixture
def make_watch(owner: Bus, heard: Heard) -> Iterator[Callable[..., ConnectionWatch]]:
    """Start a ConnectionWatch for a URL (the test's vhost unless told) posting to `owner`."""
    watches: list[ConnectionWatch] = []

    def record(node_id: str) -> None:
        heard.put((node_id, threading.current_thread().name))

    def make(url: str | None = None, *, wait: bool = True, **kwargs: Any) -> ConnectionWatch:
        watch = ConnectionWatch(
            url or owner.url, record, owner.call_threadsafe, name=unique("watch-"), **kwargs
        )
        watches.append(watch)
        watch.start()
        if wait:
            assert watch.subscribed.wait(15), "the watch never subscribed"
        return watch

    yield make
    for watch in watches:
        watch.stop()
        assert not watch.running


@pytest.fixture
def other_vhost(broker: Broker) -> Iterator[str]:
    vhost = f"corral-test-{uuid.uuid4().hex[:10]}"
    url = broker.create_vhost(vhost)
    yield url
    broker.delete_vhost(vhost)


def heard_before_marker(url: str, heard: Heard) -> list[str]:
    """Close a marker worker connection on `url`; what was heard before it."""
    marker = unique("marker")
    open_and_close(url, worker_connection_name(marker))
    before: list[str] = []
    while True:
        node_id, _thread = heard.get(timeout=10)
        if node_id == marker:
            return before
        before.append(node_id)


def test_a_worker_connection_closing_is_heard_once_at_once_on_the_owner_thread(
    vhost_url: str, make_watch: Callable[..., ConnectionWatch], heard: Heard
) -> None:
    make_watch()
    node_id = unique()
    worker = open_as(vhost_url, worker_connection_name(node_id))
    assert heard.empty()  # opening is not closing
    worker.close()
    closed_at = time.monotonic()
    assert heard.get(timeout=1.0) == (node_id, "owner-thread")
    assert time.monotonic() - closed_at < 1.0
    assert heard_before_marker(vhost_url, heard) == []  # exactly once


def test_a_connection_the_broker_sees_die_is_heard_too(
    vhost_url: str, make_watch: Callable[..., ConnectionWatch], heard: Heard
) -> None:
    """An agent killed with -9: no connection.close, the socket just goes."""
    make_watch()
    node_id = unique()
    worker = open_raw(vhost_url, {"connection_name": worker_connection_name(node_id)})
    worker._impl._transport._sock.shutdown(2)  # SHUT_RDWR, under pika's feet
    assert heard.get(timeout=5)[0] == node_id


@pytest.mark.parametrize(
    "name",
    [
        "client:x",
        "master:m1",
        "worker:",
        "worker:-leading-dash",
        "worker:has.dot",
        "worker:has space",
        "worker:" + "x" * 64,
        "worker:ok\n",
        "Worker:upper",
        "worker:é",
    ],
)
def test_other_names_are_ignored(
    vhost_url: str, make_watch: Callable[..., ConnectionWatch], heard: Heard, name: str
) -> None:
    make_watch()
    open_raw(
        vhost_url, {"connection_name": name, VHOST_PROPERTY: vhost_claim(vhost_of(vhost_url))}
    ).close()
    assert heard_before_marker(vhost_url, heard) == []


def test_workers_of_another_vhost_are_ignored_even_claiming_ours(
    vhost_url: str,
    other_vhost: str,
    make_watch: Callable[..., ConnectionWatch],
    heard: Heard,
) -> None:
    make_watch()
    same_id = unique()
    open_and_close(other_vhost, worker_connection_name(same_id))  # an honest neighbour
    forged = {
        "connection_name": worker_connection_name(same_id),
        VHOST_PROPERTY: vhost_claim(vhost_of(vhost_url)),  # the broker saw it made elsewhere
    }
    open_raw(other_vhost, forged).close()
    assert heard_before_marker(vhost_url, heard) == []


def test_a_worker_connected_before_the_watch_started_is_heard_by_its_claim(
    vhost_url: str, make_watch: Callable[..., ConnectionWatch], heard: Heard
) -> None:
    """A master taking the lead finds its workers connected long ago: it never saw those
    connections made, so the vhost they claim is all there is to go by."""
    claiming, silent = unique(), unique()
    worker = open_as(vhost_url, worker_connection_name(claiming))
    old = open_raw(vhost_url, {"connection_name": worker_connection_name(silent)})  # no claim
    make_watch()
    old.close()
    worker.close()
    assert heard.get(timeout=5)[0] == claiming
    assert heard_before_marker(vhost_url, heard) == []


def test_the_watch_reads_on_after_losing_its_connection(
    vhost_url: str, broker: Broker, make_watch: Callable[..., ConnectionWatch], heard: Heard
) -> None:
    watch = make_watch()
    events_name = f"{watch.name} (events)"

    def connections() -> list[str]:
        return [
            c["name"]
            for c in broker.api("GET", "connections")
            if (c.get("client_properties") or {}).get("connection_name") == events_name
        ]

    [first] = wait_until(connections, what="the watch's connection")
    broker.api("DELETE", f"connections/{urllib.parse.quote(first, safe='')}")
    wait_until(
        lambda: watch.subscribed.is_set() and connections() not in ([], [first]),
        timeout=20,
        what="the watch subscribed again on a new connection",
    )
    node_id = unique()
    open_and_close(vhost_url, worker_connection_name(node_id))
    assert heard.get(timeout=5)[0] == node_id


def test_without_the_event_exchange_it_warns_once_and_stops(
    vhost_url: str,
    owner: Bus,
    make_watch: Callable[..., ConnectionWatch],
    heard: Heard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The test's own vhost has no amq.rabbitmq.event: as a broker without the plugin."""
    caplog.set_level(logging.WARNING, logger="corral.bus")
    watch = make_watch(wait=False, events_vhost=vhost_of(vhost_url))
    wait_until(lambda: not watch.running, timeout=15, what="the watch to give up")
    warnings = [r.getMessage() for r in caplog.records if r.name == "corral.bus"]
    assert len(warnings) == 1, warnings
    assert "rabbitmq_event_exchange is not enabled" in warnings[0]
    assert "agent crashes will be treated as host losses after dead_after" in warnings[0]
    open_and_close(vhost_url, worker_connection_name(unique()))
    done = threading.Event()
    owner.call_threadsafe(done.set)  # the owner goes on serving
    assert done.wait(5)
    watch.stop()
    assert heard.empty()


def test_a_missing_events_vhost_warns_once_and_stops(
    make_watch: Callable[..., ConnectionWatch], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="corral.bus")
    watch = make_watch(wait=False, events_vhost=unique("no-such-vhost-"))
    wait_until(lambda: not watch.running, timeout=15, what="the watch to give up")
    warnings = [r.getMessage() for r in caplog.records if r.name == "corral.bus"]
    assert len(warnings) == 1, warnings
    assert "refused access to vhost" in warnings[0]


def test_the_active_master_tells_its_controller_and_stops_listening_when_its_term_ends(
    vhost_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    told: queue.Queue[tuple[str, str]] = queue.Queue()

    def connection_closed(self: Controller, node_id: str, now: float) -> None:
        told.put((node_id, threading.current_thread().name))

    monkeypatch.setattr(Controller, "connection_closed", connection_closed)
    settings = MasterSettings(amqp_url=vhost_url, name=unique("m"))
    daemon = MasterDaemon(settings)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), name="master-thread")
    thread.start()

    def listening() -> bool:
        return any(t.name == f"master:{settings.name} (events)" for t in threading.enumerate())

    try:
        wait_until(
            lambda: daemon.term is not None and daemon.term.role == "active",
            timeout=30,
            what="the master to take the lead",
        )
        wait_until(listening, timeout=10, what="the master's connection watch")
        # Its thread runs before its queue is bound: close connections until one is heard.
        closed = []
        for _ in range(20):
            closed.append(unique())
            open_and_close(vhost_url, worker_connection_name(closed[-1]))
            with contextlib.suppress(queue.Empty):
                node_id, thread_name = told.get(timeout=1)
                break
        else:
            raise AssertionError("no closed connection reached the controller in 20 s")
        assert node_id in closed and thread_name == "master-thread"
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert not listening()
