"""A worker under hostile and heavy input keeps serving its real master.

Each test runs a master and one worker process with a single start thread
(so anything that holds a Docker thread shows at once), and plays the hostile
side with raw pika: forged assignments, clients that ask for logs and go away.
After each, the worker must still heartbeat (the master's node list).

A worker takes commands and log requests only from the master's broker user or
its own, and streams logs only to private queues bound to corral.replies. The
raw clients log in with the test's URL, the master's user, and set it as user_id
(the default here): they play the master, or someone holding its credentials; a
stranger is a broker user of its own.
"""

from __future__ import annotations

import functools
import json
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from bus import topology
from corral.errors import CorralError
from schemas.envelope import encode
from schemas.job import JobSpec
from schemas.messages import LogsRequest, Payload, StartTask, StopTask
from tests.cluster import Cluster, wait_until
from tests.conftest import TEST_IMAGE, Broker
from tests.rawamqp import url_user
from tests.unit.factories import heartbeat

pytestmark = pytest.mark.integration

HUGE_EPOCH = 2**62
IGNORES_TERM = 'trap "echo got TERM" TERM; echo ready; while true; do sleep 1; done'
ENDS_ON_TERM = 'trap "exit 0" TERM; echo ready; while true; do sleep 1; done'


@pytest.fixture
def node(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    """A master and one worker (`w1`) with a single start thread."""
    running = Cluster(vhost_url, tmp_path)
    try:
        running.start(workers=1, start_threads=1)
        yield running
    finally:
        print(running.logs())  # shown by pytest only when the test failed
        running.close()


def service(name: str, script: str, stop_grace: float = 1) -> dict[str, object]:
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["sh", "-c", script],
        "kind": "service",
        "stop_grace": stop_grace,
    }


def run_service(cluster: Cluster, name: str, script: str, stop_grace: float = 1) -> str:
    """Submit a service, wait until it runs and has said "ready"; its task id."""
    info = cluster.client.submit(service(name, script, stop_grace)).wait(timeout=30)
    assert info.state == "running", info
    task_id = info.tasks[0].task_id
    wait_until(lambda: b"ready" in container_logs(cluster, name), what=f"{name} to be ready")
    return task_id


def container_logs(cluster: Cluster, job: str) -> bytes:
    containers = cluster.containers(job)
    return b"".join(c.logs() for c in containers)


def assert_heartbeating(cluster: Cluster, name: str = "w1") -> None:
    """The master hears from the worker: ready, and seen again since this call."""
    node_id = cluster.node_id(name)

    def info() -> Any:
        return next(n for n in cluster.client.nodes() if n.node_id == node_id)

    before = info().last_seen
    wait_until(
        lambda: info().state == "ready" and info().last_seen > before,
        timeout=10,
        what=f"a fresh heartbeat of {node_id}",
    )


class RawClient:
    """An AMQP client made of pika and nothing else, with a private server-named queue
    bound to corral.replies under its own name (or direct reply-to) for answers. It
    publishes as its URL's user unless told otherwise."""

    def __init__(self, url: str, *, direct: bool = False) -> None:
        self.user = url_user(url)
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.received: list[dict[str, Any]] = []
        if direct:
            self.queue = topology.DIRECT_REPLY_TO
        else:
            self.queue = self.channel.queue_declare("", exclusive=True).method.queue
            self.channel.queue_bind(self.queue, topology.REPLIES_EXCHANGE, routing_key=self.queue)
        self.channel.basic_consume(
            self.queue,
            lambda _ch, _method, _props, body: self.received.append(json.loads(body)),
            auto_ack=True,
        )

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        reply_to: str | None = None,
        user_id: str | None = "",
    ) -> None:
        """Publish `body` with `user_id` ("": this client's user; None: none at all)."""
        self.channel.basic_publish(
            exchange,
            routing_key,
            body,
            properties=pika.BasicProperties(
                content_type="application/json",
                reply_to=reply_to,
                correlation_id=uuid.uuid4().hex,
                user_id=self.user if user_id == "" else user_id,
            ),
        )

    def ask_logs(
        self, node_id: str, task_id: str, *, follow: bool, user_id: str | None = ""
    ) -> None:
        """Ask the worker for logs as the master forwards a client's `api.logs`: a
        `logs.request` on corral.node-rpc, answered on this client's queue."""
        request = encode(LogsRequest(task_id=task_id, follow=follow), sender="raw")
        self.publish(topology.RPC_EXCHANGE, node_id, request, reply_to=self.queue, user_id=user_id)

    def chunks(self) -> list[dict[str, Any]]:
        return [m["payload"] for m in self.received if m.get("type") == "logs.chunk"]

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
        def pumped() -> bool:
            self.connection.process_data_events(time_limit=0.1)
            return condition()

        wait_until(pumped, timeout=timeout, interval=0, what=what)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture
def raw(node: Cluster) -> Iterator[Callable[..., RawClient]]:
    """Makes raw clients; closes those the test left open."""
    made: list[RawClient] = []

    def make(*, direct: bool = False) -> RawClient:
        made.append(RawClient(node.amqp_url, direct=direct))
        return made[-1]

    yield make
    for client in made:
        client.close()


def dead_letters(client: RawClient) -> list[tuple[str, str]]:
    """(source queue, reason) of every dead letter waiting (read destructively)."""
    letters: list[tuple[str, str]] = []
    while True:
        method, properties, _body = client.channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
        if method is None:
            return letters
        headers = properties.headers or {}
        source = str(headers.get(topology.SOURCE_QUEUE_HEADER, ""))
        letters.append((source, str(headers.get(topology.REASON_HEADER, ""))))


def dead_letters_from(client: RawClient, queue: str) -> list[str]:
    """Reasons of the dead letters taken so far from `queue` (read destructively: the
    others are dropped)."""
    return [reason for source, reason in dead_letters(client) if source == queue]


# -- 1. forged epochs --


def test_forged_assignments_do_not_make_the_real_master_stale(
    node: Cluster, raw: Callable[..., RawClient]
) -> None:
    node_id = node.node_id("w1")
    node_queue = topology.node_queue_name(node_id)
    spec = JobSpec(name="forged", image=TEST_IMAGE, command=["sleep", "600"])
    elsewhere = StartTask(task_id="forged-1", job_id="forged", slot=0, node_id="n0", spec=spec)
    wrong_type: Payload = heartbeat(node_id)
    forged: list[tuple[str, str, bytes]] = [
        # Not an assignment at all, through the exchange the master uses.
        (topology.ASSIGN_EXCHANGE, node_id, encode(wrong_type, epoch=HUGE_EPOCH)),
        # An assignment for another node, straight into this node's queue.
        (topology.DEFAULT_EXCHANGE, node_queue, encode(elsewhere, epoch=HUGE_EPOCH)),
        # An assignment whose payload does not validate.
        (
            topology.ASSIGN_EXCHANGE,
            node_id,
            json.dumps(
                {"type": StopTask.TYPE, "version": 1, "epoch": HUGE_EPOCH, "payload": {}}
            ).encode(),
        ),
    ]
    # As the master's user (someone holding its credentials): past the sender check, the
    # worker's other checks still hold.
    attacker = raw()
    for exchange, key, body in forged:
        attacker.publish(exchange, key, body)

    reasons: list[str] = []

    def all_dead_lettered() -> bool:
        reasons.extend(dead_letters_from(attacker, node_queue))
        return len(reasons) == len(forged)

    wait_until(all_dead_lettered, what="the forged assignments to be dead-lettered")
    assert any("not an assignment" in reason for reason in reasons), reasons
    assert any(f"addressed to node n0, not {node_id}" in reason for reason in reasons), reasons

    # The worker still reports the real master's epoch, not the forged one.
    beats = attacker.channel.queue_declare("", exclusive=True).method.queue
    attacker.channel.queue_bind(beats, topology.HEARTBEAT_EXCHANGE, "#")

    def next_beat() -> dict[str, Any] | None:
        method, _props, body = attacker.channel.basic_get(beats, auto_ack=True)
        return json.loads(body) if method is not None else None

    beat = wait_until(next_beat, what="a heartbeat")
    assert beat["payload"]["max_epoch"] < HUGE_EPOCH

    # The real master's start and cancel are carried out.
    task_id = run_service(node, "real", "echo ready; exec sleep 600")
    (container,) = node.containers("real")
    assert container.labels["corral.task"] == task_id
    node.client.cancel("real")
    wait_until(lambda: node.containers("real") == [], what="the cancelled container to go")
    assert_heartbeating(node)


# -- 2. stops that take long --


def test_a_long_grace_stop_holds_no_thread_starts_go_on(node: Cluster) -> None:
    run_service(node, "stubborn", IGNORES_TERM, stop_grace=3600)
    node.client.cancel("stubborn")
    wait_until(lambda: b"got TERM" in container_logs(node, "stubborn"), what="SIGTERM")

    # The only start thread is free: a new job starts and completes at once.
    batch = {"name": "next", "image": TEST_IMAGE, "command": ["sh", "-c", "echo hi"]}
    assert node.client.submit(batch).wait(timeout=30).state == "complete"
    # ... while the stubborn container is still given its grace period.
    assert [c.status for c in node.containers("stubborn", all=False)] == ["running"]
    assert_heartbeating(node)


def test_a_stop_kills_and_removes_at_the_end_of_a_short_grace(node: Cluster) -> None:
    run_service(node, "stubborn", IGNORES_TERM, stop_grace=1)
    node.client.cancel("stubborn")
    wait_until(lambda: node.containers("stubborn") == [], what="the container to be removed")
    assert_heartbeating(node)


def test_a_container_that_ends_on_sigterm_is_removed_before_its_grace_is_over(
    node: Cluster,
) -> None:
    run_service(node, "polite", ENDS_ON_TERM, stop_grace=3600)
    node.client.cancel("polite")
    # Its die event, not the hour-long deadline, ends the stop.
    wait_until(lambda: node.containers("polite") == [], what="the container to be removed")
    assert_heartbeating(node)


# -- 3. log streams --


def sdk_logs(cluster: Cluster, task_id: str) -> str | None:
    """The task's logs through the SDK, or None while the node says it is busy."""
    try:
        return "".join(cluster.client.logs(task_id))
    except CorralError as exc:
        if "busy" in str(exc):
            return None
        raise


def says_ready(client: RawClient) -> bool:
    return "ready" in "".join(chunk["data"] for chunk in client.chunks())


def test_log_streams_are_bounded_and_end_when_their_clients_go(
    node: Cluster, raw: Callable[..., RawClient]
) -> None:
    node_id = node.node_id("w1")
    task_id = run_service(node, "quiet", "echo ready; exec sleep 600")

    followers = [raw() for _ in range(4)]
    for client in followers:
        client.ask_logs(node_id, task_id, follow=True)
    for client in followers:
        client.wait_for(functools.partial(says_ready, client), "the first lines")

    late = raw()
    late.ask_logs(node_id, task_id, follow=True)
    late.wait_for(lambda: bool(late.chunks()), "an answer to the fifth request")
    (answer,) = late.chunks()
    assert answer["end"] is True and f"node {node_id} is busy" in answer["error"]
    assert_heartbeating(node)

    for client in followers:
        client.close()  # their queues go with them; the worker notices by itself
    text = wait_until(lambda: sdk_logs(node, task_id), what="a free log stream")
    assert text == "ready\n"
    assert_heartbeating(node)


def test_logs_go_only_to_private_queues_and_only_when_the_master_asks(
    node: Cluster, raw: Callable[..., RawClient]
) -> None:
    node_id = node.node_id("w1")
    rpc_queue = topology.node_rpc_queue(node_id).name
    task_id = run_service(node, "quiet", "echo ready; exec sleep 600")
    # A direct reply-to name gets nothing, finite or followed, even from the master's
    # user: chunks go through corral.replies, where no such name is bound.
    direct = raw(direct=True)
    direct.ask_logs(node_id, task_id, follow=True)
    direct.ask_logs(node_id, task_id, follow=False)
    # A private queue gets nothing from a request no broker user vouches for: the
    # worker dead-letters it (clients ask the master, which checks who may read what).
    unsigned = raw()
    unsigned.ask_logs(node_id, task_id, follow=False, user_id=None)

    # The worker handles its log requests in order: once this one is answered, the
    # others were handled too.
    client = raw()
    client.ask_logs(node_id, task_id, follow=False)
    client.wait_for(lambda: any(c["end"] for c in client.chunks()), "the logs")
    assert "".join(c["data"] for c in client.chunks()) == "ready\n"
    assert not client.chunks()[-1]["error"]

    reasons = wait_until(lambda: dead_letters_from(client, rpc_queue), what="a dead letter")
    assert len(reasons) == 1 and "sent by broker user None" in reasons[0], reasons
    for ignored in (direct, unsigned):
        ignored.connection.process_data_events(time_limit=0.5)
        assert ignored.received == []


def test_log_requests_without_a_usable_reply_queue_cost_nothing(
    node: Cluster, raw: Callable[..., RawClient]
) -> None:
    node_id = node.node_id("w1")
    task_id = run_service(node, "quiet", "echo ready; exec sleep 600")
    attacker = raw()
    request = encode(LogsRequest(task_id=task_id, follow=True), sender="raw")
    # Twice as many as the node streams at once: if any cost a stream, the node is full.
    unusable = (None, topology.API_QUEUE, f"{topology.DIRECT_REPLY_TO}.forged", "amq.gen-")
    for reply_to in unusable * 2:
        attacker.publish(topology.RPC_EXCHANGE, node_id, request, reply_to=reply_to)
    assert sdk_logs(node, task_id) == "ready\n"
    assert_heartbeating(node)


# -- 4. other broker users --


@pytest.fixture
def stranger_url(node: Cluster, broker: Broker) -> Iterator[str]:
    """The URL of a broker user of its own (neither the master's nor the worker's), with
    every permission on the test's vhost; the user is deleted afterwards."""
    parts = urllib.parse.urlsplit(node.amqp_url)
    vhost = urllib.parse.unquote(parts.path[1:])
    user, password = f"corral-test-stranger-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    broker.api("PUT", f"users/{user}", {"password": password, "tags": ""})
    try:
        broker.api(
            "PUT",
            f"permissions/{urllib.parse.quote(vhost, safe='')}/{user}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
        yield urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    finally:
        broker.api("DELETE", f"users/{user}")


def test_commands_and_log_requests_from_another_broker_user_are_refused(
    node: Cluster, raw: Callable[..., RawClient], stranger_url: str
) -> None:
    node_id = node.node_id("w1")
    task_id = run_service(node, "quiet", "echo ready; exec sleep 600")
    job_id = f"stranger-{uuid.uuid4().hex[:8]}"
    spec = JobSpec(name=job_id, image=TEST_IMAGE, command=["sleep", "600"])
    start = StartTask(task_id=f"{job_id}-0-0", job_id=job_id, slot=0, node_id=node_id, spec=spec)

    # Every permission on the vhost, a user_id the broker vouches for, a command that is
    # otherwise perfect (this node's, the newest epoch): not the master's user, so refused.
    observer = raw()  # as the master's user
    stranger = RawClient(stranger_url)
    try:
        assert stranger.user != observer.user
        stranger.publish(topology.ASSIGN_EXCHANGE, node_id, encode(start, epoch=HUGE_EPOCH))
        stranger.ask_logs(node_id, task_id, follow=True)

        refusals: dict[str, list[str]] = {}
        queues = (topology.node_queue_name(node_id), topology.node_rpc_queue(node_id).name)

        def both_dead_lettered() -> bool:
            for source, reason in dead_letters(observer):
                refusals.setdefault(source, []).append(reason)
            return all(queue in refusals for queue in queues)

        wait_until(both_dead_lettered, what="the stranger's command and log request refused")
        for queue in queues:
            (reason,) = refusals[queue]
            assert f"sent by broker user {stranger.user!r}" in reason, (queue, reason)
        stranger.connection.process_data_events(time_limit=0.5)
        assert stranger.received == []  # not a single chunk
    finally:
        stranger.close()

    # Nothing was started, anywhere on the engine.
    for label in (f"corral.task={start.task_id}", f"corral.job={job_id}"):
        assert node.docker.containers.list(all=True, filters={"label": label}) == []
    # The same log request from the master's user is served.
    observer.ask_logs(node_id, task_id, follow=False)
    observer.wait_for(lambda: any(c["end"] for c in observer.chunks()), "the logs")
    assert "".join(c["data"] for c in observer.chunks()) == "ready\n"
    assert_heartbeating(node)


# -- 5. all at once --


def test_heartbeats_go_on_under_everything_at_once(
    node: Cluster, raw: Callable[..., RawClient]
) -> None:
    node_id = node.node_id("w1")
    task_id = run_service(node, "quiet", "echo ready; exec sleep 600")
    run_service(node, "stubborn", IGNORES_TERM, stop_grace=3600)
    attacker = raw()
    attacker.publish(
        topology.ASSIGN_EXCHANGE, node_id, encode(heartbeat(node_id), epoch=HUGE_EPOCH)
    )
    node.client.cancel("stubborn")
    for _ in range(6):
        raw().ask_logs(node_id, task_id, follow=True)
    assert_heartbeating(node)
    after = {"name": "after", "image": TEST_IMAGE, "command": ["true"]}
    assert node.client.submit(after).wait(timeout=30).state == "complete"
    assert_heartbeating(node)
