"""Hostile input at the bus's edge: forged reply_to names, oversized bodies, closed channels.

Each test names the case of the robustness issue it guards (numbers as in the issue).
"""

from __future__ import annotations

import json
import urllib.parse

import pika
import pytest

from bus import topology
from tests.cluster import Cluster, wait_until
from tests.conftest import Broker
from tests.integration.test_cluster import batch, service
from tests.integration.test_resilience import dead_letters
from tests.rawamqp import DIRECT, RawClient, forged_reply_names

pytestmark = pytest.mark.integration

NODES = {"type": "api.nodes"}


def vhost_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])


def test_forged_reply_to_names_cannot_knock_the_master_off_the_broker(cluster: Cluster) -> None:
    """Case 5: a made-up direct reply-to name made RabbitMQ close the replier's connection."""
    with RawClient(cluster.amqp_url) as raw:
        forged = forged_reply_names(raw.own_reply_name())
        garbage = ["amq.rabbitmq.reply-to.!!!.x", "amq.rabbitmq.reply-to.abc", "corral.api"]
        for round_ in range(4):
            for name in [*forged, *garbage]:
                raw.publish(NODES, reply_to=name)
            # A normal request in between is answered every time.
            reply = raw.call(NODES)
            assert reply["payload"]["ok"] is True, round_
    assert len(cluster.client.nodes()) == 2
    logs = cluster.logs()
    assert "lost the broker connection" not in logs
    assert "closed a reply connection" in logs  # the guard met the forged names


def test_replies_never_go_to_corrals_own_queues(cluster: Cluster) -> None:
    """Case 5: replies went to any queue named in reply_to, Corral's own included."""
    with RawClient(cluster.amqp_url) as raw:
        for queue in ("corral.dead", "corral.api", "corral.master.status"):
            raw.publish(NODES, reply_to=queue)
        raw.call(NODES)  # processed in order: the others were handled before this one
    letters = dead_letters(cluster.amqp_url)
    assert not [body for _, body in letters if b'"api.reply"' in body]
    assert cluster.client.nodes()


def test_an_oversized_message_is_refused_unread_and_the_sender_told(
    cluster: Cluster,
) -> None:
    """Cases 2 and 7: a huge valid-looking submit; dead letters keep only its head."""
    spec = batch("huge", "true", env={"BIG": "x" * (5 * 1024 * 1024)})
    with RawClient(cluster.amqp_url) as raw:
        reply = raw.call({"type": "api.submit", "payload": {"spec": spec}})
    assert reply["payload"]["ok"] is False
    assert reply["payload"]["error"]["code"] == "too_large"
    letters = wait_until(lambda: dead_letters(cluster.amqp_url), what="the dead letter")
    headers, body = letters[0]
    assert int(str(headers["x-corral-truncated"])) > 5 * 1024 * 1024
    assert len(body) <= 64 * 1024
    assert cluster.client.submit(batch("after-huge", "true")).wait(timeout=30).state == "complete"


def test_dead_letter_queue_is_bounded_in_length_size_and_age(
    cluster: Cluster, broker: Broker
) -> None:
    """Case 7: corral.dead kept full copies with no limit (270 MB after one run of bad input)."""
    arguments = broker.queue(vhost_of(cluster.amqp_url), "corral.dead")["arguments"]
    assert arguments["x-max-length"] > 0
    assert arguments["x-max-length-bytes"] > 0
    assert arguments["x-message-ttl"] > 0
    assert arguments["x-overflow"] == "drop-head"


def test_a_channel_the_broker_closes_is_recovered(cluster: Cluster, broker: Broker) -> None:
    """Case 2: the broker closed the master's publishing channel but not its connection,
    and the master went on consuming requests while sending nothing, silently."""
    vhost = urllib.parse.quote(vhost_of(cluster.amqp_url), safe="")
    # The next status event the master publishes makes the broker close its channel (404).
    broker.api("DELETE", f"exchanges/{vhost}/corral.status")
    first = cluster.client.submit(service("after-close"))
    assert first.wait(timeout=30).state == "running"

    def noticed() -> str | None:
        text = cluster.logs()
        return text if "the broker closed the publishing" in text else None

    logs = wait_until(noticed, what="the master to notice the closed channel")
    # A master rebuilds its state on a fresh connection after losing one while it led.
    assert "steps down" in logs
    assert cluster.client.submit(batch("still-serving", "true")).wait(timeout=30).state == (
        "complete"
    )


def test_a_handler_error_on_a_valid_envelope_gets_an_error_reply(cluster: Cluster) -> None:
    """Case 11: api.nodes sent to a worker's RPC queue was dead-lettered and never answered.
    The master answers a valid envelope it cannot take with an error. A worker answers
    no direct reply-to name at all (it writes only log chunks, to corral.replies): it
    dead-letters the message, saying what it expected."""
    node = cluster.node_id("w1")
    with RawClient(cluster.amqp_url) as raw:
        misplaced = {"type": "logs.request", "payload": {"task_id": "x-0-0"}}
        reply = raw.call(misplaced)
        assert reply["payload"]["ok"] is False
        assert "'logs.request' is not an API request" in reply["payload"]["error"]["message"]
        raw.publish(NODES, exchange=topology.RPC_EXCHANGE, routing_key=node, reply_to=DIRECT)

    rpc_queue = topology.node_rpc_queue(node).name

    def refused() -> list[str]:
        letters = dead_letters(cluster.amqp_url)
        return [str(h["x-corral-reason"]) for h, _ in letters if h["x-corral-queue"] == rpc_queue]

    (reason,) = wait_until(refused, what="the worker's dead letter")
    assert "expected a 'logs.request' message, got 'api.nodes'" in reason
    assert node in {n.node_id for n in cluster.client.nodes() if n.state == "ready"}


def test_a_request_to_a_vhost_without_corral_comes_back(vhost_url: str) -> None:
    """Case 11: a request published where no Corral process declared the queues was lost.
    Where nothing of Corral exists, the broker refuses the publish (corral.requests does
    not exist); where the exchanges exist but corral.api does not, a request published
    mandatory (as the SDK does) comes back at once."""
    body = json.dumps(NODES).encode()
    key = topology.api_key("viewer", "api.nodes")
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_publish(topology.API_EXCHANGE, key, body, mandatory=True)
        assert refused.value.reply_code == 404

        channel = connection.channel()
        channel.confirm_delivery()
        for exchange in topology.EXCHANGES:
            channel.exchange_declare(exchange.name, exchange.kind, durable=exchange.durable)
        with pytest.raises(pika.exceptions.UnroutableError):
            channel.basic_publish(topology.API_EXCHANGE, key, body, mandatory=True)
    finally:
        connection.close()
