"""The dashboard's rows: each master, node, job, task and status event as a short JSON array.

Pure functions, no I/O. A browser gets `COLUMNS` once (in the snapshot) and then
only arrays, which keeps 20,000 tasks to about 2 MB. Free text that came over the
broker (reasons, images, labels) is passed through `corral.text.visible`, as the
CLI prints it; the page itself only ever sets it as text, never as markup.
"""

from __future__ import annotations

from typing import Any

from corral.streams import Event
from corral.text import visible
from schemas.api import JobInfo, MasterInfo, NodeInfo, TaskInfo
from schemas.messages import (
    TERMINAL_TASK_STATES,
    CommandRefused,
    JobEvent,
    LeaderAnnounced,
    NodeEvent,
    TaskStatus,
)

Row = list[Any]

COLUMNS: dict[str, list[str]] = {
    "masters": ["name", "role", "epoch", "lag", "applied", "seen_ago", "broker"],
    "nodes": [
        "id",
        "state",
        "scheduling",  # "", "cordoned" or "draining"
        "cpu_used",
        "cpu_total",
        "memory_used",  # bytes
        "memory_total",
        "tasks",
        "subnet",
        "addr",
        "labels",  # "k=v,k=v"
        "reason",
    ],
    "jobs": [
        "id",
        "state",
        "reason",
        "kind",
        "healthy",
        "running",
        "replicas",
        "version",
        "rollout",  # null or [state, done, total, from_version, to_version]
        "owner",
        "image",
        "submitted_at",  # seconds since 1970
    ],
    "tasks": [
        "id",
        "job",
        "slot",
        "attempt",
        "node",
        "address",
        "state",  # the task's state; "retiring" for a running one being replaced
        "health",  # "", "starting", "healthy" or "unhealthy"
        "restarts",
        "version",
        "exit_code",
        "updated_at",  # seconds since 1970
        "reason",
    ],
    "events": ["at", "kind", "subject", "state", "node", "text"],
    "pending": ["reason", "count", "jobs"],
}
# Columns the board reads: a task's state, reason and job.
TASK_STATE = COLUMNS["tasks"].index("state")
TASK_REASON = COLUMNS["tasks"].index("reason")
TASK_JOB = COLUMNS["tasks"].index("job")


def master_row(master: MasterInfo) -> Row:
    return [
        master.name,
        master.role,
        master.epoch,
        master.lag,
        master.applied,
        round(master.last_seen_ago, 1),
        visible(master.broker),
    ]


def node_row(node: NodeInfo) -> Row:
    scheduling = "draining" if node.draining else "cordoned" if node.cordoned else ""
    labels = ",".join(f"{key}={value}" for key, value in sorted(node.labels.items()))
    return [
        node.node_id,
        node.state,
        scheduling,
        node.allocated.cpus,
        node.capacity.cpus,
        node.allocated.memory,
        node.capacity.memory,
        node.tasks,
        node.subnet,
        node.addr,
        visible(labels),
        visible(node.reason),
    ]


def job_row(job: JobInfo) -> Row:
    rollout = job.rollout
    return [
        job.job_id,
        job.state,
        visible(job.reason),
        job.spec.kind,
        job.healthy,
        job.task_counts.get("running", 0),
        job.spec.replicas,
        job.version,
        None
        if rollout is None
        else [rollout.state, rollout.done, rollout.total, rollout.from_version, rollout.to_version],
        visible(job.owner),
        visible(job.spec.image),
        job.submitted_at.timestamp(),
    ]


def task_health(task: TaskInfo) -> str:
    """unhealthy, healthy (for its job's min_healthy), starting, or "" (no check, or ended)."""
    if task.health == "unhealthy":
        return "unhealthy"
    if task.state in TERMINAL_TASK_STATES:
        return ""
    if task.healthy:
        return "healthy"
    return "starting" if task.health else ""


def task_row(task: TaskInfo) -> Row:
    retiring = task.retiring and task.state == "running"
    return [
        task.task_id,
        task.job_id,
        task.slot,
        task.attempt,
        task.node_id or "",
        task.address,
        "retiring" if retiring else task.state,
        task_health(task),
        task.restarts,
        task.version,
        task.exit_code,
        task.updated_at.timestamp(),
        visible(task.reason),
    ]


def event_row(event: Event) -> Row:
    """[at, kind, subject, state, node, text] of one status event."""
    at = event.sent_at.timestamp()
    payload = event.payload
    if isinstance(payload, TaskStatus):
        return [at, "task", payload.task_id, payload.state, payload.node_id, _task_text(payload)]
    if isinstance(payload, JobEvent):
        return [at, "job", payload.job_id, payload.state, "", visible(payload.reason)]
    if isinstance(payload, NodeEvent):
        return [
            at,
            "node",
            payload.node_id,
            payload.state,
            payload.node_id,
            visible(payload.reason),
        ]
    if isinstance(payload, LeaderAnnounced):
        return [at, "leader", payload.master, "leads", "", f"epoch {payload.epoch}"]
    if isinstance(payload, CommandRefused):
        subject = payload.task_id or payload.command
        return [at, "refused", subject, "refused", payload.node_id, visible(payload.reason)]
    kind = event.routing_key.partition(".")[0]
    return [at, visible(kind), visible(event.routing_key), "", "", ""]


def _task_text(status: TaskStatus) -> str:
    parts = []
    if status.exit_code is not None:
        parts.append(f"exit code {status.exit_code}")
    if status.health:
        parts.append(status.health)
    if status.reason:
        parts.append(visible(status.reason))
    return ", ".join(parts)
