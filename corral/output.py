"""How the CLI shows things: aligned tables, JSON, one-line event summaries. Pure functions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel

from corral.client import Event
from schemas.api import JobInfo, NodeInfo, TaskInfo
from schemas.job import format_size
from schemas.messages import JobEvent, NodeEvent, TaskStatus

NONE = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain columns separated by two spaces; the last column is not padded."""
    widths = [len(header) for header in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_json(models: Sequence[BaseModel]) -> str:
    return json.dumps([model.model_dump(mode="json") for model in models], indent=2)


def age(when: datetime, now: datetime | None = None) -> str:
    """A short duration since `when`: 42s, 5m, 3h, 2d."""
    now = now or datetime.now(UTC)
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def cpus(value: float) -> str:
    return f"{value:g}"


def running_count(info: JobInfo) -> str:
    running = sum(1 for task in info.tasks if task.state == "running")
    return f"{running}/{info.spec.replicas}"


def jobs_table(jobs: Sequence[JobInfo], now: datetime | None = None) -> str:
    rows = [
        [
            job.job_id,
            job.spec.kind,
            job.state,
            running_count(job),
            job.spec.image,
            age(job.submitted_at, now),
            job.reason or NONE,
        ]
        for job in jobs
    ]
    return table(["JOB", "KIND", "STATE", "RUNNING", "IMAGE", "AGE", "REASON"], rows)


def tasks_table(tasks: Sequence[TaskInfo], now: datetime | None = None) -> str:
    rows = [
        [
            task.task_id,
            task.job_id,
            task.node_id or NONE,
            task.state,
            NONE if task.exit_code is None else str(task.exit_code),
            age(task.updated_at, now),
            task.reason or NONE,
        ]
        for task in tasks
    ]
    return table(["TASK", "JOB", "NODE", "STATE", "EXIT", "UPDATED", "REASON"], rows)


def nodes_table(nodes: Sequence[NodeInfo]) -> str:
    rows = [
        [
            node.node_id,
            node.state,
            f"{cpus(node.allocated.cpus)}/{cpus(node.capacity.cpus)}",
            f"{format_size(node.allocated.memory)}/{format_size(node.capacity.memory)}",
            str(node.tasks),
            ",".join(f"{key}={value}" for key, value in sorted(node.labels.items())) or NONE,
        ]
        for node in nodes
    ]
    return table(["NODE", "STATE", "CPU", "MEMORY", "TASKS", "LABELS"], rows)


def exit_codes(info: JobInfo) -> str:
    """`slot 0: 0, slot 1: 3` (or `-` for a slot that has no exit code yet)."""
    codes = info.exit_codes
    if not codes:
        return "none (no tasks)"
    return ", ".join(
        f"slot {slot}: {NONE if code is None else code}" for slot, code in codes.items()
    )


def job_summary(info: JobInfo) -> str:
    """The job's id and state, then its tasks."""
    head = f"job {info.job_id}: {info.state}"
    if info.reason:
        head += f" ({info.reason})"
    if not info.tasks:
        return head
    return f"{head}\n{tasks_table(info.tasks)}"


def event_summary(event: Event) -> str:
    payload = event.payload
    reason_text = str(getattr(payload, "reason", "") or "")
    reason = f" ({reason_text})" if reason_text else ""
    if isinstance(payload, TaskStatus):
        code = "" if payload.exit_code is None else f" exit {payload.exit_code}"
        return f"task {payload.task_id} on {payload.node_id}: {payload.state}{code}{reason}"
    if isinstance(payload, JobEvent):
        return f"job {payload.job_id}: {payload.state}{reason}"
    if isinstance(payload, NodeEvent):
        return f"node {payload.node_id}: {payload.state}{reason}"
    return f"{payload.TYPE}: {payload.model_dump_json()}"


def event_line(event: Event) -> str:
    """`HH:MM:SS  routing.key  summary`, in local time."""
    clock = event.sent_at.astimezone().strftime("%H:%M:%S")
    return f"{clock}  {event.routing_key}  {event_summary(event)}"


def event_json(event: Event) -> str:
    return json.dumps(
        {
            "routing_key": event.routing_key,
            "type": event.payload.TYPE,
            "sent_at": event.sent_at.isoformat(),
            "payload": event.payload.model_dump(mode="json"),
        }
    )
