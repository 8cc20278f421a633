"""The screen of `corral top`: a `View` of the cluster in a given width and height.

Pure: `screen(view, width, height)` returns a rich renderable of at most
`height` lines, whatever the size of the cluster: a header (the active master,
the broker connection, nodes, jobs and tasks counted by state), the nodes that
most need a look (down first) with their CPU and memory booked, the jobs
(troubled first) with their healthy replicas, and the newest events; each list
ends in "… N more" when the screen cannot hold it. The cost grows with what is
shown, not with the cluster: counts come with the View, and choosing the rows
to show is one pass.

Everything that came over the broker (ids, reasons, the problem) is made
`visible` and put in rich `Text`, never in markup: a `[` in a reason is a `[`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from corral.live_view import View
from corral.output import event_summary
from corral.rows import job_state_cell, node_state
from corral.streams import Event
from corral.text import visible
from schemas.api import JobInfo, MasterInfo, NodeInfo
from schemas.job import format_size
from schemas.messages import LeaderAnnounced

# Lines that are not rows: 2 of header, and per list a title, a table header, "… more".
HEADER_LINES = 2
LIST_LINES = 3
BAR_WIDTH = 10
MORE = "… {} more"

STATE_STYLES: Mapping[str, str] = {
    **dict.fromkeys(("running", "ready", "healthy", "complete", "active"), "green"),
    **dict.fromkeys(
        ("pending", "assigned", "suspect", "disconnected", "degraded", "updating", "rolling-back"),
        "yellow",
    ),
    **dict.fromkeys(("failed", "down", "lost", "unhealthy", "rolled-back"), "red"),
}
# Which rows come first: the ones that need a look.
NODE_ORDER = {"down": 0, "suspect": 1, "disconnected": 2, "ready": 3}
JOB_ORDER = {"failed": 0, "degraded": 1, "pending": 2, "running": 3}
ENDED_JOB = 4


def screen(view: View, width: int, height: int) -> RenderableType:
    """The whole screen for `view`, at most `height` lines of `width` columns."""
    rows = max(0, height - HEADER_LINES - 2 * LIST_LINES - 1)  # the events' title too
    events_rows = min(len(view.events), max(2, rows // 4))
    rest = max(0, rows - events_rows)
    nodes_rows = min(len(view.nodes), max(rest // 2, rest - len(view.jobs)))
    jobs_rows = max(0, rest - nodes_rows)
    parts: list[RenderableType] = [*header(view)]
    parts += nodes_part(view.nodes, nodes_rows)
    parts += jobs_part(view.jobs, jobs_rows)
    parts += events_part(view.events, events_rows)
    return Group(*parts[:height])


def one_line(text: Text) -> Text:
    """`text` cut to the width (ending in …) rather than wrapped."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def styled(state: str) -> Text:
    """A state, coloured by its first word."""
    word = state.split(",")[0].split(" ")[0]
    return Text(visible(state), style=STATE_STYLES.get(word, ""))


def counts(title: str, by_state: Mapping[str, int]) -> Text:
    """`nodes 998 ready, 2 down` (states ordered by how many, most first)."""
    line = Text(f"{title} ", style="bold")
    if not by_state:
        return line.append("none")
    for index, (state, count) in enumerate(sorted(by_state.items(), key=lambda i: -i[1])):
        if index:
            line.append(", ")
        line.append(f"{count:,} ").append_text(styled(state))
    return line


def header(view: View) -> list[Text]:
    top = Text("corral top", style="bold").append("  ")
    top.append_text(master_text(view.masters)).append("  ")
    if view.connected:
        top.append("broker connected", style="green")
    else:
        top.append(f"not connected: {visible(view.problem) or 'no answer'}", style="red")
    if view.changed_at:
        top.append(f"  as of {datetime.fromtimestamp(view.changed_at):%H:%M:%S}", style="dim")
    tasks = view.task_counts
    task_line = {
        "running": tasks.get("running", 0),
        "pending": tasks.get("pending", 0) + tasks.get("assigned", 0),
        "failed": tasks.get("failed", 0) + tasks.get("lost", 0),
    }
    second = counts("nodes", view.node_counts).append("   ")
    second.append_text(counts("jobs", view.job_counts)).append("   ")
    second.append_text(counts("tasks", task_line))
    return [one_line(top), one_line(second)]


def master_text(masters: Iterable[MasterInfo]) -> Text:
    listed = list(masters)
    active = next((m for m in listed if m.role == "active"), None)
    if active is None:
        return Text("no active master", style="red")
    text = Text("master ").append(visible(active.name), style="bold")
    text.append(f" (epoch {active.epoch if active.epoch is not None else '-'}")
    standby = sum(1 for m in listed if m.role != "active")
    return text.append(f", {standby} standby)" if standby else ")")


def bar(used: float, total: float, label: str) -> Text:
    """`████▌      3.5/8`: a share of a node's capacity booked."""
    share = min(1.0, used / total) if total > 0 else 0.0
    eighths = round(share * BAR_WIDTH * 8)
    blocks = "█" * (eighths // 8) + ("" if eighths % 8 == 0 else " ▏▎▍▌▋▊▉"[eighths % 8])
    style = "red" if share >= 0.9 else "yellow" if share >= 0.7 else "green"
    return Text(blocks.ljust(BAR_WIDTH), style=style).append(f" {label}")


def table(*headers: str) -> Table:
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold reverse")
    for index, name in enumerate(headers):  # the first (an id) gets more room
        grid.add_column(name, no_wrap=True, overflow="ellipsis", min_width=4 if index else 8)
    return grid


def more(total: int, shown: int) -> list[RenderableType]:
    return [Text(MORE.format(f"{total - shown:,}"), style="dim")] if total > shown else []


def nodes_part(nodes: Mapping[str, NodeInfo], limit: int) -> list[RenderableType]:
    title = Text(f"NODES {len(nodes):,}", style="bold")
    shown = heapq.nsmallest(
        limit, nodes.values(), key=lambda n: (NODE_ORDER.get(n.state, 2), n.node_id)
    )
    grid = table("NODE", "STATE", "CPU", "MEMORY", "TASKS")
    for node in shown:
        cpu, memory = node.allocated, node.capacity
        grid.add_row(
            Text(visible(node.node_id)),
            styled(node_state(node)),
            bar(cpu.cpus, memory.cpus, f"{cpu.cpus:g}/{memory.cpus:g}"),
            bar(
                cpu.memory,
                memory.memory,
                f"{format_size(cpu.memory)}/{format_size(memory.memory)}",
            ),
            Text(f"{node.tasks:,}"),
        )
    return [title, grid, *more(len(nodes), len(shown))] if limit or not nodes else [title]


def job_order(job: JobInfo) -> tuple[int, str]:
    return (JOB_ORDER.get(job.state, ENDED_JOB), job.job_id)


def jobs_part(jobs: Mapping[str, JobInfo], limit: int) -> list[RenderableType]:
    title = Text(f"JOBS {len(jobs):,}", style="bold")
    shown = heapq.nsmallest(limit, jobs.values(), key=job_order)
    grid = table("JOB", "KIND", "STATE", "HEALTHY", "RUNNING", "VER", "REASON")
    for job in shown:
        replicas = job.spec.replicas
        healthy = Text(f"{job.healthy}/{replicas}")
        if job.spec.kind == "service" and job.state == "running" and job.healthy < replicas:
            healthy.stylize("yellow")
        grid.add_row(
            Text(visible(job.job_id)),
            Text(job.spec.kind),
            styled(job_state_cell(job)),
            healthy,
            Text(f"{job.task_counts.get('running', 0):,}"),
            Text(f"v{job.version}"),
            Text(visible(job.reason) or "-", style="dim"),
        )
    return [title, grid, *more(len(jobs), len(shown))] if limit or not jobs else [title]


def event_text(event: Event) -> Text:
    clock = event.sent_at.astimezone().strftime("%H:%M:%S")
    payload = event.payload
    if isinstance(payload, LeaderAnnounced):
        what = visible(f"leader {payload.master} (epoch {payload.epoch})")
    else:
        what = event_summary(event)
    return one_line(Text(f"{clock}  ", style="dim").append(what))


def events_part(events: tuple[Event, ...], limit: int) -> list[RenderableType]:
    shown = events[len(events) - limit :] if limit else ()
    return [Text("EVENTS", style="bold"), *(event_text(event) for event in shown)]
