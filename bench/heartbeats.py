"""Heartbeat load: what an idle simulated fleet costs the masters and the broker.

    python -m bench.heartbeats [--nodes 1000 2000 10000] [--seconds 60] [--one-hz-max 2000]
                               [--classic-over 5000] [--write docs/benchmarks.md]

For each fleet size, twice: every node at 1 Hz (`corral master --max-heartbeats 0`), and
with adaptive intervals (the default, `--max-heartbeats 500`: a fleet of more than 500
nodes is asked to beat less often). Each run starts an active master and a standby
(processes, journal on) on a fresh vhost and a simulated fleet (bench/sim.py, in this
process), waits until every node is ready and the interval has settled, then measures
for `--seconds`: the CPU time of the active master, the standby, the broker (the whole
node: every vhost) and the fleet's process, as a share of one core; the heartbeats the
masters received; and every node state change the active master published.

Correctness is checked: no node may go suspect or down (the fleet never stops beating)
and every node must be ready at the end. A run where one did is still written down
(the table counts them), and the command then exits non-zero. The CPU shares are
figures, never assertions.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.report import replace_section
from bench.sim import Fleet, bench_fleet
from bench.vhosts import drop_vhost
from bus import topology
from corral import Client
from tests.cluster import Cluster, wait_until
from tests.conftest import Broker
from tests.rawamqp import Tap

TICK = os.sysconf("SC_CLK_TCK")
# The fleet's queues must all be declared within this long (10,000 nodes: 20,000 queues).
START_TIMEOUT = 900.0


@dataclass
class Run:
    nodes: int
    adaptive: bool
    interval: float  # the fleet's heartbeat interval during the window
    active: float  # shares of one core
    standby: float
    broker: float
    fleet: float
    beats: float  # heartbeats a second the fleet sent
    changes: dict[str, int]  # node state changes published in the window (none expected)
    queue_type: str = "quorum"  # of the simulated nodes' assignment queues
    error: str = ""  # why the run did not get as far as measuring ("" : it did)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def broker_pid() -> int:
    """The local default RabbitMQ node's Erlang VM, from the pid file it writes
    (rabbit@<host>; not the cluster recipe's rq1..rq3)."""
    for path in sorted(Path("/var/lib/rabbitmq/mnesia").glob("rabbit@*.pid")):
        pid = int(path.read_text().strip() or 0)
        if pid and Path(f"/proc/{pid}").exists():
            return pid
    raise RuntimeError("no running RabbitMQ node rabbit@<host> (is the broker running?)")


def node_changes(tap: Tap) -> Counter[str]:
    """The node state changes published so far (the tap is drained)."""
    changes: Counter[str] = Counter()
    while True:
        method, _properties, _body = tap.channel.basic_get(tap.queue, auto_ack=True)
        if method is None:
            return changes
        changes[method.routing_key.rsplit(".", 1)[-1]] += 1


def start_fleet(fleet: Fleet, broker: Broker, vhost: str, timeout: float) -> None:
    """`fleet.start()` (it declares every node's queues), or RuntimeError saying how far
    the broker got if that takes longer than `timeout` s (the fleet is then closed)."""
    failed: list[BaseException] = []

    def start() -> None:
        try:
            fleet.start()
        except Exception as exc:
            failed.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or failed:
        fleet.close()
        queues = len(broker.api("GET", f"queues/{quote(vhost, safe='')}?columns=name"))
        why = f"{type(failed[0]).__name__}: {failed[0]}" if failed else f"not in {timeout:g} s"
        raise RuntimeError(f"the fleet did not start ({why}); the broker held {queues:,} queues")


def measure(broker: Broker, nodes: int, adaptive: bool, seconds: float, queue_type: str) -> Run:
    vhost = f"corral-bench-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(broker.create_vhost(vhost), Path(tempfile.mkdtemp(prefix="corral-bench-")))
    fleet = None
    try:
        fleet = bench_fleet(cluster.amqp_url, nodes, queue_type)
        extra = () if adaptive else ("--max-heartbeats", "0")
        cluster.declare_topology()
        cluster.start_master("m1", extra=extra)
        cluster.start_master("m2", extra=extra)
        start_fleet(fleet, broker, vhost, START_TIMEOUT)
        cluster.wait_nodes_ready(nodes, timeout=300)
        active = wait_until(lambda: next(iter(cluster.leaders()), None), what="a leader")
        standby = "m2" if active == "m1" else "m1"
        tap = Tap(cluster.amqp_url, topology.STATUS_EXCHANGE, "node.#")
        time.sleep(12)  # the leader announces the interval every 5 s; the fleet follows
        node_changes(tap)
        interval = fleet.shards[0].interval
        pids = {
            "active": cluster.processes[active].pid,
            "standby": cluster.processes[standby].pid,
            "broker": broker_pid(),
            "fleet": os.getpid(),
        }
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        beats_before = sum(node.seq for shard in fleet.shards for node in shard.nodes.values())
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        share = {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}
        beats = sum(node.seq for shard in fleet.shards for node in shard.nodes.values())
        changes = node_changes(tap)
        tap.close()
        if not changes:  # a node judged late may still be suspect: then it is counted above
            # A client of its own: the cluster's has been idle past the broker's heartbeat.
            with Client(cluster.client_url, role=cluster.client_role) as client:
                states = Counter(node.state for node in client.nodes())
            assert states == {"ready": nodes}, f"nodes not all ready: {states}"
        return Run(
            nodes,
            adaptive,
            interval,
            share["active"],
            share["standby"],
            share["broker"],
            share["fleet"],
            (beats - beats_before) / elapsed,
            dict(changes),
            queue_type,
        )
    finally:
        if fleet is not None:
            fleet.close()
        cluster.close()
        drop_vhost(broker, vhost)


def table(runs: list[Run]) -> str:
    def pct(value: float) -> str:
        return f"{value * 100:.0f} %"

    lines = [
        "| nodes | intervals | heartbeat every | beats/s | active master | standby | broker "
        "| fleet (simulated) | false suspect / down |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        size = f"{run.nodes:,}" + (" (classic queues)" if run.queue_type == "classic" else "")
        if run.error:
            what = "adaptive" if run.adaptive else "1 s"
            lines.append(f"| {size} | {what} | {run.error} | | | | | | |")
            continue
        lines.append(
            f"| {size} | {'adaptive' if run.adaptive else '1 s (`--max-heartbeats 0`)'} "
            f"| {run.interval:g} s | {run.beats:,.0f} | {pct(run.active)} | {pct(run.standby)} "
            f"| {pct(run.broker)} | {pct(run.fleet)} "
            f"| {run.changes.get('suspect', 0)} / {run.changes.get('down', 0)} |"
        )
    return "\n".join(lines)


def verdicts(runs: list[Run]) -> str:
    """Target b, from the runs: 2,000 nodes at 1 Hz under half a core of the active master
    with no false suspect or down; and the largest fleet, adaptive, with no false down."""
    lines = []
    one_hz = [run for run in runs if run.nodes >= 2000 and not run.adaptive]
    for run in one_hz:
        met = not run.error and not run.changes and run.active < 0.5
        what = run.error or (
            f"the active master used {run.active:.0%} of a core, "
            f"{run.changes.get('suspect', 0)} false suspect / {run.changes.get('down', 0)} down"
        )
        lines.append(
            f"- Target b, {run.nodes:,} nodes at 1 Hz (active master < 50 % of a core, no "
            f"false suspect or down): **{'met' if met else 'not met'}** ({what})."
        )
    if not one_hz:
        lines.append("- Target b at 2,000 nodes and 1 Hz: not measured in this run.")
    largest = max((run for run in runs if run.adaptive), key=lambda run: run.nodes, default=None)
    if largest is not None:
        met = not largest.error and not largest.changes.get("down", 0)
        what = largest.error or (
            f"every {largest.interval:g} s, {largest.changes.get('down', 0)} false down"
        )
        lines.append(
            f"- Target b, {largest.nodes:,} nodes with adaptive intervals (no false down): "
            f"**{'met' if met else 'not met'}** ({what})."
        )
    return "\n".join(lines)


def write(path: Path, runs: list[Run], seconds: float, load: float, classic_over: int) -> None:
    section = (
        "## Heartbeat load (an idle simulated fleet)\n\n"
        "    python -m bench.heartbeats --write docs/benchmarks.md\n\n"
        f"CPU as a share of one core, over {seconds:g} s of an idle fleet (every node ready, "
        "no task), on the\n2-core development machine (load average "
        f"{load:.1f} before), after the fleet's interval has settled:\n\n"
        f"{table(runs)}\n\n"
        f"{verdicts(runs)}\n\n"
        "Each run checks that no node went suspect or down (the last column; anything but\n"
        "0 / 0 is a failure) and that every node is ready at the end. The broker's figure\n"
        "is the whole RabbitMQ node. The simulated fleet runs in the benchmark's own\n"
        "process (bench/sim.py): a real fleet spends this on its own machines, one worker\n"
        "each, and everything here shares the same 2 cores. `beats/s` is what the\n"
        "simulator managed to send; at 1 Hz it should equal the number of nodes.\n\n"
        "Each simulated node has its assignment queue `corral.node.<id>`, a quorum queue\n"
        "as a worker's (a real worker adds a connection and its log-request queue). One\n"
        "RabbitMQ node, as `scripts/bootstrap.sh` sets it up here, refused quorum queues\n"
        "past about 6,000 (`cluster_not_formed`), after declarations had slowed to about\n"
        f"18 a second: so fleets of more than {classic_over:,} nodes get classic (durable)\n"
        "assignment queues here (`bench.sim --queue-type classic`, marked in the table).\n"
        "Heartbeats do not touch those queues, and the master publishes to them as to\n"
        "any node's. A real fleet that large needs a broker cluster (docs/operations.md).\n"
        "A size whose fleet did not start within the time allowed shows why in the\n"
        "table, with the number of queues the broker held when the benchmark gave up.\n"
    )
    replace_section(path, "## Heartbeat load", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--management", default="http://127.0.0.1:15672")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 2000, 10000])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--one-hz-max",
        type=int,
        default=2000,
        help="larger fleets run with adaptive intervals only (the simulator cannot send "
        "more heartbeats a second beside the broker and masters on 2 cores)",
    )
    parser.add_argument(
        "--classic-over",
        type=int,
        default=5000,
        help="larger fleets' assignment queues are classic queues (one broker node refuses "
        "quorum queues past about 6,000)",
    )
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    broker = Broker(args.amqp, args.management)
    runs = []
    try:
        for nodes in args.nodes:
            queue_type = "classic" if nodes > args.classic_over else "quorum"
            for adaptive in (False, True) if nodes <= args.one_hz_max else (True,):
                try:
                    runs.append(measure(broker, nodes, adaptive, args.seconds, queue_type))
                except RuntimeError as exc:  # written down: a size that fails is a figure too
                    runs.append(
                        Run(nodes, adaptive, 0, 0, 0, 0, 0, 0, {}, queue_type, error=str(exc))
                    )
                print(runs[-1], flush=True)
    finally:
        broker.close()
    print(table(runs))
    print(verdicts(runs))
    if args.write is not None:
        write(args.write, runs, args.seconds, load, args.classic_over)
    failed = [run for run in runs if run.changes or run.error]
    if failed:  # written down first: a missed target is a figure too
        raise SystemExit(f"{len(failed)} run(s) failed or saw node state changes (see the table)")


if __name__ == "__main__":
    main()
