"""The cluster network across separate hosts: each worker on a Docker-in-Docker host of
its own (its own network namespace, routes, firewall and Docker engine), the master
and the broker outside. What tests/integration/test_network.py shows on one engine,
shown here where only the routes and rules Corral sets can carry the traffic.

The tests share one fleet and run in order: names, then `network: none` and the
upstream resolver, then a host that joins, then a host that is lost (last: it kills
one).
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from schemas.api import TaskInfo
from tests.accounts import as_user
from tests.cluster import Cluster, wait_until
from tests.conftest import Broker
from tests.multihost.rig import Host, Rig, broker_url_for
from tests.nettools import (
    UPSTREAM_ADDRESS,
    UPSTREAM_NAME,
    WEB_COMMAND,
    Exec,
    StubResolver,
    http_get,
    resolve,
    service,
    started_at,
    wait_resolves,
)


@dataclass
class Fleet:
    cluster: Cluster
    rig: Rig
    stub: StubResolver
    hosts: dict[str, Host]  # by the host label of its worker (a, b, c, ...)

    def start(self, label: str, *extra: str) -> Host:
        """A new host with a worker labelled host=`label` (and `extra` options)."""
        host = self.rig.add_host(f"h{label}")
        self.hosts[label] = host
        node_id = self.cluster.node_id(f"h{label}")
        assert self.cluster.accounts is not None
        accounts, vhost = self.cluster.accounts
        url = as_user(self.cluster.amqp_url, *accounts.worker_login(vhost, node_id))
        host.start_worker(
            node_id,
            broker_url_for(url, self.rig.gateway),
            "--master-user",
            accounts.master.user,
            "--label",
            f"host={label}",
            "--dns-upstream",
            f"{self.stub.address}:{self.stub.port}",
            *extra,
        )
        return host

    def host_of(self, task: TaskInfo) -> Host:
        assert task.node_id is not None
        return self.hosts[task.node_id.rsplit("-h", 1)[1]]

    def in_task(self, task: TaskInfo) -> Exec:
        host = self.host_of(task)

        def run(script: str) -> str:
            done = host.docker("exec", task.container_id, "sh", "-c", script, check=False)
            return done.stdout + done.stderr

        return run

    def running(self, job: str, count: int, timeout: float = 60) -> list[TaskInfo]:
        def ready() -> list[TaskInfo] | None:
            tasks = [t for t in self.cluster.client.job(job).tasks if t.state == "running"]
            return sorted(tasks, key=lambda t: t.slot) if len(tasks) >= count else None

        return wait_until(ready, timeout=timeout, what=f"{count} running tasks of {job}")

    def hostname(self, task: TaskInfo) -> str:
        done = self.host_of(task).docker("inspect", "-f", "{{.Config.Hostname}}", task.container_id)
        return done.stdout.strip()

    def logs(self) -> str:
        parts = [self.cluster.logs()]
        for host in self.hosts.values():
            node_id = self.cluster.node_id(host.name)
            parts.append(f"----- {host.name} worker -----\n{host.worker_log(node_id)[-6000:]}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def fleet(rig: Rig, broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """An outer master, and hosts a, b, c each running one worker."""
    vhost = f"corral-test-{uuid.uuid4().hex[:10]}"
    url = broker.create_vhost(vhost)
    cluster = Cluster(url, tmp_path_factory.mktemp("fleet"))
    stub = StubResolver({UPSTREAM_NAME: UPSTREAM_ADDRESS}, address=rig.gateway)
    running = Fleet(cluster, rig, stub, {})
    try:
        cluster.declare_topology()
        cluster.start_master()
        for label in "abc":
            running.start(label)
        cluster.wait_nodes_ready(3, timeout=60)
        yield running
    finally:
        print(running.logs())
        for host in running.hosts.values():
            rig.remove_host(host)
        cluster.close()
        stub.close()
        broker.delete_vhost(vhost)


def test_replicas_on_other_hosts_are_reached_by_name(fleet: Fleet) -> None:
    client = fleet.cluster.client
    web_spec = service("web", 2, WEB_COMMAND, "host!=c")
    # Killing a host container closes its worker's broker connection (the kernel ends
    # its sockets), which the master takes for an agent that stopped and waits out the
    # agent grace for: short here, so the lost host's replica moves at once.
    web_spec["agent_grace"] = 1
    client.submit(web_spec)
    client.submit(service("client", 1, ["sleep", "600"], "host=c"))
    web = fleet.running("web", 2)
    (probe,) = fleet.running("client", 1)
    assert {fleet.host_of(t).name for t in web}.isdisjoint({fleet.host_of(probe).name})
    run = fleet.in_task(probe)

    nodes = {n.node_id: n for n in client.nodes()}
    for node in nodes.values():
        assert node.subnet and node.addr
    for task in web:
        assert task.node_id is not None
        subnet = ipaddress.IPv4Network(nodes[task.node_id].subnet)
        assert ipaddress.IPv4Address(task.address) in subnet
        assert nodes[task.node_id].addr == fleet.host_of(task).lan_addr

    names = {task.slot: fleet.hostname(task) for task in web}
    assert wait_until(lambda: http_get(run, "0.web") == names[0], what="0.web answering")
    assert http_get(run, "1.web") == names[1]
    assert {http_get(run, "web") for _ in range(6)} == set(names.values())


def test_network_none_and_names_forwarded_upstream(fleet: Fleet) -> None:
    isolated = service("isolated", 1, ["sleep", "600"])
    isolated["network"] = "none"
    fleet.cluster.client.submit(isolated)
    (task,) = fleet.running("isolated", 1)
    assert task.address == ""
    attached = fleet.host_of(task).docker(
        "inspect", "-f", "{{json .NetworkSettings.Networks}}", task.container_id
    )
    assert "corral-" not in attached.stdout, attached.stdout

    (probe,) = fleet.running("client", 1)
    run = fleet.in_task(probe)
    assert resolve(run, UPSTREAM_NAME) == [UPSTREAM_ADDRESS]
    assert UPSTREAM_NAME in fleet.stub.asked
    assert resolve(run, "isolated.corral") == []


def test_a_host_that_joins_is_routed_to_and_from_every_other(fleet: Fleet) -> None:
    fleet.start("d")
    fleet.cluster.wait_nodes_ready(4, timeout=60)
    joined = fleet.cluster.node_id("hd")
    node = next(n for n in fleet.cluster.client.nodes() if n.node_id == joined)
    assert node.subnet and node.addr == fleet.hosts["d"].lan_addr
    # Every other host routes the new subnet through the new host (host-gw).
    for label in "abc":
        wait_until(
            lambda label=label: (
                f"{node.subnet} via {node.addr}"  # type: ignore[misc]
                in fleet.hosts[label].exec("ip", "-4", "route").stdout
            ),
            timeout=10,
            what=f"a route to {node.subnet} on host {label}",
        )

    fleet.cluster.client.submit(service("late", 1, WEB_COMMAND, "host=d"))
    (late,) = fleet.running("late", 1)
    assert ipaddress.IPv4Address(late.address) in ipaddress.IPv4Network(node.subnet)
    expected = fleet.hostname(late)
    # From a container on each of the other hosts (web on a and b, the client on c).
    others = [*fleet.running("web", 2), *fleet.running("client", 1)]
    assert {fleet.host_of(t).name for t in others} == {"ha", "hb", "hc"}
    for task in others:
        run = fleet.in_task(task)
        assert wait_until(
            lambda run=run: http_get(run, "0.late") == expected,  # type: ignore[misc]
            timeout=15,
            what=f"0.late from {fleet.host_of(task).name}",
        )
    # And the other way: from the new host to every replica of web.
    run = fleet.in_task(late)
    web = fleet.running("web", 2)
    assert {http_get(run, f"{t.slot}.web") for t in web} == {fleet.hostname(t) for t in web}


def test_a_worker_stopped_with_cleanup_removes_its_routes_rules_and_bridge(fleet: Fleet) -> None:
    host = fleet.start("e", "--cleanup")
    node_id = fleet.cluster.node_id("he")
    fleet.cluster.wait_nodes_ready(5, timeout=60)
    subnets = {n.subnet for n in fleet.cluster.client.nodes() if n.node_id != node_id}

    def set_up() -> bool:
        routes = host.exec("ip", "-4", "route").stdout
        rules = host.exec("iptables", "-S", "DOCKER-USER").stdout
        bridge = host.docker("network", "ls", "--format", "{{.Name}}").stdout
        return (
            all(f"{subnet} via" in routes for subnet in subnets)
            and "corral-cluster" in rules
            and f"corral-{node_id}" in bridge
        )

    wait_until(set_up, timeout=30, what="routes, rules and bridge on the new host")
    host.stop_worker(node_id)
    routes = host.exec("ip", "-4", "route").stdout
    assert not [subnet for subnet in subnets if f"{subnet} via" in routes], routes
    assert "corral-cluster" not in host.exec("iptables", "-S", "DOCKER-USER").stdout
    nat = host.exec("iptables", "-t", "nat", "-S", "POSTROUTING").stdout
    assert "corral-cluster" not in nat
    bridges = host.docker("network", "ls", "--format", "{{.Name}}").stdout
    assert f"corral-{node_id}" not in bridges


def test_a_lost_hosts_replica_is_found_by_name_within_a_second(fleet: Fleet) -> None:
    web = fleet.running("web", 2)
    old = web[0]
    (probe,) = fleet.running("client", 1)
    run = fleet.in_task(probe)
    wait_resolves(run, "0.web", old.address)
    lost = fleet.host_of(old)
    lost.kill()

    def replaced() -> TaskInfo | None:
        for task in fleet.cluster.client.job("web").tasks:
            if task.slot == 0 and task.state == "running" and task.task_id != old.task_id:
                return task
        return None

    new = wait_until(replaced, timeout=30, what="slot 0 running again on another host")
    assert fleet.host_of(new) is not lost
    started = (
        fleet.host_of(new)
        .docker("inspect", "-f", "{{.State.StartedAt}}", new.container_id)
        .stdout.strip()
    )
    resolved_at = wait_resolves(run, "0.web", new.address)
    delay = resolved_at - started_at(started)
    print(f"0.web resolved to {new.address} {delay:.3f} s after it started")
    assert delay < 1.0
    assert http_get(run, "0.web") == fleet.hostname(new)
