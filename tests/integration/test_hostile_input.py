"""Valid-looking input a hostile or buggy client may send; each case named as in the issue.

Every request here goes through the real broker to a real master (and worker),
as raw AMQP: the sender gets a clear error naming the field, and the cluster
keeps serving.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus import topology
from corral.errors import CorralError
from tests.cluster import Cluster, wait_until
from tests.integration.test_cluster import batch
from tests.rawamqp import RawClient, forged_reply_names

pytestmark = pytest.mark.integration


def submit(raw: RawClient, spec: dict[str, Any]) -> dict[str, Any]:
    reply = raw.call({"type": "api.submit", "payload": {"spec": spec}})
    payload: dict[str, Any] = reply["payload"]
    return payload


def refused(payload: dict[str, Any], *needles: str) -> str:
    assert payload["ok"] is False, payload
    message = str(payload["error"]["message"])
    for needle in needles:
        assert needle in message, (needle, message)
    return message


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        # Case 7: a 40 MiB env was accepted, then failed 4 times at Docker's 16 MiB limit.
        ({"env": {"BIG": "x" * (1024 * 1024)}}, ("env",)),
        # Case 8: NanoCpus=0 means no limit at all; runc refuses less than 0.01.
        ({"cpu": 1e-12}, ("cpu",)),
        ({"cpu": 0.001}, ("cpu",)),
        ({"restart": {"backoff_initial": 1e-9, "backoff_max": 1e-9}}, ("backoff",)),
        # Case 10: loose types on the wire.
        ({"cpu": True}, ("cpu",)),
        ({"replicas": True}, ("replicas",)),
        ({"replicas": "3"}, ("replicas",)),
        # Case 11: checked in the schema, not at Docker.
        ({"ports": [{"container": 80, "host": 8080, "host_ip": "not-an-ip"}]}, ("host_ip",)),
        ({"env": {"PATH=/x;Y": "1"}}, ("env",)),
        ({"env": {"": "1"}}, ("env",)),
        ({"env": {"A": "nul\u0000byte"}}, ("env",)),
        ({"image": "local/busybox:latest\n\x1b[31mred"}, ("image",)),
    ],
)
def test_bad_specs_are_refused_naming_the_field(
    cluster: Cluster, change: dict[str, Any], needles: tuple[str, ...]
) -> None:
    with RawClient(cluster.amqp_url) as raw:
        refused(submit(raw, {**batch("hostile", "true"), **change}), *needles)
        # Still serving, and nothing of the bad job was kept.
        assert raw.call({"type": "api.nodes"})["payload"]["ok"] is True
        assert refused(raw.call({"type": "api.job", "payload": {"job_id": "hostile"}})["payload"])


def test_loose_types_in_requests_are_refused(cluster: Cluster) -> None:
    """Case 10: `include_done: "yes"` meant true."""
    with RawClient(cluster.amqp_url) as raw:
        reply = raw.call({"type": "api.jobs", "payload": {"include_done": "yes"}})
        refused(reply["payload"], "include_done")
        reply = raw.call({"type": "api.scale", "payload": {"job_id": "x", "replicas": True}})
        refused(reply["payload"], "replicas")


def test_deep_nesting_on_the_api_gets_an_error_reply(cluster: Cluster) -> None:
    """Case 6: deep nesting on the API queue got no error reply."""
    deep = "[" * 100_000 + "]" * 100_000
    body = '{"type": "api.submit", "payload": {"spec": ' + deep + "}}"
    with RawClient(cluster.amqp_url) as raw:
        reply = raw.call(body.encode())
        refused(reply["payload"], "deeper than")
        assert raw.call({"type": "api.nodes"})["payload"]["ok"] is True


def test_requests_no_broker_user_vouches_for_are_refused(cluster: Cluster) -> None:
    """A request without the sender's user_id, or one that skips corral.requests (where
    the broker checks the sender's role), is refused as forbidden: only the master's own
    user may put requests straight into corral.api."""
    spec = batch("anonymous", "true")
    request = {"type": "api.submit", "payload": {"spec": spec}}
    with RawClient(cluster.amqp_url) as raw:
        unsigned = raw.call(request, user_id=None)["payload"]
        refused(unsigned, "no user_id")
        assert unsigned["error"]["code"] == "forbidden"
        around = raw.call(request, exchange="", routing_key=topology.API_QUEUE, user_id=None)
        refused(around["payload"], "corral.requests")
        assert around["payload"]["error"]["code"] == "forbidden"
        # The master's own user (the test URL's) may.
        nodes = raw.call({"type": "api.nodes"}, exchange="", routing_key=topology.API_QUEUE)
        assert nodes["payload"]["ok"] is True
        # Nothing of the refused submits was kept.
        job = raw.call({"type": "api.job", "payload": {"job_id": "anonymous"}})["payload"]
        assert job["error"]["code"] == "not_found", job


def test_forged_reply_to_names_on_a_workers_queue_leave_it_connected(cluster: Cluster) -> None:
    """Case 5: a worker was knocked off the broker the same way as the master. Log chunks
    now go through corral.replies only, so a worker ignores direct reply-to names (forged
    or not) even from the master's user: no reply is sent, no connection is at risk."""
    node = cluster.node_id("w1")
    job = cluster.client.submit(batch("talker", "echo hello")).wait(timeout=30)
    task_id = job.tasks[0].task_id
    request = json.dumps({"type": "logs.request", "payload": {"task_id": task_id}}).encode()
    with RawClient(cluster.amqp_url) as raw:
        for name in forged_reply_names(raw.own_reply_name()) * 3:
            raw.publish(request, exchange=topology.RPC_EXCHANGE, routing_key=node, reply_to=name)
        raw.call({"type": "api.nodes"})

    def logs() -> str | None:
        try:
            return "".join(cluster.client.logs(task_id))
        except CorralError as exc:  # the forged requests' streams may still fill the pool
            assert "busy" in str(exc), exc
            return None

    assert "hello" in wait_until(logs, what="the task's logs")
    assert "lost the broker connection" not in cluster.logs()
    assert {n.node_id for n in cluster.client.nodes() if n.state == "ready"} >= {node}
