"""Placement throughput on the real broker (issue 10, benchmark a): a simulated fleet,
many tasks, the whole path.

    python -m bench.placement [--nodes 1000] [--tasks 20000] [--shapes services,singles]
                              [--jobs 20] [--clients 4] [--write docs/benchmarks.md]
                              [--profile DIR]

For each shape, on a fresh vhost: an active master and a standby (processes, journal on,
the standby tailing it) and a simulated fleet of `--nodes` nodes (bench/sim.py, in a
process of its own, `--report`). Once every node is ready, `--tasks` tasks are submitted
from `--clients` client threads (a connection each), and timed from the first submit
until the fleet holds every task running: the whole path, client -> broker -> master
(placement, journal) -> broker -> node -> broker -> master.

- `services`: `--jobs` services of `--tasks / --jobs` replicas, one `api.submit` each;
- `singles`: `--tasks` one-replica jobs, with `Client.submit_many` (1,000 a request).

During the run it measures the CPU time of the active master, the standby, the broker and
the fleet's process (`--profile DIR`: and samples the active master with py-spy, into
DIR/<shape>-active.txt, one line per stack with its count). Correctness is asserted:
every task runs exactly once (the fleet holds each task id on one node only, and as many
as were asked for), the master counts every one running, no node changed state (no false
`suspect` or `down`: every node state change the active master publishes is counted) and
every node is ready at the end. Timing never is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bench.spy
from bench.heartbeats import broker_pid, cpu_seconds, node_changes
from bench.report import replace_section
from bus import topology
from corral import Client
from tests.cluster import Cluster, wait_until
from tests.conftest import TEST_IMAGE, Broker
from tests.rawamqp import Tap

SECTION = "## Placement throughput (a simulated fleet, the whole path)"
TARGET = 4000  # tasks/s: issue 10's target, above Nomad's C1M (about 3,750/s)


@dataclass
class Run:
    shape: str
    nodes: int
    tasks: int
    submitted: float  # seconds until every submit was answered
    elapsed: float  # seconds until the fleet held every task running
    cpu: dict[str, float]  # CPU seconds over `elapsed`: active, standby, broker, fleet
    changes: dict[str, int]  # node state changes published (none expected)
    error: str = ""  # why it did not finish ("": it did)

    @property
    def rate(self) -> float:
        return self.tasks / self.elapsed


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


def submit_all(cluster: Cluster, shape: str, tasks: int, jobs: int, clients: int) -> None:
    """Submit every task in `shape`, spread over `clients` threads (a client each)."""
    if shape == "services":
        specs = [spec(f"j{index}", tasks // jobs) for index in range(jobs)]
    else:
        specs = [spec(f"s{index}", 1) for index in range(tasks)]

    def submit(part: list[dict[str, object]]) -> None:
        with Client(cluster.client_url, timeout=120, role=cluster.client_role) as client:
            if shape == "services":
                for one in part:
                    client.submit(one)
                return
            refused = [o for o in client.submit_many(part) if not o.ok]
            assert not refused, f"refused: {refused[:3]}"

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(submit, [specs[index::clients] for index in range(clients)]))


def fleet_report(path: Path) -> dict[str, int]:
    try:
        report: dict[str, int] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"running": 0, "distinct": 0, "twice": 0, "beats": 0}
    return report


def measure(broker: Broker, args: argparse.Namespace, shape: str) -> Run:
    vhost = f"corral-bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    cluster = Cluster(broker.create_vhost(vhost), workdir)
    report = workdir / "fleet.json"
    fleet = spy = None
    try:
        cluster.declare_topology()
        cluster.start_master("m1")
        cluster.start_master("m2")  # a standby, tailing the journal
        fleet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.sim",
                "--amqp",
                cluster.amqp_url,
                "--nodes",
                str(args.nodes),
                "--connections",
                str(args.connections),
                "--prefix",
                f"sim{uuid.uuid4().hex[:4]}",
                "--cpus",
                "64",
                "--memory",
                "512g",
                "--start-delay",
                "0",
                "--report",
                str(report),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "fleet.log", "wb"),  # noqa: SIM115 (the process keeps it)
        )
        cluster.wait_nodes_ready(args.nodes, timeout=300)
        active = wait_until(lambda: next(iter(cluster.leaders()), None), what="a leader")
        standby = "m2" if active == "m1" else "m1"
        time.sleep(12)  # the leader announces the fleet's interval every 5 s; it settles
        tap = Tap(cluster.amqp_url, topology.STATUS_EXCHANGE, "node.#")
        pids = {
            "active": cluster.processes[active].pid,
            "standby": cluster.processes[standby].pid,
            "broker": broker_pid(),
            "fleet": fleet.pid,
        }
        if args.profile is not None:  # py-spy, sampling the active master during the run
            spy = bench.spy.record(pids["active"], args.profile / f"{shape}-active.txt")
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.monotonic()
        submit_all(cluster, shape, args.tasks, args.jobs, args.clients)
        submitted = time.monotonic() - started
        wait_until(
            lambda: fleet_report(report)["running"] >= args.tasks,
            timeout=900,
            interval=0.1,
            what=f"{args.tasks} tasks running on the fleet",
        )
        elapsed = time.monotonic() - started
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}

        held = fleet_report(report)
        assert held["distinct"] == args.tasks and held["twice"] == 0, f"not once each: {held}"
        with Client(cluster.client_url, timeout=120, role=cluster.client_role) as client:

            def master_counts_all() -> bool:
                running: int = sum(job.task_counts.get("running", 0) for job in client.jobs())
                return running == int(args.tasks)

            wait_until(master_counts_all, timeout=300, what="the master counting all running")
            states = Counter(node.state for node in client.nodes())
        changes = node_changes(tap)
        tap.close()
        assert states == {"ready": args.nodes}, f"nodes not all ready: {states}"
        return Run(shape, args.nodes, args.tasks, submitted, elapsed, cpu, dict(changes))
    finally:
        bench.spy.stop(spy)
        if fleet is not None:
            fleet.terminate()
            fleet.wait(timeout=30)
        cluster.close()
        broker.delete_vhost(vhost)


def table(runs: list[Run], jobs: int) -> str:
    lines = [
        "| shape | nodes | tasks | submitted in | all running after | tasks/s | target "
        "| CPU: active master | standby | broker | fleet | false suspect / down |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if run.error:
            lines.append(
                f"| {run.shape} | {run.nodes:,} | {run.tasks:,} | did not finish: "
                f"{run.error} | | | {TARGET:,} | | | | | |"
            )
            continue
        shape = (
            f"{jobs} services of {run.tasks // jobs:,}"
            if run.shape == "services"
            else f"{run.tasks:,} one-replica jobs (`submit_many`)"
        )
        share = {name: seconds / run.elapsed for name, seconds in run.cpu.items()}
        lines.append(
            f"| {shape} | {run.nodes:,} | {run.tasks:,} | {run.submitted:.1f} s | "
            f"{run.elapsed:.1f} s | {run.rate:,.0f} | {TARGET:,} | {share['active']:.0%} | "
            f"{share['standby']:.0%} | {share['broker']:.0%} | {share['fleet']:.0%} | "
            f"{run.changes.get('suspect', 0)} / {run.changes.get('down', 0)} |"
        )
    return "\n".join(lines)


def write(path: Path, body: str, args: argparse.Namespace, load: float, notes: str) -> None:
    section = (
        f"{SECTION}\n\n"
        f"    python -m bench.placement --nodes {args.nodes} --tasks {args.tasks} "
        "--write docs/benchmarks.md\n\n"
        "An active master and a standby (journal on), a simulated fleet in a process of its\n"
        f"own, {args.clients} client threads; timed from the first submit until the fleet\n"
        "holds every task running. CPU as a share of one core over that time, on the\n"
        f"2-core development machine (load average {load:.1f} before). Every run asserts\n"
        "each task running exactly once, the master counting them all, and no node state\n"
        "change.\n\n"
        f"{body}\n"
        f"{notes}"
    )
    replace_section(path, SECTION, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--management", default="http://127.0.0.1:15672")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--shapes", default="services,singles")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument(
        "--profile", type=Path, default=None, help="a directory for py-spy profiles (raw)"
    )
    parser.add_argument(
        "--notes", type=Path, default=None, help="text to put under the table (findings)"
    )
    args = parser.parse_args()
    broker = Broker(args.amqp, args.management)
    load = os.getloadavg()[0]
    runs: list[Run] = []
    try:
        for shape in args.shapes.split(","):
            try:
                run = measure(broker, args, shape)
            except Exception as exc:  # written down as a failed run; the exit code says so
                error = f"{type(exc).__name__}: {exc}".replace("|", "/")[:300]
                runs.append(Run(shape, args.nodes, args.tasks, 0, 0, {}, {}, error))
                print(f"{shape}: did not finish: {error}", flush=True)
                continue
            runs.append(run)
            print(
                f"{shape}: {run.tasks} tasks on {run.nodes} nodes running after "
                f"{run.elapsed:.1f} s = {run.rate:.0f} tasks/s (submitted in "
                f"{run.submitted:.1f} s); node changes {run.changes or 'none'}",
                flush=True,
            )
    finally:
        broker.close()
    body = table(runs, args.jobs)
    print(body)
    if args.write is not None:
        notes = args.notes.read_text() if args.notes is not None else ""
        write(args.write, body, args, load, notes)
    if any(run.changes or run.error for run in runs):
        sys.exit("a run did not finish, or a node changed state during it (see the table)")


if __name__ == "__main__":
    main()
