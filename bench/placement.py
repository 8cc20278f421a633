"""Placement throughput on the real broker: a simulated fleet, many tasks, the whole path.

    python -m bench.placement [--nodes 1000] [--tasks 20000] [--jobs 20] [--clients 4]
                              [--write docs/benchmarks.md]

Starts a master and a standby (processes, journal on, the standby tailing it) on a
fresh vhost, and a simulated fleet (bench/sim.py) of `--nodes` nodes. Then submits
`--tasks` tasks as `--jobs` services of equal size from `--clients` client threads,
and times from the first submit until the fleet reports every task running: the
whole path, client -> broker -> master (placement, journal) -> broker -> node ->
broker -> master.

Correctness is asserted: every task runs exactly once (the fleet holds each task id
once and as many as were asked for), the master counts them all running, and no
node went suspect or down. Timing never is.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.sim import Fleet, FleetSettings
from corral import Client
from tests.cluster import Cluster, wait_until
from tests.conftest import TEST_IMAGE, Broker


def spec(name: str, replicas: int) -> dict[str, object]:
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["sleep", "600"],
        "kind": "service",
        "replicas": replicas,
        "cpu": 0.01,
        "memory": "8m",
    }


def submit_all(cluster: Cluster, names: list[str], replicas: int, clients: int) -> None:
    """Submit every job, spread over `clients` threads (a client each)."""

    def submit(part: list[str]) -> None:
        with Client(cluster.client_url, timeout=60, role=cluster.client_role) as client:
            for name in part:
                client.submit(spec(name, replicas))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(submit, [names[index::clients] for index in range(clients)]))


def run(args: argparse.Namespace, cluster: Cluster) -> dict[str, float]:
    fleet = Fleet(
        FleetSettings(
            amqp_url=cluster.amqp_url,
            nodes=args.nodes,
            connections=args.connections,
            prefix=f"sim{uuid.uuid4().hex[:4]}",
            cpus=64,
            memory=512 * 1024**3,
            start_delay=0.0,
        )
    )
    cluster.declare_topology()
    cluster.start_master("m1")
    cluster.start_master("m2")  # a standby, tailing the journal
    started = time.monotonic()
    fleet.start()
    cluster.wait_nodes_ready(args.nodes, timeout=300)
    ready_after = time.monotonic() - started
    replicas = args.tasks // args.jobs
    names = [f"j{index}" for index in range(args.jobs)]
    t0 = time.monotonic()
    submit_all(cluster, names, replicas, args.clients)
    submitted = time.monotonic() - t0
    total: int = replicas * args.jobs
    wait_until(lambda: fleet.running() >= total, timeout=600, interval=0.2, what="all running")
    elapsed = time.monotonic() - t0
    # Exactly once: every task id once on the fleet, as many as asked for.
    ids = Counter(
        task_id for shard in fleet.shards for node in shard.nodes.values() for task_id in node.tasks
    )
    assert len(ids) == total and max(ids.values()) == 1, "a task runs twice or is missing"
    # A client of its own: the cluster's may have been idle past the broker's heartbeat.
    with Client(cluster.client_url, timeout=60, role=cluster.client_role) as client:

        def master_counts_all() -> bool:
            running: int = sum(job.task_counts.get("running", 0) for job in client.jobs())
            return running == total

        wait_until(master_counts_all, timeout=120, what="the master counting every task running")
        heard = time.monotonic() - t0
        states = Counter(node.state for node in client.nodes())
    assert states == {"ready": args.nodes}, f"nodes not all ready: {states}"
    fleet.close()
    return {
        "ready": ready_after,
        "submitted": submitted,
        "elapsed": elapsed,
        "rate": total / elapsed,
        "heard": heard,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--management", default="http://127.0.0.1:15672")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    broker = Broker(args.amqp, args.management)
    vhost = f"corral-bench-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(broker.create_vhost(vhost), Path(tempfile.mkdtemp(prefix="corral-bench-")))
    load = os.getloadavg()[0]
    try:
        figures = run(args, cluster)
    finally:
        cluster.close()
        broker.delete_vhost(vhost)
        broker.close()
    print(
        f"{args.nodes} simulated nodes ready after {figures['ready']:.1f} s; "
        f"{args.tasks} tasks as {args.jobs} jobs from {args.clients} clients: submitted in "
        f"{figures['submitted']:.2f} s, all running after {figures['elapsed']:.2f} s = "
        f"{figures['rate']:.0f} tasks/s; the master had heard every one running after "
        f"{figures['heard']:.2f} s (load average {load:.1f} before)"
    )


if __name__ == "__main__":
    main()
