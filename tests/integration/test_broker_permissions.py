"""The broker itself holds each role to its permissions (`bus.access`, made by `corral.admin`).

Each test bootstraps a vhost of its own with users of its own (names end in a random
suffix; all are deleted afterwards), connects with pika as each user, and checks what
RabbitMQ lets through and what it refuses (403 ACCESS_REFUSED, which closes the channel).
"""

from __future__ import annotations

import contextlib
import json
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from typer.testing import CliRunner

from bus import access, topology
from bus.declare import declare_queue
from corral import admin
from corral.cli_admin import admin_app
from tests.conftest import Broker

pytestmark = pytest.mark.integration

ACCESS_REFUSED = 403
JOB, TASK = "j1", "j1-t1-0-1"


@dataclass
class Setup:
    """A vhost and users of one test: their credentials by role, the connections opened."""

    api: admin.Management
    vhost: str
    base: str
    suffix: str
    credentials: dict[str, admin.Credential] = field(default_factory=dict)
    connections: list[Any] = field(default_factory=list)

    @property
    def node(self) -> str:  # the worker under test
        return f"n{self.suffix}"

    @property
    def other(self) -> str:  # another worker's node id
        return f"m{self.suffix}"

    @property
    def users(self) -> list[str]:
        """Every user the test may make: bootstrap's, then the viewer and the submitter."""
        accounts = admin.bootstrap_accounts(
            [self.node, self.other],
            admin_name=f"admin-{self.suffix}",
            master_user=f"corral-master-{self.suffix}",
            broker_admin=f"broker-admin-{self.suffix}",
        )
        clients = [f"{role}-{self.suffix}" for role in ("viewer", "submitter")]
        return [account.user for account in accounts] + clients

    def bootstrap(self, *, rotate: bool = False) -> list[admin.Credential]:
        return admin.bootstrap(
            self.api,
            self.vhost,
            amqp_url_base=self.base,
            workers=[self.node, self.other],
            admin_name=f"admin-{self.suffix}",
            master_user=f"corral-master-{self.suffix}",
            broker_admin=f"broker-admin-{self.suffix}",
            rotate=rotate,
        )

    def connect(self, who: str) -> Any:
        """A pika connection as `who`: a role, or "worker" / "other" for the two workers."""
        connection = pika.BlockingConnection(pika.URLParameters(self.credentials[who].url))
        self.connections.append(connection)
        return connection


@pytest.fixture
def setup(broker: Broker) -> Iterator[Setup]:
    suffix = uuid.uuid4().hex[:8]
    api = admin.Management(broker.management_url, broker.user, broker.password)
    running = Setup(
        api, f"corral-test-perm-{suffix}", f"amqp://{broker.host}:{broker.port}", suffix
    )
    try:
        master, client, worker, other, broker_admin = running.bootstrap()
        running.credentials.update(
            master=master,
            admin=client,
            worker=worker,
            other=other,
            **{"broker-admin": broker_admin},
        )
        for role in ("viewer", "submitter"):
            credential = admin.add_user(
                api, running.vhost, f"{role}-{suffix}", role, amqp_url_base=running.base
            )
            assert credential is not None
            running.credentials[role] = credential
        yield running
    finally:
        for connection in running.connections:
            with contextlib.suppress(Exception):
                connection.close()
        for user in running.users:
            api.delete_user(user)
        broker.delete_vhost(running.vhost)


def refused(connection: Any, action: Callable[[Any], object]) -> str:
    """Run `action(channel)` on a new channel (publishes confirmed) and check that the broker
    refuses it; the broker's reason."""
    channel = connection.channel()
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        action(channel)
    assert info.value.reply_code == ACCESS_REFUSED, info.value
    return str(info.value.reply_text)


def channel_of(connection: Any) -> Any:
    channel = connection.channel()
    channel.confirm_delivery()  # a refused publish raises at once
    return channel


def publish(exchange: str, key: str, **properties: Any) -> Callable[[Any], object]:
    def action(channel: Any) -> object:
        body = json.dumps({"type": "test"}).encode()
        props = pika.BasicProperties(**properties)
        return channel.basic_publish(exchange, key, body, properties=props)

    return action


def bind(exchange: str, key: str) -> Callable[[Any], object]:
    def action(channel: Any) -> object:
        queue = channel.queue_declare("", exclusive=True).method.queue
        return channel.queue_bind(queue, exchange, routing_key=key)

    return action


def call(method: str, *args: Any) -> Callable[[Any], object]:
    """`channel.<method>(*args)`, as an action for `refused`."""
    return lambda channel: getattr(channel, method)(*args)


def get_one(channel: Any, queue: str) -> tuple[Any, Any, bytes]:
    """The next message of `queue`, waiting until it is there (published with confirms)."""
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None, f"nothing in {queue}"
    return method, properties, body


# -- workers --


def test_a_worker_may_not_speak_for_another_node(setup: Setup) -> None:
    worker = setup.connect("worker")
    node, other = setup.node, setup.other
    for key in (other, f"{node}.x", "#"):
        text = refused(worker, publish(topology.HEARTBEAT_EXCHANGE, key))
        assert "access to topic" in text
    for key in (
        topology.task_key(JOB, TASK, "running", other),
        topology.refused_key(other),
        topology.job_key(JOB, "failed"),
        topology.node_key(node, "down"),
    ):
        refused(worker, publish(topology.STATUS_EXCHANGE, key))


def test_a_worker_may_not_bind_under_another_nodes_key(setup: Setup) -> None:
    worker = setup.connect("worker")
    for exchange in (topology.ASSIGN_EXCHANGE, topology.RPC_EXCHANGE):
        for key in (setup.other, "#", "*"):
            refused(worker, bind(exchange, key))
    # Nor its own queue, nor declare the other node's queues.
    own = topology.node_queue_name(setup.node)
    refused(worker, lambda ch: declare_queue(worker, ch, topology.node_queue(setup.other)))
    refused(worker, lambda ch: declare_queue(worker, ch, topology.node_rpc_queue(setup.other)))
    channel = channel_of(worker)
    declare_queue(worker, channel, topology.node_queue(setup.node))
    refused(worker, lambda ch: ch.queue_bind(own, topology.ASSIGN_EXCHANGE, setup.other))
    # Nor listen to the others' beats or status.
    refused(worker, bind(topology.HEARTBEAT_EXCHANGE, "#"))
    refused(worker, bind(topology.STATUS_EXCHANGE, "#"))


def test_a_worker_may_not_publish_assignments_nor_on_the_default_exchange(setup: Setup) -> None:
    worker = setup.connect("worker")
    refused(worker, publish(topology.ASSIGN_EXCHANGE, setup.node))
    refused(worker, publish(topology.ASSIGN_EXCHANGE, setup.other))
    refused(worker, publish(topology.RPC_EXCHANGE, setup.other))
    for queue in (topology.API_QUEUE, topology.node_queue_name(setup.other), "x"):
        text = refused(worker, publish(topology.DEFAULT_EXCHANGE, queue))
        assert "amq.default" in text
    refused(worker, publish(topology.API_EXCHANGE, "admin.api.submit"))
    refused(worker, publish(topology.MASTERS_EXCHANGE, ""))
    refused(worker, publish(topology.CONTROL_EXCHANGE, ""))


def test_a_worker_may_not_read_or_change_the_masters_queues(setup: Setup) -> None:
    worker = setup.connect("worker")
    for queue in (topology.API_QUEUE, topology.MASTER_STATUS_QUEUE, topology.DEAD_QUEUE):
        for method in ("basic_get", "queue_delete", "queue_purge"):
            refused(worker, call(method, queue))
    # Declaring is configuring, even of what exists: workers declare the topology passively.
    refused(worker, lambda ch: declare_queue(worker, ch, topology.API_QUEUE_DECL))
    refused(worker, lambda ch: ch.exchange_declare(topology.STATUS_EXCHANGE, "topic", durable=True))


def test_a_worker_can_do_its_job(setup: Setup) -> None:
    worker, master = setup.connect("worker"), setup.connect("master")
    node = setup.node
    channel = channel_of(worker)
    # Passive declares: RabbitMQ 4.2.6+ wants some permission on each (3.x none), and a
    # worker has one on every exchange it uses.
    for exchange in (
        topology.HEARTBEAT_EXCHANGE,
        topology.STATUS_EXCHANGE,
        topology.REPLIES_EXCHANGE,
        topology.DEAD_LETTER_EXCHANGE,
        topology.ASSIGN_EXCHANGE,
        topology.RPC_EXCHANGE,
        topology.CONTROL_EXCHANGE,
    ):
        channel.exchange_declare(exchange, passive=True)
    channel, queue = declare_queue(worker, channel, topology.node_queue(node))
    channel, rpc = declare_queue(worker, channel, topology.node_rpc_queue(node))
    channel, control = declare_queue(worker, channel, topology.control_queue())
    channel.queue_declare(queue, passive=True)

    # The master assigns and asks; the worker's queues get it.
    to_worker = channel_of(master)
    to_worker.basic_publish(topology.ASSIGN_EXCHANGE, node, b"assign")
    to_worker.basic_publish(topology.RPC_EXCHANGE, node, b"logs")
    to_worker.basic_publish(topology.CONTROL_EXCHANGE, "", b"announce")
    assert get_one(channel, queue)[2] == b"assign"
    assert get_one(channel, rpc)[2] == b"logs"
    assert get_one(channel, control)[2] == b"announce"

    # The worker reports; the master hears it.
    from_worker = channel_of(master)
    beats = from_worker.queue_declare("", exclusive=True).method.queue
    from_worker.queue_bind(beats, topology.HEARTBEAT_EXCHANGE, "#")
    channel.basic_publish(topology.HEARTBEAT_EXCHANGE, node, b"beat")
    channel.basic_publish(
        topology.STATUS_EXCHANGE, topology.task_key(JOB, TASK, "running", node), b"running"
    )
    channel.basic_publish(topology.STATUS_EXCHANGE, topology.refused_key(node), b"refused")
    assert get_one(from_worker, beats)[2] == b"beat"
    assert get_one(from_worker, topology.MASTER_STATUS_QUEUE)[2] == b"running"

    # Log chunks go to a client's queue through corral.replies; dead letters to corral.dlx.
    viewer = setup.connect("viewer")
    client = channel_of(viewer)
    client, replies = declare_queue(viewer, client, topology.reply_queue())
    channel.basic_publish(topology.REPLIES_EXCHANGE, replies, b"chunk")
    assert get_one(client, replies)[2] == b"chunk"
    channel.basic_publish(topology.DEAD_LETTER_EXCHANGE, "", b"dead")
    assert get_one(from_worker, topology.DEAD_QUEUE)[2] == b"dead"


def test_a_cc_header_never_changes_the_key_a_consumer_sees(setup: Setup) -> None:
    # RabbitMQ checks topic permissions on CC/BCC keys from 4.1 on; before, the copy is
    # routed, but delivered under the publisher's own (checked) routing key.
    worker, master = setup.connect("worker"), setup.connect("master")
    watcher = channel_of(master)
    jobs = watcher.queue_declare("", exclusive=True).method.queue
    watcher.queue_bind(jobs, topology.STATUS_EXCHANGE, "job.#")
    own = topology.task_key(JOB, TASK, "running", setup.node)
    forged = publish(
        topology.STATUS_EXCHANGE, own, headers={"CC": [topology.job_key(JOB, "failed")]}
    )
    channel = channel_of(worker)
    try:
        forged(channel)
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == ACCESS_REFUSED
        return
    method, _properties, _body = get_one(watcher, jobs)
    assert method.routing_key == own


# -- clients --


@pytest.mark.parametrize(
    ("role", "above"),
    [
        ("viewer", ["submitter.api.submit", "admin.api.cancel"]),
        ("submitter", ["admin.api.cancel", "admin.api.drain"]),
        ("admin", ["root.api.x", "api.submit"]),
    ],
)
def test_a_client_may_not_ask_as_a_role_above_its_own(
    setup: Setup, role: str, above: list[str]
) -> None:
    client = setup.connect(role)
    for key in above:
        text = refused(client, publish(topology.API_EXCHANGE, key))
        assert "access to topic" in text


@pytest.mark.parametrize("role", topology.ROLES)
def test_a_client_may_not_publish_anywhere_else(setup: Setup, role: str) -> None:
    client = setup.connect(role)
    refused(client, publish(topology.ASSIGN_EXCHANGE, setup.node))
    refused(client, publish(topology.DEFAULT_EXCHANGE, topology.API_QUEUE))
    refused(client, publish(topology.STATUS_EXCHANGE, topology.job_key(JOB, "failed")))
    refused(client, publish(topology.HEARTBEAT_EXCHANGE, setup.node))
    refused(client, publish(topology.RPC_EXCHANGE, setup.node))
    refused(client, lambda ch: ch.basic_get(topology.API_QUEUE))
    refused(client, bind(topology.HEARTBEAT_EXCHANGE, "#"))
    refused(client, bind(topology.ASSIGN_EXCHANGE, setup.node))
    refused(client, bind(topology.API_EXCHANGE, "#"))
    refused(client, lambda ch: ch.queue_declare("mine", exclusive=True))
    refused(client, lambda ch: ch.queue_delete(topology.API_QUEUE))


@pytest.mark.parametrize("role", topology.ROLES)
def test_a_client_can_ask_the_master_and_follow_status(setup: Setup, role: str) -> None:
    client, master = setup.connect(role), setup.connect("master")
    channel = channel_of(client)
    for exchange in (topology.API_EXCHANGE, topology.STATUS_EXCHANGE, topology.REPLIES_EXCHANGE):
        channel.exchange_declare(exchange, passive=True)
    channel, status = declare_queue(client, channel, topology.status_queue())
    channel, _replies = declare_queue(client, channel, topology.reply_queue())

    replies: list[bytes] = []
    channel.basic_consume(
        topology.DIRECT_REPLY_TO, lambda _ch, _m, _p, body: replies.append(body), auto_ack=True
    )
    for as_role in access.roles_up_to(role):
        channel.basic_publish(
            topology.API_EXCHANGE,
            topology.api_key(as_role, "api.get_status"),
            b"request",
            properties=pika.BasicProperties(
                reply_to=topology.DIRECT_REPLY_TO, user_id=setup.credentials[role].user
            ),
        )

    # The master takes the requests from corral.api and answers on the default exchange.
    serving = channel_of(master)
    for as_role in access.roles_up_to(role):
        method, properties, _body = get_one(serving, topology.API_QUEUE)
        assert method.routing_key == topology.api_key(as_role, "api.get_status")
        assert properties.user_id == setup.credentials[role].user
        serving.basic_publish(topology.DEFAULT_EXCHANGE, properties.reply_to, b"reply")
    serving.basic_publish(topology.STATUS_EXCHANGE, topology.job_key(JOB, "running"), b"job")
    while len(replies) < len(access.roles_up_to(role)):
        client.process_data_events(time_limit=0.1)
    assert set(replies) == {b"reply"}
    assert get_one(channel, status)[2] == b"job"


def test_a_client_may_not_claim_another_user(setup: Setup) -> None:
    client = setup.connect("admin")
    other = setup.credentials["viewer"].user
    channel = client.channel()
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        publish(topology.API_EXCHANGE, "viewer.api.get_status", user_id=other)(channel)
    assert info.value.reply_code == 406  # PRECONDITION_FAILED: user_id is checked


# -- the master and the broker's administrator --


def test_the_master_reads_broker_events_on_the_events_vhost(setup: Setup, broker: Broker) -> None:
    try:
        broker.api("GET", f"exchanges/{quote(topology.EVENTS_VHOST, safe='')}/amq.rabbitmq.event")
    except OSError:
        pytest.skip("rabbitmq_event_exchange is not enabled on this broker")
    password = setup.credentials["master"].password
    url = admin.credential_url(
        setup.base, topology.EVENTS_VHOST, setup.credentials["master"].user, password
    )
    events = pika.BlockingConnection(pika.URLParameters(url))
    setup.connections.append(events)
    channel = channel_of(events)
    channel.exchange_declare(topology.EVENT_EXCHANGE, passive=True)
    declare_queue(events, channel, topology.broker_events_queue())
    # Nothing else of that vhost.
    refused(events, lambda ch: ch.queue_declare(f"corral.api-{uuid.uuid4().hex[:6]}"))
    refused(events, publish(topology.DEFAULT_EXCHANGE, "x"))
    refused(events, publish("amq.topic", "x"))


def test_the_broker_admin_replaces_guest(setup: Setup, broker: Broker) -> None:
    credential = setup.credentials["broker-admin"]
    api = admin.Management(broker.management_url, credential.user, credential.password)
    assert credential.user in api.users()
    user = f"probe-{uuid.uuid4().hex[:8]}"
    try:
        made = admin.add_user(api, setup.vhost, user, "viewer", amqp_url_base=setup.base)
        assert made is not None
    finally:
        api.delete_user(user)
    channel = channel_of(setup.connect("broker-admin"))
    channel.basic_publish(topology.DEFAULT_EXCHANGE, topology.API_QUEUE, b"full rights")


# -- operations --


def test_bootstrap_again_keeps_passwords_unless_rotated(setup: Setup) -> None:
    assert setup.bootstrap() == []
    setup.connect("worker")  # the old password still works

    rotated = setup.bootstrap(rotate=True)
    assert sorted(c.user for c in rotated) == sorted(setup.users[:5])
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        setup.connect("worker")
    new = next(c for c in rotated if c.user == setup.credentials["worker"].user)
    setup.credentials["worker"] = new
    channel = channel_of(setup.connect("worker"))
    channel.basic_publish(topology.HEARTBEAT_EXCHANGE, setup.node, b"beat")
    # Permissions were set again, not widened.
    refused(setup.connections[-1], publish(topology.HEARTBEAT_EXCHANGE, setup.other))


def test_a_bad_node_id_makes_no_user(setup: Setup) -> None:
    for node_id in (f"{setup.suffix}.x", f"{setup.suffix}*", f"{setup.suffix}\n"):
        with pytest.raises(admin.AdminError, match="invalid node id"):
            admin.add_worker(setup.api, setup.vhost, node_id, amqp_url_base=setup.base)
    assert {user for user in setup.api.users() if setup.suffix in user} == set(setup.users)


def test_a_user_for_a_missing_vhost_is_not_made(setup: Setup) -> None:
    name = f"ghost-{uuid.uuid4().hex[:8]}"
    with pytest.raises(admin.AdminError, match="no vhost"):
        admin.add_user(
            setup.api, f"{setup.vhost}-missing", name, "viewer", amqp_url_base=setup.base
        )
    assert not setup.api.user_exists(name)


def test_the_management_api_errors_say_which_call_and_never_the_password(broker: Broker) -> None:
    api = admin.Management(broker.management_url, broker.user, "wrong-password-123")
    with pytest.raises(admin.AdminError) as info:
        api.users()
    assert info.value.status == 401
    assert "GET /api/users" in str(info.value)
    assert "wrong-password-123" not in str(info.value)


def test_the_cli_writes_credentials_a_script_can_use(
    setup: Setup, broker: Broker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    node, user = f"c{suffix}", f"cli-{suffix}"
    common = [
        "--vhost", setup.vhost,
        "--management", broker.management_url,
        "--management-user", broker.user,
        "--management-password", broker.password,
        "--amqp-host", broker.host,
        "--amqp-port", str(broker.port),
        "--credentials-dir", str(tmp_path),
    ]  # fmt: skip
    runner = CliRunner()
    names = [
        "--master-user", setup.credentials["master"].user,
        "--admin-name", setup.credentials["admin"].user,
        "--broker-admin", setup.credentials["broker-admin"].user,
        "--worker", setup.node,
    ]  # fmt: skip
    result = runner.invoke(admin_app, ["bootstrap", *names, *common])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"kept {setup.credentials[who].user} ({role}): password unchanged, no file written"
        " (--rotate)"
        for who, role in [
            ("master", "master"),
            ("admin", "admin"),
            ("worker", "worker"),
            ("broker-admin", "broker-admin"),
        ]
    ]
    try:
        result = runner.invoke(admin_app, ["add-worker", node, *common])
        assert result.exit_code == 0, result.output
        path = tmp_path / f"worker-{node}.url"
        assert result.output == f"created worker-{node} (worker): {path}\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        url = path.read_text().splitlines()[0]
        connection = pika.BlockingConnection(pika.URLParameters(url))
        setup.connections.append(connection)
        channel_of(connection).basic_publish(topology.HEARTBEAT_EXCHANGE, node, b"beat")

        result = runner.invoke(admin_app, ["add-worker", node, *common])
        assert result.output.startswith(f"kept worker-{node} (worker): password unchanged")

        result = runner.invoke(admin_app, ["add-user", user, "--role", "viewer", *common])
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"{user}.url").read_text().splitlines()[1] == "viewer"

        result = runner.invoke(admin_app, ["add-worker", "bad.node", *common])
        assert result.exit_code == 2
        result = runner.invoke(admin_app, ["remove-user", f"worker-{node}", *common[2:8]])
        assert result.exit_code == 0, result.output
        assert result.output == f"removed worker-{node}\n"
        result = runner.invoke(admin_app, ["remove-user", f"worker-{node}", *common[2:8]])
        assert result.exit_code == 1
        assert "error: there is no user" in result.output
    finally:
        setup.api.delete_user(f"worker-{node}")
        setup.api.delete_user(user)
