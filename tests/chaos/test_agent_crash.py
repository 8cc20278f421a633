"""An agent crash is not a host loss: `kill -9` of a worker process closes its broker
connection, the master keeps its tasks for the agent grace, and a restarted agent adopts
its containers. Past the grace they are replaced, and the originals are stopped when the
agent returns. Containers are judged from the Docker engine's own view."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, running_cluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

IMAGE = "local/busybox:latest"
GRACE = 8.0


@pytest.fixture
def crashable(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    """A master with an agent grace of GRACE seconds, and three workers."""
    with running_cluster(vhost_url, tmp_path, master_extra=("--agent-grace", str(GRACE))) as c:
        yield c


def serve(cluster: Cluster, replicas: int = 3) -> dict[str, Any]:
    """A service spread over the workers, running and healthy; its containers by id."""
    spec = {
        "name": "svc",
        "image": IMAGE,
        "kind": "service",
        "replicas": replicas,
        "command": ["sleep", "3600"],
        "min_healthy": 0.5,
        "stop_grace": 0,
    }
    cluster.client.submit(spec)
    wait_until(lambda: cluster.client.job("svc").state == "running", timeout=60, what="svc up")
    return {c.id: c for c in cluster.containers("svc")}


def started_at(containers: dict[str, Any]) -> dict[str, str]:
    return {cid: c.attrs["State"]["StartedAt"] for cid, c in containers.items()}


def node_state(cluster: Cluster, name: str) -> str:
    node_id = cluster.node_id(name)
    return next(n.state for n in cluster.client.nodes() if n.node_id == node_id)


def test_an_agent_killed_and_restarted_within_the_grace_restarts_nothing(
    crashable: Cluster,
) -> None:
    before = serve(crashable)
    on_w1 = [cid for cid, c in before.items() if c.labels["corral.node"] == crashable.node_id("w1")]
    assert on_w1, "the service spreads over every worker"
    crashable.stop("w1", hard=True)  # kill -9: the broker sees the connection close
    wait_until(
        lambda: node_state(crashable, "w1") == "disconnected", timeout=5, what="disconnected"
    )
    time.sleep(5)  # restarted 5 s later, past dead_after (3 s): silence alone would replace
    crashable.start_worker("w1")
    wait_until(lambda: node_state(crashable, "w1") == "ready", timeout=30, what="w1 back")
    time.sleep(2)  # what the master would do now, it does on the first heartbeats

    after = {c.id: c for c in crashable.containers("svc")}
    assert set(after) == set(before)  # no replacement was ever created
    assert started_at(after) == started_at(before)  # and none restarted
    assert all(c.status == "running" for c in after.values())
    info = crashable.client.job("svc")
    assert info.state == "running" and all(t.attempt == 0 for t in info.tasks)


def test_past_the_grace_the_tasks_are_replaced_and_the_originals_stopped_on_return(
    crashable: Cluster,
) -> None:
    before = serve(crashable)
    w1 = crashable.node_id("w1")
    on_w1 = {cid for cid, c in before.items() if c.labels["corral.node"] == w1}
    crashable.stop("w1", hard=True)
    wait_until(
        lambda: node_state(crashable, "w1") == "disconnected", timeout=5, what="disconnected"
    )
    wait_until(
        lambda: node_state(crashable, "w1") == "down", timeout=GRACE + 10, what="down after grace"
    )
    wait_until(lambda: crashable.client.job("svc").state == "running", timeout=30, what="replaced")
    running = [t for t in crashable.client.job("svc").tasks if t.state == "running"]
    assert len(running) == 3 and w1 not in {t.node_id for t in running}
    # The originals still run on the orphaned host (nobody stopped them yet).
    assert {c.id for c in crashable.containers("svc", all=False)} >= on_w1

    crashable.start_worker("w1")
    wait_until(
        lambda: not on_w1 & {c.id for c in crashable.containers("svc", all=False)},
        timeout=30,
        what="the originals fenced on w1",
    )
    assert len(crashable.containers("svc", all=False)) == 3
