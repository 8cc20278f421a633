"""A worker dies (kill -9): its work comes back elsewhere; when it returns it is fenced."""

from __future__ import annotations

import pytest

from tests.cluster import Cluster, wait_until
from tests.integration.test_cluster import service

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_lost_worker_work_is_rescheduled_and_its_stale_copies_fenced(cluster: Cluster) -> None:
    client = cluster.client
    client.submit(service("api", replicas=2)).wait(timeout=30)
    w1, w2 = cluster.node_id("w1"), cluster.node_id("w2")
    assert sorted(t.node_id or "" for t in client.job("api").tasks) == [w1, w2]

    cluster.stop("w1", hard=True)  # the agent dies; its container keeps running

    def moved() -> bool:
        tasks = [t for t in client.job("api").tasks if t.state == "running"]
        return len(tasks) == 2 and all(t.node_id == w2 for t in tasks)

    wait_until(moved, timeout=30, what="both replicas running on w2")
    down = {n.node_id: n.state for n in client.nodes()}
    assert down[w1] == "down"
    lost = [t for t in client.job("api").tasks if t.state == "lost"]
    assert len(lost) == 1 and lost[0].node_id == w1

    cluster.start_worker("w1")  # comes back still running the copy that was moved

    def one_copy_each() -> bool:
        running = cluster.containers("api", all=False)
        nodes = sorted(c.labels["corral.node"] for c in running)
        return nodes == [w2, w2]

    wait_until(one_copy_each, timeout=30, what="the stale copy on w1 fenced")
    assert {n.node_id: n.state for n in client.nodes()}[w1] == "ready"
    assert client.job("api").state == "running"
