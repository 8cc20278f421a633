"""Generated garbage, half-valid envelopes and mutated specs sent to every consumer.

For a bounded number of examples, hypothesis builds message bodies (raw bytes,
arbitrary JSON, envelopes of every known type whose payload fields are replaced
by arbitrary JSON, and valid messages with one field mutated) and publishes
them to every entry point of a running cluster: the master's API queue (through
corral.requests), the heartbeats, the status topic, a worker's assignment queue
and its RPC queue. Afterwards:

- every process is still running and still serving (a job runs end to end);
- every API request got a reply, ok or a clear error, never an internal error;
- every dead letter carries a reason;
- no process logged a traceback (a handler that raised on valid-looking input).
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import topology
from tests.cluster import Cluster, wait_until
from tests.integration.test_cluster import batch, service
from tests.integration.test_resilience import dead_letters
from tests.rawamqp import RawClient

pytestmark = pytest.mark.integration

EXAMPLES = 120  # per entry point

KNOWN_TYPES = [
    "api.submit",
    "api.cancel",
    "api.scale",
    "api.job",
    "api.jobs",
    "api.tasks",
    "api.nodes",
    "api.reply",
    "heartbeat",
    "assign.start",
    "assign.stop",
    "task.status",
    "job.status",
    "node.status",
    "logs.request",
    "logs.chunk",
]
FIELD_NAMES = [
    "spec", "job_id", "task_id", "node_id", "replicas", "include_done", "limit", "cursor",
    "boot_id", "seq", "interval", "capacity", "allocated", "labels", "tasks", "max_epoch",
    "slot", "state", "exit_code", "reason", "follow", "tail", "data", "end", "grace",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.text(alphabet=string.printable, max_size=2000)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
deep = st.integers(min_value=30, max_value=5000).map(lambda n: "[" * n + "]" * n)


def valid_spec(node_image: str = "fuzz/nowhere:1") -> dict[str, Any]:
    return {"name": "fuzzed", "image": node_image, "command": ["true"], "cpu": 0.1}


def mutated_spec() -> st.SearchStrategy[dict[str, Any]]:
    fields = [
        "name", "image", "command", "env", "cpu", "memory", "replicas", "kind", "restart",
        "constraints", "labels", "ports", "placement", "pull", "stop_grace", "privileged",
    ]  # fmt: skip
    return st.builds(
        lambda field, value: {**valid_spec(), field: value}, st.sampled_from(fields), json_values
    )


def valid_payloads(node_id: str) -> dict[str, dict[str, Any]]:
    """One valid payload per type, to mutate one field at a time."""
    resources = {"cpus": 1.0, "memory": 2**30}
    return {
        "api.submit": {"spec": valid_spec()},
        "api.cancel": {"job_id": "no-such-job"},
        "api.scale": {"job_id": "no-such-job", "replicas": 2},
        "api.job": {"job_id": "no-such-job"},
        "api.jobs": {"include_done": True, "limit": 10},
        "api.tasks": {"job_id": None, "limit": 10},
        "api.nodes": {"limit": 10},
        "heartbeat": {
            "node_id": "fuzz-node",
            "boot_id": "b1",
            "seq": 1,
            "interval": 1.0,
            "capacity": resources,
            "allocated": {"cpus": 0.0, "memory": 0},
        },
        "assign.start": {
            "task_id": "fuzzed-0-0",
            "job_id": "fuzzed",
            "slot": 0,
            "node_id": node_id,
            "spec": valid_spec(),
        },
        "assign.stop": {"task_id": "fuzzed-0-0", "job_id": "fuzzed", "node_id": node_id},
        "task.status": {
            "task_id": "fuzzed-0-0",
            "job_id": "fuzzed",
            "node_id": "fuzz-node",
            "state": "exited",
            "exit_code": 0,
        },
        "logs.request": {"task_id": "fuzzed-0-0", "follow": True},
    }


def envelope(type_: str, payload: Any, epoch: Any = None) -> bytes:
    return json.dumps({"type": type_, "version": 1, "epoch": epoch, "payload": payload}).encode()


def bodies(node_id: str) -> st.SearchStrategy[bytes]:
    examples = valid_payloads(node_id)
    arbitrary = st.builds(
        envelope,
        st.sampled_from(KNOWN_TYPES) | st.text(max_size=20),
        st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values),
        st.none() | st.integers(min_value=0, max_value=100),  # stale, as any forger's would be
    )
    one_field = st.sampled_from(sorted(examples)).flatmap(
        lambda type_: st.builds(
            lambda field, value: envelope(type_, {**examples[type_], field: value}),
            st.sampled_from([*examples[type_], "unknown"]),
            json_values,
        )
    )
    specs = mutated_spec().map(lambda spec: envelope("api.submit", {"spec": spec}))
    return (
        st.binary(max_size=3000)
        | json_values.map(lambda value: json.dumps(value).encode())
        | deep.map(str.encode)
        | arbitrary
        | one_field
        | specs
    )


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz_one(raw: RawClient, node: str, exchange: str, key: str) -> None:
    @FUZZ_SETTINGS
    @given(body=bodies(node))
    def send(body: bytes) -> None:
        raw.publish(body, exchange=exchange, routing_key=key)

    send()


def test_fuzzed_input_never_stops_a_process(cluster: Cluster) -> None:
    client = cluster.client
    assert client.submit(service("steady")).wait(timeout=30).state == "running"
    node = cluster.node_id("w1")
    answers: list[dict[str, Any]] = []

    with RawClient(cluster.amqp_url) as raw:

        @FUZZ_SETTINGS
        @given(body=bodies(node))
        def api(body: bytes) -> None:
            reply = raw.call(body)
            assert reply["type"] == "api.reply"
            payload = reply["payload"]
            assert payload["ok"] or payload["error"]["code"] != "internal", payload
            answers.append(payload)

        api()

        # Published as the URL's user, which the master and the workers trust as their
        # own: the fuzz gets past the sender checks, into the handlers.
        targets = [
            (topology.HEARTBEAT_EXCHANGE, topology.heartbeat_key("fuzz-node")),
            (
                topology.STATUS_EXCHANGE,
                topology.task_key("fuzzed", "fuzzed-0-0", "exited", "fuzz-node"),
            ),
            (topology.ASSIGN_EXCHANGE, node),
            (topology.RPC_EXCHANGE, node),
        ]
        for exchange, key in targets:
            fuzz_one(raw, node, exchange, key)
        raw.call({"type": "api.nodes"})  # the master has read everything before this

    assert len(answers) >= EXAMPLES
    for name, process in cluster.processes.items():
        assert process.poll() is None, f"{name} stopped"
    letters = dead_letters(cluster.amqp_url)
    assert letters, "some of that garbage must have been dead-lettered"
    assert all(str(headers.get("x-corral-reason", "")).strip() for headers, _ in letters)

    # Still serving: the fuzzed fake nodes expire, the real ones run a new job.
    wait_until(
        lambda: (
            {n.node_id for n in client.nodes() if n.state == "ready"}
            == {cluster.node_id("w1"), cluster.node_id("w2")}
        ),
        timeout=30,
        what="only the real nodes ready",
    )
    assert client.submit(batch("after-fuzz", "echo ok")).wait(timeout=60).state == "complete"
    assert client.job("steady").state == "running"
    assert "Traceback" not in cluster.logs()
