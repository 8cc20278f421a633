"""Several masters on one cluster: exactly one answers, and every answer is the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, wait_until
from tests.integration.test_cluster import service

pytestmark = pytest.mark.integration


@pytest.fixture
def three_masters(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    cluster = Cluster(vhost_url, tmp_path)
    try:
        for name in ("m1", "m2", "m3"):
            cluster.start_master(name)
        cluster.start_worker("w1")
        cluster.wait_nodes_ready(1)
        yield cluster
    finally:
        print(cluster.logs())
        cluster.close()


def test_three_masters_give_twenty_identical_answers(three_masters: Cluster) -> None:
    cluster = three_masters
    for index in range(5):
        cluster.client.submit(service(f"svc{index}", replicas=1, cpu=0.1, memory="16m"))
    wait_until(
        lambda: all(job.state == "running" for job in cluster.client.jobs()),
        timeout=30,
        what="every job running",
    )
    answers = []
    for _ in range(20):
        result = cluster.cli("jobs", "--output", "json")
        assert result.returncode == 0, result.stderr
        answers.append(json.loads(result.stdout))
    assert all(answer == answers[0] for answer in answers)
    assert sorted(job["job_id"] for job in answers[0]) == [f"svc{i}" for i in range(5)]
    assert len(cluster.leaders()) == 1  # one master took the lead; the others never did
