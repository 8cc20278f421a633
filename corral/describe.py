"""`corral inspect`: a job or a task described on one screen, like `kubectl describe`.

Pure functions of the master's JobInfo (from api.job, or api.task for one task). The
spec is shown as the master sent it: secret values (and, for a job of someone else,
env values) arrive as "***". A job without an owner (older than owners) shows none.
Every line is made `visible`, as in `corral.output`: spec values, reasons and event
texts are whatever the broker carried.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml

from corral.job import current_tasks
from corral.output import NONE, age, health, is_crash_looping, rollout_text, table
from corral.text import visible
from schemas.api import EventInfo, JobInfo, TaskInfo, VersionInfo
from schemas.job import JobSpec, PortMapping, format_size

INDENT = "  "
PLACEMENT_HEADERS = (
    "SLOT",
    "TASK",
    "NODE",
    "ADDRESS",
    "STATE",
    "HEALTH",
    "RESTARTS",
    "VER",
    "EXIT",
    "REASON",
)
VERSION_HEADERS = ("VERSION", "CREATED", "REASON")
EVENT_HEADERS = ("AGE", "TASK", "EVENT")
# Shown whatever their value; the spec's other fields only when not at their default.
ALWAYS_SHOWN = ("image", "kind", "replicas", "cpu", "memory")


def describe_job(info: JobInfo, now: datetime | None = None) -> str:
    """The job: its state, version and rollout, spec, versions, placement and events."""
    lines = [
        *_fields(
            ("Name", info.job_id),
            ("Owner", info.owner),
            ("State", _job_state(info)),
            ("Version", str(info.version)),
            ("Rollout", _rollout(info)),
            ("Submitted", when(info.submitted_at, now)),
            ("Ended", when(info.ended_at, now) if info.ended_at else ""),
            ("DNS names", dns_names(info)),
        ),
        f"Spec (version {info.version}):",
        *_indented(spec_lines(info.spec)),
    ]
    lines += _section("Versions", VERSION_HEADERS, [_version_row(v, now) for v in info.versions])
    lines += _section("Tasks", PLACEMENT_HEADERS, [_placement_row(t) for t in placed(info)])
    if info.tasks_omitted:
        lines.append(f"{INDENT}({info.tasks_omitted} more tasks: `corral ps {info.job_id}`)")
    lines += _section("Events", EVENT_HEADERS, [_event_row(e, now) for e in info.events])
    return "\n".join(visible(line) for line in lines)


def describe_task(info: JobInfo, task_id: str, now: datetime | None = None) -> str:
    """One task (the api.task answer: its job with that task, its events and version)."""
    task = next((t for t in info.tasks if t.task_id == task_id), None)
    if task is None:
        return visible(f"the master's answer holds no task {task_id} (job {info.job_id})")
    spec = next((v.spec for v in info.versions if v.version == task.version), None)
    job_runs = "" if task.version == info.version else f" (the job runs version {info.version})"
    exit_code = NONE if task.exit_code is None else str(task.exit_code)
    lines = _fields(
        ("Task", task.task_id),
        ("Job", f"{info.job_id} ({info.spec.kind}, {_job_state(info)})"),
        ("Owner", info.owner),
        ("Slot", f"{task.slot}, attempt {task.attempt}"),
        ("State", _task_state(task)),
        ("Health", health(task)),
        ("Restarts", f"{task.restarts} failures in a row before this attempt"),
        ("Version", f"{task.version}{job_runs}"),
        ("Node", task.node_id or NONE),
        ("Address", task.address or NONE),
        ("Container", task.container_id[:12] or NONE),
        ("Exit code", exit_code),
        ("Reason", task.reason),
        ("Started", when(task.started_at, now) if task.started_at else ""),
        ("Updated", when(task.updated_at, now)),
    )
    if spec is not None:
        lines += [f"Spec (version {task.version}):", *_indented(spec_lines(spec))]
    lines += _section("Events", EVENT_HEADERS, [_event_row(e, now) for e in info.events])
    return "\n".join(visible(line) for line in lines)


def spec_lines(spec: JobSpec) -> list[str]:
    """The spec as compact YAML: the main fields always, the others only if not default;
    memory as a size (128Mi) and ports in their short form (8080:80)."""
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    data.pop("name", None)
    data.update({field: getattr(spec, field) for field in ALWAYS_SHOWN})
    data["memory"] = format_size(spec.memory)
    if spec.ports:
        data["ports"] = [short_port(port) for port in spec.ports]
    ordered = {key: data[key] for key in JobSpec.model_fields if key in data}
    text = yaml.safe_dump(
        ordered, sort_keys=False, default_flow_style=None, allow_unicode=True, width=96
    )
    return text.rstrip("\n").split("\n")


def short_port(port: PortMapping) -> str:
    """`8080:80`, `0.0.0.0:53:53/udp`: the form a job file may use."""
    text = f"{port.host}:{port.container}"
    if port.host_ip != "127.0.0.1":
        text = f"{port.host_ip}:{text}"
    return text if port.protocol == "tcp" else f"{text}/{port.protocol}"


def dns_names(info: JobInfo) -> str:
    """`web, web.corral -> 10.210.1.2, 10.210.2.2; <slot>.web[.corral] for each slot`, or
    why the job has none (docs/networking.md)."""
    if info.spec.network != "cluster":
        return "none (network: none)"
    running = [t for t in placed(info) if t.state == "running" and t.address]
    healthy = [t.address for t in running if t.healthy]
    serving = healthy or [t.address for t in running]
    job = info.job_id
    return (
        f"{job}, {job}.corral -> {', '.join(serving) or NONE}; "
        f"<slot>.{job}[.corral] for each slot (0.{job})"
    )


def placed(info: JobInfo) -> list[TaskInfo]:
    """The current attempt of each wanted slot, and the tasks retiring beside them."""
    retiring = [task for task in info.tasks if task.retiring and task.state == "running"]
    return sorted([*current_tasks(info), *retiring], key=lambda task: (task.slot, task.attempt))


def when(at: datetime | None, now: datetime | None = None) -> str:
    """`2030-01-01 12:00:00 (5m ago)`, in local time."""
    if at is None:
        return NONE
    return f"{at.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({age(at, now)} ago)"


def _job_state(info: JobInfo) -> str:
    text: str = info.state
    if info.spec.kind == "service" and info.state not in ("complete", "failed", "cancelled"):
        text += f", {info.healthy}/{info.spec.replicas} healthy"
    return f"{text}: {info.reason}" if info.reason else text


def _rollout(info: JobInfo) -> str:
    if info.rollout is None:
        return ""
    reason = f": {info.rollout.reason}" if info.rollout.reason else ""
    return rollout_text(info.rollout) + reason


def _task_state(task: TaskInfo) -> str:
    text: str = task.state
    if task.retiring:
        text += " (retiring: stops once its slot's new attempt is healthy)"
    if is_crash_looping(task):
        text += " (crash loop)"
    return text


def _fields(*pairs: tuple[str, str]) -> list[str]:
    """`Label:  value` lines, aligned; a pair with an empty value is left out."""
    shown = [(label, value) for label, value in pairs if value]
    width = max(len(label) for label, _ in shown) + 2
    return [f"{label + ':':<{width}} {value}" for label, value in shown]


def _section(title: str, headers: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [f"{title}: none"]
    return [f"{title}:", *_indented(table(headers, rows).split("\n"))]


def _indented(lines: list[str]) -> list[str]:
    return [INDENT + line for line in lines]


def _version_row(version: VersionInfo, now: datetime | None) -> list[str]:
    return [str(version.version), age(version.created_at, now), version.reason or NONE]


def _placement_row(task: TaskInfo) -> list[str]:
    exit_code = NONE if task.exit_code is None else str(task.exit_code)
    state = "retiring" if task.retiring else task.state
    return [
        str(task.slot),
        task.task_id,
        task.node_id or NONE,
        task.address or NONE,
        state,
        health(task),
        str(task.restarts),
        str(task.version),
        exit_code,
        task.reason or NONE,
    ]


def _event_row(event: EventInfo, now: datetime | None) -> list[str]:
    return [age(event.at, now), event.task_id or NONE, event.text]
