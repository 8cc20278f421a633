"""The live model and `corral top` against a real cluster (a master and one worker)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from corral import Client
from corral.live import LiveCluster, View
from tests.cluster import Cluster
from tests.conftest import TEST_IMAGE, Broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(
    broker: Broker, docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    vhost = f"corral-test-{uuid.uuid4().hex[:10]}"
    running = Cluster(broker.create_vhost(vhost), tmp_path_factory.mktemp("top"))
    try:
        running.start(workers=1)
        yield running
    finally:
        print(running.logs())
        running.close()
        broker.delete_vhost(vhost)


def service(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "service",
        "image": TEST_IMAGE,
        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
        "replicas": 1,
        "stop_grace": 1,
        "min_healthy": 0.5,
    }


class CountingClient(Client):
    """Counts the full task listings (the live model's initial load and its resyncs)."""

    listings = 0

    def iter_tasks(self, job_id: str | None = None, **options: Any) -> Any:
        if job_id is None:
            type(self).listings += 1
        return super().iter_tasks(job_id, **options)


def wait_view(live: LiveCluster, ready: Any, timeout: float = 60.0) -> View:
    """The first View for which `ready(view)` holds, woken by each change."""
    deadline = time.monotonic() + timeout
    view = live.view()
    while not ready(view):
        left = deadline - time.monotonic()
        assert left > 0, f"the live view never got there: {view}"
        view = live.wait(view.version, min(left, 1.0))
    return view


def test_a_submitted_job_shows_up_running_through_events(cluster: Cluster) -> None:
    live = LiveCluster(
        lambda: CountingClient(cluster.client_url, role=cluster.client_role),
        refresh=600.0,  # nothing is listed again while the test runs: events only
        resync=600.0,
    )
    live.start()
    try:
        first = wait_view(live, lambda view: view.connected)
        assert cluster.node_id("w1") in first.nodes and "live" not in first.jobs
        assert CountingClient.listings == 1
        cluster.client.submit(service("live"))
        view = wait_view(
            live,
            lambda view: (
                "live" in view.jobs
                and view.jobs["live"].state == "running"
                and view.task_counts.get("running", 0) >= 1
            ),
        )
        task = next(task for task in view.tasks.values() if task.job_id == "live")
        assert task.state == "running" and task.node_id == cluster.node_id("w1")
        assert CountingClient.listings == 1, "the job came from a listing, not from events"
        healthy = wait_view(live, lambda view: view.jobs["live"].healthy == 1)
        assert healthy.jobs["live"].task_counts == {"running": 1}
        cluster.client.cancel("live")
        wait_view(live, lambda view: view.jobs["live"].state == "cancelled")
    finally:
        live.stop()
