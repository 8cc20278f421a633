"""The master's scaling curve (issue 10, benchmark c): its work, CPU and memory at 100,
1,000 and 5,000 nodes and 1k, 10k and 100k tasks, in-process (the controller and its
journal encoding; no broker), with a plot.

    python -m bench.curve [--nodes 100,1000,5000] [--tasks 1000,10000,100000]
                          [--write docs/benchmarks.md] [--plot docs/scaling.png]

Each point runs in a fresh process (`--point NODES TASKS`, so its RSS is its own):
NODES nodes join (one heartbeat each; not timed), then what the active master does for
TASKS tasks is timed:

1. **place**: the tasks are submitted as services of 1,000 replicas (fewer for 1k
   tasks), each submit placing its tasks at once, and every journaled event is encoded
   as the journal publishes it (`master.journal.encode_batch`);
2. **report**: each task is reported running (`task.status`), as workers do once its
   container runs;
3. **beats**: one heartbeat from every node listing its running tasks, then a tick: a
   second of the steady state, at 1 Hz.

For each it gives the wall time, and for the whole the CPU time and the RSS growth
(after `gc.collect()`). Correctness is asserted at every point: every task placed once,
spread evenly (no node more than one task above another), all running, every node
ready. Timing never is. `--write` writes the section of docs/benchmarks.md with the
table and a check that growth is near-linear; `--plot` draws the PNG.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.report import replace_section
from master import events as ev
from master import journal
from master.controller import Controller, StartCommand
from master.settings import MasterSettings
from schemas.job import JobSpec
from schemas.messages import Heartbeat, RunningTask, TaskStatus
from tests.unit.factories import heartbeat

GiB = 1024**3
JOB_REPLICAS = 1000
SECTION = "## Scaling curve (the master in-process: nodes x tasks)"


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def beat(
    node_id: str, seq: int, tasks: list[RunningTask], *, cpus: float = 256, memory: int = 1024 * GiB
) -> Heartbeat:
    """A node's heartbeat listing `tasks`, in a bench's fleet."""
    return heartbeat(node_id, cpus=cpus, memory=memory, tasks=tasks, seq=seq)


def spec(name: str, replicas: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": name,
            "image": "local/busybox:latest",
            "kind": "service",
            "replicas": replicas,
            "cpu": 0.01,
            "memory": "8m",
        }
    )


def point(nodes: int, tasks: int) -> dict[str, Any]:
    """One point of the curve, in this process (see the module docstring)."""
    gc.collect()
    bare = rss_mib()
    master = Controller(MasterSettings(amqp_url="amqp://bench"), epoch=1)
    journaled: list[ev.Event] = []
    master.journal = journaled.append
    names = [f"node-{index:05}" for index in range(nodes)]
    for name in names:
        master.heartbeat(beat(name, 0, []), 0.0)
    master.drain()
    journaled.clear()
    gc.collect()
    rss0, cpu0 = rss_mib(), time.process_time()

    started = time.perf_counter()
    starts: list[StartCommand] = []
    sizes = [JOB_REPLICAS] * (tasks // JOB_REPLICAS) or [tasks]
    for index, replicas in enumerate(sizes):
        master.submit(spec(f"job-{index}", replicas), 1.0, submission=f"s{index:05}")
        journal.encode_batch("bench", 1, index, journaled)
        journaled.clear()
        starts += [c for c in master.drain()[0] if isinstance(c, StartCommand)]
    place = time.perf_counter() - started

    started = time.perf_counter()
    on_node: dict[str, list[RunningTask]] = defaultdict(list)
    for command in starts:
        task = master.state.tasks[command.task_id]
        status = TaskStatus(
            task_id=task.task_id,
            job_id=task.job_id,
            node_id=command.node_id,
            state="running",
            container_id=f"c{task.task_id}"[:64],
        )
        master.task_status(status, 2.0)
        on_node[command.node_id].append(
            RunningTask(
                task_id=task.task_id,
                job_id=task.job_id,
                container_id=status.container_id,
                state="running",
                cpu=0.01,
                memory=8 * 1024**2,
            )
        )
    journal.encode_batch("bench", 1, 0, journaled)
    journaled.clear()
    master.drain()
    report = time.perf_counter() - started

    started = time.perf_counter()
    for name in names:
        master.heartbeat(beat(name, 1, on_node[name]), 2.5)
    master.tick(2.5)
    journal.encode_batch("bench", 1, 0, journaled)
    master.drain()
    beats = time.perf_counter() - started

    cpu = time.process_time() - cpu0
    gc.collect()
    rss = rss_mib() - rss0
    # Correctness: each task placed once, evenly, and running; every node ready.
    assert len(starts) == tasks and len({c.task_id for c in starts}) == tasks
    per_node = Counter(c.node_id for c in starts)
    assert len(per_node) == min(nodes, tasks), "a node got no task"
    # Spread, from a sample of candidates at this size (master/scheduler.py): no node
    # more than twice the even share, plus one.
    even = tasks / nodes
    assert max(per_node.values()) <= 2 * even + 1, f"uneven: {max(per_node.values())} vs {even}"
    states = Counter(t.state for t in master.state.tasks.values())
    assert states == {"running": tasks}, states
    assert {n.state for n in master.state.nodes.values()} == {"ready"}
    return {
        "nodes": nodes,
        "tasks": tasks,
        "place": place,
        "report": report,
        "beats": beats,
        "cpu": cpu,
        "rss": rss,
        "rss_nodes": rss0 - bare,
        "most": max(per_node.values()),
        "least": min(per_node.values()),
    }


def measure(nodes: int, tasks: int, rounds: int) -> dict[str, Any]:
    """The median of `rounds` fresh processes' figures for one point."""
    runs = []
    for _ in range(rounds):
        argv = [sys.executable, "-m", "bench.curve", "--point", str(nodes), str(tasks)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    median: dict[str, Any] = {"nodes": nodes, "tasks": tasks}
    for key in ("place", "report", "beats", "cpu", "rss", "rss_nodes", "most", "least"):
        values = sorted(run[key] for run in runs)
        median[key] = values[len(values) // 2]
    return median


def growth(points: list[dict[str, Any]]) -> list[str]:
    """Lines saying how each figure grows from one task count to the next (10x more
    tasks): per-task cost ratios; near-linear is about 1, quadratic about 10."""
    lines = []
    by_nodes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        by_nodes[p["nodes"]].append(p)
    for nodes, row in sorted(by_nodes.items()):
        row.sort(key=lambda p: p["tasks"])
        steps = []
        for low, high in pairwise(row):
            scale = high["tasks"] / low["tasks"]
            per_task = (high["cpu"] / high["tasks"]) / (low["cpu"] / low["tasks"])
            steps.append(
                f"{low['tasks']:,} -> {high['tasks']:,} tasks: CPU "
                f"x{high['cpu'] / low['cpu']:.1f} for x{scale:g} tasks (per task x{per_task:.2f})"
            )
        lines.append(f"- {nodes:,} nodes: " + "; ".join(steps))
    return lines


def table(points: list[dict[str, Any]]) -> str:
    lines = [
        "| nodes | tasks | place | report running | 1 s of beats | CPU | tasks per CPU second "
        "| tasks per node | RSS: nodes | RSS: tasks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['nodes']:,} | {p['tasks']:,} | {p['place']:.2f} s | {p['report']:.2f} s | "
            f"{p['beats']:.2f} s | {p['cpu']:.2f} s | {p['tasks'] / p['cpu']:,.0f} | "
            f"{p['least']}-{p['most']} | {p['rss_nodes']:.0f} MiB | {p['rss']:.0f} MiB |"
        )
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    by_nodes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        by_nodes[p["nodes"]].append(p)
    panels = [
        ("place", "placement time (s)"),
        ("cpu", "master CPU, all three steps (s)"),
        ("rss", "master RSS growth (MiB)"),
    ]
    for axis, (key, title) in zip(axes, panels, strict=True):
        for nodes, row in sorted(by_nodes.items()):
            row.sort(key=lambda p: p["tasks"])
            xs = [p["tasks"] for p in row]
            axis.plot(xs, [max(p[key], 1e-3) for p in row], marker="o", label=f"{nodes:,} nodes")
        low = min(p["tasks"] for p in points)
        high = max(p["tasks"] for p in points)
        base = min(max(p[key], 1e-3) for p in points if p["tasks"] == low)
        axis.plot([low, high], [base, base * high / low], "k--", linewidth=0.8, label="linear")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("tasks")
        axis.set_title(title)
        axis.grid(True, which="both", linewidth=0.3)
    axes[0].legend()
    figure.suptitle("Corral master, in-process (python -m bench.curve)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def write(path: Path, points: list[dict[str, Any]], png: Path | None, rounds: int) -> None:
    picture = f"\n![the scaling curve]({png.name})\n" if png is not None else ""
    most = max(points, key=lambda p: (p["tasks"], p["nodes"]))
    widest = max(points, key=lambda p: (p["nodes"], -p["tasks"]))
    memory = (
        f"Memory: about {most['rss'] / most['tasks'] * 10_000:.0f} MiB per 10,000 tasks "
        f"(at {most['tasks']:,}) and {widest['rss_nodes'] / widest['nodes'] * 1000:.1f} MiB "
        f"per 1,000 nodes (at {widest['nodes']:,}); ended tasks are compacted away by "
        "retention (`--keep-ended-jobs`, `--keep-attempts`), so it is the live tasks "
        "that count.\n"
    )
    section = (
        f"{SECTION}\n\n"
        "    python -m bench.curve --write docs/benchmarks.md --plot docs/scaling.png\n\n"
        "What the active master does for its tasks, in-process (the controller, and the\n"
        "journal's encoding of every event; no broker, so the master's work alone), median\n"
        f"of {rounds} fresh processes per point, on the 2-core development machine (load\n"
        f"average {os.getloadavg()[0]:.1f} after). *Place*: submit as services of 1,000\n"
        "replicas, each placed at once; *report running*: a `task.status` per task; *1 s of\n"
        "beats*: a heartbeat from every node listing its tasks, and a tick. CPU covers the\n"
        "three. RSS: what the nodes' joining added to a bare process, then what the tasks\n"
        "added (after `gc.collect()`). Each point asserts every task placed once, no node\n"
        "above twice the even share (the scheduler samples candidates on large fleets) and\n"
        "every task running.\n\n"
        f"{table(points)}\n\n"
        "Growth from one task count to the next (10 times more tasks), CPU:\n\n"
        + "\n".join(growth(points))
        + "\n\n"
        + memory
        + picture
    )
    replace_section(path, SECTION, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--point", nargs=2, type=int, metavar=("NODES", "TASKS"))
    parser.add_argument("--nodes", default="100,1000,5000")
    parser.add_argument("--tasks", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(point(*args.point)))
        return
    points = []
    for nodes in (int(n) for n in args.nodes.split(",")):
        for tasks in (int(t) for t in args.tasks.split(",")):
            figures = measure(nodes, tasks, args.rounds)
            points.append(figures)
            print(
                f"{nodes:>6,} nodes {tasks:>8,} tasks: place {figures['place']:.2f} s, report "
                f"{figures['report']:.2f} s, beats {figures['beats']:.2f} s, CPU "
                f"{figures['cpu']:.2f} s, RSS +{figures['rss']:.0f} MiB",
                flush=True,
            )
    print(table(points))
    print("\n".join(growth(points)))
    if args.plot is not None:
        plot(points, args.plot)
    if args.write is not None:
        write(args.write, points, args.plot, args.rounds)


if __name__ == "__main__":
    main()
