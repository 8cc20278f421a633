"""Workers frozen with SIGSTOP: silence with no goodbye, which is how a lost host looks.

A frozen agent sends no heartbeat and its broker connection does not close (its
AMQP heartbeat timeout, 10 s, is longer than any freeze here), so the master
hears nothing at all, as when a host dies or drops off the network.

- One worker frozen past `dead_after` is a lost host: its tasks are replaced on
  the others; when it thaws, the originals it still runs are fenced.
- Every worker frozen at once is the partition guard's case (master/liveness.py):
  nothing is rescheduled, and when they thaw the fleet goes on with its own
  containers.

Containers are counted from Docker's own list and event stream, by the test
run's and the job's labels, never from Corral's report.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.audit import ContainerAudit
from tests.cluster import Cluster, wait_until
from tests.integration.test_cluster import service

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

WORKERS = ("w1", "w2", "w3")
REPLICAS = 6
DEAD_AFTER = 3.0
NODE, SLOT = "corral.node", "corral.slot"


@pytest.fixture
def trio(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    """A master (down after 3 s) and three workers; every worker is thawed before teardown."""
    running = Cluster(vhost_url, tmp_path)
    try:
        running.start(workers=len(WORKERS), dead_after=DEAD_AFTER)
        yield running
    finally:
        for name in WORKERS:  # a stopped process would sit on the SIGTERM of close()
            if name in running.processes:
                running.signal(name, signal.SIGCONT)
        print(running.logs())  # shown by pytest only when the test failed
        running.close()


def submit(cluster: Cluster, name: str) -> dict[str, Any]:
    """A service of REPLICAS sleepers, running; its containers by slot (Docker's view)."""
    spec = service(name, replicas=REPLICAS, cpu=0.1, memory="32m", stop_grace=0)
    cluster.client.submit(spec).wait(timeout=30)
    return wait_until(lambda: by_slot(cluster, name), timeout=10, what=f"{name} running")


def by_slot(cluster: Cluster, job: str) -> dict[str, Any] | None:
    """The job's running containers by slot, if there is exactly one for each slot."""
    running = cluster.containers(job, all=False)
    slots = Counter(c.labels[SLOT] for c in running)
    if sorted(slots, key=int) != [str(i) for i in range(REPLICAS)] or max(slots.values()) > 1:
        return None
    return {c.labels[SLOT]: c for c in running}


def is_running(cluster: Cluster, container_id: str) -> bool:
    try:
        state = cluster.docker.api.inspect_container(container_id)["State"]
    except docker.errors.NotFound:
        return False
    return bool(state["Running"])


def silent_for(cluster: Cluster, seconds: float) -> bool:
    """The master has heard no node for `seconds` (its own last_seen of each)."""
    seen = [n.last_seen.timestamp() for n in cluster.client.nodes()]
    return bool(seen) and all(time.time() - at >= seconds for at in seen)


def node_states(cluster: Cluster) -> dict[str, str]:
    return {n.node_id: n.state for n in cluster.client.nodes()}


def test_frozen_worker_is_replaced_and_fenced_when_it_thaws(trio: Cluster) -> None:
    cluster = trio
    w1 = cluster.node_id("w1")
    before = submit(cluster, "web")
    originals = {slot: c.id for slot, c in before.items() if c.labels[NODE] == w1}
    assert originals, f"nothing placed on {w1}: {[c.labels[NODE] for c in before.values()]}"
    audit = ContainerAudit(cluster.docker, cluster.run_id).start()
    try:
        cluster.signal("w1", signal.SIGSTOP)

        def replaced() -> bool:
            running = cluster.containers("web", all=False)
            moved = Counter(c.labels[SLOT] for c in running if c.labels[NODE] != w1)
            return all(moved[slot] == 1 for slot in originals)

        wait_until(replaced, timeout=15, what=f"the slots of {w1} running elsewhere")
        assert node_states(cluster)[w1] == "down"
        # The frozen host still runs its originals: that is what fencing is for.
        assert all(is_running(cluster, cid) for cid in originals.values())

        cluster.signal("w1", signal.SIGCONT)

        def fenced() -> dict[str, Any] | None:
            found = by_slot(cluster, "web")
            return found if found and all(c.labels[NODE] != w1 for c in found.values()) else None

        after = wait_until(fenced, timeout=20, what=f"one container per slot, none on {w1}")
        wait_until(lambda: node_states(cluster)[w1] == "ready", timeout=10, what=f"{w1} ready")
        assert not any(is_running(cluster, cid) for cid in originals.values())
        # Exactly one new container for each replaced slot, started once; none for the others.
        known = {c.id for c in before.values()}
        lives = {life.container_id: life for life in audit.snapshot()}
        new = {cid for cid in lives if cid not in known}
        assert new == {after[slot].id for slot in originals}
        assert not audit.restarted()
        # Each replacement waited paused while w1 was only suspect (a warm standby), and
        # was unpaused once it was down.
        assert all(lives[cid].pauses and lives[cid].unpauses for cid in new), lives
        assert {slot: c.id for slot, c in after.items() if slot not in originals} == {
            slot: c.id for slot, c in before.items() if slot not in originals
        }
        wait_until(lambda: cluster.client.job("web").state == "running", timeout=5, what="web")
        assert "fencing" in (cluster.workdir / "master.log").read_text()
    finally:
        audit.close()


def test_a_worker_heard_again_while_suspect_keeps_its_tasks_and_the_standbys_go(
    trio: Cluster,
) -> None:
    """Frozen past suspect_after, thawed before dead_after: the replacements that waited
    paused on the other nodes are removed, never unpaused; nothing else changes."""
    cluster = trio
    w1 = cluster.node_id("w1")
    before = submit(cluster, "db")
    originals = [c.id for c in before.values() if c.labels[NODE] == w1]
    assert originals, f"nothing placed on {w1}"
    started = {c.id: c.attrs["State"]["StartedAt"] for c in before.values()}
    tasks = {t.task_id: (t.node_id, t.container_id) for t in cluster.client.job("db").tasks}
    audit = ContainerAudit(cluster.docker, cluster.run_id).start()
    try:
        cluster.signal("w1", signal.SIGSTOP)
        try:
            wait_until(
                lambda: node_states(cluster)[w1] == "suspect",
                timeout=5,
                interval=0.05,
                what=f"{w1} suspect",
            )
        finally:
            cluster.signal("w1", signal.SIGCONT)
        thawed_at = time.time()

        def heard_again() -> bool:
            node = next(n for n in cluster.client.nodes() if n.node_id == w1)
            return node.state == "ready" and node.last_seen.timestamp() >= thawed_at

        wait_until(heard_again, timeout=10, what=f"{w1} ready again")
        wait_until(
            lambda: len(cluster.containers("db")) == REPLICAS,
            timeout=15,
            what="the standbys removed",
        )
        lives = {life.container_id: life for life in audit.snapshot()}
        standbys = {cid: life for cid, life in lives.items() if cid not in started}
        # One standby per task of w1, started and paused, removed without ever running.
        assert len(standbys) == len(originals), lives
        for life in standbys.values():
            assert (len(life.starts), len(life.pauses), len(life.unpauses)) == (1, 1, 0), life
            assert life.deaths, life
            assert life.task_id not in tasks
        # The job never noticed: same tasks, same containers, none restarted or died.
        assert node_states(cluster)[w1] == "ready"
        job = cluster.client.job("db")
        assert {t.task_id: (t.node_id, t.container_id) for t in job.tasks} == tasks
        after = wait_until(lambda: by_slot(cluster, "db"), timeout=5, what="db running")
        assert {c.id: c.attrs["State"]["StartedAt"] for c in after.values()} == started
        assert not any(lives[cid].deaths for cid in started if cid in lives)
        assert "warm standbys" in (cluster.workdir / "master.log").read_text()
    finally:
        audit.close()


def test_whole_fleet_frozen_holds_and_goes_on_with_its_own_containers(trio: Cluster) -> None:
    cluster = trio
    before = submit(cluster, "api")
    started = {c.id: c.attrs["State"]["StartedAt"] for c in before.values()}
    tasks = {t.task_id: (t.node_id, t.container_id) for t in cluster.client.job("api").tasks}
    audit = ContainerAudit(cluster.docker, cluster.run_id).start()
    try:
        try:
            for name in WORKERS:
                cluster.signal(name, signal.SIGSTOP)
            wait_until(
                lambda: silent_for(cluster, 2 * DEAD_AFTER), timeout=15, what="6 s of silence"
            )
            assert set(node_states(cluster).values()) == {"suspect"}
        finally:
            for name in WORKERS:
                cluster.signal(name, signal.SIGCONT)
        cluster.wait_nodes_ready(len(WORKERS), timeout=10)
        assert set(node_states(cluster).values()) == {"ready"}

        after = wait_until(lambda: by_slot(cluster, "api"), timeout=5, what="api running")
        assert {c.id: c.attrs["State"]["StartedAt"] for c in after.values()} == started
        assert len(cluster.containers("api")) == REPLICAS  # none created, even stopped
        job = cluster.client.job("api")
        assert {t.task_id: (t.node_id, t.container_id) for t in job.tasks} == tasks
        assert job.state == "running"
        lives = audit.snapshot()
        assert {life.container_id for life in lives} <= set(started)  # nothing new started
        assert not any(life.deaths for life in lives)  # and nothing died
        assert "partition guard" in (cluster.workdir / "master.log").read_text()
    finally:
        audit.close()
