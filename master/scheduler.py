"""Placement: filter the nodes that can run a task, then score the ones that can.

Filters, in order: the node is ready; its labels satisfy the job's
constraints; it has the free CPU and memory; its host ports are free. A task
no node passes stays pending, with a reason built from what each node lacked
("2 nodes have less than 8 free CPUs (the most free: 2)").

Scoring: `spread` (default) prefers the node running the fewest tasks of the
same job, then the least loaded; `binpack` prefers the fullest node that fits.

Pure: reads the state, returns events. The caller applies them, one by one,
so every placement in a pass sees the resources the previous ones took.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from master import events as ev
from master.state import ClusterState, Job, Node, Task
from schemas.job import JobSpec, format_size


def _ports_in_use(state: ClusterState, node: Node) -> set[tuple[int, str]]:
    used: set[tuple[int, str]] = set()
    for task_id in node.task_ids:
        task = state.tasks.get(task_id)
        job = state.jobs.get(task.job_id) if task else None
        if job is not None:
            used.update((port.host, port.protocol) for port in job.spec.ports)
    return used


def _constraints_met(spec: JobSpec, node: Node) -> bool:
    for key, value, must_equal in spec.constraint_pairs():
        if (node.labels.get(key) == value) != must_equal:
            return False
    return True


def rejection(state: ClusterState, spec: JobSpec, node: Node) -> str | None:
    """Why `node` cannot take a task of `spec` (a short category), or None if it can."""
    if node.state != "ready":
        return f"is {node.state}"
    if not _constraints_met(spec, node):
        return "does not match the constraints " + ", ".join(spec.constraints)
    if node.free_cpu + 1e-9 < spec.cpu:
        return f"has less than {spec.cpu:g} free CPUs"
    if node.free_memory < spec.memory:
        return f"has less than {format_size(spec.memory)} free memory"
    if spec.ports and _ports_in_use(state, node) & {(p.host, p.protocol) for p in spec.ports}:
        return "has a requested host port in use"
    return None


def _score(state: ClusterState, job: Job, node: Node) -> tuple[float, ...]:
    """Lower is better."""
    cpu_load = node.used_cpu / node.capacity.cpus if node.capacity.cpus else 1.0
    memory_load = node.used_memory / node.capacity.memory if node.capacity.memory else 1.0
    load = (cpu_load + memory_load) / 2
    if job.spec.placement == "binpack":
        return (-load, node.node_id)  # type: ignore[return-value]
    siblings = sum(1 for t in node.task_ids if state.tasks[t].job_id == job.job_id)
    return (siblings, load, node.node_id)  # type: ignore[return-value]


def _plural(phrase: str) -> str:
    verb, _, rest = phrase.partition(" ")
    return f"{ {'has': 'have', 'is': 'are', 'does': 'do'}.get(verb, verb) } {rest}"


def unplaced_reason(state: ClusterState, spec: JobSpec, nodes: Iterable[Node]) -> str:
    reasons = Counter(rejection(state, spec, node) for node in nodes)
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


def place(state: ClusterState, task: Task) -> Node | None:
    """The best node for `task`, or None if none fits."""
    job = state.jobs[task.job_id]
    candidates = [n for n in state.nodes.values() if rejection(state, job.spec, n) is None]
    if not candidates:
        return None
    return min(candidates, key=lambda node: _score(state, job, node))


def schedule_one(state: ClusterState, task: Task, *, epoch: int, now: float) -> ev.Event | None:
    """An assignment for a pending task, a new unplaced reason, or None (nothing changed)."""
    node = place(state, task)
    if node is not None:
        return ev.TaskAssigned(at=now, task_id=task.task_id, node_id=node.node_id, epoch=epoch)
    reason = unplaced_reason(state, state.jobs[task.job_id].spec, state.nodes.values())
    if reason == task.reason:
        return None
    return ev.TaskUnplaced(at=now, task_id=task.task_id, reason=reason)


def ready_to_place(state: ClusterState, now: float) -> list[Task]:
    """Pending tasks whose backoff has passed, oldest first."""
    tasks = [t for t in state.pending_tasks() if t.not_before <= now]
    return sorted(tasks, key=lambda t: (t.created_at, t.task_id))
