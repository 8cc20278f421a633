"""The cluster network with workers that share one Docker engine (the normal test setup).

Each worker has a bridge of its own with its node's subnet; the kernel is shared,
so no routes are needed, but Docker's isolation of bridges must be lifted for the
cluster CIDR (worker.hostnet). The same behaviour across real separate engines is
tests/multihost/test_network_hosts.py.
"""

from __future__ import annotations

import ipaddress
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.api import TaskInfo
from tests.cluster import Cluster, wait_until
from tests.nettools import (
    UPSTREAM_ADDRESS,
    UPSTREAM_NAME,
    WEB_COMMAND,
    Exec,
    StubResolver,
    http_get,
    resolve,
    running_since,
    service,
    wait_resolves,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def stub() -> Iterator[StubResolver]:
    resolver = StubResolver({UPSTREAM_NAME: UPSTREAM_ADDRESS})
    try:
        yield resolver
    finally:
        resolver.close()


@pytest.fixture
def three(
    vhost_url: str, tmp_path: Path, docker_engine: None, stub: StubResolver
) -> Iterator[Cluster]:
    """A master and workers w1, w2, w3 (labels host=a, b, c) on one engine; their DNS
    forwards other names to the test's own stub resolver."""
    cluster = Cluster(vhost_url, tmp_path)
    try:
        cluster.declare_topology()
        cluster.start_master()
        for index, host in enumerate("abc", start=1):
            cluster.start_worker(
                f"w{index}", labels=(f"host={host}",), dns_upstream=f"127.0.0.1:{stub.port}"
            )
        cluster.wait_nodes_ready(3)
        yield cluster
    finally:
        print(cluster.logs())
        cluster.close()


def in_container(cluster: Cluster, job: str) -> Exec:
    (container,) = cluster.containers(job, all=False)
    return exec_in(container)


def exec_in(container: Any) -> Exec:
    def run(script: str) -> str:
        result = container.exec_run(["sh", "-c", script])
        return str(result.output.decode(errors="replace"))

    return run


def running(cluster: Cluster, job: str, count: int) -> list[TaskInfo]:
    def ready() -> list[TaskInfo] | None:
        tasks = [t for t in cluster.client.job(job).tasks if t.state == "running"]
        return sorted(tasks, key=lambda t: t.slot) if len(tasks) >= count else None

    return wait_until(ready, timeout=40, what=f"{count} running tasks of {job}")


def hostname(cluster: Cluster, task: TaskInfo) -> str:
    return str(cluster.docker.containers.get(task.container_id).attrs["Config"]["Hostname"])


def test_every_replica_is_reached_by_name_across_nodes(three: Cluster) -> None:
    three.client.submit(service("web", 2, WEB_COMMAND, "host!=c"))
    three.client.submit(service("client", 1, ["sleep", "600"], "host=c"))
    web = running(three, "web", 2)
    running(three, "client", 1)
    run = in_container(three, "client")

    nodes = {n.node_id: n for n in three.client.nodes()}
    for task in web:
        assert task.node_id is not None
        subnet = ipaddress.IPv4Network(nodes[task.node_id].subnet)
        assert ipaddress.IPv4Address(task.address) in subnet, (task, subnet)
    assert all(
        ipaddress.IPv4Network(n.subnet).subnet_of(ipaddress.IPv4Network(three.cidr))
        for n in nodes.values()
    )

    names = {task.slot: hostname(three, task) for task in web}
    assert wait_until(lambda: http_get(run, "0.web") == names[0], what="0.web answering")
    assert http_get(run, "1.web") == names[1]
    assert http_get(run, "1.web.corral") == names[1]
    # `web` is every replica, in turn.
    seen = {http_get(run, "web") for _ in range(6)}
    assert seen == set(names.values())
    assert sorted(resolve(run, "web.corral")) == sorted(t.address for t in web)

    # The listings show it: addresses in ps, subnets and addresses in nodes.
    ps = three.cli("ps", "web")
    assert ps.returncode == 0, ps.stderr
    assert all(task.address in ps.stdout for task in web)
    listing = three.cli("nodes")
    assert all(node.subnet in listing.stdout for node in nodes.values())


def test_a_moved_replica_is_found_by_its_name_within_a_second(three: Cluster) -> None:
    three.client.submit(service("web", 2, WEB_COMMAND, "host!=c"))
    three.client.submit(service("client", 1, ["sleep", "600"], "host=c"))
    first = running(three, "web", 2)
    running(three, "client", 1)
    run = in_container(three, "client")
    old = first[0]
    wait_resolves(run, "0.web", old.address)

    # Drain its node: the replica starts on the other node (start-first), in its subnet.
    assert old.node_id is not None
    drained = three.cli("drain", old.node_id)
    assert drained.returncode == 0, drained.stderr

    new = moved_elsewhere(three, old)
    assert new.address and new.address != old.address
    assert_name_follows(three, run, new)


def moved_elsewhere(cluster: Cluster, old: TaskInfo) -> TaskInfo:
    """The task of `old`'s slot once it runs on another node."""

    def moved() -> TaskInfo | None:
        for task in cluster.client.job(old.job_id).tasks:
            if task.slot == old.slot and task.state == "running" and task.node_id != old.node_id:
                return task
        return None

    return wait_until(moved, timeout=30, what=f"slot {old.slot} running on another node")


def assert_name_follows(cluster: Cluster, run: Exec, new: TaskInfo) -> None:
    """`<slot>.<job>` resolves to `new` within a second of its container starting, and
    reaches it."""
    name = f"{new.slot}.{new.job_id}"
    resolved_at = wait_resolves(run, name, new.address)
    since = running_since(cluster.docker, new.container_id)  # a standby: since its unpause
    print(f"{name} resolved to {new.address} {resolved_at - since:.3f} s after start")
    assert resolved_at - since < 1.0
    assert http_get(run, name) == hostname(cluster, new)


def test_network_none_has_no_cluster_address_and_other_names_go_upstream(
    three: Cluster, stub: StubResolver
) -> None:
    isolated = service("isolated", 1, ["sleep", "600"])
    isolated["network"] = "none"
    three.client.submit(isolated)
    three.client.submit(service("client", 1, ["sleep", "600"]))
    (task,) = running(three, "isolated", 1)
    running(three, "client", 1)
    assert task.address == ""
    container = three.docker.containers.get(task.container_id)
    attached = container.attrs["NetworkSettings"]["Networks"]
    assert not [name for name in attached if name.startswith("corral-")], attached

    run = in_container(three, "client")
    assert resolve(run, UPSTREAM_NAME) == [UPSTREAM_ADDRESS]
    assert UPSTREAM_NAME in stub.asked
    # A job without a cluster address has no name; the question went upstream, got NXDOMAIN.
    assert resolve(run, "isolated") == []
    # Under .corral nothing is forwarded.
    before = len(stub.asked)
    assert resolve(run, "nosuchjob.corral") == []
    time.sleep(0.2)
    assert not [name for name in stub.asked[before:] if name.endswith(".corral")]


def test_a_node_that_joins_is_reached_from_every_other(three: Cluster, stub: StubResolver) -> None:
    three.client.submit(service("web", 2, WEB_COMMAND, "host!=c"))
    three.client.submit(service("client", 1, ["sleep", "600"], "host=c"))
    others = [*running(three, "web", 2), *running(three, "client", 1)]
    three.start_worker("w4", labels=("host=d",), dns_upstream=f"127.0.0.1:{stub.port}")
    three.wait_nodes_ready(4)
    joined = next(n for n in three.client.nodes() if n.node_id == three.node_id("w4"))
    assert joined.subnet and joined.addr

    three.client.submit(service("late", 1, WEB_COMMAND, "host=d"))
    (late,) = running(three, "late", 1)
    assert ipaddress.IPv4Address(late.address) in ipaddress.IPv4Network(joined.subnet)
    expected = hostname(three, late)
    for task in others:
        run = exec_in(three.docker.containers.get(task.container_id))
        assert wait_until(
            lambda run=run: http_get(run, "0.late") == expected,  # type: ignore[misc]
            timeout=15,
            what=f"0.late from {task.task_id}",
        )
    run = in_container(three, "late")
    web = running(three, "web", 2)
    assert {http_get(run, f"{t.slot}.web") for t in web} == {hostname(three, t) for t in web}


def test_a_lost_nodes_replica_is_found_by_its_name_within_a_second(three: Cluster) -> None:
    three.client.submit(service("web", 2, WEB_COMMAND, "host!=c"))
    three.client.submit(service("client", 1, ["sleep", "600"], "host=c"))
    old = running(three, "web", 2)[0]
    running(three, "client", 1)
    run = in_container(three, "client")
    wait_resolves(run, "0.web", old.address)
    # A host loss on a shared engine: its worker frozen (no heartbeat, no connection
    # close), its container killed.
    worker = next(name for name in three.processes if three.node_id(name) == old.node_id)
    three.signal(worker, signal.SIGSTOP)
    try:
        three.docker.containers.get(old.container_id).kill()
        assert_name_follows(three, run, moved_elsewhere(three, old))
    finally:
        three.signal(worker, signal.SIGCONT)
