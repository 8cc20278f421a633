"""The listings' conventions (issue 11, item 4), against a scripted client (no broker):
`-o table|wide|json|yaml`, `--no-headers`, `ps --state/--node` and `jobs --state`,
`--watch` on jobs, ps and nodes, and colour only when it is wanted."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import pytest
import yaml
from typer.testing import CliRunner

from corral import cli, colour
from corral.brokers import BrokerNode
from corral.cli_views import JobStateName, TaskStateName
from corral.client import Event
from corral.cluster_status import status_json, status_yaml
from corral.errors import NoMaster
from schemas.api import ClusterStatus, JobInfo, MasterInfo, MastersInfo, NodeInfo, TaskInfo
from schemas.job import JobSpec
from schemas.messages import JobEvent, JobState, NodeEvent, Resources, TaskState, TaskStatus

NOW = datetime(2030, 1, 1, tzinfo=UTC)
Reported = Literal["running", "exited", "failed", "stopped"]  # a worker's task states
runner = CliRunner()


def task(
    job: str, slot: int, state: TaskState = "running", node: str = "n1", **more: Any
) -> TaskInfo:
    fields = {"task_id": f"{job}-1a2b3c-{slot}-0", "job_id": job, "slot": slot, "attempt": 0,
              "state": state, "node_id": node, "updated_at": NOW, **more}  # fmt: skip
    return TaskInfo.model_validate(fields)


def job(name: str, state: JobState = "running") -> JobInfo:
    spec = JobSpec(name=name, image="local/busybox:1", cpu=0.5, memory=128 * 1024**2, replicas=2)
    return JobInfo(job_id=name, state=state, spec=spec, submitted_at=NOW, owner="alice",
                   task_counts={"running": 2} if state == "running" else {})  # fmt: skip


def node(name: str, state: str = "ready", seen: datetime = NOW) -> NodeInfo:
    room = Resources(cpus=2, memory=1024**3)
    fields = {"node_id": name, "state": state, "capacity": room, "allocated": room,
              "last_seen": seen, "labels": {"zone": "a"}}  # fmt: skip
    return NodeInfo.model_validate(fields)


@dataclass
class Cluster:
    """What the scripted client answers; each `iter_tasks` / `iter_jobs` / `iter_nodes`
    call takes the next snapshot (the last one repeats). One per test."""

    tasks: list[list[list[TaskInfo]]] = field(default_factory=list)
    jobs: list[list[list[JobInfo]]] = field(default_factory=list)
    nodes: list[list[list[NodeInfo]]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    masters: MastersInfo = field(default_factory=MastersInfo)
    reads: dict[str, int] = field(default_factory=dict)
    fail_reads: set[int] = field(default_factory=set)

    def next(self, what: str, snapshots: list[list[list[Any]]]) -> Iterator[list[Any]]:
        count = self.reads.get(what, 0)
        self.reads[what] = count + 1
        if count in self.fail_reads:
            raise NoMaster("amqp://guest:guest@h:5672/")
        yield from snapshots[min(count, len(snapshots) - 1)] if snapshots else []


class Scripted:
    def __init__(self, cluster: Cluster, url: str | None = None, **_: Any) -> None:
        self.cluster = cluster

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def iter_tasks(self, job_id: str | None = None) -> Iterator[list[TaskInfo]]:
        return self.cluster.next("tasks", self.cluster.tasks)

    def iter_jobs(self) -> Iterator[list[JobInfo]]:
        return self.cluster.next("jobs", self.cluster.jobs)

    def iter_nodes(self) -> Iterator[list[NodeInfo]]:
        return self.cluster.next("nodes", self.cluster.nodes)

    def masters(self) -> MastersInfo:
        return self.cluster.masters

    def job(self, job_id: str) -> JobInfo:
        return next(j for page in self.cluster.jobs[0] for j in page if j.job_id == job_id)

    def events(self, pattern: str = "#") -> Iterator[Event]:
        assert pattern == "#"
        return iter(self.cluster.events)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    scripted = Cluster()
    monkeypatch.setattr(cli, "Client", functools.partial(Scripted, scripted))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return scripted


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(cli.app, list(args), prog_name="corral", env=env, color=True)


def lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


# -- -o wide, json, yaml; --no-headers --


def test_wide_adds_columns_before_the_last(cluster: Cluster) -> None:
    cluster.tasks = [[[task("web", 0, container_id="3c1f0e9d8a7b6c5d", started_at=NOW)]]]
    wide = invoke("ps", "-o", "wide")
    assert wide.exit_code == 0, wide.output
    head, row = lines(wide.stdout)
    assert head[:10] == ["TASK", "JOB", "NODE", "ADDRESS", "STATE", "HEALTH", "RESTARTS", "VER",
                         "EXIT", "UPDATED"]  # fmt: skip
    assert head[10:] == ["SLOT", "ATTEMPT", "CONTAINER", "STARTED", "REASON"]
    assert row[10:13] == ["0", "0", "3c1f0e9d8a7b"]
    cluster.jobs = [[[job("web")]]]
    jobs = lines(invoke("jobs", "-o", "wide").stdout)
    assert jobs[0] == ["JOB", "KIND", "STATE", "RUNNING", "IMAGE", "AGE", "VER", "CPU", "MEMORY",
                       "OWNER", "REASON"]  # fmt: skip
    assert jobs[1][6:] == ["1", "0.5", "128Mi", "alice", "-"]
    cluster.nodes = [[[node("n1")]]]
    nodes = lines(invoke("nodes", "-o", "wide").stdout)
    assert nodes[0][-3:] == ["SEEN", "REASON", "LABELS"]
    assert nodes[1][-1] == "zone=a"


def test_no_headers_drops_the_header_of_table_and_wide(cluster: Cluster) -> None:
    cluster.nodes = [[[node("n1")], [node("n2")]]]
    plain = invoke("nodes", "--no-headers")
    assert [row[0] for row in lines(plain.stdout)] == ["n1", "n2"]
    wide = invoke("nodes", "-o", "wide", "--no-headers")
    assert [row[0] for row in lines(wide.stdout)] == ["n1", "n2"]
    cluster.nodes = []
    assert invoke("nodes", "--no-headers").stdout == ""
    assert invoke("nodes").stdout.split() == ["NODE", "STATE", "CPU", "MEMORY", "TASKS",
                                              "SUBNET", "ADDRESS", "LABELS"]  # fmt: skip


@pytest.mark.parametrize("command", ["jobs", "ps", "nodes", "masters"])
def test_json_and_yaml_hold_the_same_data(cluster: Cluster, command: str) -> None:
    evil = job("b", "failed").model_copy(update={"reason": "b\x1b[2J"})  # unvalidated
    cluster.jobs = [[[job("a")], [evil]]]
    cluster.tasks = [[[task("a", 0)], [task("a", 1, reason="x\ny")]]]
    cluster.nodes = [[[node("n1")], [node("n2", "down")]]]
    cluster.masters = MastersInfo(masters=[MasterInfo(name="m1", instance="i1", role="active",
                                                      last_seen_ago=0.5)])  # fmt: skip
    as_json = invoke(command, "-o", "json", "--no-headers")
    as_yaml = invoke(command, "-o", "yaml")
    assert as_json.exit_code == 0 and as_yaml.exit_code == 0, as_json.output + as_yaml.output
    data = json.loads(as_json.stdout)
    assert isinstance(data, list) and data
    assert yaml.safe_load(as_yaml.stdout) == data
    assert "\x1b" not in as_yaml.stdout and "\x1b" not in as_json.stdout


def test_an_empty_listing_is_an_empty_array_or_list(cluster: Cluster) -> None:
    assert json.loads(invoke("ps", "-o", "json").stdout) == []
    assert yaml.safe_load(invoke("ps", "-o", "yaml").stdout) == []


def test_an_unknown_format_names_the_option_and_the_choices(cluster: Cluster) -> None:
    result = invoke("ps", "-o", "xml")
    assert result.exit_code == 2
    assert "'--output' / '-o'" in result.stderr
    assert all(choice in result.stderr for choice in ("table", "wide", "json", "yaml"))


# -- filters --


def test_the_state_choices_are_the_schemas_states() -> None:
    assert [s.value for s in TaskStateName] == list(get_args(TaskState))
    assert [s.value for s in JobStateName] == list(get_args(JobState))


def test_ps_filters_by_state_and_node_page_by_page(cluster: Cluster) -> None:
    cluster.tasks = [[
        [task("a", 0, "running", "n1"), task("a", 1, "pending", "n2")],
        [task("b", 0, "failed", "n1"), task("b", 1, "running", "n2")],
    ]]  # fmt: skip
    running = invoke("ps", "--state", "running")
    assert [row[0] for row in lines(running.stdout)[1:]] == ["a-1a2b3c-0-0", "b-1a2b3c-1-0"]
    several = invoke("ps", "--state", "running", "--state", "failed", "--node", "n1")
    assert [row[0] for row in lines(several.stdout)[1:]] == ["a-1a2b3c-0-0", "b-1a2b3c-0-0"]
    as_json = json.loads(invoke("ps", "--node", "n2", "-o", "json").stdout)
    assert [t["node_id"] for t in as_json] == ["n2", "n2"]
    none = invoke("ps", "--state", "lost")
    assert none.stdout.split()[0] == "TASK" and len(none.stdout.splitlines()) == 1


def test_a_bad_state_is_a_usage_error_naming_the_option_and_the_states(cluster: Cluster) -> None:
    result = invoke("ps", "--state", "sleeping")
    assert result.exit_code == 2
    assert "'--state'" in result.stderr and "'sleeping'" in result.stderr
    for state in get_args(TaskState):
        assert state in result.stderr
    assert invoke("jobs", "--state", "exited").exit_code == 2  # a task state, not a job state


def test_jobs_filters_by_state(cluster: Cluster) -> None:
    cluster.jobs = [[[job("a"), job("b", "failed")], [job("c", "complete")]]]
    result = invoke("jobs", "--state", "failed", "--state", "complete", "--no-headers")
    assert [row[0] for row in lines(result.stdout)] == ["b", "c"]


# -- --watch --


def status(t: TaskInfo, state: Reported) -> Event:
    payload = TaskStatus(task_id=t.task_id, job_id=t.job_id, node_id="n1", state=state)
    return Event(f"task.{t.job_id}.{t.task_id}.{state}.n1", payload, NOW)


def test_ps_watch_prints_the_listing_then_each_changed_row(cluster: Cluster) -> None:
    a0, a1 = task("a", 0, "pending"), task("a", 1, "running")
    b0 = task("b", 0, "pending", node="n2")
    cluster.tasks = [[[a0, a1]], [[a0.model_copy(update={"state": "running"}), a1], [b0]]]
    cluster.events = [status(a0, "running")]
    result = invoke("ps", "--watch")
    assert result.exit_code == 0, result.output
    out = lines(result.stdout)
    assert out[0][0] == "TASK"
    assert [(row[0], row[4]) for row in out[1:]] == [
        ("a-1a2b3c-0-0", "pending"),
        ("a-1a2b3c-1-0", "running"),
        ("a-1a2b3c-0-0", "running"),  # changed
        ("b-1a2b3c-0-0", "pending"),  # new
    ]
    assert cluster.reads["tasks"] == 2  # one read on the event (the burst), none more


def test_watch_ignores_events_of_other_listings_and_other_jobs(cluster: Cluster) -> None:
    cluster.nodes = [[[node("n1")]], [[node("n1", "down")]]]
    cluster.events = [Event("job.x.failed", JobEvent(job_id="x", state="failed"), NOW)]
    result = invoke("nodes", "-w")
    assert result.exit_code == 0 and cluster.reads["nodes"] == 1
    cluster.tasks = [[[task("a", 0)]], [[task("a", 0, "exited")]]]
    cluster.events = [status(task("b", 0), "exited")]
    assert invoke("ps", "a", "-w").exit_code == 0
    assert cluster.reads["tasks"] == 1


def test_watch_as_json_prints_one_object_per_line(cluster: Cluster) -> None:
    cluster.jobs = [[[job("a", "pending")]], [[job("a", "running")]]]
    cluster.events = [Event("job.a.running", JobEvent(job_id="a", state="running"), NOW)]
    result = invoke("jobs", "--watch", "-o", "json")
    assert [json.loads(line)["state"] for line in result.stdout.splitlines()] == [
        "pending",
        "running",
    ]
    cluster.reads.clear()
    yaml_result = invoke("jobs", "--watch", "-o", "yaml")
    docs = list(yaml.safe_load_all(yaml_result.stdout))
    assert [doc["state"] for doc in docs] == ["pending", "running"]


def test_watch_shows_a_row_leaving_the_filter_once(cluster: Cluster) -> None:
    a0 = task("a", 0, "running")
    cluster.tasks = [[[a0]], [[a0.model_copy(update={"state": "exited", "exit_code": 0})]]]
    cluster.events = [status(a0, "exited")]
    result = invoke("ps", "--state", "running", "-w", "--no-headers")
    assert [row[4] for row in lines(result.stdout)] == ["running", "exited"]


def test_a_failed_reread_is_a_warning_and_the_watch_goes_on(cluster: Cluster) -> None:
    cluster.nodes = [[[node("n1")]]]
    cluster.fail_reads = {1}
    cluster.events = [Event("node.n1.down", NodeEvent(node_id="n1", state="down"), NOW)]
    result = invoke("nodes", "-w")
    assert result.exit_code == 0, result.output
    assert "warning: could not read the listing again (no master is running" in result.stderr


# -- colour --


def test_colour_is_off_when_not_on_a_terminal_and_on_when_asked(cluster: Cluster) -> None:
    cluster.tasks = [[[task("a", 0, "running"), task("a", 1, "failed", reason="\x1b[32mfake")]]]
    plain = invoke("ps")
    assert "\x1b" not in plain.stdout
    painted = invoke("--color", "always", "ps")
    assert f"{colour.GREEN}running{colour.RESET}" in painted.stdout
    assert f"{colour.RED}failed{colour.RESET}" in painted.stdout
    assert "\\x1b[32mfake" in painted.stdout  # the broker's escape stays escaped
    # The columns line up on the visible text: the codes take no width.
    strip = [line.replace(colour.GREEN, "").replace(colour.RED, "").replace(colour.RESET, "")
             for line in painted.stdout.splitlines()]  # fmt: skip
    assert strip == plain.stdout.splitlines()
    assert "\x1b" not in invoke("--color", "never", "ps").stdout


def test_no_color_turns_auto_colour_off_even_on_a_terminal(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.nodes = [[[node("n1")]]]
    monkeypatch.setattr(colour, "wanted", functools.partial(_on_a_terminal, colour.wanted))
    assert colour.GREEN in invoke("nodes").stdout
    assert "\x1b" not in invoke("nodes", env={"NO_COLOR": "1"}).stdout
    assert colour.GREEN in invoke("--color", "always", "nodes", env={"NO_COLOR": "1"}).stdout


def _on_a_terminal(wanted: Any, mode: colour.ColourMode, stream: Any, *args: Any) -> bool:
    """colour.wanted as if stdout were a terminal."""

    class Terminal:
        def isatty(self) -> bool:
            return True

    return bool(wanted(mode, Terminal(), *args))


# -- the other outputs --


def test_masters_and_inspect_speak_yaml(cluster: Cluster) -> None:
    cluster.masters = MastersInfo(
        masters=[MasterInfo(name="m2", instance="i2", role="standby", last_seen_ago=1.0),
                 MasterInfo(name="m1", instance="i1", role="active", last_seen_ago=0.2)]
    )  # fmt: skip
    table = lines(invoke("masters", "--no-headers").stdout)
    assert [row[:2] for row in table] == [["m1", "active"], ["m2", "standby"]]
    assert [m["name"] for m in yaml.safe_load(invoke("masters", "-o", "yaml").stdout)] == [
        "m1",
        "m2",
    ]
    cluster.jobs = [[[job("web")]]]
    described = invoke("inspect", "web", "-o", "yaml")
    assert described.exit_code == 0, described.output
    assert yaml.safe_load(described.stdout) == json.loads(
        invoke("inspect", "web", "-o", "json").stdout
    )


def test_status_speaks_yaml_with_the_same_data_as_json() -> None:
    info = ClusterStatus.model_validate({"workers": {"states": {"ready": 2}}, "pending": {},
                                         "jobs": {"running": 1}})  # fmt: skip
    nodes = [BrokerNode("amqp://u:pw@h:5672/", "h:5672", True), BrokerNode("x", "g:5672")]
    for status in (info, None):
        assert yaml.safe_load(status_yaml(status, nodes)) == json.loads(status_json(status, nodes))
    assert "pw" not in status_yaml(info, nodes)
