"""Submit time of a 10,000-replica job, in-process: the controller alone, no broker.

    python -m bench.submit_scale [--replicas 10000] [--rounds 3]

Builds a `Controller`, gives it 100 or 1,000 nodes (one heartbeat each), and
times `submit` of one job of `--replicas` replicas that nothing can place
(more CPUs than any node has) and one that fits (spread over every node).
Then, with the unplaceable job still pending, times a round of heartbeats from
every node and a tick (what the master does each second while it waits).
Each figure is the median of `--rounds` fresh controllers. Correctness is
asserted (every task pending with one reason, or placed evenly); timing never is.

Baseline, measured in the same run: the bookkeeping any submit must do, with
nothing else (a `JobSubmitted` and one `TaskCreated` per replica applied to a
`ClusterState`). The ratio says how much the controller adds to it; before the
robustness work the unplaceable submit took 60-117 s, quadratic in replicas.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable

from bench import curve
from master import events as ev
from master.controller import Controller, StartCommand
from master.settings import MasterSettings
from master.state import ClusterState
from schemas.job import JobSpec
from schemas.messages import Heartbeat

GiB = 1024**3


def beat(node_id: str, seq: int) -> Heartbeat:
    return curve.beat(node_id, seq, [], cpus=64, memory=64 * GiB)


def cluster(nodes: int) -> Controller:
    master = Controller(MasterSettings(amqp_url="amqp://bench"), epoch=1)
    for index in range(nodes):
        master.heartbeat(beat(f"node-{index:04}", 0), 0.0)
    master.drain()
    return master


def spec(replicas: int, *, placeable: bool) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "big",
            "image": "local/busybox:latest",
            "kind": "service",
            "replicas": replicas,
            "cpu": 0.01 if placeable else 128,
            "memory": "6m",
        }
    )


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def submit_unplaceable(nodes: int, replicas: int) -> tuple[float, float]:
    """(submit seconds, seconds for one heartbeat per node plus a tick afterwards)."""
    master = cluster(nodes)
    seconds = timed(lambda: master.submit(spec(replicas, placeable=False), 1.0))
    tasks = master.state.tasks.values()
    assert len(tasks) == replicas and {t.state for t in tasks} == {"pending"}
    assert len({t.reason for t in tasks}) == 1
    assert master.drain()[0] == []

    def second_of_waiting() -> None:
        for index in range(nodes):
            master.heartbeat(beat(f"node-{index:04}", 1), 1.5)
        master.tick(1.5)

    return seconds, timed(second_of_waiting)


def bookkeeping(replicas: int) -> float:
    """The baseline: the events of a submit applied to a bare state, nothing else."""
    job = spec(replicas, placeable=False)

    def apply_all() -> None:
        state = ClusterState()
        state.apply(ev.JobSubmitted(at=1.0, job_id="big", spec=job, submission="s"))
        for slot in range(replicas):
            task_id = f"big-s-{slot}-0"
            state.apply(ev.TaskCreated(at=1.0, task_id=task_id, job_id="big", slot=slot, attempt=0))

    return timed(apply_all)


def submit_placeable(nodes: int, replicas: int) -> float:
    master = cluster(nodes)
    seconds = timed(lambda: master.submit(spec(replicas, placeable=True), 1.0))
    commands, _ = master.drain()
    per_node = Counter(c.node_id for c in commands if isinstance(c, StartCommand))
    assert sum(per_node.values()) == replicas
    assert max(per_node.values()) - min(per_node.values()) <= 1 and len(per_node) == nodes
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"submit of {args.replicas} replicas, median of {args.rounds} rounds")
    base = statistics.median(bookkeeping(args.replicas) for _ in range(args.rounds))
    print(f"baseline (the submit's events applied to a bare state): {base:.3f} s")
    print(
        "| nodes | unplaceable | ratio | then 1 s of beats | placeable | ratio |\n"
        "|---|---|---|---|---|---|"
    )
    for nodes in (100, 1000):
        waiting = [submit_unplaceable(nodes, args.replicas) for _ in range(args.rounds)]
        placed = [submit_placeable(nodes, args.replicas) for _ in range(args.rounds)]
        unplaceable = statistics.median(w[0] for w in waiting)
        placeable = statistics.median(placed)
        print(
            f"| {nodes} | {unplaceable:.3f} s | {unplaceable / base:.1f}x"
            f" | {statistics.median(w[1] for w in waiting):.3f} s"
            f" | {placeable:.3f} s | {placeable / base:.1f}x |"
        )


if __name__ == "__main__":
    main()
