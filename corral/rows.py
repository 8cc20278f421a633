"""The columns of the listings (`jobs`, `ps`, `nodes`, `masters`), plain and wide. Pure.

Each listing's table row is a function of one model; `-o wide` shows the same
columns with a few more before the last (long) one. The cells are raw text:
`corral.tables` makes them visible, measures and paints them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from corral.job import ROLLOUT_ACTIVE
from corral.tables import NONE, Painters, age, cpus, seconds_ago
from schemas.api import (
    CRASH_LOOP_RESTARTS,
    JobInfo,
    MasterInfo,
    NodeInfo,
    RolloutInfo,
    TaskInfo,
)
from schemas.job import format_size
from schemas.messages import TERMINAL_TASK_STATES

M = TypeVar("M")

JOB_HEADERS = ("JOB", "KIND", "STATE", "RUNNING", "IMAGE", "AGE", "REASON")
TASK_HEADERS = (
    "TASK",
    "JOB",
    "NODE",
    "ADDRESS",
    "STATE",
    "HEALTH",
    "RESTARTS",
    "VER",
    "EXIT",
    "UPDATED",
    "REASON",
)
NODE_HEADERS = ("NODE", "STATE", "CPU", "MEMORY", "TASKS", "SUBNET", "ADDRESS", "LABELS")
MASTER_HEADERS = ("NAME", "ROLE", "EPOCH", "APPLIED", "LAG", "SEEN", "BROKER")
ROLE_ORDER = ("active", "claiming", "standby")


@dataclass(frozen=True)
class Columns(Generic[M]):
    """A listing's table: `headers` and `row`; `-o wide` puts `wide_headers` (the cells
    of `wide_row`) before the last column. Columns named in `states` are painted."""

    headers: tuple[str, ...]
    row: Callable[[M], list[str]]
    wide_headers: tuple[str, ...]
    wide_row: Callable[[M], list[str]]
    states: tuple[str, ...] = ("STATE",)

    def heads(self, wide: bool) -> tuple[str, ...]:
        if not wide:
            return self.headers
        return (*self.headers[:-1], *self.wide_headers, self.headers[-1])

    def cells(self, wide: bool) -> Callable[[M], list[str]]:
        """The row function of the table, or of the wide table."""
        if not wide:
            return self.row

        def wide_cells(item: M) -> list[str]:
            row = self.row(item)
            return [*row[:-1], *self.wide_row(item), row[-1]]

        return wide_cells

    def painters(self, wide: bool, paint: Callable[[str], str]) -> Painters:
        """`paint` for each state column of the (wide) table."""
        return {i: paint for i, head in enumerate(self.heads(wide)) if head in self.states}


# -- jobs --


def running_count(info: JobInfo) -> str:
    """`running/replicas`, from the job's task counts (its tasks if it has no counts)."""
    if info.task_counts:
        running = info.task_counts.get("running", 0)
    else:
        running = sum(1 for task in info.tasks if task.state == "running")
    return f"{running}/{info.spec.replicas}"


def rollout_text(rollout: RolloutInfo) -> str:
    """`updating 2/4 v2→v3`: the rollout's state, slots done of all, and its versions."""
    return (
        f"{rollout.state} {rollout.done}/{rollout.total}"
        f" v{rollout.from_version}→v{rollout.to_version}"
    )


def job_state_cell(job: JobInfo) -> str:
    """The job's state; a rollout under way instead (`updating 2/4 v2→v3`), and for a
    degraded job its healthy replicas (`degraded 5/8`)."""
    if job.rollout is not None and job.rollout.state in ROLLOUT_ACTIVE:
        return rollout_text(job.rollout)
    if job.state == "degraded":
        return f"degraded {job.healthy}/{job.spec.replicas}"
    return job.state


def job_row(job: JobInfo, now: datetime | None = None) -> list[str]:
    return [
        job.job_id,
        job.spec.kind,
        job_state_cell(job),
        running_count(job),
        job.spec.image,
        age(job.submitted_at, now),
        job.reason or NONE,
    ]


def job_wide(job: JobInfo) -> list[str]:
    return [
        str(job.version),
        cpus(job.spec.cpu),
        format_size(job.spec.memory),
        job.owner or NONE,
    ]


JOB_COLUMNS = Columns(JOB_HEADERS, job_row, ("VER", "CPU", "MEMORY", "OWNER"), job_wide)

# -- tasks --


def health(task: TaskInfo) -> str:
    """healthy (for its job's min_healthy), unhealthy, starting (not yet healthy), or -
    (no check, or not running)."""
    if task.health == "unhealthy":
        return "unhealthy"
    if task.state in TERMINAL_TASK_STATES:
        return NONE
    if task.healthy:
        return "healthy"
    return "starting" if task.health else NONE


def is_crash_looping(task: TaskInfo) -> bool:
    """A live attempt of a slot that failed CRASH_LOOP_RESTARTS times in a row, not healthy."""
    live = task.state not in TERMINAL_TASK_STATES
    return live and task.restarts >= CRASH_LOOP_RESTARTS and not task.healthy


def task_state_cell(task: TaskInfo) -> str:
    """The task's state; `retiring` for a running one its replacement is taking over from."""
    return "retiring" if task.retiring and task.state == "running" else task.state


def task_row(task: TaskInfo, now: datetime | None = None) -> list[str]:
    reason = task.reason or NONE
    if is_crash_looping(task) and not reason.startswith("crash loop"):
        reason = f"crash loop: {reason}"
    return [
        task.task_id,
        task.job_id,
        task.node_id or NONE,
        task.address or NONE,
        task_state_cell(task),
        health(task),
        str(task.restarts),
        str(task.version),
        NONE if task.exit_code is None else str(task.exit_code),
        age(task.updated_at, now),
        reason,
    ]


def task_wide(task: TaskInfo) -> list[str]:
    started = NONE if task.started_at is None else age(task.started_at)
    return [str(task.slot), str(task.attempt), task.container_id[:12] or NONE, started]


TASK_COLUMNS = Columns(
    TASK_HEADERS,
    task_row,
    ("SLOT", "ATTEMPT", "CONTAINER", "STARTED"),
    task_wide,
    ("STATE", "HEALTH"),
)

# -- nodes --


def node_state(node: NodeInfo) -> str:
    """`ready`, or with its scheduling: `ready,cordoned`, `disconnected,draining`."""
    if node.draining:
        return f"{node.state},draining"
    return f"{node.state},cordoned" if node.cordoned else node.state


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items())) or NONE


def node_row(node: NodeInfo) -> list[str]:
    return [
        node.node_id,
        node_state(node),
        f"{cpus(node.allocated.cpus)}/{cpus(node.capacity.cpus)}",
        f"{format_size(node.allocated.memory)}/{format_size(node.capacity.memory)}",
        str(node.tasks),
        node.subnet or NONE,
        node.addr or NONE,
        labels_text(node.labels),
    ]


def node_wide(node: NodeInfo) -> list[str]:
    return [age(node.last_seen), node.reason or NONE]


NODE_COLUMNS = Columns(NODE_HEADERS, node_row, ("SEEN", "REASON"), node_wide)

# -- masters --


def _number(value: int | None) -> str:
    return NONE if value is None or value < 0 else str(value)


def master_row(master: MasterInfo) -> list[str]:
    return [
        master.name,
        master.role,
        _number(master.epoch),
        _number(master.applied),
        _number(master.lag),
        seconds_ago(master.last_seen_ago),
        master.broker or NONE,
    ]


def master_wide(master: MasterInfo) -> list[str]:
    started = NONE if master.started_at is None else age(master.started_at)
    return [master.instance or NONE, started]


MASTER_COLUMNS = Columns(
    MASTER_HEADERS, master_row, ("INSTANCE", "STARTED"), master_wide, ("ROLE",)
)


def by_role(masters: Iterable[MasterInfo]) -> list[MasterInfo]:
    """The masters, the active one first (then claiming, then standbys)."""
    # The master sorts them already; a stable sort keeps its order within a role.
    rank = {role: i for i, role in enumerate(ROLE_ORDER)}
    return sorted(masters, key=lambda m: rank.get(m.role, len(rank)))


def rows(columns: Columns[M], items: Sequence[M], wide: bool = False) -> list[list[str]]:
    cells = columns.cells(wide)
    return [cells(item) for item in items]
