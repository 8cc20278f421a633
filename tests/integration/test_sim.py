"""The simulated fleet (bench/sim.py) in one cluster with a real worker: 50 simulated
nodes and 1 real Docker worker. Jobs constrained to the real node really run there (the
Docker engine lists their containers); jobs constrained to the simulated nodes are
placed on them and reported running, with no container at all."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.sim import Fleet, FleetSettings
from tests.cluster import Cluster, wait_until
from tests.conftest import TEST_IMAGE

pytestmark = pytest.mark.integration

SIMULATED = 50


@pytest.fixture
def mixed(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[tuple[Cluster, Fleet]]:
    cluster = Cluster(vhost_url, tmp_path)
    fleet = Fleet(
        FleetSettings(
            amqp_url=cluster.amqp_url,  # the master's user: trusted as any node
            nodes=SIMULATED,
            connections=2,
            prefix=f"sim{uuid.uuid4().hex[:6]}",
            labels={"zone": "sim"},
        )
    )
    try:
        cluster.declare_topology()
        cluster.start_master()
        cluster.start_worker("w1", labels=("zone=real",))
        fleet.start()
        cluster.wait_nodes_ready(SIMULATED + 1, timeout=60)
        yield cluster, fleet
    finally:
        fleet.close()
        print(cluster.logs())
        cluster.close()


def job(name: str, zone: str, replicas: int) -> dict[str, object]:
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["sleep", "600"],
        "kind": "service",
        "replicas": replicas,
        "cpu": 0.1,
        "memory": 16 * 1024 * 1024,
        "constraints": [f"zone={zone}"],
        "stop_grace": 0,
    }


def test_jobs_for_the_real_node_run_in_docker_and_the_rest_on_simulated_nodes(
    mixed: tuple[Cluster, Fleet],
) -> None:
    cluster, fleet = mixed
    client = cluster.client
    real_node = cluster.node_id("w1")
    client.submit(job("real", "real", 2)).wait(timeout=60)
    client.submit(job("simulated", "sim", 200))

    def all_running() -> bool:
        return [t.state for t in client.job("simulated").tasks].count("running") == 200

    wait_until(all_running, timeout=60, what="200 simulated tasks running")
    assert fleet.running() == 200
    simulated_nodes = {t.node_id for t in client.job("simulated").tasks}
    assert simulated_nodes <= set(fleet.node_ids) and len(simulated_nodes) == SIMULATED
    # The real job runs on the real worker, in Docker; nothing else runs there.
    assert {t.node_id for t in client.job("real").tasks} == {real_node}
    containers = cluster.containers(all=False)
    assert sorted(c.labels["corral.job"] for c in containers) == ["real", "real"]
    assert all(c.labels["corral.node"] == real_node for c in containers)
    # Scaling down stops simulated tasks as a worker would: reported, then gone.
    client.scale("simulated", 50)
    wait_until(lambda: fleet.running() == 50, timeout=60, what="150 simulated tasks stopped")


def test_a_batch_of_1200_jobs_is_submitted_in_two_requests_and_all_of_them_run(
    mixed: tuple[Cluster, Fleet],
) -> None:
    """Client.submit_many: 1,200 one-replica jobs (two api.submit_many requests), a
    name already taken refused in its outcome, the rest placed and run; the two jobs
    for the real node run in Docker."""
    cluster, fleet = mixed
    client = cluster.client
    client.submit(job("b-7", "sim", 1))
    specs = [job(f"b-{i}", "sim", 1) for i in range(1200)] + [
        job("r-0", "real", 1),
        job("r-1", "real", 1),
    ]
    calls: list[tuple[int, int]] = []
    outcomes = client.submit_many(specs, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1000, 1202), (1202, 1202)]
    assert [o.job_id for o in outcomes] == [s["name"] for s in specs]
    refused = [o for o in outcomes if not o.ok]
    assert [(o.job_id, o.error.code if o.error else "") for o in refused] == [("b-7", "conflict")]
    wait_until(lambda: fleet.running() == 1200, timeout=120, what="1,200 simulated tasks running")
    wait_until(
        lambda: len(cluster.containers(all=False)) == 2, timeout=60, what="2 real containers"
    )
    assert sorted(c.labels["corral.job"] for c in cluster.containers(all=False)) == ["r-0", "r-1"]
