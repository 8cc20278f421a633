"""The CLI's rendering of untrusted text, and of listings that arrive a page at a time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from corral import output
from corral.client import Event
from corral.text import visible
from schemas.api import JobInfo, NodeInfo, TaskInfo
from schemas.job import JobSpec
from schemas.messages import JobEvent, NodeEvent, Resources, TaskStatus

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("line\nbreak\r\ttab", "line\\nbreak\\r\\ttab"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("del\x7f csi\x9b nul\x00", "del\\x7f csi\\x9b nul\\x00"),
        ("rtl\u202eoverride\u2028sep", "rtl\\u202eoverride\\u2028sep"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("naïve café ✓ 日本", "naïve café ✓ 日本"),
    ],
)
def test_visible_escapes_what_could_drive_a_terminal(raw: str, shown: str) -> None:
    assert visible(raw) == shown
    visible(raw).encode("utf-8")  # printable: no lone surrogate is left


def test_visible_can_keep_newlines_and_returns_safe_text_unchanged() -> None:
    assert visible("a\nb\x1b", keep="\n") == "a\nb\\x1b"
    text = "already safe"
    assert visible(text) is text


def test_table_cells_are_escaped_before_the_columns_are_measured() -> None:
    text = output.table(["A", "B"], [["x\ny", "1"], ["z", "2"]])
    assert text.split("\n") == ["A     B", "x\\ny  1", "z     2"]


def test_stream_table_widens_at_page_boundaries_and_prints_a_header_alone() -> None:
    lines = list(output.stream_table(["ID", "N"], [[["a", "1"]], [["long-id", "2"]]]))
    assert lines == ["ID  N", "a   1", "long-id  2"]
    assert list(output.stream_table(["ID", "N"], [])) == ["ID  N"]
    assert list(output.stream_table(["ID", "N"], [[], []])) == ["ID  N"]


def node(node_id: str, labels: dict[str, str]) -> NodeInfo:
    resources = Resources(cpus=1, memory=1024**3)
    info = NodeInfo(node_id="n", state="ready", capacity=resources, allocated=resources,
                    last_seen=NOW)  # fmt: skip
    # model_copy does not validate: rendering must be safe whatever got through.
    return info.model_copy(update={"node_id": node_id, "labels": labels})


@pytest.mark.parametrize("count", [0, 1, 3])
def test_stream_json_is_exactly_the_json_of_the_whole_list(count: int) -> None:
    nodes = [node(f"n{i}", {"k": f"v\x1b{i}"}) for i in range(count)]
    streamed = "".join(output.stream_json(iter(nodes)))
    assert streamed == output.to_json(nodes)
    assert [n["labels"]["k"] for n in json.loads(streamed)] == [f"v\x1b{i}" for i in range(count)]


def test_node_rows_escape_ids_and_labels() -> None:
    [row] = [output.node_row(node("n1\x1b[A", {"zone": "a\nb"}))]
    table = output.table(output.NODE_HEADERS, [row])
    assert "n1\\x1b[A" in table and "zone=a\\nb" in table
    assert "\x1b" not in table and table.count("\n") == 1


def job(**fields: object) -> JobInfo:
    spec = JobSpec(name="web", image="img", replicas=4)
    info = JobInfo(job_id="web", state="running", spec=spec, submitted_at=NOW)
    return info.model_copy(update=fields)


def task(slot: int, reason: str = "") -> TaskInfo:
    info = TaskInfo(task_id=f"web-1a2b3c-{slot}-0", job_id="web", slot=slot, attempt=0,
                    state="running", node_id="n1", updated_at=NOW)  # fmt: skip
    return info.model_copy(update={"reason": reason})


def test_running_comes_from_task_counts_else_from_the_tasks() -> None:
    assert output.running_count(job(task_counts={"running": 3, "pending": 1})) == "3/4"
    assert output.running_count(job(tasks=[task(0), task(1)])) == "2/4"


def test_job_summary_escapes_and_says_how_many_tasks_were_left_out() -> None:
    info = job(reason="bad\x1b[31m", tasks=[task(0, reason="x\ny")], tasks_omitted=3)
    lines = output.job_summary(info).split("\n")
    assert lines[0] == "job web: running (bad\\x1b[31m)"
    assert lines[2].endswith("x\\ny")
    assert lines[3] == "(3 more tasks not shown: `corral ps web`)"
    assert output.exit_codes(info) == "slot 0: - (and 3 more tasks: `corral ps web`)"
    assert output.exit_codes(job(tasks_omitted=2)) == (
        "none shown (and 2 more tasks: `corral ps web`)"
    )


def test_event_lines_escape_the_routing_key_and_every_field() -> None:
    status = TaskStatus(task_id="t", job_id="j", node_id="n1", state="failed")
    status = status.model_copy(update={"reason": "a\rb"})
    line = output.event_line(Event("task.j.t\n.failed", status, NOW))
    assert line.endswith("  task.j.t\\n.failed  task t on n1: failed (a\\rb)")
    node_down = NodeEvent(node_id="n1", state="down").model_copy(update={"reason": "\x1b]0;x\x07"})
    down = Event("node.n1.down", node_down, NOW)
    assert output.event_summary(down) == "node n1: down (\\x1b]0;x\\x07)"
    assert "\\u001b" in output.event_json(down)


def test_table_aligns_columns_and_trims_the_last() -> None:
    text = output.table(["A", "LONGER"], [["xyz", "1"], ["", "22"]])
    assert text.split("\n") == ["A    LONGER", "xyz  1", "     22"]


def test_columns_are_measured_in_terminal_cells_not_code_points() -> None:
    # "镜像" takes 4 cells in 2 code points; "é" as e + a combining accent, 1 in 2.
    rows = [["镜像", "1"], ["cafe\u0301", "2"], ["abcd", "3"]]
    text = output.table(["NAME", "N"], rows)
    assert text.split("\n") == ["NAME  N", "镜像  1", "cafe\u0301  2", "abcd  3"]
    painted = output.table(["NAME", "N"], rows, paint={0: lambda cell: f"\x1b[31m{cell}\x1b[0m"})
    assert painted.split("\n")[1] == "\x1b[31m镜像\x1b[0m  1"  # the codes take no cell


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (59, "59s"), (60, "1m"), (7200, "2h"), (90000, "1d")]
)
def test_age(seconds: int, shown: str) -> None:
    assert output.age(NOW - timedelta(seconds=seconds), NOW) == shown


def test_event_lines() -> None:
    status = TaskStatus(task_id="j-0-0", job_id="j", node_id="n1", state="exited", exit_code=3)
    event = Event("task.j.j-0-0.exited", status, NOW)
    line = output.event_line(event)
    assert line.endswith("  task.j.j-0-0.exited  task j-0-0 on n1: exited exit 3")
    assert line[2] == ":" and line[5] == ":"
    failed = Event("job.j.failed", JobEvent(job_id="j", state="failed", reason="gave up"), NOW)
    assert output.event_summary(failed) == "job j: failed (gave up)"
    assert '"routing_key": "job.j.failed"' in output.event_json(failed)
