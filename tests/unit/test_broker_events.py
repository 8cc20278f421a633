"""Reading RabbitMQ's connection events: headers in, the node ids of closed workers out.

The headers below are what RabbitMQ 3.10.8 sent (pika decodes them as shown), trimmed.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.brokerevents import events_url
from bus.connevents import (
    VHOST_PROPERTY,
    ConnectionEvent,
    WorkerConnections,
    client_properties,
    parse_event,
    vhost_claim,
    worker_connection_name,
    worker_node,
)

CREATED = "connection.created"
CLOSED = "connection.closed"
PID = "<rabbit@vm.1795807062.29700.0>"


def properties(name: str | None = "worker:n1", claim: str | None = None) -> list[Any]:
    items: list[Any] = [
        '{<<"product">>,longstr,<<"Pika Python Client Library">>}',
        '{<<"capabilities">>,table,[{<<"authentication_failure_close">>,bool,true},'
        '{<<"basic.nack">>,bool,true}]}',
        '{<<"version">>,longstr,<<"1.4.4">>}',
    ]
    if name is not None:
        items.append(f'{{<<"connection_name">>,longstr,<<"{name}">>}}')
    if claim is not None:
        items.append(f'{{<<"{VHOST_PROPERTY}">>,longstr,<<"{claim}">>}}')
    return items


def created(vhost: str = "corral-a", name: str = "worker:n1", pid: str = PID) -> dict[str, Any]:
    return {
        "user_who_performed_action": "guest",
        "node": "rabbit@vm",
        "connected_at": 1795807380459,
        "client_properties": properties(name, vhost_claim(vhost)),
        "vhost": vhost,
        "user": "guest",
        "name": "127.0.0.1:46722 -> 127.0.0.1:5672",
        "pid": pid,
        "type": "network",
        "user_provided_name": name,
        "timestamp_in_ms": 1795807380462,
    }


def closed(
    name: str = "worker:n1", claim: str | None = "corral-a", pid: str = PID
) -> dict[str, Any]:
    return {
        "client_properties": properties(name, None if claim is None else vhost_claim(claim)),
        "node": "rabbit@vm",
        "pid": pid,
        "name": "127.0.0.1:46722 -> 127.0.0.1:5672",
        "user_provided_name": name,
        "timestamp_in_ms": 1795807380463,
    }


def feed(workers: WorkerConnections, key: str, headers: Any) -> str | None:
    event = parse_event(key, headers)
    return None if event is None else workers.feed(event)


# -- parsing --


def test_a_closed_event_gives_name_pid_and_claim_but_no_vhost() -> None:
    assert parse_event(CLOSED, closed()) == ConnectionEvent(
        closed=True, node_id="n1", pid=PID, vhost=None, claimed_vhost="corral-a"
    )


def test_a_created_event_gives_the_brokers_vhost() -> None:
    event = parse_event(CREATED, created(vhost="corral-b"))
    assert event is not None and not event.closed
    assert (event.vhost, event.claimed_vhost, event.node_id) == ("corral-b", "corral-b", "n1")


@pytest.mark.parametrize("key", ["connection.closed.x", "channel.closed", "queue.deleted", ""])
def test_other_events_say_nothing(key: str) -> None:
    assert parse_event(key, closed()) is None


def test_the_name_falls_back_to_the_client_properties() -> None:
    headers = closed()
    del headers["user_provided_name"]
    event = parse_event(CLOSED, headers)
    assert event is not None and event.node_id == "n1"


def test_string_values_may_come_as_bytes() -> None:
    headers = closed()
    headers["user_provided_name"] = b"worker:n2"
    headers["pid"] = PID.encode()
    event = parse_event(CLOSED, headers)
    assert event is not None and (event.node_id, event.pid) == ("n2", PID)


@pytest.mark.parametrize(
    "vhost", ["/", "corral-test-0123456789", "a/b", "spaces and, commas", "é", '"quoted"\\']
)
def test_any_vhost_survives_the_claim(vhost: str) -> None:
    event = parse_event(CLOSED, closed(claim=vhost))
    assert event is not None and event.claimed_vhost == vhost


@pytest.mark.parametrize("claim", ["%ff", "has space", 'quote"', "x" * 5000, "\u00e9", "%C3"])
def test_a_malformed_claim_is_no_claim(claim: str) -> None:
    headers = closed(claim=None)
    headers["client_properties"] = properties(claim=claim)
    event = parse_event(CLOSED, headers)
    assert event is not None and event.claimed_vhost is None


def test_client_properties_keep_plain_strings_only() -> None:
    found = client_properties(
        [
            *properties("worker:n1", "v"),
            '{<<"escaped">>,longstr,<<"a\\"b">>}',
            '{<<"number">>,long,5}',
            b'{<<"from_bytes">>,longstr,<<"yes">>}',
            b'{<<"not_utf8">>,longstr,<<"\xff">>}',
            7,
            None,
            ["nested"],
            '{<<"connection_name">>,longstr,<<"second">>}',  # the first one counts
        ]
    )
    assert found == {
        "product": "Pika Python Client Library",
        "version": "1.4.4",
        "connection_name": "worker:n1",
        VHOST_PROPERTY: "v",
        "from_bytes": "yes",
    }


@pytest.mark.parametrize("value", [None, 5, "a string", b"bytes", {"a": "b"}, [], object()])
def test_client_properties_of_any_other_shape_are_none(value: Any) -> None:
    assert client_properties(value) == {}


@pytest.mark.parametrize(
    ("name", "node_id"),
    [
        ("worker:n1", "n1"),
        ("worker:A-b_9", "A-b_9"),
        (worker_connection_name("x" * 63), "x" * 63),
        ("worker:" + "x" * 64, None),
        ("worker:", None),
        ("worker:-a", None),
        ("worker:a.b", None),
        ("worker:a b", None),
        ("worker:a\n", None),
        ("Worker:a", None),
        ("client:a", None),
        ("worker:worker:a", None),
        (None, None),
    ],
)
def test_only_worker_names_with_a_valid_node_id_count(
    name: str | None, node_id: str | None
) -> None:
    assert worker_node(name) == node_id


@given(
    st.sampled_from([CREATED, CLOSED]),
    st.one_of(
        st.none(),
        st.integers(),
        st.text(),
        st.lists(st.one_of(st.text(), st.binary(), st.integers())),
        st.dictionaries(
            st.sampled_from(
                ["pid", "vhost", "user_provided_name", "client_properties", "name", "node"]
            ),
            st.one_of(
                st.none(),
                st.text(),
                st.binary(),
                st.integers(),
                st.booleans(),
                st.lists(st.one_of(st.text(), st.binary(), st.integers(), st.none())),
                st.dictionaries(st.text(), st.text()),
            ),
        ),
    ),
)
def test_no_headers_make_the_reader_raise(key: str, headers: Any) -> None:
    feed(WorkerConnections(["v"]), key, headers)


# -- which closes count --


def test_a_worker_seen_connecting_in_our_vhost_is_heard_closing() -> None:
    workers = WorkerConnections(["corral-a"])
    assert feed(workers, CREATED, created()) is None
    assert feed(workers, CLOSED, closed()) == "n1"
    assert len(workers) == 0


def test_the_brokers_word_beats_a_forged_claim() -> None:
    workers = WorkerConnections(["corral-a"])
    feed(workers, CREATED, created(vhost="corral-b"))  # made in another vhost
    assert feed(workers, CLOSED, closed(claim="corral-a")) is None


def test_a_worker_connected_before_we_listened_is_judged_by_its_claim() -> None:
    workers = WorkerConnections(["corral-a"])
    assert feed(workers, CLOSED, closed(claim="corral-a")) == "n1"
    assert feed(workers, CLOSED, closed(claim="corral-b")) is None
    assert feed(workers, CLOSED, closed(claim=None)) is None


def test_a_vhost_header_on_a_close_would_be_the_brokers_word() -> None:
    workers = WorkerConnections(["corral-a"])
    assert feed(workers, CLOSED, {**closed(claim="corral-b"), "vhost": "corral-a"}) == "n1"
    assert feed(workers, CLOSED, {**closed(claim="corral-a"), "vhost": "corral-b"}) is None


def test_a_creation_without_a_vhost_makes_its_close_count_for_nobody() -> None:
    workers = WorkerConnections(["corral-a"])
    headers = created()
    del headers["vhost"]
    feed(workers, CREATED, headers)
    assert feed(workers, CLOSED, closed(claim="corral-a")) is None


def test_without_a_pid_nothing_counts() -> None:
    workers = WorkerConnections(["corral-a"])
    headers = closed()
    del headers["pid"]
    assert feed(workers, CLOSED, headers) is None


def test_only_worker_connections_are_remembered_and_only_so_many() -> None:
    workers = WorkerConnections(["corral-a"], limit=3)
    feed(workers, CREATED, created(name="client:x"))
    assert len(workers) == 0
    for index in range(5):
        feed(workers, CREATED, created(vhost="corral-b", pid=f"<p.{index}>"))
    assert len(workers) == 3
    # The oldest were forgotten: their closes are judged by their claims again.
    assert feed(workers, CLOSED, closed(claim="corral-a", pid="<p.0>")) == "n1"
    assert feed(workers, CLOSED, closed(claim="corral-a", pid="<p.4>")) is None


# -- the events vhost --


@pytest.mark.parametrize(
    ("url", "vhost", "expected"),
    [
        ("amqp://u:p@h:5672/corral-x", "/", "amqp://u:p@h:5672/%2F"),
        ("amqp://h/", "/", "amqp://h/%2F"),
        ("amqp://h", "events", "amqp://h/events"),
        ("amqps://h/v?heartbeat=5", "a/b", "amqps://h/a%2Fb?heartbeat=5"),
        ("amqp://h1/v,amqp://h2/v", "/", "amqp://h1/%2F,amqp://h2/%2F"),
    ],
)
def test_the_events_url_is_the_same_nodes_on_the_events_vhost(
    url: str, vhost: str, expected: str
) -> None:
    assert events_url(url, vhost) == expected
