"""The rig itself: two hosts with engines of their own, and a Corral worker on one of them
joining a master that runs outside, through the broker at the LAN's gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import NoCluster, NoMaster
from tests.accounts import as_user
from tests.cluster import RUN_LABEL, Cluster, wait_until
from tests.conftest import TEST_IMAGE, Broker
from tests.integration.test_cluster import batch
from tests.multihost.rig import Host, Rig, broker_url_for

# From the host itself (not from one of its containers): the host's python, as its
# image has no nc.
PROBE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)"


def node_ready(cluster: Cluster, node_id: str) -> bool:
    try:
        nodes = cluster.client.nodes()
    except (NoMaster, NoCluster):  # the master is still starting
        return False
    return any(n.node_id == node_id and n.state == "ready" for n in nodes)


@pytest.fixture
def hosts(rig: Rig) -> Iterator[tuple[Host, Host]]:
    """Two fresh hosts, started at once; removed afterwards."""
    first, second = rig.add_hosts("h1", "h2")
    try:
        yield first, second
    finally:
        for host in (first, second):
            print(f"----- {host.name}: dockerd -----\n{host.dockerd_log()[-3000:]}")
            rig.remove_host(host)


@pytest.fixture
def master(vhost_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """A master on this machine (no workers), on a vhost of its own."""
    cluster = Cluster(vhost_url, tmp_path)
    try:
        cluster.declare_topology()
        cluster.start_master()
        yield cluster
    finally:
        print(cluster.logs())
        cluster.close()


def test_hosts_run_containers_and_a_worker_joins_through_the_gateway(
    rig: Rig, hosts: tuple[Host, Host], master: Cluster, broker: Broker
) -> None:
    first, second = hosts
    assert first.lan_addr != second.lan_addr
    for host in hosts:
        assert host.docker("run", "--rm", TEST_IMAGE, "echo", "ok").stdout.strip() == "ok"
    # Separate engines: a container made in one is not seen by the other.
    first.docker("create", "--name", "only-on-h1", TEST_IMAGE, "true")
    assert second.docker("inspect", "only-on-h1", check=False).returncode != 0

    probe = second.exec("python3", "-c", PROBE, rig.gateway, str(broker.port), check=False)
    assert probe.returncode == 0, f"h2 cannot reach the broker at {rig.gateway}: {probe.stderr}"

    assert master.accounts is not None  # vhost_url is a test master's: workers get users
    accounts, vhost = master.accounts
    node_id = master.node_id("h1")
    login = accounts.worker_login(vhost, node_id)
    url = broker_url_for(as_user(master.amqp_url, *login), rig.gateway)
    first.start_worker(
        node_id, url,
        "--master-user", accounts.master.user,
        "--cpus", "1", "--memory", "512m",
        "--container-label", f"{RUN_LABEL}={master.run_id}",
    )  # fmt: skip
    try:
        wait_until(lambda: node_ready(master, node_id), timeout=60, what=f"{node_id} on h1 ready")
        # The task lands on the only node, in h1's engine, with Corral's CPU and memory
        # limits (the inner engine's cgroups must allow them).
        job = master.client.submit(batch("hello", "echo hello", cpu=0.5, memory="64m"))
        assert job.wait(timeout=60).state == "complete"
        made = first.docker("ps", "-aq", "--filter", "label=corral.job=hello").stdout.split()
        assert made, "the task's container is not in h1's engine"
        limits = first.docker(
            "inspect", "-f", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", made[0]
        ).stdout.split()
        assert limits == [str(500_000_000), str(64 * 1024 * 1024)]
    finally:
        print(f"----- worker {node_id} -----\n{first.worker_log(node_id)}")
        first.stop_worker(node_id)
        accounts.remove_worker(node_id)


def test_broker_url_for_replaces_each_host_only() -> None:
    url = "amqp://u%40x:p%2Fw@127.0.0.1:5672/v%2Fh?heartbeat=10,amqp://u:p@localhost/v"
    assert broker_url_for(url, "10.249.3.1") == (
        "amqp://u%40x:p%2Fw@10.249.3.1:5672/v%2Fh?heartbeat=10,amqp://u:p@10.249.3.1/v"
    )
