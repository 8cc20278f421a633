"""End to end: one master and two worker processes, the real broker, the real Docker engine."""

from __future__ import annotations

import json

import pytest

from corral import Client
from schemas.api import JobInfo, TaskInfo
from tests.cluster import Cluster, wait_until
from tests.conftest import TEST_IMAGE

pytestmark = pytest.mark.integration


def batch(name: str, script: str, **fields: object) -> dict[str, object]:
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["sh", "-c", script],
        "kind": "batch",
        "restart": {"max_retries": 0},
        "stop_grace": 1,
        **fields,
    }


def service(name: str, replicas: int = 1, **fields: object) -> dict[str, object]:
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["sleep", "600"],
        "kind": "service",
        "replicas": replicas,
        "restart": {"backoff_initial": 0.5},
        "stop_grace": 1,
        **fields,
    }


def running_tasks(client: Client, job: str) -> list[TaskInfo]:
    return [t for t in client.job(job).tasks if t.state == "running"]


def test_batch_job_exit_code_is_reported_by_wait_and_ps(cluster: Cluster) -> None:
    ok = cluster.client.submit(batch("ok", "echo done")).wait(timeout=30)
    assert ok.state == "complete"
    assert ok.exit_codes == {0: 0}

    failed = cluster.client.submit(batch("three", "exit 3")).wait(timeout=30)
    assert failed.state == "failed"
    assert failed.exit_codes == {0: 3}
    assert "exited with code 3" in failed.reason

    ps = cluster.cli("ps", "three", "--output", "json")
    assert ps.returncode == 0, ps.stderr
    rows = json.loads(ps.stdout)
    assert [row["exit_code"] for row in rows] == [3]
    table = cluster.cli("ps", "three")
    task_id = failed.tasks[0].task_id
    assert table.returncode == 0 and task_id in table.stdout and " 3 " in f"{table.stdout} "


def test_batch_retries_then_fails(cluster: Cluster) -> None:
    spec = batch("flaky", "exit 1", restart={"max_retries": 2, "backoff_initial": 0.5})
    info = cluster.client.submit(spec).wait(timeout=30)
    assert info.state == "failed"
    assert [t.attempt for t in info.tasks] == [0, 1, 2]
    assert "gave up after 2 retries" in info.reason


def test_service_replicas_spread_over_both_workers_with_labels_and_limits(
    cluster: Cluster,
) -> None:
    job = cluster.client.submit(service("web", replicas=4, cpu=0.25, memory="48m"))
    info = job.wait(timeout=30)
    assert info.state == "running"
    nodes = sorted(t.node_id or "" for t in info.tasks)
    assert nodes == sorted([cluster.node_id("w1")] * 2 + [cluster.node_id("w2")] * 2)

    containers = cluster.containers("web", all=False)
    assert len(containers) == 4
    for container in containers:
        labels = container.attrs["Config"]["Labels"]
        assert labels["corral.job"] == "web"
        assert labels["corral.task"].startswith("web-")
        assert labels["corral.node"] in {cluster.node_id("w1"), cluster.node_id("w2")}
        assert int(labels["corral.epoch"]) >= 0  # its master's claim offset in the journal
        host = container.attrs["HostConfig"]
        assert host["NanoCpus"] == 250_000_000
        assert host["Memory"] == 48 * 1024 * 1024

    nodes_json = json.loads(cluster.cli("nodes", "--output", "json").stdout)
    assert {n["allocated"]["cpus"] for n in nodes_json} == {0.5}


def test_job_asking_for_more_cpu_than_any_node_stays_pending_with_reason(
    cluster: Cluster,
) -> None:
    cluster.client.submit(batch("huge", "true", cpu=16))
    info = wait_until(
        lambda: (job := cluster.client.job("huge")).reason and job, what="a pending reason"
    )
    assert isinstance(info, JobInfo)
    assert info.state == "pending"
    assert "2 nodes have less than 16 free CPUs" in info.reason
    assert info.tasks[0].state == "pending" and info.tasks[0].node_id is None
    assert cluster.containers("huge") == []


def test_missing_image_fails_the_job_with_a_clear_error(cluster: Cluster) -> None:
    spec = {"name": "ghost", "image": "corral-test/no-such-image:1", "command": ["true"]}
    info = cluster.client.submit(spec).wait(timeout=30)
    assert info.state == "failed"
    assert "corral-test/no-such-image:1" in info.reason
    assert "not present" in info.reason
    assert info.tasks[0].state == "failed"


def test_killed_container_is_restarted_by_its_policy(cluster: Cluster) -> None:
    cluster.client.submit(service("phoenix")).wait(timeout=30)
    [victim] = cluster.containers("phoenix", all=False)
    victim.kill()

    def replaced() -> list[TaskInfo]:
        tasks = running_tasks(cluster.client, "phoenix")
        return [t for t in tasks if t.attempt == 1]

    [task] = wait_until(replaced, timeout=30, what="a restarted task")
    first = next(t for t in cluster.client.job("phoenix").tasks if t.attempt == 0)
    assert first.state == "exited" and first.exit_code == 137
    assert len(cluster.containers("phoenix", all=False)) == 1
    assert task.container_id != victim.id


def test_killed_batch_container_is_retried(cluster: Cluster) -> None:
    spec = batch("sleepy", "sleep 600", restart={"max_retries": 1, "backoff_initial": 0.5})
    cluster.client.submit(spec)
    wait_until(lambda: running_tasks(cluster.client, "sleepy"), what="the batch task running")
    cluster.containers("sleepy", all=False)[0].kill()
    wait_until(
        lambda: [t for t in running_tasks(cluster.client, "sleepy") if t.attempt == 1],
        what="the retry",
    )


def test_cancel_and_scale(cluster: Cluster) -> None:
    job = cluster.client.submit(service("scaled", replicas=1))
    job.wait(timeout=30)
    cluster.client.scale("scaled", 3)
    wait_until(lambda: len(running_tasks(cluster.client, "scaled")) == 3, what="3 replicas")
    wait_until(lambda: len(cluster.containers("scaled", all=False)) == 3, what="3 containers")
    cluster.client.scale("scaled", 1)
    wait_until(lambda: len(cluster.containers("scaled", all=False)) == 1, what="1 container")
    cluster.client.scale("scaled", 2)  # the emptied slot is filled again
    wait_until(lambda: len(running_tasks(cluster.client, "scaled")) == 2, what="2 replicas")
    assert cluster.client.job("scaled").spec.replicas == 2
    assert cluster.client.cancel("scaled").state == "cancelled"
    wait_until(lambda: not cluster.containers("scaled"), what="containers removed")


def test_logs_of_a_task(cluster: Cluster) -> None:
    info = cluster.client.submit(batch("talk", "echo hello-from-corral")).wait(timeout=30)
    lines = "".join(cluster.client.logs(info.tasks[0].task_id))
    assert "hello-from-corral" in lines
    result = cluster.cli("logs", info.tasks[0].task_id)
    assert result.returncode == 0 and "hello-from-corral" in result.stdout
