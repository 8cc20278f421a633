"""The dashboard's board: the change message from one view of the cluster to the next.

Views are fabricated here (`FakeView`, the shape of `corral.live.View`); the
other dashboard tests build theirs with the same helpers.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from corral.dashboard import rows
from corral.dashboard.board import NOT_LOOKED_AT, Board, Table
from corral.dashboard.hub import encode
from corral.streams import Event
from schemas.api import JobInfo, MasterInfo, NodeInfo, RolloutInfo, TaskInfo
from schemas.messages import JobEvent, NodeEvent, Resources, TaskStatus
from tests.unit.factories import GiB, job_spec

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class FakeView:
    """A view of the cluster as `corral.live.View` gives it."""

    version: int = 1
    changed_at: float = 1.0
    masters: tuple[MasterInfo, ...] = ()
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    jobs: Mapping[str, JobInfo] = field(default_factory=dict)
    tasks: Mapping[str, TaskInfo] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    connected: bool = True
    problem: str = ""

    @property
    def node_counts(self) -> Mapping[str, int]:
        return Counter(node.state for node in self.nodes.values())

    @property
    def job_counts(self) -> Mapping[str, int]:
        return Counter(job.state for job in self.jobs.values())

    @property
    def task_counts(self) -> Mapping[str, int]:
        return Counter(task.state for task in self.tasks.values())

    def next(self, **changes: Any) -> FakeView:
        """The next view: version and time one more, `changes` applied."""
        fields: dict[str, Any] = {"version": self.version + 1, "changed_at": self.changed_at + 1}
        return dataclasses.replace(self, **{**fields, **changes})


def node(node_id: str, state: str = "ready", **fields: Any) -> NodeInfo:
    return NodeInfo.model_validate(
        {
            "node_id": node_id,
            "state": state,
            "capacity": Resources(cpus=4, memory=8 * GiB),
            "allocated": Resources(cpus=1, memory=GiB),
            "last_seen": NOW,
            "subnet": "10.210.1.0/24",
            **fields,
        }
    )


def job(job_id: str, state: str = "running", **fields: Any) -> JobInfo:
    return JobInfo.model_validate(
        {
            "job_id": job_id,
            "state": state,
            "spec": job_spec(job_id, kind="service", replicas=2),
            "submitted_at": NOW,
            "task_counts": {"running": 2},
            "healthy": 2,
            **fields,
        }
    )


def task(task_id: str, job_id: str = "web", state: str = "running", **fields: Any) -> TaskInfo:
    return TaskInfo.model_validate(
        {
            "task_id": task_id,
            "job_id": job_id,
            "slot": 0,
            "attempt": 0,
            "state": state,
            "node_id": "w1" if state != "pending" else None,
            "updated_at": NOW,
            **fields,
        }
    )


def master(name: str = "m1", role: str = "active") -> MasterInfo:
    return MasterInfo(name=name, instance="abc123", role=role, epoch=4, lag=0, last_seen_ago=0.4)  # type: ignore[arg-type]


def event(payload: Any, key: str = "x") -> Event:
    return Event(key, payload, NOW)


def small_view() -> FakeView:
    """Two nodes, a service of two replicas, one on each node."""
    return FakeView(
        masters=(master(),),
        nodes={"w1": node("w1"), "w2": node("w2")},
        jobs={"web": job("web")},
        tasks={
            "web-1-0-0": task("web-1-0-0", node_id="w1", address="10.210.1.2"),
            "web-1-1-0": task("web-1-1-0", slot=1, node_id="w2"),
        },
    )


def ids(message: dict[str, Any], kind: str, part: str = "upsert") -> list[str]:
    return [row[0] if isinstance(row, list) else row for row in message.get(part, {}).get(kind, [])]


def test_the_first_view_upserts_everything_and_the_same_view_again_changes_nothing() -> None:
    board = Board()
    view = small_view()
    message = board.advance(view)
    assert message is not None
    assert message["type"] == "change" and message["version"] == 1
    assert ids(message, "nodes") == ["w1", "w2"]
    assert ids(message, "jobs") == ["web"]
    assert ids(message, "tasks") == ["web-1-0-0", "web-1-1-0"]
    assert message["masters"] == [["m1", "active", 4, 0, -1, 0.4, ""]]
    assert message["summary"]["tasks"] == {"running": 2}
    assert board.advance(view) is None
    assert board.advance(view.next()) is not None  # a new time: the status line moves


def test_only_what_changed_is_sent() -> None:
    board = Board()
    view = small_view()
    board.advance(view)
    tasks = dict(view.tasks)
    tasks["web-1-1-0"] = task("web-1-1-0", slot=1, node_id="w1", state="running")  # moved
    del tasks["web-1-0-0"]
    nodes = {**view.nodes, "w2": node("w2", "down", reason="no heartbeat for 3.1 s")}
    message = board.advance(view.next(tasks=tasks, nodes=nodes))
    assert message is not None
    assert ids(message, "tasks") == ["web-1-1-0"]
    assert ids(message, "tasks", "remove") == ["web-1-0-0"]
    assert message["upsert"]["nodes"] == [rows.node_row(nodes["w2"])]
    assert "jobs" not in message["upsert"] and "masters" not in message
    assert message["summary"]["nodes"] == {"ready": 1, "down": 1}


def test_a_new_object_equal_to_the_old_sends_nothing_and_rows_are_built_only_for_new_objects() -> (
    None
):
    built: list[str] = []

    def row(item: TaskInfo) -> list[Any]:
        built.append(item.task_id)
        return rows.task_row(item)

    table = Table(row)
    tasks = {f"t-{i}": task(f"t-{i}", slot=i) for i in range(2000)}
    assert len(table.update(tasks)[0]) == 2000
    built.clear()
    again = dict(tasks)
    again["t-7"] = task("t-7", slot=7)  # equal, but another object
    again["t-9"] = task("t-9", slot=9, state="exited", exit_code=0)
    upserts, removed = table.update(again)
    assert built == ["t-7", "t-9"]
    assert [row[0] for row in upserts] == ["t-9"] and removed == []


def test_pending_work_is_grouped_by_reason_most_common_first() -> None:
    board = Board()
    waiting = "no node has 2 CPUs free"
    tasks = {
        "a-0": task("a-0", "a", "pending", reason=waiting),
        "a-1": task("a-1", "a", "pending", slot=1, reason=waiting),
        "b-0": task("b-0", "b", "pending", reason=waiting),
        "c-0": task("c-0", "c", "pending"),
        "d-0": task("d-0", "d"),
    }
    message = board.advance(FakeView(tasks=tasks))
    assert message is not None
    assert message["pending"] == [[waiting, 3, ["a", "b"]], [NOT_LOOKED_AT, 1, ["c"]]]
    done = {key: task(key, value.job_id) for key, value in tasks.items()}
    message = board.advance(FakeView(version=2, tasks=done))
    assert message is not None and message["pending"] == []


def test_only_new_events_are_sent_and_the_board_keeps_the_newest() -> None:
    board = Board(keep_events=3)
    first = event(JobEvent(job_id="web", state="pending"), "job.web.pending")
    second = event(NodeEvent(node_id="w1", state="down", reason="no heartbeat"), "node.w1.down")
    message = board.advance(FakeView(events=(first, second)))
    assert message is not None
    assert [row[1:4] for row in message["events"]] == [
        ["job", "web", "pending"],
        ["node", "w1", "down"],
    ]
    status = TaskStatus(task_id="web-1-0-0", job_id="web", node_id="w2", state="exited")
    third = event(status.model_copy(update={"exit_code": 3}), "task.web.web-1-0-0.exited.w2")
    message = board.advance(FakeView(version=2, events=(second, third)))
    assert message is not None
    assert [row[1:] for row in message["events"]] == [
        ["task", "web-1-0-0", "exited", "w2", "exit code 3"]
    ]
    # The window scrolled past everything sent: every event in it is new.
    fresh = tuple(event(JobEvent(job_id=f"j{i}", state="running")) for i in range(4))
    message = board.advance(FakeView(version=3, events=fresh))
    assert message is not None and len(message["events"]) == 4
    assert [row[2] for row in board.snapshot()["events"]] == ["j1", "j2", "j3"]


def test_the_snapshot_is_the_sum_of_the_changes_and_is_encoded_once_per_change() -> None:
    board = Board()
    view = small_view()
    board.advance(view)
    rollout = RolloutInfo(state="updating", from_version=1, to_version=2, done=1, total=2)
    board.advance(view.next(jobs={"web": job("web", version=2, rollout=rollout)}))
    snapshot = board.snapshot()
    assert snapshot["type"] == "snapshot" and snapshot["version"] == 2
    assert snapshot["columns"] == rows.COLUMNS
    assert [row[0] for row in snapshot["tasks"]] == ["web-1-0-0", "web-1-1-0"]
    web = dict(zip(rows.COLUMNS["jobs"], snapshot["jobs"][0], strict=True))
    assert web["rollout"] == ["updating", 1, 2, 1, 2] and web["version"] == 2
    seq, text = board.encoded_snapshot(encode)
    assert seq == board.seq == 2 and json.loads(text) == snapshot
    assert board.encoded_snapshot(encode)[1] is text
    board.advance(view.next(version=3, connected=False, problem="broker gone"))
    seq, again = board.encoded_snapshot(encode)
    assert seq == 3 and json.loads(again)["problem"] == "broker gone"


def test_untrusted_text_is_sent_with_control_characters_escaped() -> None:
    hostile = "\x1b[31mred\u202e<script>alert(1)</script>"
    board = Board()
    message = board.advance(
        FakeView(
            nodes={"w1": node("w1", labels={"zone": "a"}, reason=hostile)},
            tasks={"t": task("t", reason=hostile)},
        )
    )
    assert message is not None
    text = encode(message)
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[31mred\\u202e<script>" in json.loads(text)["upsert"]["nodes"][0][-1]
    assert json.loads(text)["upsert"]["nodes"][0][-2] == "zone=a"


def test_rows_follow_the_columns() -> None:
    for kind, item, make in [
        ("nodes", node("w1"), rows.node_row),
        ("jobs", job("web"), rows.job_row),
        ("tasks", task("t"), rows.task_row),
        ("masters", master(), rows.master_row),
    ]:
        assert len(make(item)) == len(rows.COLUMNS[kind]), kind  # type: ignore[operator]
    retiring = rows.task_row(task("t", retiring=True, healthy=True, health="healthy"))
    named = dict(zip(rows.COLUMNS["tasks"], retiring, strict=True))
    assert named["state"] == "retiring" and named["health"] == "healthy"
