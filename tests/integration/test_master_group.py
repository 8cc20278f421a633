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


def test_masters_and_status_show_the_group(three_masters: Cluster) -> None:
    cluster = three_masters
    leader, epoch = cluster.active_master()

    def all_three() -> list[dict[str, object]] | None:
        result = cluster.cli("masters", "--output", "json")
        assert result.returncode == 0, result.stderr
        masters: list[dict[str, object]] = json.loads(result.stdout)
        return masters if len(masters) == 3 else None

    masters = wait_until(all_three, timeout=15, what="three masters listed")
    assert [m["role"] for m in masters] == ["active", "standby", "standby"]
    assert masters[0]["name"] == leader and masters[0]["epoch"] == epoch
    assert sorted(str(m["name"]) for m in masters) == ["m1", "m2", "m3"]
    assert all(isinstance(m["lag"], int) for m in masters)
    table = cluster.cli("masters").stdout
    assert "ACTIVE" in table.upper() and leader in table

    result = cluster.cli("status", "--output", "json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["epoch"] == epoch
    assert len(status["masters"]) == 3
    assert status["workers"]["states"] == {"ready": 1}
    assert status["dead_letters"] is None or status["dead_letters"] >= 0
    assert status["brokers"][0]["reachable"] is True
    text = cluster.cli("status").stdout
    assert "master" in text and "worker" in text
