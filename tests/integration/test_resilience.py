"""Bad input is dead-lettered without hurting the master; workers restart without duplicates."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pika
import pytest

from bus import topology
from tests.cluster import Cluster, wait_until
from tests.conftest import Broker
from tests.integration.test_cluster import service
from tests.rawamqp import url_user

pytestmark = pytest.mark.integration

BAD_SUBMIT = {"type": "api.submit", "version": 1, "payload": {"spec": {"name": "x", "cpu": -1}}}
BAD_HEARTBEAT = {"type": "heartbeat", "version": 1, "payload": {"node_id": "n1", "seq": "many"}}


def dead_letters(url: str) -> list[tuple[dict[str, object], bytes]]:
    """Drain corral.dead: (headers, body) of each dead letter."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        found: list[tuple[dict[str, object], bytes]] = []
        while True:
            method, properties, body = channel.basic_get("corral.dead", auto_ack=True)
            if method is None:
                return found
            found.append((dict(properties.headers or {}), body))
    finally:
        connection.close()


def test_malformed_messages_are_dead_lettered_and_the_master_keeps_serving(
    cluster: Cluster, broker: Broker
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(cluster.amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    # Unreadable input is refused before anyone asks who sent it: no user_id needed.
    submit_key = topology.api_key("submitter", "api.submit")
    channel.basic_publish(topology.API_EXCHANGE, submit_key, b"\x00\xff not json")
    channel.basic_publish(topology.API_EXCHANGE, submit_key, json.dumps(BAD_SUBMIT).encode())
    channel.basic_publish(topology.HEARTBEAT_EXCHANGE, "n1", b"{{{{")
    channel.basic_publish(topology.HEARTBEAT_EXCHANGE, "n1", json.dumps(BAD_HEARTBEAT).encode())

    # A sender that asked for a reply is told what was wrong.
    replies = []
    channel.basic_consume(
        "amq.rabbitmq.reply-to", lambda *args: replies.append(args[3]), auto_ack=True
    )
    channel.basic_publish(
        topology.API_EXCHANGE,
        submit_key,
        json.dumps(BAD_SUBMIT).encode(),
        properties=pika.BasicProperties(
            reply_to="amq.rabbitmq.reply-to",
            correlation_id="c1",
            user_id=url_user(cluster.amqp_url),
        ),
    )
    while not replies:
        connection.process_data_events(time_limit=0.2)
    connection.close()
    reply = json.loads(replies[0])
    assert reply["payload"]["ok"] is False
    assert reply["payload"]["error"]["code"] == "invalid_message"
    assert "payload.spec.cpu" in reply["payload"]["error"]["message"]

    letters: list[tuple[dict[str, object], bytes]] = []

    def five_letters() -> bool:
        letters.extend(dead_letters(cluster.amqp_url))
        return len(letters) >= 5

    wait_until(five_letters, timeout=20, what="five dead letters")
    reasons = {body: str(headers["x-corral-reason"]) for headers, body in letters}
    assert "not JSON" in reasons[b"\x00\xff not json"]
    assert "not JSON" in reasons[b"{{{{"]
    assert "payload.spec.cpu" in reasons[json.dumps(BAD_SUBMIT).encode()]
    assert "payload.seq" in reasons[json.dumps(BAD_HEARTBEAT).encode()]
    queues = {str(headers["x-corral-queue"]) for headers, _ in letters}
    assert "corral.api" in queues and any(q.startswith("amq.gen-") for q in queues)

    # Still serving: listing and a real job both work.
    assert len(cluster.client.nodes()) == 2
    assert cluster.client.submit(service("after-garbage")).wait(timeout=30).state == "running"


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_restarting_a_worker_does_not_duplicate_its_containers(
    vhost_url: str, tmp_path: Path, docker_engine: None, hard: bool
) -> None:
    # A slow machine must not turn the restart into a node loss (that path, with
    # rescheduling and fencing, is tests/chaos/test_worker_partition.py and, past the
    # agent grace, tests/chaos/test_agent_crash.py): allow 15 s.
    cluster = Cluster(vhost_url, tmp_path).start(workers=2, dead_after=15)
    try:
        _restart_worker_and_check(cluster, hard)
    finally:
        print(cluster.logs())
        cluster.close()


def _restart_worker_and_check(cluster: Cluster, hard: bool) -> None:
    cluster.client.submit(service("steady", replicas=4)).wait(timeout=30)
    before = {c.id for c in cluster.containers("steady", all=False)}
    assert len(before) == 4

    cluster.stop("w1", hard=hard)
    cluster.start_worker("w1")
    w1 = cluster.node_id("w1")

    def w1_seen() -> datetime | None:
        node = next((n for n in cluster.client.nodes() if n.node_id == w1), None)
        return node.last_seen if node is not None and node.state == "ready" else None

    back = wait_until(w1_seen, what="w1 back")
    # Three heartbeats later, still the very same four containers and four tasks.
    wait_until(
        lambda: (seen := w1_seen()) is not None and (seen - back).total_seconds() >= 3,
        what="three more heartbeats from w1",
    )
    assert {c.id for c in cluster.containers("steady", all=False)} == before
    info = cluster.client.job("steady")
    assert info.state == "running"
    assert [t.attempt for t in info.tasks] == [0, 0, 0, 0]
