"""A 3-node RabbitMQ cluster loses one node at a time: Corral loses nothing and goes on.

Starts a new cluster with scripts/rabbitmq-cluster.sh fresh (nodes rq1..rq3@localhost,
AMQP ports 5701-5703) beside the default broker, on a vhost of its own, and
stops it at the end. Two masters and two workers, each listing the nodes in a
different order, so they connect to different nodes.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import Client
from tests.accounts import as_user
from tests.audit import ContainerAudit
from tests.cluster import Cluster, wait_until
from tests.conftest import IN_CI, Broker
from tests.integration.test_cluster import service

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RECIPE = Path(__file__).resolve().parents[2] / "scripts" / "rabbitmq-cluster.sh"
PORTS = {1: 5701, 2: 5702, 3: 5703}


def recipe(*args: str) -> None:
    result = subprocess.run(
        ["bash", str(RECIPE), *args], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        message = f"rabbitmq-cluster.sh {' '.join(args)} failed: {result.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def stop_node(index: int) -> None:
    subprocess.run(
        ["rabbitmqctl", "-n", f"rq{index}@localhost", "stop"],
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def broker_cluster() -> Iterator[Broker]:
    recipe("fresh")  # a new cluster: restarting one from old data is not reliable
    broker = Broker("amqp://guest:guest@127.0.0.1:5701/", "http://127.0.0.1:15701")
    try:
        yield broker
    finally:
        broker.close()
        recipe("stop")


def replicated(vhost: str, *, up: int) -> bool:
    """Whether every queue and stream of `vhost` has all three replicas online (asked of
    node `up`): a node that just came back may still be catching up, and only then may
    another go down without the journal losing its majority."""
    result = subprocess.run(
        [
            "rabbitmqctl",
            "-n",
            f"rq{up}@localhost",
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "durable",
            "online",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    rows = [line.split("\t") for line in result.stdout.splitlines()[1:] if line.strip()]
    durable = [row for row in rows if len(row) == 3 and row[1] == "true"]
    return (
        result.returncode == 0
        and bool(durable)
        and all(row[2].count("@localhost") == 3 for row in durable)
    )


def urls(vhost: str, order: tuple[int, ...], login: tuple[str, str]) -> str:
    """The nodes' URLs in `order`, logging in as `login` (the test master user's)."""
    return as_user(",".join(f"amqp://127.0.0.1:{PORTS[i]}/{vhost}" for i in order), *login)


@pytest.fixture
def spread(broker_cluster: Broker, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    vhost = f"corral-cluster-{uuid.uuid4().hex[:8]}"
    broker_cluster.create_vhost(vhost)
    login = broker_cluster.accounts.master_login()
    cluster = Cluster(urls(vhost, (1, 2, 3), login), tmp_path)
    cluster.vhost = vhost  # type: ignore[attr-defined]
    try:
        for name, order in (("m1", (1, 2, 3)), ("m2", (2, 3, 1))):
            cluster.amqp_url = urls(vhost, order, login)
            cluster.start_master(name)
        for name, order in (("w1", (2, 3, 1)), ("w2", (3, 1, 2))):
            cluster.amqp_url = urls(vhost, order, login)
            cluster.start_worker(name)
        cluster.amqp_url = urls(vhost, (3, 1, 2), login)
        cluster.wait_nodes_ready(2, timeout=60)
        yield cluster
    finally:
        print(cluster.logs())
        cluster.close()
        for index in PORTS:  # whatever the test left down comes back for the next one
            recipe("start-node", str(index))
        broker_cluster.delete_vhost(vhost)


def node_of(cluster: Cluster, master: str) -> int:
    """The broker node a master is connected to (its first reachable URL: all are up)."""
    return {"m1": 1, "m2": 2}[master]


def test_losing_one_broker_node_at_a_time_loses_nothing(spread: Cluster) -> None:
    cluster = spread
    audit = ContainerAudit(cluster.docker, cluster.run_id).start()
    client = Client(cluster.amqp_url, timeout=20)
    acknowledged = []
    try:
        client.submit(service("a", replicas=2, cpu=0.1, memory="16m")).wait(timeout=60)
        acknowledged.append("a")
        first_containers = {c.id for c in cluster.containers("a", all=False)}

        leader, _ = cluster.active_master()
        down = node_of(cluster, leader)
        stop_node(down)
        started = time.monotonic()
        client.submit(service("b", replicas=2, cpu=0.1, memory="16m")).wait(timeout=60)
        acknowledged.append("b")
        print(f"node rq{down} down: a new job ran after {time.monotonic() - started:.1f} s")
        recipe("start-node", str(down))
        vhost = cluster.vhost  # type: ignore[attr-defined]
        wait_until(
            lambda: replicated(vhost, up=down), timeout=120, interval=1.0, what="replicas in sync"
        )

        other = next(i for i in PORTS if i != down)
        stop_node(other)
        started = time.monotonic()
        client.submit(service("c", replicas=2, cpu=0.1, memory="16m")).wait(timeout=60)
        acknowledged.append("c")
        print(f"node rq{other} down: a new job ran after {time.monotonic() - started:.1f} s")

        jobs = {job.job_id: job.state for job in client.jobs()}
        assert all(jobs.get(name) == "running" for name in acknowledged), jobs
        assert {c.id for c in cluster.containers("a", all=False)} == first_containers
        wait_until(
            lambda: all(len(cluster.containers(n, all=False)) == 2 for n in acknowledged),
            timeout=30,
            what="two containers per job",
        )
        assert audit.restarted() == []
        assert audit.overlaps() == []
    finally:
        client.close()
        audit.close()
