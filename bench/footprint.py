"""What a worker costs the broker, and how large a fleet one broker node holds.

    python -m bench.footprint [--nodes 1000] [--write docs/benchmarks.md]

Two measurements, each on a fresh vhost of the local broker:

1. **One real worker** (`corral worker`, a process, beside one master): the broker's
   connections, channels, queues (by type) and consumers in the vhost before and after
   it joins, and the memory of the queues it declared.
2. **Broker memory per node**: the broker node's `mem_used` before and after a simulated
   fleet of `--nodes` nodes is up (every node ready), once with quorum assignment queues
   (as workers declare them) and once with classic ones (`bench.sim --queue-type
   classic`), over the number of nodes.

From those and the broker node's own limits (its file descriptors and its memory high
watermark) it works out the fleet one broker node can hold by each of them, beside the
quorum-queue limit that benchmark b ran into. Correctness is asserted: the worker and
every simulated node are ready. The figures are counts and bytes, never timings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.report import replace_section
from bench.sim import bench_fleet
from bench.vhosts import drop_vhost
from tests.cluster import Cluster, wait_until
from tests.conftest import Broker

SECTION = "## Broker footprint per worker"
QUORUM_LIMIT = 6000  # quorum queues one broker node took here before refusing (benchmark b)


@dataclass
class Objects:
    connections: int
    channels: int
    consumers: int
    queues: Counter[str]  # by type: quorum, classic
    queue_memory: int  # bytes, as the broker reports each queue's

    def minus(self, other: Objects) -> Objects:
        return Objects(
            self.connections - other.connections,
            self.channels - other.channels,
            self.consumers - other.consumers,
            self.queues - other.queues,
            self.queue_memory - other.queue_memory,
        )


def objects(broker: Broker, vhost: str) -> Objects:
    """The broker's connections, channels, consumers and queues in `vhost` now."""
    where = quote(vhost, safe="")
    connections = [c for c in broker.api("GET", "connections") if c.get("vhost") == vhost]
    channels = [c for c in broker.api("GET", "channels") if c.get("vhost") == vhost]
    queues = broker.api("GET", f"queues/{where}")
    return Objects(
        connections=len(connections),
        channels=len(channels),
        consumers=sum(int(q.get("consumers") or 0) for q in queues),
        queues=Counter(str(q.get("type", "classic")) for q in queues),
        queue_memory=sum(int(q.get("memory") or 0) for q in queues),
    )


def node_stats(broker: Broker) -> dict[str, int]:
    """The local broker node's memory in use and limit, and its file descriptors."""
    node = broker.api("GET", "nodes")[0]
    return {
        "mem_used": int(node["mem_used"]),
        "mem_limit": int(node["mem_limit"]),
        "fd_total": int(node["fd_total"]),
    }


def settled_mem(broker: Broker, seconds: float = 5.0) -> int:
    """`mem_used` after a short wait: the management API's figure lags by a few seconds."""
    time.sleep(seconds)
    return node_stats(broker)["mem_used"]


def worker_footprint(broker: Broker) -> Objects:
    vhost = f"corral-bench-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(broker.create_vhost(vhost), Path(tempfile.mkdtemp(prefix="corral-bench-")))
    try:
        cluster.declare_topology()
        cluster.start_master("m1")
        wait_until(lambda: next(iter(cluster.leaders()), None), what="a leader")
        cluster.client.nodes()  # its connection counts in the baseline, not as the worker's
        time.sleep(6)  # the management API's lists lag a few seconds
        before = objects(broker, vhost)
        cluster.start_worker("w1")
        cluster.wait_nodes_ready(1)
        time.sleep(6)
        return objects(broker, vhost).minus(before)
    finally:
        cluster.close()
        drop_vhost(broker, vhost)


def memory_per_node(broker: Broker, nodes: int, queue_type: str) -> tuple[float, float]:
    """For each simulated node, in bytes: its queues' memory (the broker's per-queue
    figures), and the broker node's `mem_used` growth while the fleet came up (which
    counts channels and connections too, but moves with other vhosts' clean-up)."""
    vhost = f"corral-bench-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(broker.create_vhost(vhost), Path(tempfile.mkdtemp(prefix="corral-bench-")))
    fleet = bench_fleet(cluster.amqp_url, nodes, queue_type)
    try:
        cluster.declare_topology()
        cluster.start_master("m1")
        wait_until(lambda: next(iter(cluster.leaders()), None), what="a leader")
        before = settled_mem(broker, 10.0)
        queues_before = objects(broker, vhost).queue_memory
        fleet.start()
        cluster.wait_nodes_ready(nodes, timeout=600)
        grown = settled_mem(broker) - before
        queues = objects(broker, vhost).queue_memory - queues_before
        return queues / nodes, grown / nodes
    finally:
        fleet.close()
        cluster.close()
        drop_vhost(broker, vhost)


def mib(value: float) -> str:
    return f"{value / 1024**2:,.1f} MiB"


def section(
    worker: Objects, per_node: dict[str, tuple[float, float]], stats: dict[str, int], nodes: int
) -> str:
    queues = ", ".join(f"{count} {kind}" for kind, count in sorted(worker.queues.items()))
    by_fds = stats["fd_total"] // max(1, worker.connections)
    # The larger of the two figures, and at least the worker's own queues' memory.
    costs = {kind: max(q, grown, worker.queue_memory) for kind, (q, grown) in per_node.items()}
    by_memory = {kind: int(stats["mem_limit"] // cost) for kind, cost in costs.items()}
    holds = min(QUORUM_LIMIT, by_fds, by_memory.get("quorum", by_fds))
    rows = "\n".join(
        f"| {kind} | {mib(q * 1000)} | "
        f"{mib(grown * 1000) if grown > 0 else 'fell (other clean-up)'} | {by_memory[kind]:,} |"
        for kind, (q, grown) in per_node.items()
    )
    return (
        f"{SECTION}\n\n"
        "    python -m bench.footprint --write docs/benchmarks.md\n\n"
        "One real worker (`corral worker`) joining a cluster adds to the broker, in its\n"
        f"vhost: {worker.connections} connection(s), {worker.channels} channels, "
        f"{worker.consumers} consumers\nand {sum(worker.queues.values())} queues ({queues}: "
        "its assignment queue `corral.node.<id>`, its\nlog-request queue and its private "
        f"queue on `corral.control`), holding {mib(worker.queue_memory)}\nwhile idle "
        "(the broker's own per-queue figures).\n\n"
        f"Broker memory per 1,000 nodes, from a simulated fleet of {nodes:,} nodes (the\n"
        "simulator shares 8 connections among all its nodes, where each worker has its\n"
        "own): the nodes' queues by the broker's per-queue figures, and the broker node's\n"
        "`mem_used` growth while the fleet came up (it counts channels too, but moves\n"
        "with the clean-up of other vhosts). The last column divides the memory high\n"
        "watermark by the largest per-node figure, the real worker's queues included:\n\n"
        "| assignment queues | queues | `mem_used` growth | nodes under the watermark |\n"
        "|---|---|---|---|\n"
        f"{rows}\n\n"
        f"What one broker node holds, as `scripts/bootstrap.sh` sets it up on this machine "
        f"({stats['fd_total']:,}\nfile descriptors, a memory high watermark of "
        f"{mib(stats['mem_limit'])}):\n\n"
        f"- by file descriptors: {by_fds:,} workers ({worker.connections} connection(s) "
        "each, one descriptor per\n  connection; RabbitMQ recommends at least 65,536, which "
        "the bootstrap asks for\n  and this machine's hard limit caps);\n"
        "- by memory: the table's last column;\n"
        f"- by quorum queues: about {QUORUM_LIMIT:,}. Past that the node refused to declare "
        "more\n  (`cluster_not_formed`), after declarations had slowed to about 18 a second\n"
        "  (benchmark b, heartbeat load).\n\n"
        f"So one broker node holds about {holds:,} workers here, bounded by "
        f"{'the quorum queues' if holds == QUORUM_LIMIT else 'the figures above'}.\n"
        "A broker cluster spreads the workers' connections (their `--amqp` lists) and the\n"
        "quorum queues' leaders, but with 3 replicas every broker node still keeps a\n"
        "member of every quorum queue: whether three nodes hold more than one is not\n"
        "measured here. Beyond that size, bigger broker nodes or assignment queues with\n"
        "fewer replicas (not offered yet) are the options.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--management", default="http://127.0.0.1:15672")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    broker = Broker(args.amqp, args.management)
    try:
        worker = worker_footprint(broker)
        print(f"one worker: {worker}", flush=True)
        assert worker.connections >= 1 and worker.queues, f"the worker declared nothing: {worker}"
        per_node = {
            kind: memory_per_node(broker, args.nodes, kind) for kind in ("quorum", "classic")
        }
        print(f"broker memory per node: {per_node}", flush=True)
        stats = node_stats(broker)
    finally:
        broker.close()
    text = section(worker, per_node, stats, args.nodes)
    print(text)
    if args.write is not None:
        replace_section(args.write, SECTION, text)


if __name__ == "__main__":
    main()
