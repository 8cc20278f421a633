"""How the CLI shows things: aligned tables, JSON, one-line event summaries. Pure functions.

Text from the broker is untrusted: every table cell, event line and job
summary goes through `corral.text.visible`, so a control character in an image
name or a reason shows as `\\n` or `\\x1b` instead of breaking the table or
driving the terminal. JSON output is escaped by JSON itself.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel

from corral.brokers import BrokerNode
from corral.job import ROLLOUT_ACTIVE
from corral.streams import Event
from corral.text import visible
from schemas.api import (
    CRASH_LOOP_RESTARTS,
    ClusterStatus,
    JobInfo,
    MasterInfo,
    MastersInfo,
    NodeInfo,
    RolloutInfo,
    TaskInfo,
)
from schemas.job import format_size
from schemas.messages import TERMINAL_TASK_STATES, JobEvent, NodeEvent, TaskStatus

NONE = "-"
# An event line shows at most this much of a payload that is not a status event.
OTHER_PAYLOAD_CHARS = 300
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

T = TypeVar("T")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain columns separated by two spaces; the last column is not padded."""
    return "\n".join(stream_table(headers, [rows]))


def stream_table(headers: Sequence[str], pages: Iterable[Sequence[Sequence[str]]]) -> Iterator[str]:
    """The lines of a table whose rows come a page at a time: the header, then each row.

    Only one page is held at once. A column is as wide as its widest cell so
    far, so columns may widen at a page boundary but never narrow; with a
    single page this is `table`. The header waits for the first page with rows
    (a filtered listing may yield empty pages first). Cells are made `visible`.
    """
    widths = [len(header) for header in headers]
    header_done = False
    for page in pages:
        if not page:
            continue
        rows = [[visible(cell) for cell in row] for row in page]
        for row in rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
        if not header_done:
            yield _line(headers, widths)
            header_done = True
        for row in rows:
            yield _line(row, widths)
    if not header_done:
        yield _line(headers, widths)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
    return "  ".join(padded).rstrip()


def to_json(models: Sequence[BaseModel]) -> str:
    return json.dumps([model.model_dump(mode="json") for model in models], indent=2)


def stream_json(models: Iterable[BaseModel]) -> Iterator[str]:
    """`to_json` of `models` in pieces (joined, exactly the same text), one per model."""
    first = True
    for model in models:
        item = textwrap.indent(json.dumps(model.model_dump(mode="json"), indent=2), "  ")
        yield ("[\n" if first else ",\n") + item
        first = False
    yield "[]" if first else "\n]"


def flatten(pages: Iterable[Iterable[T]]) -> Iterator[T]:
    for page in pages:
        yield from page


def rows_by_page(
    pages: Iterable[Sequence[T]], row: Callable[[T], list[str]]
) -> Iterator[list[list[str]]]:
    """Each page of models as a page of table rows (for `stream_table`)."""
    for page in pages:
        yield [row(item) for item in page]


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


def task_row(task: TaskInfo, now: datetime | None = None) -> list[str]:
    reason = task.reason or NONE
    if is_crash_looping(task) and not reason.startswith("crash loop"):
        reason = f"crash loop: {reason}"
    return [
        task.task_id,
        task.job_id,
        task.node_id or NONE,
        task.address or NONE,
        "retiring" if task.retiring and task.state == "running" else task.state,
        health(task),
        str(task.restarts),
        str(task.version),
        NONE if task.exit_code is None else str(task.exit_code),
        age(task.updated_at, now),
        reason,
    ]


def node_state(node: NodeInfo) -> str:
    """`ready`, or with its scheduling: `ready,cordoned`, `disconnected,draining`."""
    if node.draining:
        return f"{node.state},draining"
    return f"{node.state},cordoned" if node.cordoned else node.state


def node_row(node: NodeInfo) -> list[str]:
    return [
        node.node_id,
        node_state(node),
        f"{cpus(node.allocated.cpus)}/{cpus(node.capacity.cpus)}",
        f"{format_size(node.allocated.memory)}/{format_size(node.capacity.memory)}",
        str(node.tasks),
        node.subnet or NONE,
        node.addr or NONE,
        ",".join(f"{key}={value}" for key, value in sorted(node.labels.items())) or NONE,
    ]


def jobs_table(jobs: Sequence[JobInfo], now: datetime | None = None) -> str:
    return table(JOB_HEADERS, [job_row(job, now) for job in jobs])


def tasks_table(tasks: Sequence[TaskInfo], now: datetime | None = None) -> str:
    return table(TASK_HEADERS, [task_row(task, now) for task in tasks])


def nodes_table(nodes: Sequence[NodeInfo]) -> str:
    return table(NODE_HEADERS, [node_row(node) for node in nodes])


def exit_codes(info: JobInfo) -> str:
    """`slot 0: 0, slot 1: 3` (or `-` for a slot that has no exit code yet)."""
    codes = info.exit_codes
    omitted = _omitted(info)
    if not codes:
        return f"none shown{omitted}" if omitted else "none (no tasks)"
    shown = ", ".join(
        f"slot {slot}: {NONE if code is None else code}" for slot, code in codes.items()
    )
    return shown + omitted


def _omitted(info: JobInfo) -> str:
    if not info.tasks_omitted:
        return ""
    return f" (and {info.tasks_omitted} more tasks: `corral ps {visible(info.job_id)}`)"


def job_state(info: JobInfo) -> str:
    """`job web: running`, safe to print."""
    return visible(f"job {info.job_id}: {info.state}")


def job_summary(info: JobInfo) -> str:
    """The job's id, state and reason, then its tasks (and how many the master left out)."""
    head = f"job {info.job_id}: {info.state}"
    if info.reason:
        head += f" ({info.reason})"
    lines = [visible(head)]
    if info.tasks:
        lines.append(tasks_table(info.tasks))
    if info.tasks_omitted:
        lines.append(
            f"({info.tasks_omitted} more tasks not shown: `corral ps {visible(info.job_id)}`)"
        )
    return "\n".join(lines)


class LinePrefix:
    """Puts `prefix` before every line of a stream that comes in arbitrary chunks.

    `feed` returns a chunk's text with the prefix after each line break (and at
    the very start); `end` returns the line break that ends an unfinished last
    line, so the next stream's first line starts on a line of its own. The
    container's text itself is left as it is (as `corral logs` prints it).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._at_line_start = True

    def feed(self, chunk: str) -> str:
        if not chunk:
            return ""
        lines = chunk.split("\n")
        text = ("\n" + self.prefix).join(lines)
        if self._at_line_start:
            text = self.prefix + text
        if chunk.endswith("\n"):
            text = text[: -len(self.prefix)]
        self._at_line_start = chunk.endswith("\n")
        return text

    def end(self) -> str:
        ended = "" if self._at_line_start else "\n"
        self._at_line_start = True
        return ended


def slot_prefix(slot: int) -> str:
    """`[0] `: what `corral logs JOB` puts before each line of a slot's output."""
    return f"[{slot}] "


def event_summary(event: Event) -> str:
    """What happened, in a few words, safe to print."""
    payload = event.payload
    reason_text = str(getattr(payload, "reason", "") or "")
    reason = f" ({reason_text})" if reason_text else ""
    if isinstance(payload, TaskStatus):
        code = "" if payload.exit_code is None else f" exit {payload.exit_code}"
        text = f"task {payload.task_id} on {payload.node_id}: {payload.state}{code}{reason}"
    elif isinstance(payload, JobEvent):
        text = f"job {payload.job_id}: {payload.state}{reason}"
    elif isinstance(payload, NodeEvent):
        text = f"node {payload.node_id}: {payload.state}{reason}"
    else:
        body = payload.model_dump_json()
        if len(body) > OTHER_PAYLOAD_CHARS:
            body = body[:OTHER_PAYLOAD_CHARS] + "…"
        text = f"{payload.TYPE}: {body}"
    return visible(text)


def event_line(event: Event) -> str:
    """`HH:MM:SS  routing.key  summary`, in local time, safe to print."""
    clock = event.sent_at.astimezone().strftime("%H:%M:%S")
    return f"{clock}  {visible(event.routing_key)}  {event_summary(event)}"


def event_json(event: Event) -> str:
    return json.dumps(
        {
            "routing_key": event.routing_key,
            "type": event.payload.TYPE,
            "sent_at": event.sent_at.isoformat(),
            "payload": event.payload.model_dump(mode="json"),
        }
    )


# -- the master group and the cluster status --

ROLE_ORDER = ("active", "claiming", "standby")
JOB_STATES = ("pending", "running", "degraded", "complete", "failed", "cancelled")
# Shown even when none; a node in another state (disconnected) is listed when some are.
NODE_STATES = ("ready", "suspect", "down")
INDENT = "  "


def seconds_ago(seconds: float) -> str:
    """A short time since: 0.4s under ten seconds, then as `age` (42s, 5m, 3h, 2d)."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    return age(datetime.fromtimestamp(0, UTC), datetime.fromtimestamp(seconds, UTC))


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


def _by_role(masters: Iterable[MasterInfo]) -> list[MasterInfo]:
    # The master sorts them already; a stable sort keeps its order within a role.
    rank = {role: i for i, role in enumerate(ROLE_ORDER)}
    return sorted(masters, key=lambda m: rank.get(m.role, len(rank)))


def masters_table(info: MastersInfo) -> str:
    """`corral masters`: one row per master, the active one first."""
    text = table(MASTER_HEADERS, [master_row(m) for m in _by_role(info.masters)])
    if info.omitted:
        text += f"\n({info.omitted} more masters not shown)"
    return text


def _counts(counts: dict[str, int], known: Sequence[str], *, zeros: bool = False) -> str:
    """`2 running, 1 failed`: the known states in their order (with zeros if asked),
    then any others by name."""
    order = [*known, *sorted(set(counts) - set(known))]
    parts = [f"{counts.get(s, 0)} {s}" for s in order if (zeros and s in known) or counts.get(s)]
    return visible(", ".join(parts)) or "none"


def approximate_size(size: int) -> str:
    """A byte size to one decimal in its largest unit (15.7Gi); exact if it is exact."""
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size >= factor:
            exact = format_size(size)
            return exact if exact.endswith(unit) else f"{size / factor:.1f}{unit}"
    return str(size)


def _brokers_lines(brokers: Sequence[BrokerNode]) -> list[str]:
    if not brokers:
        return ["brokers: none given"]
    rows = [
        [node.address, {True: "yes", False: "no", None: NONE}[node.reachable]] for node in brokers
    ]
    return [
        "brokers:",
        *(INDENT + line for line in table(("BROKER", "REACHABLE"), rows).split("\n")),
    ]


def _status_body(status: ClusterStatus) -> tuple[list[str], list[str]]:
    """The lines before the brokers (masters) and after them (the rest)."""
    epoch = "" if status.epoch is None else f" (epoch {status.epoch})"
    if status.masters:
        rows = [master_row(m) for m in _by_role(status.masters)]
        head = [f"masters: {len(status.masters)}{epoch}"]
        head += [INDENT + line for line in table(MASTER_HEADERS, rows).split("\n")]
    else:
        head = [f"masters: none reported{epoch}"]
    workers = status.workers
    capacity, free = workers.capacity, workers.free
    tail = [
        f"workers: {_counts(workers.states, NODE_STATES, zeros=True)}",
        f"{INDENT}cpu {cpus(free.cpus)} free of {cpus(capacity.cpus)}, memory"
        f" {approximate_size(free.memory)} free of {approximate_size(capacity.memory)}"
        " (ready nodes)",
        f"jobs: {_counts(status.jobs, JOB_STATES)}",
        f"pending tasks: {status.pending.count}",
    ]
    shown = 0
    for item in status.pending.reasons:
        reason = visible(item.reason) if item.reason else "(not looked at by the scheduler yet)"
        tail.append(f"{INDENT}{item.count:>6}  {reason}")
        shown += item.count
    if status.pending.reasons and status.pending.count > shown:
        tail.append(f"{INDENT}{status.pending.count - shown:>6}  (other reasons)")
    letters = "unknown" if status.dead_letters is None else str(status.dead_letters)
    tail.append(f"dead letters: {letters}")
    return head, tail


def status_text(status: ClusterStatus | None, brokers: Sequence[BrokerNode]) -> str:
    """`corral status` on one screen: masters, broker nodes, workers, jobs, pending
    tasks, dead letters; only the broker nodes if the master could not be asked."""
    if status is None:
        return "\n".join(_brokers_lines(brokers))
    head, tail = _status_body(status)
    return "\n".join([*head, *_brokers_lines(brokers), *tail])


def status_json(status: ClusterStatus | None, brokers: Sequence[BrokerNode]) -> str:
    """The same as JSON: the broker nodes (address and reachable, never the URL), then
    the master's ClusterStatus fields if it answered."""
    document: dict[str, object] = {
        "brokers": [{"address": n.address, "reachable": n.reachable} for n in brokers]
    }
    if status is not None:
        document.update(status.model_dump(mode="json"))
    return json.dumps(document, indent=2)
