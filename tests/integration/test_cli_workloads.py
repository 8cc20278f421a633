"""Services through the CLI, end to end: `--wait` until healthy, updates (a file
submitted again, `corral update`), the master rolling a failing update back, `inspect`,
`drain`, and a crash loop that `run --wait` gives up on, then `purge`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, wait_until
from tests.conftest import TEST_IMAGE, Broker

pytestmark = pytest.mark.integration

WAIT = ("--wait", "--timeout", "60")


@pytest.fixture(scope="module")
def cluster(
    broker: Broker, docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One master and two workers for this module's tests, which use jobs of their own
    names and leave every node schedulable: starting a cluster costs more than a test."""
    vhost = f"corral-test-{uuid.uuid4().hex[:10]}"
    running = Cluster(broker.create_vhost(vhost), tmp_path_factory.mktemp("workloads"))
    try:
        running.start(workers=2)
        yield running
    finally:
        print(running.logs())
        running.close()
        broker.delete_vhost(vhost)


def web_file(path: Path, **fields: object) -> str:
    """A service of two replicas that stop at once and are healthy after 0.5 s."""
    spec = {
        "name": "web",
        "kind": "service",
        "image": TEST_IMAGE,
        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
        "replicas": 2,
        "stop_grace": 1,
        "min_healthy": 0.5,
        "update": {"parallelism": 2},
        **fields,
    }
    path.write_text(json.dumps(spec))
    return str(path)


def test_a_service_is_updated_rolled_back_inspected_and_drained(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "web.json"
    first = cluster.cli("submit", web_file(path), *WAIT)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr.startswith("web: 0/2 healthy (pending)\n")
    assert "job web: running" in first.stdout

    again = cluster.cli("submit", web_file(path, env={"V": "2"}), *WAIT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("updating web to version 2\n")
    assert "job web: version 2 rolled out, 2/2 healthy" in again.stdout

    broken = cluster.cli("update", "web", "--command", "sh -c 'exit 1'", *WAIT)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "error: the update of job web to version 3 was rolled back" in broken.stderr

    inspect = cluster.cli("inspect", "web")
    assert inspect.returncode == 0, inspect.stderr
    assert "Version:    4" in inspect.stdout and "Versions:" in inspect.stdout
    assert "  V: '2'" in inspect.stdout or "env: {V: '2'}" in inspect.stdout
    ps = cluster.cli("ps", "web")
    assert [line.split()[7] for line in ps.stdout.splitlines()[1:]] == ["4", "4"]

    node = cluster.node_id("w1")
    drain = cluster.cli("drain", node, *WAIT)
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert f"node {node}: drained (ready,draining, no tasks)" in drain.stdout
    moved = cluster.cli("ps", "web").stdout.splitlines()[1:]
    assert {line.split()[2] for line in moved} == {cluster.node_id("w2")}
    assert cluster.cli("uncordon", node).stdout == f"node {node}: ready, 0 tasks\n"


def test_run_wait_gives_up_on_a_crash_loop_and_purge_forgets_the_job(cluster: Cluster) -> None:
    loop = cluster.cli(
        "run", *WAIT, "--kind", "service", "--name", "loop", TEST_IMAGE, "sh", "-c", "exit 1"
    )
    assert loop.returncode == 1, loop.stdout + loop.stderr
    assert "error: job loop" in loop.stderr and "crash loop" in loop.stderr

    refused = cluster.cli("purge", "loop")
    assert refused.returncode == 1
    assert "cancel it first" in refused.stderr
    assert cluster.cli("cancel", "loop").returncode == 0
    purged = cluster.cli("purge", "loop")
    assert purged.returncode == 0, purged.stderr
    wait_until(lambda: not cluster.containers("loop"), what="loop's containers removed")
    gone = cluster.cli("inspect", "loop")
    assert gone.returncode == 1
    assert "no job or task is called 'loop'" in gone.stderr
