"""The master under hostile and heavy input, beside a real cluster.

- a fake node that heartbeats huge capacity but has no assignment queue;
- a 10,000-replica job that nothing can place;
- a listing longer than a page;
- a request delivered twice (as the broker redelivers after a reconnect).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from bus import topology
from schemas.envelope import encode
from schemas.messages import Heartbeat, Resources
from tests.cluster import Cluster, wait_until
from tests.integration.test_cluster import batch, service
from tests.rawamqp import url_user

pytestmark = pytest.mark.integration

HUGE = Resources(cpus=1000, memory=1024**4)


def fake_heartbeats(url: str, node_id: str, stop: threading.Event) -> None:
    """Heartbeat as node `node_id` every 0.5 s until `stop`; never declare or read its queue.
    As the URL's user (the master's own in the tests), which the master takes beats from."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    properties = pika.BasicProperties(user_id=url_user(url))
    seq = 0
    while not stop.is_set():
        beat = Heartbeat(
            node_id=node_id,
            boot_id="fake-boot",
            seq=seq,
            interval=0.5,
            capacity=HUGE,
            allocated=Resources(cpus=0, memory=0),
        )
        body = encode(beat, sender="fake")
        channel.basic_publish(
            topology.HEARTBEAT_EXCHANGE, topology.heartbeat_key(node_id), body, properties
        )
        seq += 1
        connection.process_data_events(time_limit=0.5)
    connection.close()


@pytest.fixture
def fake_node(cluster: Cluster) -> Iterator[str]:
    """A node that heartbeats with room for everything and consumes nothing."""
    node_id = cluster.node_id("fake")
    stop = threading.Event()
    thread = threading.Thread(target=fake_heartbeats, args=(cluster.amqp_url, node_id, stop))
    thread.start()
    try:
        cluster.wait_nodes_ready(3)
        yield node_id
    finally:
        stop.set()
        thread.join(timeout=10)


def test_a_node_without_an_assignment_queue_does_not_make_the_master_spin(
    cluster: Cluster, fake_node: str
) -> None:
    client = cluster.client
    client.submit(service("web", replicas=4, cpu=0.1))
    real = {cluster.node_id("w1"), cluster.node_id("w2")}

    def running_on_real_workers() -> bool:
        tasks = [t for t in client.tasks("web") if t.state == "running"]
        return len(tasks) == 4 and {t.node_id for t in tasks} <= real

    # Before the fix the replicas sent to the fake node came back, were replaced there
    # again at once, and so on for ever: this wait never ended.
    wait_until(running_on_real_workers, timeout=60, what="4 replicas running on real workers")
    tasks = client.tasks("web")
    lost = [t for t in tasks if t.node_id == fake_node]
    assert lost  # it had the most room, so spread sent it replicas first
    assert all(t.state == "lost" and "no assignment queue" in t.reason for t in lost)
    assert len(tasks) == 4 + len(lost) <= 8
    fake = next(n for n in client.nodes() if n.node_id == fake_node)
    assert (fake.state, fake.tasks) == ("ready", 0)
    wait_until(lambda: client.job("web").state == "running", what="every replica healthy")


def test_the_master_keeps_serving_after_a_huge_job_it_cannot_place(cluster: Cluster) -> None:
    client = cluster.client  # its requests time out after 10 s
    big = client.submit(service("big", replicas=10_000, cpu=64)).last
    assert big is not None and big.state == "pending"
    assert big.task_counts == {"pending": 10_000}
    assert "no node can run it" in big.reason and big.tasks_omitted > 0
    assert len(client.nodes()) == 2

    done = client.submit(batch("after", "echo still here")).wait(timeout=60)
    assert done.state == "complete"

    pages = [len(page) for page in client.iter_tasks("big", page_size=5000)]
    assert len(pages) >= 2 and sum(pages) == 10_000
    listed = client.tasks("big")
    assert len({t.task_id for t in listed}) == 10_000
    assert [(t.slot, t.attempt) for t in listed] == sorted((t.slot, t.attempt) for t in listed)


def request(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Publish `body` to corral.requests (as a submitter, with the URL's user) with direct
    reply-to and wait for the reply's payload."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        answers: list[bytes] = []
        channel.basic_consume(
            "amq.rabbitmq.reply-to", lambda *args: answers.append(args[3]), auto_ack=True
        )
        channel.basic_publish(
            topology.API_EXCHANGE,
            topology.api_key("submitter", body["type"]),
            json.dumps(body).encode(),
            properties=pika.BasicProperties(
                reply_to="amq.rabbitmq.reply-to",
                correlation_id=uuid.uuid4().hex,
                user_id=url_user(url),
            ),
        )
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
        assert answers, "no reply within 10 s"
        payload: dict[str, Any] = json.loads(answers[0])["payload"]
        return payload
    finally:
        connection.close()


def test_a_request_delivered_twice_gets_its_own_job_not_a_conflict(cluster: Cluster) -> None:
    submit = {
        "type": "api.submit",
        "version": 1,
        "message_id": uuid.uuid4().hex,
        "payload": {"spec": service("twice")},
    }
    first = request(cluster.amqp_url, submit)
    again = request(cluster.amqp_url, submit)  # what a redelivery looks like to the master
    assert first["ok"] and again["ok"], (first, again)
    assert again["result"]["job_id"] == "twice"
    assert {t["task_id"] for t in again["result"]["tasks"]} == {
        t["task_id"] for t in first["result"]["tasks"]
    }
    other = request(cluster.amqp_url, {**submit, "message_id": uuid.uuid4().hex})
    assert not other["ok"] and other["error"]["code"] == "conflict"
