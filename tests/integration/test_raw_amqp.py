"""A job submitted the way docs/protocol.md describes, with pika and json only (no Corral code)."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from typing import Any

import pika
import pytest

from tests.cluster import Cluster
from tests.conftest import TEST_IMAGE

pytestmark = pytest.mark.integration


def call(
    channel: Any, connection: Any, request: dict[str, Any], role: str, user: str
) -> dict[str, Any]:
    """One request/reply through RabbitMQ's direct reply-to: published on the
    corral.requests exchange with the routing key `<role>.<type>`, as broker user `user`
    (the broker checks that it is the connection's)."""
    answers: dict[str, bytes] = {}
    tag = channel.basic_consume(
        "amq.rabbitmq.reply-to",
        lambda _ch, _m, props, body: answers.update({props.correlation_id: body}),
        auto_ack=True,
    )
    correlation_id = uuid.uuid4().hex
    channel.basic_publish(
        exchange="corral.requests",
        routing_key=f"{role}.{request['type']}",
        body=json.dumps(request),
        properties=pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            reply_to="amq.rabbitmq.reply-to",
            correlation_id=correlation_id,
            user_id=user,
        ),
    )
    deadline = time.monotonic() + 10
    while correlation_id not in answers and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    channel.basic_cancel(tag)
    reply: dict[str, Any] = json.loads(answers[correlation_id])
    assert reply["type"] == "api.reply"
    return reply["payload"]  # type: ignore[no-any-return]


def test_a_raw_amqp_client_can_submit_and_follow_a_job(cluster: Cluster) -> None:
    user = urllib.parse.unquote(urllib.parse.urlsplit(cluster.amqp_url).username or "guest")
    connection = pika.BlockingConnection(pika.URLParameters(cluster.amqp_url))
    channel = connection.channel()
    # A dashboard's view: its own queue on the status exchange.
    status_queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(status_queue, "corral.status", routing_key="job.raw-job.#")

    submit = {
        "type": "api.submit",
        "version": 1,
        "payload": {
            "spec": {
                "name": "raw-job",
                "image": TEST_IMAGE,
                "command": ["sh", "-c", "echo raw; exit 0"],
            }
        },
    }
    reply = call(channel, connection, submit, "submitter", user)
    assert reply["ok"] is True, reply
    assert reply["result"]["job_id"] == "raw-job"

    states = []
    deadline = time.monotonic() + 30
    while "complete" not in states and time.monotonic() < deadline:
        method, _props, body = channel.basic_get(status_queue, auto_ack=True)
        if method is None:
            connection.process_data_events(time_limit=0.2)
            continue
        event = json.loads(body)
        assert event["type"] == "job.status"
        states.append(event["payload"]["state"])
    assert states[-1] == "complete", states

    read = {"type": "api.job", "payload": {"job_id": "raw-job"}}
    job = call(channel, connection, read, "viewer", user)
    assert job["result"]["state"] == "complete"
    assert job["result"]["tasks"][0]["exit_code"] == 0
    connection.close()
