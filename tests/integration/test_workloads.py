"""Workloads over their lifetime, end to end with 3 workers: health and `run --wait`, rolling
updates with rollback under a client's load, drain, and why tasks ended.

Counts of serving copies come from the Docker engine's own view, never from Corral.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, running_cluster, wait_until

pytestmark = pytest.mark.integration

IMAGE = "local/busybox:latest"
PORT = 8080


@pytest.fixture
def cluster3(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    """A master and three workers (2 CPUs, 1 GiB each)."""
    with running_cluster(vhost_url, tmp_path) as cluster:
        yield cluster


def web(version: str, replicas: int = 4, **fields: Any) -> dict[str, Any]:
    """An HTTP service (busybox httpd) answering `version`, with Docker's HTTP check."""
    script = f"mkdir -p /www && echo {version} > /www/index.html && exec httpd -f -p {PORT} -h /www"
    return {
        "name": "web",
        "image": IMAGE,
        "kind": "service",
        "replicas": replicas,
        "command": ["sh", "-c", script],
        "health": {"http": {"port": PORT}, "interval": 1, "timeout": 3, "retries": 3},
        "min_healthy": 0.5,
        "stop_grace": 1,
        "update": {"parallelism": 1, "order": "start-first"},
        **fields,
    }


def fetch(ip: str) -> str | None:
    """GET / of one replica: its body, or None if it did not answer 200."""
    try:
        with socket.create_connection((ip, PORT), timeout=2) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
    except OSError:
        return None
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return body.strip() if " 200 " in head.split("\r\n")[0] else None


class LoadClient(threading.Thread):
    """Every 50 ms, GET every replica Docker lists as running and healthy (what a load
    balancer would route to). Records per round how many answered, and the container of
    every failure of a replica still running and healthy afterwards (a user-visible error,
    unless Corral had stopped that replica: see `unexcused`)."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()
        self.answered: list[int] = []
        self.bodies: list[set[str]] = []
        self.errors: list[str] = []

    def healthy(self) -> dict[str, str]:
        found = self.cluster.docker.api.containers(
            filters={"label": [f"corral-test-run={self.cluster.run_id}", "corral.job=web"]}
        )
        return {
            # Its one network: the node's bridge on the cluster network.
            c["Id"]: next(iter(c["NetworkSettings"]["Networks"].values()))["IPAddress"]
            for c in found
            if "(healthy)" in c.get("Status", "")
        }

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            replicas = self.healthy()
            bodies = {cid: fetch(ip) for cid, ip in replicas.items()}
            failed = [cid for cid, body in bodies.items() if body is None]
            still = self.healthy() if failed else {}
            self.errors += [cid[:12] for cid in failed if cid in still]
            self.answered.append(sum(1 for body in bodies.values() if body is not None))
            self.bodies.append({body for body in bodies.values() if body is not None})
            self.stop.wait(max(0.0, 0.05 - (time.monotonic() - started)))


def unexcused(cluster: Cluster, failed: list[str]) -> list[str]:
    """The failed containers whose task Corral had not stopped (a balancer following
    Corral's task events takes a stopped task out of rotation before its container ends)."""
    stopped = {t.container_id[:12] for t in cluster.client.tasks("web") if t.state == "stopped"}
    return [cid for cid in failed if cid not in stopped]


def rollout_state(cluster: Cluster) -> str | None:
    rollout = cluster.client.job("web").rollout
    return rollout.state if rollout is not None else None


def test_run_wait_fails_on_a_crash_loop_and_passes_only_after_min_healthy(
    cluster3: Cluster, tmp_path: Path
) -> None:
    crash = cluster3.cli(
        "run", "--name", "crashy", "--kind", "service", "--wait", IMAGE,
        "sh", "-c", "sleep 0.5; exit 3",
        timeout=90,
    )  # fmt: skip
    assert crash.returncode != 0, crash.stdout
    assert "crash loop" in crash.stdout + crash.stderr
    assert "exited with code 3" in crash.stdout + crash.stderr

    job = tmp_path / "steady.json"
    job.write_text(json.dumps({**web("v1", replicas=2, min_healthy=3), "name": "steady"}))
    began = time.time()
    steady = cluster3.cli("submit", str(job), "--wait", timeout=90)
    ended = time.time()
    assert steady.returncode == 0, steady.stdout + steady.stderr
    info = cluster3.client.job("steady")
    assert (info.state, info.healthy) == ("running", 2)
    # It passed only once each replica had been running for min_healthy (3 s).
    for container in cluster3.containers("steady"):
        started = container.attrs["State"]["StartedAt"]
        started_at = time.mktime(time.strptime(started[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert ended - started_at >= 3.0, (started, ended - began)


def test_a_rolling_update_keeps_three_of_four_serving_and_a_failing_one_rolls_back(
    cluster3: Cluster,
) -> None:
    client = cluster3.client
    client.submit(web("v1"))
    wait_until(lambda: client.job("web").state == "running", timeout=60, what="4 healthy")
    load = LoadClient(cluster3)
    load.start()
    try:
        wait_until(lambda: len(load.answered) > 5, what="the client's first rounds")
        client.update("web", web("v2"))
        wait_until(lambda: rollout_state(cluster3) == "done", timeout=90, what="v2 rolled out")
        assert {t.version for t in client.job("web").tasks if t.state == "running"} == {2}
        wait_until(lambda: load.bodies[-1] == {"v2"}, what="only v2 answering")

        broken = web("v3")
        broken["command"] = ["sh", "-c", "sleep 0.3; exit 1"]
        client.update("web", broken)
        wait_until(
            lambda: rollout_state(cluster3) == "rolled-back", timeout=90, what="the rollback"
        )
        info = client.job("web")
        assert info.rollout is not None and "before it was healthy" in info.rollout.reason
        assert info.versions[-1].spec.command == web("v2")["command"]  # v2's spec, as v4
        wait_until(lambda: client.job("web").state == "running", timeout=60, what="healthy")
        time.sleep(0.5)
    finally:
        load.stop.set()
        load.join(timeout=10)
    assert unexcused(cluster3, load.errors) == []
    assert min(load.answered) >= 3, load.answered
    assert load.bodies[-1] == {"v2"}  # the old version kept serving


def test_drain_moves_every_task_and_a_service_never_drops_to_zero(cluster3: Cluster) -> None:
    client = cluster3.client
    client.submit(web("v1", replicas=2))
    wait_until(lambda: client.job("web").state == "running", timeout=60, what="2 healthy")
    node = next(t.node_id for t in client.job("web").tasks if t.state == "running")
    assert node is not None
    counts: list[int] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counts.append(len(cluster3.containers("web", all=False)))
            stop.wait(0.1)

    sampler = threading.Thread(target=count, daemon=True)
    sampler.start()
    try:
        drained = client.drain(node)
        assert (drained.cordoned, drained.draining) == (True, True)
        wait_until(
            lambda: next(n for n in client.nodes() if n.node_id == node).tasks == 0,
            timeout=60,
            what=f"{node} drained",
        )
        wait_until(lambda: client.job("web").state == "running", timeout=60, what="healthy")
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert min(counts) >= 1, counts
    running = [t for t in client.job("web").tasks if t.state == "running"]
    assert len(running) == 2 and node not in {t.node_id for t in running}
    wait_until(
        lambda: not [c for c in cluster3.containers("web") if c.labels["corral.node"] == node],
        what=f"no container left on {node}",
    )
    assert client.uncordon(node).cordoned is False


def test_each_failure_shows_its_own_reason_in_ps_and_inspect(cluster3: Cluster) -> None:
    client = cluster3.client
    hog = 'a=$(head -c 200000000 /dev/zero | tr "\\0" x); echo ${#a}'
    client.submit({"name": "hog", "image": IMAGE, "memory": "16m", "command": ["sh", "-c", hog]})
    client.submit(
        {
            "name": "loop",
            "image": IMAGE,
            "kind": "service",
            "command": ["sh", "-c", "exit 4"],
            "restart": {"backoff_initial": 0.5, "backoff_max": 0.5},
        }
    )
    client.submit(
        {
            "name": "sick",
            "image": IMAGE,
            "kind": "service",
            "command": ["sleep", "600"],
            "health": {"command": ["false"], "interval": 0.2, "retries": 1},
            "stop_grace": 0,
        }
    )
    wait_until(lambda: client.job("hog").state == "failed", timeout=60, what="hog failed")
    wait_until(lambda: "crash loop" in client.job("loop").reason, timeout=60, what="loop")
    wait_until(
        lambda: any(t.reason.startswith("unhealthy") for t in client.job("sick").tasks),
        timeout=60,
        what="sick unhealthy",
    )
    expected = {
        "hog": "out of memory (limit 16Mi)",
        "loop": "crash loop",
        "sick": "unhealthy",
    }
    ps = cluster3.cli("ps", "-a")
    assert ps.returncode == 0, ps.stderr
    for job, reason in expected.items():
        assert reason in "\n".join(line for line in ps.stdout.splitlines() if job in line)
        inspect = cluster3.cli("inspect", job)
        assert inspect.returncode == 0, inspect.stderr
        assert reason in inspect.stdout, (job, inspect.stdout)


def test_retention_purges_ended_jobs_and_ps_stays_short_after_100_restarts(
    vhost_url: str, tmp_path: Path, docker_engine: None
) -> None:
    ttl = ("--ended-job-ttl", "3", "--keep-containers", "1")
    with running_cluster(vhost_url, tmp_path, master_extra=ttl) as cluster:
        client = cluster.client
        client.submit({"name": "once", "image": IMAGE, "command": ["true"]})
        wait_until(lambda: client.job("once").state == "complete", timeout=30, what="done")
        assert cluster.containers("once")  # kept for its logs while the job is remembered
        wait_until(
            lambda: "once" not in {j.job_id for j in client.jobs()}, timeout=30, what="purged"
        )
        wait_until(lambda: not cluster.containers("once"), timeout=30, what="its container gone")

        restarts = {"backoff_initial": 0.5, "backoff_max": 0.5}
        spec = {"name": "flap", "image": IMAGE, "kind": "service", "replicas": 4}
        client.submit({**spec, "command": ["sh", "-c", "exit 1"], "restart": restarts})

        def restarted() -> int:
            return sum(t.attempt for t in client.job("flap").tasks if t.slot < 4)

        wait_until(lambda: restarted() >= 100, timeout=180, interval=1, what="100 restarts")
        ps = cluster.cli("ps", "flap")
        assert ps.returncode == 0, ps.stderr
        assert len(ps.stdout.strip().splitlines()) == 1 + 4  # a header and one row per slot
        everything = cluster.cli("ps", "-a", "flap")
        assert len(everything.stdout.strip().splitlines()) <= 1 + 4 * 6  # keep_attempts 5
        # Per slot: the current attempt's container, keep_containers (1) before it, and at
        # most one more on its way out (removed once its successor is created). Not 100.
        # (The engine's plain list: containers come and go too fast to inspect each one.)
        labels = [f"corral-test-run={cluster.run_id}", "corral.job=flap"]
        assert len(cluster.docker.api.containers(all=True, filters={"label": labels})) <= 4 * 3
