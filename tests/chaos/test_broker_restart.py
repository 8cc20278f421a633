"""The broker restarts under a running cluster: nothing acknowledged is lost, nothing is disturbed.

Restarts the real local RabbitMQ node (stop, then `rabbitmq-server -detached`),
so it needs a broker this machine runs; elsewhere it skips (CI: fails). The
broker holds hundreds of quorum queues, so it is slow to come back: it accepts
connections before it can finish their handshakes, which used to end every
daemon with `AMQPConnectorStackTimeout`.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator

import pika
import pytest

from corral import Client
from tests.cluster import Cluster, wait_until
from tests.conftest import Broker, _unavailable
from tests.integration.test_cluster import batch, service

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

BALLAST_QUEUES = 300


@pytest.fixture
def ballast(broker: Broker) -> Iterator[None]:
    """Hundreds of quorum queues on a vhost of their own: the broker's restart gets slow."""
    vhost = f"corral-ballast-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(broker.create_vhost(vhost)))
    channel = connection.channel()
    for index in range(BALLAST_QUEUES):
        channel.queue_declare(
            f"ballast-{index}", durable=True, arguments={"x-queue-type": "quorum"}
        )
    connection.close()
    yield
    broker.delete_vhost(vhost)


def restart_local_broker(broker: Broker) -> None:
    if urllib.parse.urlsplit(broker.amqp_url).hostname not in ("127.0.0.1", "localhost"):
        _unavailable("the broker is not on this machine")
    if shutil.which("rabbitmqctl") is None:
        _unavailable("rabbitmqctl is not installed")
    subprocess.run(["rabbitmqctl", "-q", "stop"], check=True, timeout=120)
    subprocess.run(["rabbitmq-server", "-detached"], check=True, timeout=60)
    wait_until(
        lambda: (
            subprocess.run(
                ["rabbitmq-diagnostics", "-q", "ping"], capture_output=True, timeout=30
            ).returncode
            == 0
        ),
        timeout=120,
        interval=1,
        what="RabbitMQ to answer again",
    )


def started_at(cluster: Cluster, job: str) -> dict[str, str]:
    return {c.id: c.attrs["State"]["StartedAt"] for c in cluster.containers(job, all=False)}


def test_broker_restart_loses_no_job_and_disturbs_no_container(
    cluster: Cluster, broker: Broker, ballast: None
) -> None:
    client = cluster.client
    client.submit(service("web", replicas=3)).wait(timeout=30)
    client.submit(batch("long", "sleep 600"))
    wait_until(lambda: client.job("long").state == "running", what="the batch job running")
    queued = client.submit(batch("pending-big", "true", cpu=64))  # stays pending throughout
    before = {job: started_at(cluster, job) for job in ("web", "long")}
    assert sum(len(c) for c in before.values()) == 4

    client.close()
    restart_local_broker(broker)

    with Client(cluster.amqp_url, timeout=10) as after:

        def all_ready() -> bool:
            try:
                nodes = after.nodes()
            except Exception:
                return False  # master or broker still coming back
            return len(nodes) == 2 and all(n.state == "ready" for n in nodes)

        wait_until(all_ready, timeout=90, interval=0.5, what="master and workers back")
        jobs = {j.job_id: j for j in after.jobs()}
        assert set(jobs) == {"web", "long", queued.id}
        assert jobs["web"].state == "running" and jobs["long"].state == "running"
        assert jobs[queued.id].state == "pending"
        # No task was lost or restarted, and Docker never noticed.
        assert all(t.attempt == 0 for t in after.tasks())
        assert {job: started_at(cluster, job) for job in ("web", "long")} == before

        # And the cluster takes new work.
        fresh = after.submit(batch("after-restart", "echo back")).wait(timeout=60)
        assert fresh.state == "complete"
    # The daemons lived through it (none was restarted) and logged no traceback.
    assert all(process.poll() is None for process in cluster.processes.values())
    assert "Traceback" not in cluster.logs()
