"""What the CLI prints about one job or one event: job summaries, exit codes, event
lines, and the prefix of each line of a job's logs. Pure functions.

Text from the broker is untrusted: every line here goes through
`corral.text.visible`, so a control character in an image name or a reason shows
as `\\n` or `\\x1b` instead of driving the terminal. JSON is escaped by JSON.

The rest of the CLI's rendering lives beside this module, by responsibility, and
is re-exported here under its old names (`output.table`, `output.task_row`, ...):

- `corral.tables`: aligned tables and their cell formats (age, cpus);
- `corral.rows`: the columns of the listings, plain and wide;
- `corral.formats`: listings as JSON and YAML;
- `corral.cluster_status`: `corral status` and `corral masters`;
- `corral.colour`: colour of the state cells.
"""

from __future__ import annotations

import json

from corral.cluster_status import (
    INDENT,
    JOB_STATES,
    NODE_STATES,
    approximate_size,
    masters_table,
    status_json,
    status_text,
)
from corral.formats import stream_json, stream_yaml, to_json
from corral.rows import (
    JOB_HEADERS,
    MASTER_HEADERS,
    NODE_HEADERS,
    ROLE_ORDER,
    TASK_HEADERS,
    health,
    is_crash_looping,
    job_row,
    job_state_cell,
    master_row,
    node_row,
    node_state,
    rollout_text,
    running_count,
    task_row,
)
from corral.streams import Event
from corral.tables import (
    NONE,
    age,
    cpus,
    flatten,
    rows_by_page,
    seconds_ago,
    stream_table,
    table,
)
from corral.text import visible
from schemas.api import JobInfo, TaskInfo
from schemas.messages import JobEvent, NodeEvent, TaskStatus

__all__ = [
    "INDENT",
    "JOB_HEADERS",
    "JOB_STATES",
    "MASTER_HEADERS",
    "NODE_HEADERS",
    "NODE_STATES",
    "NONE",
    "OTHER_PAYLOAD_CHARS",
    "ROLE_ORDER",
    "TASK_HEADERS",
    "LinePrefix",
    "age",
    "approximate_size",
    "cpus",
    "event_json",
    "event_line",
    "event_summary",
    "exit_codes",
    "flatten",
    "health",
    "is_crash_looping",
    "job_row",
    "job_state",
    "job_state_cell",
    "job_summary",
    "master_row",
    "masters_table",
    "node_row",
    "node_state",
    "rollout_text",
    "rows_by_page",
    "running_count",
    "seconds_ago",
    "slot_prefix",
    "status_json",
    "status_text",
    "stream_json",
    "stream_table",
    "stream_yaml",
    "table",
    "task_row",
    "tasks_table",
    "to_json",
]

# An event line shows at most this much of a payload that is not a status event.
OTHER_PAYLOAD_CHARS = 300


def tasks_table(tasks: list[TaskInfo]) -> str:
    return table(TASK_HEADERS, [task_row(task) for task in tasks])


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
