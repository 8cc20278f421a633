"""Placement: filter the nodes that can run a task, then score the ones that can.

Filters, in order: the node is ready; it is not held (e.g. its assignments
came back unroutable); its labels satisfy the job's constraints; it has the
free CPU and memory; its host ports are free. A task no node passes stays
pending, with a reason built from what each node lacked ("2 nodes have less
than 8 free CPUs (the most free: 2)").

Scoring: `spread` (default) prefers the node running the fewest tasks of the
same job, then the least loaded; `binpack` prefers the fullest node that fits.

A scheduling pass (`plan`) takes the pending tasks that are due, oldest first,
job by job. For each job it filters and scores its candidate nodes once, and
hands out its tasks from a heap of them: placing a task changes only the node it
went to, so only that node is filtered and scored again. Once no node is left
for a job, no later task of that job fits in this pass either (a pass only ever
takes room), so they all get the same reason, computed once.

**Candidates.** Up to FULL_SCAN_NODES nodes, every one that fits is a candidate:
the placements are exactly those of scoring every node (`place`). In a larger
cluster a job's candidates are a sample, as Nomad does: the first nodes that fit,
at least MIN_CANDIDATES and twice as many as the job has tasks to place, found by
walking the nodes from an offset drawn from the job's id; more are taken
from the walk when those fill up. A one-replica job in a fleet of 5,000 nodes then
costs a few dozen node checks, not 5,000, and still goes to the least loaded of
its sample (the "power of k choices"). The cost of a pass is about (tasks x
MIN_CANDIDATES) + (tasks x log candidates), not tasks x nodes.

Pure: reads the state, yields events. The caller applies each event before
asking for the next, so every placement sees the room the previous ones took.
"""

from __future__ import annotations

import heapq
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from itertools import groupby, islice

from master import events as ev
from master.model import Job, Node, Task
from master.state import ClusterState
from schemas.job import JobSpec, format_size

Score = tuple[float, float, str]


def _constraints_met(spec: JobSpec, node: Node) -> bool:
    for key, value, must_equal in spec.constraint_pairs():
        if (node.labels.get(key) == value) != must_equal:
            return False
    return True


# Up to this many eligible nodes, every one is a candidate for every job (exact).
FULL_SCAN_NODES = 64
# Beyond, a job's candidates: at least this many nodes that fit (and twice its tasks).
MIN_CANDIDATES = 8


def unavailable(node: Node, now: float) -> str | None:
    """Why `node` takes no new task at all (a short category), or None if it may."""
    if node.state != "ready":
        return f"is {node.state}"
    if node.held_until > now:
        return node.held_reason or "is held"
    if node.cordoned:
        return "is draining" if node.draining else "is cordoned"
    return None


def rejection(spec: JobSpec, node: Node, now: float) -> str | None:
    """Why `node` cannot take a task of `spec` (a short category), or None if it can."""
    return unavailable(node, now) or unfit(spec, node)


def unfit(spec: JobSpec, node: Node) -> str | None:
    """Why an available `node` cannot take a task of `spec`, or None if it can."""
    if not _constraints_met(spec, node):
        return "does not match the constraints " + ", ".join(spec.constraints)
    if node.free_cpu + 1e-9 < spec.cpu:
        return f"has less than {spec.cpu:g} free CPUs"
    if node.free_memory < spec.memory:
        return f"has less than {format_size(spec.memory)} free memory"
    if any(node.ports[(p.host, p.protocol)] for p in spec.ports):
        return "has a requested host port in use"
    return None


def score(job: Job, node: Node) -> Score:
    """Lower is better."""
    cpu_load = node.used_cpu / node.capacity.cpus if node.capacity.cpus else 1.0
    memory_load = node.used_memory / node.capacity.memory if node.capacity.memory else 1.0
    load = (cpu_load + memory_load) / 2
    if job.spec.placement == "binpack":
        return (-load, 0.0, node.node_id)
    return (float(node.job_counts[job.job_id]), load, node.node_id)


def _plural(phrase: str) -> str:
    verb, _, rest = phrase.partition(" ")
    return f"{ {'has': 'have', 'is': 'are', 'does': 'do'}.get(verb, verb) } {rest}"


def unplaced_reason(spec: JobSpec, nodes: Iterable[Node], now: float) -> str:
    nodes = list(nodes)
    reasons = Counter(rejection(spec, node, now) for node in nodes)
    reasons.pop(None, None)
    total = sum(reasons.values())
    if total == 0:
        return "no worker nodes have joined yet; start one with `corral worker`"
    parts = []
    for why, count in reasons.most_common():
        parts.append(f"1 node {why}" if count == 1 else f"{count} nodes {_plural(str(why))}")
    ready = [n for n in nodes if n.state == "ready"]
    detail = ""
    if ready and any("CPU" in str(why) for why in reasons):
        detail = f" (the most free: {max(n.free_cpu for n in ready):g} CPUs)"
    elif ready and any("memory" in str(why) for why in reasons):
        detail = f" (the most free: {format_size(max(n.free_memory for n in ready))})"
    return f"no node can run it: {'; '.join(parts)}{detail}"


def place(state: ClusterState, task: Task, now: float) -> Node | None:
    """The best node for one task, or None if none fits (a whole pass uses `plan`)."""
    job = state.jobs[task.job_id]
    candidates = [n for n in state.nodes.values() if rejection(job.spec, n, now) is None]
    if not candidates:
        return None
    return min(candidates, key=lambda node: score(job, node))


def ready_to_place(state: ClusterState, now: float) -> list[Task]:
    """Pending tasks whose backoff has passed, oldest first."""
    tasks = [t for t in state.pending.values() if t.not_before <= now]
    return sorted(tasks, key=lambda t: (t.created_at, t.task_id))


def plan(
    state: ClusterState, *, epoch: int, now: float, preferred: Mapping[str, str] | None = None
) -> Iterator[ev.Event]:
    """One scheduling pass: an assignment or a new unplaced reason per due pending task.

    Jobs are served in the order of their oldest due task; apply each event
    before taking the next one. A task named in `preferred` goes to that node if the
    node may take it (a warm standby waits there, master/standby.py), before the
    job's other tasks are placed.
    """
    due = ready_to_place(state, now)
    first_seen: dict[str, int] = {}
    for index, task in enumerate(due):
        first_seen.setdefault(task.job_id, index)
    due.sort(key=lambda t: first_seen[t.job_id])  # stable: oldest first within a job
    if not due:
        return
    nodes = list(state.nodes.values())
    for job_id, tasks in groupby(due, key=lambda t: t.job_id):
        yield from _place_job(
            state, state.jobs[job_id], list(tasks), nodes, epoch, now, preferred or {}
        )


def walk(job: Job, nodes: list[Node], now: float) -> Iterator[Node]:
    """The nodes that can take a task of `job`, each once: in a large cluster, from an
    offset drawn from the job's id."""
    count = len(nodes)
    start = zlib.crc32(job.job_id.encode()) % count if count > FULL_SCAN_NODES else 0
    for index in range(count):
        node = nodes[(start + index) % count]
        if rejection(job.spec, node, now) is None:
            yield node


def _place_job(
    state: ClusterState,
    job: Job,
    tasks: list[Task],
    nodes: list[Node],
    epoch: int,
    now: float,
    preferred: Mapping[str, str],
) -> Iterator[ev.Event]:
    tasks = [task for task in tasks if task.state == "pending"]
    if preferred:
        placed = set()
        for task in tasks:
            node = state.nodes.get(preferred.get(task.task_id, ""))
            if node is not None and rejection(job.spec_of(task), node, now) is None:
                placed.add(task.task_id)
                yield ev.TaskAssigned(
                    at=now, task_id=task.task_id, node_id=node.node_id, epoch=epoch
                )
        tasks = [task for task in tasks if task.task_id not in placed]
    nodes_that_fit = walk(job, nodes, now)
    wanted = len(nodes) if len(nodes) <= FULL_SCAN_NODES else 2 * len(tasks)
    candidates = [
        (score(job, node), node.node_id)
        for node in islice(nodes_that_fit, max(MIN_CANDIDATES, wanted))
    ]
    heapq.heapify(candidates)
    reason = ""
    for task in tasks:
        if not candidates:  # the sample is full: take more from the walk, if any
            more = next(nodes_that_fit, None)
            if more is not None:
                candidates.append((score(job, more), more.node_id))
        if candidates:
            _, node_id = heapq.heappop(candidates)
            yield ev.TaskAssigned(at=now, task_id=task.task_id, node_id=node_id, epoch=epoch)
            node = state.nodes[node_id]
            if unfit(job.spec, node) is None:
                heapq.heappush(candidates, (score(job, node), node_id))
            continue
        reason = reason or unplaced_reason(job.spec, state.nodes.values(), now)
        if task.reason != reason:
            yield ev.TaskUnplaced(at=now, task_id=task.task_id, reason=reason)


def next_due(state: ClusterState, now: float) -> float:
    """When waiting alone will next change what a pass can do: a pending task's backoff
    ends, or a node's hold does. Infinity if never."""
    times = [t.not_before for t in state.pending.values() if t.not_before > now]
    times += [until for until in state.holds.values() if until > now]
    return min(times, default=float("inf"))
