"""How fast a lost host's work runs again: SIGSTOP of a worker, `docker kill` of its containers.

    python -m bench.hostloss [--runs 10] [--replicas 6] [--write docs/benchmarks.md]

Runs a master and three workers (as processes, default timeouts: heartbeat 1 s,
down after 3 s) on a fresh vhost, and a service of `--replicas` sleepers spread
over them. Each run freezes the worker holding most of the service with SIGSTOP
(no connection close reaches the broker: to the master this is a lost host, not
an agent crash) and kills its containers through the Docker API, then measures
from the freeze until every slot it held has a replacement container running
elsewhere, from the engine's own events (not from Corral's report): a container's
start, or, for a warm standby (started paused while the node was only suspect,
master/standby.py), its unpause.
Corral's view splits that time in two: freeze -> node down (the time its lost
tasks were marked lost) and node down -> replacements running.

Between runs the worker is thawed and the cluster settles (the node is ready
and heard twice again; one running container per slot). The baseline, measured
in the same run just before each freeze, is raw docker-py creating and starting
as many containers (same image, command and limits) at once, one thread each.

Correctness is asserted: every lost slot is replaced exactly once (one new
container started per slot, none for the others, none started twice) and after
the thaw exactly `--replicas` containers run, one per slot. Timing never is.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker

from bench.failover import percentile
from bench.report import replace_section
from bench.vhosts import drop_vhost
from tests.audit import ContainerAudit
from tests.cluster import RUN_LABEL, Cluster, wait_until
from tests.conftest import TEST_IMAGE, Broker

JOB = "hostloss"
WORKERS = ("w1", "w2", "w3")
NODE, SLOT = "corral.node", "corral.slot"
RAW_LABEL = "corral-bench"
# The Docker work Corral asks for, for the baseline: the job's command and limits.
COMMAND = ["sleep", "600"]
CPU, MEMORY = 0.1, 32 * 1024 * 1024


@dataclass
class Run:
    slots: int  # how many slots the frozen worker held (and lost)
    recovered: float  # freeze -> the last of their replacements running (Docker)
    detected: float  # freeze -> the node's tasks marked lost (Corral)
    raw: float  # baseline: raw create + start of as many containers at once
    warm: int  # how many replacements were warm standbys (unpaused, not started)


def spec(replicas: int) -> dict[str, object]:
    return {
        "name": JOB,
        "image": TEST_IMAGE,
        "command": COMMAND,
        "kind": "service",
        "replicas": replicas,
        "cpu": CPU,
        "memory": MEMORY,
        "stop_grace": 0,
    }


def raw_starts(engine: docker.DockerClient, count: int, label: str) -> float:
    """Seconds raw docker-py takes to create and start `count` containers, one thread each."""

    def start(_: int) -> None:
        container = engine.containers.create(
            TEST_IMAGE,
            COMMAND,
            labels={RAW_LABEL: label},
            detach=True,
            nano_cpus=int(CPU * 1e9),
            mem_limit=MEMORY,
        )
        container.start()

    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(start, range(count)))
    elapsed = time.perf_counter() - started
    for container in engine.containers.list(all=True, filters={"label": f"{RAW_LABEL}={label}"}):
        assert container.status == "running"
        container.remove(force=True)
    return elapsed


@dataclass(frozen=True)
class Box:
    """A running container of the job, as the engine lists it."""

    id: str
    slot: str
    node: str


def running(cluster: Cluster) -> list[Box]:
    """The job's running containers: one engine call (docker-py's list inspects each)."""
    found = cluster.docker.api.containers(
        filters={
            "label": [f"{RUN_LABEL}={cluster.run_id}", f"corral.job={JOB}"],
            "status": "running",
        }
    )
    return [Box(c["Id"], c["Labels"][SLOT], c["Labels"][NODE]) for c in found]


def by_slot(cluster: Cluster, replicas: int) -> dict[str, Box] | None:
    """The job's running containers by slot, if exactly one runs for each slot."""
    boxes = running(cluster)
    slots = Counter(box.slot for box in boxes)
    if sorted(slots, key=int) != [str(i) for i in range(replicas)] or max(slots.values()) > 1:
        return None
    return {box.slot: box for box in boxes}


def victim(boxes: dict[str, Box], index: int) -> str:
    """The worker holding most of the job (ties taken in turn)."""
    held = Counter(box.node for box in boxes.values())
    most = max(held.values())
    candidates = sorted(node for node, count in held.items() if count == most)
    return candidates[index % len(candidates)]


def started_since(audit: ContainerAudit, since: float) -> dict[str, float | None]:
    """Containers whose (first) start the engine reported after `since`, with when they
    first ran unpaused: a warm standby (started paused while the node was suspect) runs
    from its unpause (None while it is still paused)."""
    return {
        life.container_id: life.serving_since
        for life in audit.snapshot()
        if life.starts and min(life.starts) >= since
    }


def standbys_taken(audit: ContainerAudit, containers: set[str]) -> int:
    """How many of `containers` were warm standbys (paused, then unpaused)."""
    return sum(bool(life.unpauses) for life in audit.snapshot() if life.container_id in containers)


def lose_host(cluster: Cluster, audit: ContainerAudit, replicas: int, index: int) -> Run:
    """One run: freeze the busiest worker, kill its containers, wait for their replacements."""
    client = cluster.client
    before = wait_until(lambda: by_slot(cluster, replicas), what="one container per slot")
    node_id = victim(before, index)
    name = next(name for name in WORKERS if cluster.node_id(name) == node_id)
    lost = {slot: box for slot, box in before.items() if box.node == node_id}
    raw = raw_starts(cluster.docker, len(lost), cluster.run_id)

    frozen_at = time.time()
    cluster.signal(name, signal.SIGSTOP)
    for box in lost.values():
        cluster.docker.api.kill(box.id)

    def replaced() -> dict[str, Box] | None:
        elsewhere = {box.slot: box for box in running(cluster) if box.node != node_id}
        return elsewhere if all(slot in elsewhere for slot in lost) else None

    def marked_lost() -> list[float] | None:
        marks = [
            t.updated_at.timestamp()
            for t in client.job(JOB).tasks  # every attempt, earlier runs' lost ones too
            if t.node_id == node_id and t.state == "lost" and t.updated_at.timestamp() > frozen_at
        ]
        return marks if len(marks) == len(lost) else None

    # First the node's tasks marked lost, then the replacements: a warm standby runs for
    # a moment between its start and its pause, and must not be taken for a replacement
    # before the node is down. Every figure comes from timestamps (the marks, the
    # engine's events), so the order of these waits changes none.
    marked = wait_until(marked_lost, timeout=30, what=f"the tasks on {node_id} marked lost")
    replacements = wait_until(replaced, timeout=30, interval=0.05, what="replacements running")
    new = {slot: replacements[slot].id for slot in lost}

    def seen_starting() -> dict[str, float] | None:
        found = started_since(audit, frozen_at)
        serving = {cid: at for cid, at in found.items() if at is not None}
        return serving if serving.keys() >= set(new.values()) else None

    starts = wait_until(seen_starting, timeout=5, what="the engine's start events")
    recovered = max(starts[cid] for cid in new.values()) - frozen_at
    warm = standbys_taken(audit, set(new.values()))
    detected = min(marked) - frozen_at

    cluster.signal(name, signal.SIGCONT)
    thawed_at = time.time()
    settle(cluster, node_id, thawed_at, replicas)
    after = wait_until(lambda: by_slot(cluster, replicas), timeout=10, what="one per slot")
    # Every lost slot replaced exactly once, by the container found above; nothing else new.
    assert set(started_since(audit, frozen_at)) == set(new.values()), "an extra container started"
    assert {slot: box.id for slot, box in after.items() if slot in lost} == new
    assert {slot: box for slot, box in after.items() if slot not in lost} == {
        slot: box for slot, box in before.items() if slot not in lost
    }
    assert not audit.restarted()
    return Run(len(lost), recovered, detected, raw, warm)


def respread(cluster: Cluster, replicas: int) -> None:
    """Start the next run from a service spread evenly again (2 replicas per worker for 6):
    replacements are never moved back, so without this every later run would lose the
    3 slots piled on one worker, not the 2 a spread service has on each."""
    client = cluster.client
    client.cancel(JOB)
    wait_until(lambda: not cluster.containers(JOB, all=False), timeout=30, what="old copies gone")
    client.purge(JOB)
    client.submit(spec(replicas)).wait(timeout=60)


def settle(cluster: Cluster, node_id: str, thawed_at: float, replicas: int) -> None:
    """The thawed node is ready and heard twice since (so its late reports are in), and the
    master again counts `replicas` running tasks."""

    def heard() -> bool:
        node = next(n for n in cluster.client.nodes() if n.node_id == node_id)
        return node.state == "ready" and node.last_seen.timestamp() >= thawed_at + 2.0

    wait_until(heard, timeout=20, what=f"{node_id} ready and heard again")
    wait_until(
        lambda: sum(t.state == "running" for t in cluster.client.job(JOB).tasks) == replicas,
        timeout=20,
        what=f"{replicas} running tasks",
    )


def table(runs: list[Run]) -> str:
    recovered = [r.recovered for r in runs]
    detected = [r.detected for r in runs]
    replaced = [r.recovered - r.detected for r in runs]
    raw = statistics.median(r.raw for r in runs)

    def ms(value: float) -> str:
        return f"{value * 1000:.0f} ms"

    def row(what: str, values: list[float], target: str, *, ratio: bool = True) -> str:
        median = statistics.median(values)
        versus = f"{median / raw:.2f}x" if ratio else ""
        return (
            f"| {what} | {ms(median)} | {ms(percentile(values, 0.95))} | {ms(max(values))} "
            f"| {versus} | {target} |"
        )

    return "\n".join(
        [
            f"| from the freeze until | median | p95 | max | median / baseline ({ms(raw)}) "
            "| target |",
            "|---|---|---|---|---|---|",
            row("every lost slot runs elsewhere (Docker)", recovered, "p95 < 3500 ms"),
            row("the node's tasks are marked lost (Corral)", detected, "", ratio=False),
            row("then, the replacements run (Docker)", replaced, ""),
        ]
    )


def verdict(runs: list[Run]) -> str:
    """Whether the target was met, and where the median went (detection, then Docker)."""
    recovered = [r.recovered for r in runs]
    p95 = percentile(recovered, 0.95)
    detected = statistics.median(r.detected for r in runs)
    replaced = statistics.median(r.recovered - r.detected for r in runs)
    raw = statistics.median(r.raw for r in runs)
    under = sum(value < 3.5 for value in recovered)
    warm, slots = sum(r.warm for r in runs), sum(r.slots for r in runs)
    return textwrap.fill(
        f"Target p95 < 3500 ms: {'met' if p95 < 3.5 else 'missed'} ({p95 * 1000:.0f} ms; "
        f"{under} of {len(runs)} runs under 3.5 s). Of the "
        f"median, {detected:.2f} s is detection (`dead_after` after the node's last beat) and "
        f"{replaced:.2f} s the replacement; {warm} of the {slots} replacements were warm "
        "standbys, unpaused rather than started (raw docker-py takes "
        f"{raw * 1000:.0f} ms to start as many containers on this machine in the same run).",
        width=84,
    )


def write(path: Path, runs: list[Run], replicas: int, body: str, load: tuple[float, float]) -> None:
    lost = " or ".join(
        f"{n} slots ({count} run{'s' if count > 1 else ''})"
        for n, count in sorted(Counter(r.slots for r in runs).items())
    )
    intro = textwrap.fill(
        f"{len(runs)} runs on the 2-core development machine (load average {load[0]:.1f} at the "
        f"start, {load[1]:.1f} at the end): a master, three workers and a service of {replicas} "
        f"replicas; the frozen worker held {lost}. With:",
        width=84,
    )
    section = (
        "## Host loss (SIGSTOP of a worker, docker kill of its containers)\n\n"
        f"{intro}\n\n"
        "    python -m bench.hostloss --write docs/benchmarks.md\n\n"
        f"{body}\n\n"
        f"{verdict(runs)}\n\n"
        "How: when a node turns `suspect` (2 s of silence) the master picks where each of\n"
        "its service tasks' replacements would go and has those nodes start them paused\n"
        "(warm standbys, master/standby.py); at `down` (3 s) the replacement is placed\n"
        "there and the worker unpauses it (20 to 60 ms) instead of starting a container\n"
        "(0.3 to 0.7 s here, where every worker shares one engine). A node heard again\n"
        "in between has its standbys removed (`tests/chaos/test_worker_partition.py`).\n"
        "What bounds it now is detection: with the default timeouts (which issue 7\n"
        "keeps) a host frozen just after its last heartbeat is declared down 3.0 s later.\n"
        "\n"
        "Earlier runs, before warm standbys: p95 3.75 s (replacements 0.89 s median, with\n"
        "a bridge network per node, which costs Docker itself 1.2x to 1.3x per start\n"
        "here); p95 3.65 s before the cluster network; p95 3.74 s before the master judged\n"
        "a silent node at its own deadline rather than at its next 0.25 s tick; p95 3.65 to\n"
        "4.19 s before each run started from a freshly spread service.\n"
        "\n"
        "Default timeouts: heartbeat 1 s, suspect after 2 s, down after 3 s (judged at that\n"
        "moment, not at the next 0.25 s tick). The frozen worker sends nothing and its\n"
        "connection stays open,\n"
        "so the master sees silence, a lost host; its containers are killed at once.\n"
        "Times are from the freeze until the last replacement runs, by the engine's own\n"
        "events (its start, or a standby's unpause); the split uses the time Corral marked\n"
        "the node's tasks lost.\n"
        "The baseline, measured in the same run before each freeze, is raw docker-py\n"
        "creating and starting as many containers (same image, command, limits) at\n"
        "once. Replacements are not moved back after a thaw, so after each run the\n"
        "service is cancelled, purged and submitted again: every run starts from a service\n"
        "spread evenly, two replicas on each worker. Each run\n"
        "checks that every lost slot was replaced exactly once, that no other container\n"
        "started, and that after the thaw one container runs per slot.\n"
    )
    replace_section(path, "## Host loss", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--management", default="http://127.0.0.1:15672")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=6)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()

    load = os.getloadavg()[0]
    broker = Broker(args.amqp, args.management)
    vhost = f"corral-bench-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(broker.create_vhost(vhost), Path(tempfile.mkdtemp(prefix="corral-bench-")))
    runs: list[Run] = []
    audit: ContainerAudit | None = None
    try:
        cluster.start(workers=len(WORKERS))
        audit = ContainerAudit(cluster.docker, cluster.run_id).start()
        cluster.client.submit(spec(args.replicas)).wait(timeout=60)
        for index in range(args.runs):
            runs.append(lose_host(cluster, audit, args.replicas, index))
            run = runs[-1]
            respread(cluster, args.replicas)
            print(
                f"run {index + 1}: {run.slots} slots running elsewhere after "
                f"{run.recovered:.2f} s (marked lost after {run.detected:.2f} s); "
                f"raw docker {run.raw:.2f} s; {run.warm} warm standby(s)"
            )
    finally:
        for name in WORKERS:  # a stopped worker would sit on close()'s SIGTERM
            if name in cluster.processes:
                cluster.signal(name, signal.SIGCONT)
        if audit is not None:
            audit.close()
        print(cluster.logs()[-3000:] if len(runs) < args.runs else "")
        for container in cluster.docker.containers.list(
            all=True, filters={"label": f"{RAW_LABEL}={cluster.run_id}"}
        ):
            container.remove(force=True)
        cluster.close()
        drop_vhost(broker, vhost)
        broker.close()  # the role users it made

    body = table(runs)
    print(body)
    print(verdict(runs))
    if args.write is not None:
        write(args.write, runs, args.replicas, body, (load, os.getloadavg()[0]))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
