"""The five attacks of issue 8, each tried with a client user's credentials and with another
worker's, against a running cluster of role users (tests.accounts): the broker or Corral
refuses every one, and neither the master's view nor the Docker engine's own list of
containers changes.

1. a heartbeat as an existing node with a new boot_id (its tasks would be lost);
2. a heartbeat of an invented node with a huge capacity (work and secrets would go there);
3. a forged task.status (a running batch task "exited 0", a service task "failed");
4. an assign.start straight to a node (a container the master never placed);
5. requests about another user's job: cancel, scale, logs, its env.

The attackers publish with pika directly, as any AMQP client could: a client user
(`mallory`, a submitter) and worker w2's own user attacking worker w1. RabbitMQ answers
a refused publish with 403 ACCESS_REFUSED (the channel closes); a forged `user_id` gets
406. What the broker lets through (a worker's own routing key with another node in the
body), the master drops or dead-letters.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
import pytest

from bus import topology
from corral import Client, admin
from corral.errors import ApiFailure, CorralError
from schemas.envelope import encode
from schemas.job import JobSpec
from schemas.messages import Heartbeat, Payload, Resources, StartTask, TaskStatus
from tests.accounts import as_user
from tests.cluster import RUN_LABEL, Cluster, wait_until
from tests.conftest import TEST_IMAGE, Broker

pytestmark = pytest.mark.integration

ACCESS_REFUSED, PRECONDITION_FAILED = 403, 406
SECRET = "s3cr3t-value"


@dataclass
class Scene:
    cluster: Cluster
    vhost: str
    mallory_url: str  # a submitter's
    worker_url: str  # worker w2's own user
    w1: str
    w2: str

    def url(self, attacker: str) -> str:
        return self.mallory_url if attacker == "client" else self.worker_url

    def user(self, attacker: str) -> str:
        return str(pika.URLParameters(self.url(attacker)).credentials.username)


@pytest.fixture(scope="module")
def scene(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    vhost = f"corral-test-attacks-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(broker.create_vhost(vhost), tmp_path_factory.mktemp("attacks"))
    mallory = f"mallory-{uuid.uuid4().hex[:8]}"
    api = admin.Management(broker.management_url, broker.user, broker.password)
    try:
        cluster.start(workers=2)
        assert cluster.accounts is not None, "the cluster must run as role users"
        w1, w2 = cluster.node_id("w1"), cluster.node_id("w2")
        credential = admin.add_user(
            api, vhost, mallory, "submitter", amqp_url_base=f"amqp://{broker.host}:{broker.port}"
        )
        assert credential is not None
        worker_url = as_user(cluster.amqp_url, *cluster.accounts[0].worker_login(vhost, w2))
        client = cluster.client
        client.submit(
            {
                "name": "web",
                "image": TEST_IMAGE,
                "command": ["sleep", "600"],
                "kind": "service",
                "replicas": 2,
                "cpu": 0.1,
                "memory": 32 * 1024 * 1024,
                "stop_grace": 0,
                "secret_env": {"TOKEN": SECRET},
                "env": {"PLAIN": "visible-to-owner"},
            }
        ).wait(timeout=60)
        client.submit(
            {
                "name": "batch",
                "image": TEST_IMAGE,
                "command": ["sleep", "600"],
                "cpu": 0.1,
                "memory": 32 * 1024 * 1024,
                "stop_grace": 0,
            }
        )
        wait_until(
            lambda: [t.state for t in client.job("batch").tasks] == ["running"],
            what="the batch task running",
        )
        yield Scene(cluster, vhost, credential.url, worker_url, w1, w2)
    finally:
        print(cluster.logs())
        cluster.close()
        with contextlib.suppress(Exception):
            api.delete_user(mallory)
        broker.delete_vhost(vhost)


# -- what must not change --


def containers(scene: Scene) -> dict[str, str]:
    """Every container of the cluster, by id, with its StartedAt (the engine's own list)."""
    return {
        c.id: c.attrs["State"]["StartedAt"]
        for c in scene.cluster.docker.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={scene.cluster.run_id}"}
        )
    }


def view(scene: Scene) -> dict[str, Any]:
    """The master's view: nodes, jobs and their tasks (ids, states, nodes)."""
    client = scene.cluster.client
    return {
        "nodes": sorted((n.node_id, n.state) for n in client.nodes()),
        "jobs": {
            name: (
                client.job(name).state,
                sorted((t.task_id, t.state, t.node_id) for t in client.job(name).tasks),
            )
            for name in ("web", "batch")
        },
    }


@contextlib.contextmanager
def unchanged(scene: Scene) -> Iterator[None]:
    before_containers, before_view = containers(scene), view(scene)
    assert len(before_containers) == 3 and all(before_containers.values())
    yield
    # Long enough for heartbeats and reports the attack sent to have been judged.
    time.sleep(2.5)
    assert view(scene) == before_view
    assert containers(scene) == before_containers


# -- publishing as an attacker --


def publish(url: str, exchange: str, key: str, payload: Payload | bytes, **props: Any) -> str:
    """Publish (confirmed) as the user of `url`: "sent", or "refused 403" / "refused 406"."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        body = payload if isinstance(payload, bytes) else encode(payload, sender="attacker")
        user = pika.URLParameters(url).credentials.username
        properties = pika.BasicProperties(user_id=props.pop("user_id", user), **props)
        try:
            channel.basic_publish(exchange, key, body, properties=properties)
        except pika.exceptions.ChannelClosedByBroker as exc:
            return f"refused {exc.reply_code}"
        return "sent"
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def beat(node_id: str, *, boot_id: str = "evil-boot", cpus: float = 2.0) -> Heartbeat:
    return Heartbeat(
        node_id=node_id,
        boot_id=boot_id,
        seq=1,
        interval=1.0,
        capacity=Resources(cpus=cpus, memory=1024**4),
        allocated=Resources(cpus=0, memory=0),
    )


def batch_task(scene: Scene) -> Any:
    (task,) = scene.cluster.client.job("batch").tasks
    return task


ATTACKERS = ("client", "worker")


@pytest.mark.parametrize("attacker", ATTACKERS)
def test_a_heartbeat_as_an_existing_node_is_refused(scene: Scene, attacker: str) -> None:
    url = scene.url(attacker)
    with unchanged(scene):
        # Under the victim's key: the broker refuses (no write at all for a client; a
        # worker may publish only under its own node id).
        assert publish(url, topology.HEARTBEAT_EXCHANGE, scene.w1, beat(scene.w1)) == "refused 403"
        if attacker == "worker":
            # Under its own key, naming the victim in the body: the master drops it.
            assert publish(url, topology.HEARTBEAT_EXCHANGE, scene.w2, beat(scene.w1)) == "sent"
        # A forged sender: the broker checks user_id against the connection's user.
        forged = publish(
            url, topology.HEARTBEAT_EXCHANGE, scene.w2, beat(scene.w1), user_id="corral-master"
        )
        assert forged.startswith("refused")


@pytest.mark.parametrize("attacker", ATTACKERS)
def test_an_invented_node_is_refused(scene: Scene, attacker: str) -> None:
    url, evil = scene.url(attacker), f"evil-{attacker}"
    huge = beat(evil, cpus=100_000)
    with unchanged(scene):
        assert publish(url, topology.HEARTBEAT_EXCHANGE, evil, huge) == "refused 403"
        if attacker == "worker":
            assert publish(url, topology.HEARTBEAT_EXCHANGE, scene.w2, huge) == "sent"
    assert evil not in [n.node_id for n in scene.cluster.client.nodes()]


@pytest.mark.parametrize("attacker", ATTACKERS)
def test_a_forged_task_status_is_refused(scene: Scene, attacker: str) -> None:
    url, task = scene.url(attacker), batch_task(scene)
    web = scene.cluster.client.job("web").tasks[0]
    assert task.node_id is not None and web.node_id is not None
    done = TaskStatus(
        task_id=task.task_id, job_id="batch", node_id=task.node_id, state="exited", exit_code=0
    )
    failed = TaskStatus(
        task_id=web.task_id, job_id="web", node_id=web.node_id, state="failed", reason="forged"
    )
    with unchanged(scene):
        for status in (done, failed):
            key = topology.task_key(status.job_id, status.task_id, status.state, status.node_id)
            assert publish(url, topology.STATUS_EXCHANGE, key, status) == "refused 403"
        if attacker == "worker":
            # Under its own node's key, the victim's node in the body: dead-lettered.
            for status in (done, failed):
                key = topology.task_key(status.job_id, status.task_id, status.state, scene.w2)
                assert publish(url, topology.STATUS_EXCHANGE, key, status) == "sent"
            # Its own node in the body, about a task on another node: not believed.
            own = done.model_copy(update={"node_id": scene.w2})
            key = topology.task_key("batch", task.task_id, "exited", scene.w2)
            assert publish(url, topology.STATUS_EXCHANGE, key, own) == "sent"


@pytest.mark.parametrize("attacker", ATTACKERS)
def test_a_start_command_straight_to_a_node_is_refused(scene: Scene, attacker: str) -> None:
    url = scene.url(attacker)
    spec = JobSpec.model_validate(
        {"name": "sneaky", "image": TEST_IMAGE, "command": ["sleep", "600"]}
    )
    start = StartTask(
        task_id="sneaky-abc123-0-1", job_id="sneaky", slot=0, node_id=scene.w1, spec=spec
    )
    body = encode(start, sender="attacker", epoch=10**9)
    with unchanged(scene):
        assert publish(url, topology.ASSIGN_EXCHANGE, scene.w1, body) == "refused 403"
        queue = topology.node_queue_name(scene.w1)
        assert publish(url, topology.DEFAULT_EXCHANGE, queue, body) == "refused 403"
    if attacker == "worker":
        # Nor may a worker bind a queue of its own under another node's key to read its
        # assignments (and the secrets in their specs).
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            private = channel.queue_declare("", exclusive=True).method.queue
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                channel.queue_bind(private, topology.ASSIGN_EXCHANGE, scene.w1)
            assert refused.value.reply_code == ACCESS_REFUSED
        finally:
            with contextlib.suppress(Exception):
                connection.close()


def test_a_submitter_cannot_touch_another_users_job(scene: Scene) -> None:
    with unchanged(scene), Client(scene.mallory_url, timeout=10) as mallory:
        for attempt in (
            lambda: mallory.cancel("web"),
            lambda: mallory.scale("web", 5),
            lambda: list(mallory.logs(batch_task(scene).task_id)),
        ):
            with pytest.raises(CorralError, match="may not") as refused:
                attempt()
            if isinstance(refused.value, ApiFailure):
                assert refused.value.code == "forbidden"
        # It may read the job's status, without its env values.
        seen = mallory.job("web")
        assert scene.cluster.accounts is not None
        assert seen.state == "running" and seen.owner == scene.cluster.accounts[0].admin.user
        assert seen.spec.env == {"PLAIN": "***"}
        assert seen.spec.secret_env == {"TOKEN": "***"}
    # The owner (the cluster's admin user, which submitted it) sees its env, not the secret.
    owned = scene.cluster.client.job("web")
    assert owned.spec.env == {"PLAIN": "visible-to-owner"}
    assert owned.spec.secret_env == {"TOKEN": "***"}


def test_a_worker_user_cannot_send_api_requests(scene: Scene) -> None:
    with unchanged(scene):
        for role in ("admin", "submitter", "viewer"):
            key = topology.api_key(role, "api.cancel")
            body = b'{"type":"api.cancel","payload":{"job_id":"web"}}'
            assert publish(scene.worker_url, topology.API_EXCHANGE, key, body) == "refused 403"


def test_secret_values_appear_in_no_listing_event_or_log(scene: Scene) -> None:
    """jobs / ps / inspect -o json (as the admin, who may see env), the status events of a
    change, and the master's log never hold the secret value; the container has it."""
    cluster = scene.cluster
    events = cluster.client.events("#", timeout=4)  # bound now: nothing after is missed
    cluster.client.scale("web", 3)
    cluster.client.scale("web", 2)
    seen = [repr(event.payload) for event in events]
    assert any("web" in text for text in seen), "the scaling made status events"
    assert all(SECRET not in text for text in seen)
    for args in (
        ("jobs", "-o", "json"),
        ("ps", "-a", "-o", "json"),
        ("inspect", "web", "-o", "json"),
    ):
        done = cluster.cli(*args)
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr
    shown = cluster.cli("inspect", "web", "-o", "json").stdout
    assert "TOKEN" in shown and "visible-to-owner" in shown  # the admin sees the env
    assert SECRET not in (cluster.workdir / "master.log").read_text()
    containers = cluster.containers("web", all=False)
    assert containers and all(f"TOKEN={SECRET}" in c.attrs["Config"]["Env"] for c in containers)


def test_an_admin_may_do_what_another_submitter_may_not(scene: Scene, broker: Broker) -> None:
    """Bob's job: mallory (a submitter too) may not cancel or scale it, read its logs or
    its env; the admin may do all of that."""
    cluster, bob = scene.cluster, f"bob-{uuid.uuid4().hex[:8]}"
    api = admin.Management(broker.management_url, broker.user, broker.password)
    base = f"amqp://{broker.host}:{broker.port}"
    credential = admin.add_user(api, scene.vhost, bob, "submitter", amqp_url_base=base)
    assert credential is not None
    try:
        with Client(credential.url, timeout=10) as client:
            client.submit(
                {
                    "name": "bobs",
                    "image": TEST_IMAGE,
                    "command": ["sh", "-c", "echo hello from bob; exec sleep 600"],
                    "kind": "service",
                    "env": {"BOBS": "bob-only"},
                    "stop_grace": 0,
                }
            ).wait(timeout=60)
        task = scene.cluster.client.job("bobs").tasks[0]
        with Client(scene.mallory_url, timeout=10) as mallory:
            for attempt in (
                lambda: mallory.cancel("bobs"),
                lambda: mallory.scale("bobs", 2),
                lambda: "".join(mallory.logs(task.task_id)),
            ):
                with pytest.raises(CorralError, match="may not"):
                    attempt()
            assert mallory.job("bobs").spec.env == {"BOBS": "***"}
        admin_client = cluster.client  # role admin
        assert admin_client.job("bobs").spec.env == {"BOBS": "bob-only"}
        assert admin_client.job("bobs").owner == bob
        wait_until(
            lambda: "hello from bob" in "".join(admin_client.logs(task.task_id)),
            what="bob's logs, read by the admin",
        )
        admin_client.scale("bobs", 2)
        admin_client.cancel("bobs")
        wait_until(lambda: not cluster.containers("bobs", all=False), what="bob's job stopped")
    finally:
        with contextlib.suppress(Exception):
            api.delete_user(bob)
