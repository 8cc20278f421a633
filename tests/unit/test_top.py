"""`corral top`'s screen (corral.live_screen): a fabricated View drawn in a fixed size."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from rich.console import Console

from corral.live_screen import screen
from corral.live_view import View
from corral.streams import Event
from schemas.api import JobInfo, MasterInfo, NodeInfo, TaskInfo
from schemas.messages import JobEvent, LeaderAnnounced, NodeEvent, Resources, TaskStatus
from tests.unit.factories import GiB, job_spec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def node(index: int, state: str = "ready", **fields: Any) -> NodeInfo:
    return NodeInfo.model_validate(
        {
            "node_id": f"node-{index:04d}",
            "state": state,
            "capacity": Resources(cpus=8, memory=32 * GiB),
            "allocated": Resources(cpus=index % 9, memory=(index % 33) * GiB),
            "tasks": index % 40,
            "last_seen": T0,
            **fields,
        }
    )


def job(name: str, replicas: int, state: str = "running", **fields: Any) -> JobInfo:
    return JobInfo.model_validate(
        {
            "job_id": name,
            "state": state,
            "spec": job_spec(name, kind="service", replicas=replicas),
            "submitted_at": T0,
            "task_counts": {"running": replicas},
            "healthy": replicas,
            **fields,
        }
    )


def task(job_id: str, slot: int) -> TaskInfo:
    return TaskInfo(
        task_id=f"{job_id}-abc123-{slot}-0",
        job_id=job_id,
        slot=slot,
        attempt=0,
        state="running",
        node_id="node-0001",
        updated_at=T0,
    )


def view(
    nodes: list[NodeInfo], jobs: list[JobInfo], events: tuple[Event, ...] = (), **fields: Any
) -> View:
    tasks = {
        t.task_id: t for j in jobs for t in (task(j.job_id, s) for s in range(j.spec.replicas))
    }
    values: dict[str, Any] = {
        "version": 7,
        "changed_at": 1_700_000_000.0,
        "masters": (
            MasterInfo(name="m1", instance="a", role="active", epoch=12, last_seen_ago=0.1),
            MasterInfo(name="m2", instance="b", role="standby", last_seen_ago=0.4),
        ),
        "nodes": MappingProxyType({n.node_id: n for n in nodes}),
        "jobs": MappingProxyType({j.job_id: j for j in jobs}),
        "tasks": MappingProxyType(tasks),
        "events": events,
        "connected": True,
        "problem": "",
        "node_counts": {"ready": sum(n.state == "ready" for n in nodes)},
        "job_counts": {"running": len(jobs)},
        "task_counts": {"running": len(tasks)},
    }
    return View(**{**values, **fields})


def draw(shown: View, width: int = 120, height: int = 40, **console: Any) -> list[str]:
    out = Console(file=io.StringIO(), width=width, height=height, **console)
    out.print(screen(shown, width, height))
    text = out.file.getvalue()  # type: ignore[attr-defined]
    return str(text).splitlines()


@pytest.fixture(scope="module")
def big() -> View:
    """1,000 nodes (three of them down) and 20 services of 1,000 replicas: 20,000 tasks."""
    nodes = [node(i, "down" if i in (500, 501, 502) else "ready") for i in range(1000)]
    jobs = [job(f"svc-{i:02d}", 1000) for i in range(20)]
    events = tuple(
        Event("k", NodeEvent(node_id=f"node-{i:04d}", state="ready"), T0) for i in range(500)
    )
    return view(nodes, jobs, events)


def test_a_big_cluster_fits_the_screen_quickly(big: View) -> None:
    started = time.perf_counter()
    lines = draw(big, 120, 40)
    elapsed = time.perf_counter() - started
    assert len(lines) <= 40 and max(len(line) for line in lines) <= 120
    text = "\n".join(lines)
    assert "master m1 (epoch 12, 1 standby)" in lines[0] and "connected" in lines[0]
    assert "nodes 997 ready" in lines[1] and "tasks 20,000 running" in lines[1]
    assert "NODES 1,000" in text and "JOBS 20" in text and "EVENTS" in text
    assert "… 9" in text and " more" in text  # most nodes and some jobs do not fit
    assert text.index("node-0500") < text.index("node-0000")  # down first
    assert elapsed < 0.5, f"one frame took {elapsed:.2f} s"


@pytest.mark.parametrize(("width", "height"), [(80, 24), (200, 60), (40, 10), (30, 5)])
def test_any_size_is_respected(big: View, width: int, height: int) -> None:
    lines = draw(big, width, height)
    assert len(lines) <= height and max(len(line) for line in lines) <= width


def test_a_small_cluster_is_shown_whole_without_more_lines() -> None:
    small = view(
        [node(1)], [job("web", 2)], (Event("k", JobEvent(job_id="web", state="running"), T0),)
    )
    text = "\n".join(draw(small))
    assert "node-0001" in text and "web" in text and "2/2" in text and "v1" in text
    assert "job web: running" in text and "more" not in text


def test_text_from_the_broker_cannot_inject_markup_or_escapes() -> None:
    hostile = "[bold red]boom[/] \x1b[2J"
    shown = view(
        [node(1)],
        [job("web", 1, state="degraded", reason=hostile)],
        (
            Event(
                "k",
                TaskStatus(
                    task_id="web-a-0-0", job_id="web", node_id="n1", state="failed", reason=hostile
                ),
                T0,
            ),
            Event("k", LeaderAnnounced(master="m1", epoch=12), T0),
        ),
        connected=False,
        problem="[link=http://x]lost[/link]",
    )
    text = "\n".join(draw(shown, width=200))
    assert "[bold red]boom[/] \\x1b[2J" in text and "\x1b" not in text
    assert "[link=http://x]lost[/link]" in text
    assert "leader m1 (epoch 12)" in text


def test_no_color_leaves_colour_out(big: View, monkeypatch: pytest.MonkeyPatch) -> None:
    coloured = "\n".join(draw(big, force_terminal=True, color_system="standard"))
    assert "\x1b[32m" in coloured  # green: ready, running
    monkeypatch.setenv("NO_COLOR", "1")
    plain = "\n".join(draw(big, force_terminal=True, color_system="standard"))
    assert "\x1b[32m" not in plain and "\x1b[31m" not in plain


def test_before_the_first_picture_it_says_what_it_waits_for() -> None:
    empty = view([], [], version=0, connected=False, problem="connecting to the cluster")
    text = "\n".join(draw(empty))
    assert "connecting to the cluster" in text and "NODES 0" in text
