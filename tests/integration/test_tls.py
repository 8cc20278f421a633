"""amqps:// against a RabbitMQ node of its own with a TLS listener (tests.tlsbroker): a
password login over TLS, a certificate login (EXTERNAL) that the broker knows by the
certificate's CN, and the failures a wrong CA, an unknown user, a certificate from another
CA or the wrong host name give. The shared broker is not involved."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from bus.connection import Bus
from bus.errors import AccessRefused, ConnectionLost
from bus.params import Tls, connect_first, connection_parameters, tls_user
from corral import Client, NoCluster, NoMaster
from tests.cluster import RUN_LABEL, Cluster, wait_until
from tests.conftest import IN_CI, TEST_IMAGE
from tests.tlsbroker import Certificates, TlsBroker, Unavailable, tls_broker

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-over-tls"
# worker-1 and worker-tls1 log in by certificate only
USERS = {"alice": PASSWORD, "worker-1": None, "corral-master": PASSWORD, "worker-tls1": None}


@pytest.fixture(scope="module")
def node() -> Iterator[TlsBroker]:
    try:
        with tls_broker(USERS) as running:
            yield running
    except Unavailable as exc:
        if IN_CI:
            pytest.fail(f"CI must run the TLS tests: {exc}")
        pytest.skip(str(exc))


def connect(url: str, tls: Tls | None, name: str = "tls-test") -> Any:
    """A pika connection made the way the bus makes its own (translated failures)."""
    parameters = connection_parameters(url, name=name, heartbeat=0, tls=tls)
    return connect_first(parameters, 0, pika.BlockingConnection)[1]


def connections(node: TlsBroker) -> list[dict[str, Any]]:
    """The node's own account of its client connections."""
    listed = node.rabbitmqctl(
        "list_connections", "--formatter", "json", "name", "user", "auth_mechanism", "ssl",
        "client_properties",
    )  # fmt: skip
    result: list[dict[str, Any]] = json.loads(listed)
    return result


def named(node: TlsBroker, name: str) -> dict[str, Any] | None:
    for connection in connections(node):
        properties = connection["client_properties"]  # [name, type, value] triples
        if ["connection_name", "longstr", name] in properties:
            return connection
    return None


def sent_as(connection: Any, user_id: str) -> str:
    """Publish with `user_id` and read it back: RabbitMQ refuses (406) a user_id that is not
    the connection's user, so a message that comes back proves who the broker thinks we are."""
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"who", pika.BasicProperties(user_id=user_id))
    _method, properties, _body = channel.basic_get(queue, auto_ack=True)
    channel.close()
    return str(properties.user_id)


def test_a_password_login_over_tls(node: TlsBroker) -> None:
    connection = connect(node.url("alice", PASSWORD), node.ca, name="tls-plain")
    try:
        assert sent_as(connection, "alice") == "alice"
        seen = wait_until(lambda: named(node, "tls-plain"), timeout=10, what="the connection")
        assert (seen["user"], seen["auth_mechanism"], seen["ssl"]) == ("alice", "PLAIN", True)
    finally:
        connection.close()


def test_a_certificate_login_is_the_certificates_common_name(node: TlsBroker) -> None:
    worker = node.certs.client("worker-1")
    assert tls_user(worker) == "worker-1"
    connection = connect(node.url(), worker, name="tls-cert")
    try:
        assert sent_as(connection, "worker-1") == "worker-1"
        seen = wait_until(lambda: named(node, "tls-cert"), timeout=10, what="the connection")
        assert (seen["user"], seen["auth_mechanism"], seen["ssl"]) == ("worker-1", "EXTERNAL", True)
        # Another user's name is refused: the connection is worker-1's and nobody else's.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="worker-1"):
            sent_as(connection, "alice")
    finally:
        connection.close()


def test_a_user_name_in_the_url_does_not_change_the_certificate_login(node: TlsBroker) -> None:
    connection = connect(node.url("worker-1"), node.certs.client("worker-1"))
    try:
        assert sent_as(connection, "worker-1") == "worker-1"
    finally:
        connection.close()


def test_a_broker_certificate_from_another_ca_is_not_trusted(node: TlsBroker) -> None:
    other = Certificates(node.directory / "other-ca", "other-ca")
    with pytest.raises(ConnectionLost, match="the broker's TLS certificate is not trusted"):
        connect(node.url("alice", PASSWORD), Tls(ca_file=str(other.ca_file)))


def test_the_host_name_is_checked(node: TlsBroker) -> None:
    # 127.0.0.2 reaches the same listener, but the certificate names 127.0.0.1 and localhost.
    url = f"amqps://alice:{PASSWORD}@127.0.0.2:{node.ports.tls}/"
    with pytest.raises(ConnectionLost, match=r"not trusted .*address mismatch"):
        connect(url, node.ca)
    connect(node.url("alice", PASSWORD).replace("127.0.0.1", "localhost"), node.ca).close()


def test_a_certificate_for_an_unknown_user_is_refused(node: TlsBroker) -> None:
    stranger = node.certs.client("stranger")
    with pytest.raises(AccessRefused, match=r"refused the certificate login \(EXTERNAL\)"):
        connect(node.url(), stranger)


def test_a_client_certificate_from_another_ca_is_refused_at_the_handshake(
    node: TlsBroker,
) -> None:
    other = Certificates(node.directory / "rogue-ca", "rogue-ca").client("worker-1")
    rogue = Tls(ca_file=str(node.certs.ca_file), cert_file=other.cert_file, key_file=other.key_file)
    with pytest.raises(ConnectionLost, match="the broker ended the TLS handshake"):
        connect(node.url(), rogue)


def test_tls_to_the_plain_port_says_which_port_to_use(node: TlsBroker) -> None:
    url = f"amqps://alice:{PASSWORD}@127.0.0.1:{node.ports.amqp}/"
    with pytest.raises(ConnectionLost, match="TLS listener"):
        connect(url, node.ca)


def test_a_bus_connects_over_tls_with_the_system_cas(
    node: TlsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An amqps:// URL without a CA file uses the system's CAs, which OpenSSL reads from
    # SSL_CERT_FILE when it is set.
    monkeypatch.setenv("SSL_CERT_FILE", str(node.certs.ca_file))
    bus = Bus(node.url("alice", PASSWORD), name="tls-bus")
    try:
        bus.connect(attempts=1)
        assert bus.connected
        seen = wait_until(lambda: named(node, "tls-bus"), timeout=10, what="the bus's connection")
        assert (seen["user"], seen["ssl"]) == ("alice", True)
    finally:
        bus.close()


def test_a_worker_by_certificate_and_a_client_by_password_run_a_job_over_tls(
    node: TlsBroker, tmp_path: Path, docker_engine: None
) -> None:
    """A master (password), a worker that logs in by its certificate alone (its user, the
    certificate's CN worker-tls1, is node tls1's), and a client (password), all over
    TLS: the job runs, and the broker lists the worker's connection as EXTERNAL over TLS."""
    ca = str(node.certs.ca_file)
    worker_tls = node.certs.client("worker-tls1")
    assert worker_tls.cert_file is not None and worker_tls.key_file is not None
    run = uuid.uuid4().hex[:8]
    cluster = Cluster(node.url("corral-master", PASSWORD), tmp_path)
    try:
        cluster._spawn("master", ["master", "--name", "m-tls", "--tls-ca", ca])
        cluster._spawn(
            "worker",
            [
                "worker",
                "--node-id", "tls1",
                "--master-user", "corral-master",
                "--tls-ca", ca,
                "--tls-cert", worker_tls.cert_file,
                "--tls-key", worker_tls.key_file,
                "--state-dir", str(tmp_path / "worker"),
                "--container-label", f"{RUN_LABEL}={run}",
            ],
            node.url(),  # no user, no password: the certificate is the login
        )  # fmt: skip
        with Client(node.url("alice", PASSWORD), tls=node.ca, timeout=10) as client:

            def ready() -> bool:
                try:
                    return [n.state for n in client.nodes()] == ["ready"]
                except (NoCluster, NoMaster):  # the master is still starting
                    return False

            wait_until(ready, timeout=60, what="node tls1 ready")
            job = client.submit(
                {"name": "over-tls", "image": TEST_IMAGE, "command": ["sleep", "60"]}
            )
            wait_until(
                lambda: [t.state for t in client.job(job.id).tasks] == ["running"],
                timeout=60,
                what="the task running",
            )
            assert client.job("over-tls").owner == "alice"
        docker = cluster.docker
        (container,) = docker.containers.list(filters={"label": f"{RUN_LABEL}={run}"})
        assert container.labels["corral.node"] == "tls1"
        worker = next(c for c in connections(node) if c["user"] == "worker-tls1")
        assert (worker["auth_mechanism"], worker["ssl"]) == ("EXTERNAL", True)
    finally:
        print(cluster.logs())
        cluster.close()
        for container in cluster.docker.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={run}"}
        ):
            container.remove(force=True)
