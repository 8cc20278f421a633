"""Workloads over their lifetime, seen from the CLI and SDK: the current attempt of each
slot (`corral ps`, prefixes), `corral logs JOB` and `--previous`, and `run --wait`'s
exit code. Against fakes of the client and of the master."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from corral import cli, output
from corral.errors import ApiFailure, CorralError
from corral.job import Job, exit_code
from corral.lookup import current_attempts, slot_attempts
from schemas.api import JobInfo, TaskInfo
from schemas.job import JobSpec
from schemas.messages import JobState, TaskState
from tests.unit.test_cli import NOW, FakeClient, Recorder, invoke, job_info
from tests.unit.test_client_pure import FakeMaster, client_with, job_named, task_of


def attempt(
    job: str,
    slot: int,
    number: int,
    state: TaskState = "exited",
    code: int | None = None,
    node: str | None = "n1",
) -> TaskInfo:
    return TaskInfo(
        task_id=f"{job}-1a2b3c-{slot}-{number}", job_id=job, slot=slot, attempt=number,
        state=state, exit_code=code, node_id=node, updated_at=NOW,
    )  # fmt: skip


def ids(tasks: list[TaskInfo]) -> list[str]:
    return [task.task_id for task in tasks]


# -- the current attempt of each slot --


def test_current_attempts_keep_the_newest_of_each_slot_across_page_boundaries() -> None:
    pages = [
        [attempt("a", 0, 0), attempt("a", 0, 1)],
        [attempt("a", 0, 2), attempt("a", 1, 0)],
        [attempt("b", 1, 0), attempt("b", 1, 1)],
        [],
    ]
    filtered = list(current_attempts(pages))
    assert [ids(page) for page in filtered] == [
        [],
        ["a-1a2b3c-0-2"],
        ["a-1a2b3c-1-0"],
        [],
        ["b-1a2b3c-1-1"],
    ]
    assert list(current_attempts([])) == []


def test_slot_attempts_gives_the_newest_or_the_one_before_by_slot() -> None:
    tasks = [attempt("a", 1, 0), attempt("a", 0, 0), attempt("a", 0, 2), attempt("a", 0, 1)]
    newest = slot_attempts(tasks)
    assert list(newest) == [0, 1]
    assert [task.task_id for task in newest.values() if task] == ["a-1a2b3c-0-2", "a-1a2b3c-1-0"]
    before = slot_attempts(tasks, previous=True)
    assert before[0] is not None and before[0].attempt == 1
    assert before[1] is None


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    seen = Recorder()
    monkeypatch.setattr(cli, "Client", functools.partial(FakeClient, seen))
    return seen


def test_ps_shows_the_current_attempts_and_all_of_them_with_a(recorder: Recorder) -> None:
    recorder.task_pages = [
        [attempt("web", 0, 0, code=1), attempt("web", 0, 1, code=1)],
        [attempt("web", 0, 2, "running"), attempt("web", 1, 0, "running")],
    ]
    table = invoke("ps", "web")
    assert table.exit_code == 0, table.output
    rows = [line.split()[0] for line in table.stdout.splitlines()[1:]]
    assert rows == ["web-1a2b3c-0-2", "web-1a2b3c-1-0"]
    for flag in ("-a", "--all"):
        every = invoke("ps", flag, "web")
        assert len(every.stdout.splitlines()) == 5, every.output
    as_json = invoke("ps", "-o", "json")
    assert '"web-1a2b3c-0-1"' not in as_json.stdout and '"web-1a2b3c-0-2"' in as_json.stdout


def test_ps_of_nothing_still_prints_the_header(recorder: Recorder) -> None:
    result = invoke("ps")
    assert result.stdout.splitlines() == [
        "TASK  JOB  NODE  ADDRESS  STATE  HEALTH  RESTARTS  VER  EXIT  UPDATED  REASON"
    ]


def test_the_sdk_lists_current_attempts_too(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = [attempt("web", 0, n) for n in range(3)] + [attempt("web", 1, 0)]
    client = client_with(monkeypatch, FakeMaster([job_named("web")], tasks), page_size=2)
    assert ids(client.tasks("web", current=True)) == ["web-1a2b3c-0-2", "web-1a2b3c-1-0"]
    assert len(client.tasks("web")) == 4


# -- prefixes and --previous in the SDK --


def test_a_prefix_of_one_slots_attempts_means_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    hello = [attempt("hello", 0, n) for n in range(3)]
    web = [attempt("web", 0, 0), attempt("web", 0, 1), attempt("web", 1, 0)]
    master = FakeMaster([job_named("hello"), job_named("web")], [*hello, *web])
    client = client_with(monkeypatch, master, page_size=2)
    assert client.find_task("hello").task_id == "hello-1a2b3c-0-2"
    assert client.find_task("hel").task_id == "hello-1a2b3c-0-2"
    assert client.find_task("web-1a2b3c-0").task_id == "web-1a2b3c-0-1"
    assert client.find_task("web-1a2b3c-0-0").task_id == "web-1a2b3c-0-0"
    with pytest.raises(CorralError, match=r"'web' matches several tasks \(web-1a2b3c-0-1, web-1a"):
        client.find_task("web")


def test_attempt_before(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = [attempt("web", 0, 0), attempt("web", 0, 1), attempt("web", 1, 0)]
    client = client_with(monkeypatch, FakeMaster([job_named("web")], tasks))
    assert client.attempt_before(tasks[1]).task_id == "web-1a2b3c-0-0"
    with pytest.raises(CorralError, match="slot 1 of job web has no attempt before web-1a2b3c-1-0"):
        client.attempt_before(tasks[2])


def test_sdk_logs_previous_reads_the_attempt_before_the_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks = [attempt("hello", 0, 0), attempt("hello", 0, 1)]
    client = client_with(monkeypatch, FakeMaster([job_named("hello")], tasks))
    read: list[str] = []

    def task_logs(task: TaskInfo, **_: Any) -> Iterator[str]:
        read.append(task.task_id)
        return iter(["x\n"])

    monkeypatch.setattr(client, "task_logs", task_logs)
    assert list(client.logs("hello")) == ["x\n"]
    assert list(client.logs("hello", previous=True)) == ["x\n"]
    assert read == ["hello-1a2b3c-0-1", "hello-1a2b3c-0-0"]


# -- corral logs --


def test_line_prefix_marks_every_line_whatever_the_chunks() -> None:
    prefix = output.LinePrefix("[2] ")
    text = "".join(prefix.feed(chunk) for chunk in ["a\nb", "c\n", "", "\n", "d"]) + prefix.end()
    assert text == "[2] a\n[2] bc\n[2] \n[2] d\n"
    assert prefix.end() == ""
    empty = output.LinePrefix("[0] ")
    assert empty.feed("") + empty.end() == ""


@dataclass
class LogsSeen:
    """What the fake logs client holds and was asked; one per test."""

    jobs: dict[str, list[TaskInfo]] = field(default_factory=dict)
    output: dict[str, list[str]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    read: list[tuple[str, bool, int | None]] = field(default_factory=list)
    by_prefix: list[tuple[str, bool]] = field(default_factory=list)


class LogsClient:
    def __init__(self, seen: LogsSeen, url: str | None = None, **_: Any) -> None:
        self.seen = seen

    def __enter__(self) -> LogsClient:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def tasks(self, job_id: str | None = None) -> list[TaskInfo]:
        if job_id not in self.seen.jobs:
            raise ApiFailure("not_found", f"no job named {job_id!r}", "job_id")
        return self.seen.jobs[job_id]

    def task_logs(self, task: TaskInfo, *, follow: bool, tail: int | None) -> Iterator[str]:
        self.seen.read.append((task.task_id, follow, tail))
        if task.task_id in self.seen.broken:
            raise CorralError(self.seen.broken[task.task_id])
        return iter(self.seen.output.get(task.task_id, []))

    def logs(
        self, task_id: str, *, follow: bool, tail: int | None, previous: bool
    ) -> Iterator[str]:
        self.seen.by_prefix.append((task_id, previous))
        return iter(["raw\n"])


@pytest.fixture
def logs_seen(monkeypatch: pytest.MonkeyPatch) -> LogsSeen:
    seen = LogsSeen()
    monkeypatch.setattr(cli, "Client", functools.partial(LogsClient, seen))
    return seen


def three_slots(seen: LogsSeen) -> None:
    seen.jobs["web"] = [
        attempt("web", 0, 0), attempt("web", 0, 1), attempt("web", 1, 0),
        attempt("web", 2, 0), attempt("web", 2, 1),
    ]  # fmt: skip
    seen.output = {
        "web-1a2b3c-0-0": ["zero before\n"],
        "web-1a2b3c-0-1": ["zero\nand more"],
        "web-1a2b3c-1-0": ["one\n"],
        "web-1a2b3c-2-0": ["two before\n"],
        "web-1a2b3c-2-1": ["tw", "o\n"],
    }


def test_logs_of_a_job_shows_each_slots_newest_attempt_prefixed(logs_seen: LogsSeen) -> None:
    three_slots(logs_seen)
    result = invoke("logs", "--tail", "5", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout == "[0] zero\n[0] and more\n[1] one\n[2] two\n"
    assert logs_seen.read == [
        ("web-1a2b3c-0-1", False, 5),
        ("web-1a2b3c-1-0", False, 5),
        ("web-1a2b3c-2-1", False, 5),
    ]


def test_logs_previous_of_a_job_skips_slots_without_one(logs_seen: LogsSeen) -> None:
    three_slots(logs_seen)
    result = invoke("logs", "--previous", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout == "[0] zero before\n[2] two before\n"
    assert "warning: no attempt ran before the newest in slot(s) 1 of job web" in result.stderr
    logs_seen.jobs["once"] = [attempt("once", 0, 0)]
    none = invoke("logs", "-p", "once")
    assert none.exit_code == 1
    assert "error: no slot of job once has an attempt that ran before its newest" in none.stderr


def test_logs_of_a_job_skip_attempts_that_never_ran(logs_seen: LogsSeen) -> None:
    # Slot 0 crash-loops (its newest attempt waits to restart); slot 1 found no room.
    logs_seen.jobs["loop"] = [
        attempt("loop", 0, 0), attempt("loop", 0, 1), attempt("loop", 0, 2, "pending", node=None),
        attempt("loop", 1, 0, "pending", node=None),
    ]  # fmt: skip
    logs_seen.output = {"loop-1a2b3c-0-0": ["first\n"], "loop-1a2b3c-0-1": ["second\n"]}
    result = invoke("logs", "loop")
    assert result.exit_code == 0, result.output
    assert result.stdout == "[0] second\n"
    assert "warning: slot(s) 1 of job loop never ran: no logs" in result.stderr
    assert invoke("logs", "--previous", "loop").stdout == "[0] first\n"
    logs_seen.jobs["stuck"] = [attempt("stuck", 0, 0, "pending", node=None)]
    stuck = invoke("logs", "stuck")
    assert stuck.exit_code == 1
    assert "error: no slot of job stuck has run yet (`corral ps -a stuck` says why)" in stuck.stderr


def test_logs_follow_of_a_job_of_several_slots_says_to_pick_a_task(logs_seen: LogsSeen) -> None:
    three_slots(logs_seen)
    result = invoke("logs", "-f", "web")
    assert result.exit_code == 2
    assert "--follow streams one task, and job web has 3 slots: pick a task" in result.stderr
    assert "`corral logs -f web-1a2b3c-0-1`" in result.stderr
    assert logs_seen.read == []


def test_logs_follow_of_a_job_of_one_slot_streams_it(logs_seen: LogsSeen) -> None:
    logs_seen.jobs["hello"] = [attempt("hello", 0, 0), attempt("hello", 0, 1, "running")]
    logs_seen.output["hello-1a2b3c-0-1"] = ["hi\n"]
    result = invoke("logs", "-f", "hello")
    assert result.exit_code == 0, result.output
    assert result.stdout == "[0] hi\n"
    assert logs_seen.read == [("hello-1a2b3c-0-1", True, None)]


def test_a_slot_whose_logs_cannot_be_read_is_a_warning_then_exit_1(logs_seen: LogsSeen) -> None:
    three_slots(logs_seen)
    logs_seen.broken["web-1a2b3c-0-1"] = "worker n1: no container on this node"
    result = invoke("logs", "web")
    assert result.exit_code == 1
    assert result.stdout == "[1] one\n[2] two\n"
    assert "warning: slot 0 (web-1a2b3c-0-1): worker n1: no container" in result.stderr
    assert "error: could not read the logs of slot(s) 0 of job web" in result.stderr


def test_logs_of_something_that_is_no_job_asks_for_a_task(logs_seen: LogsSeen) -> None:
    for target in ("hello-1a2b3c-0-0", "Not_A_Job"):
        result = invoke("logs", "--previous", target)
        assert result.exit_code == 0, result.output
        assert result.stdout == "raw\n"
    assert logs_seen.by_prefix == [("hello-1a2b3c-0-0", True), ("Not_A_Job", True)]


# -- run --wait: the container's exit code --


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ({0: 0}, 0),
        ({0: 3}, 3),
        ({0: 0, 1: 2, 2: 5}, 2),
        ({0: None, 1: 4}, 4),
        ({0: 0, 1: None}, None),
        ({}, None),
    ],
)
def test_exit_code_is_the_first_non_zero_of_the_slots(
    codes: dict[int, int | None], expected: int | None
) -> None:
    assert exit_code(codes) == expected


@dataclass
class CodedJob:
    """A job whose wait ends in `state` with these exit codes by slot."""

    id: str
    spec: JobSpec
    state: JobState
    codes: dict[int, int | None]
    reason: str = ""

    def wait(self, timeout: float | None = None) -> JobInfo:
        tasks = [
            attempt(self.id, slot, 0, "exited" if code is not None else "pending", code, None)
            for slot, code in self.codes.items()
        ]
        info = JobInfo(job_id=self.id, state=self.state, spec=self.spec, submitted_at=NOW,
                       tasks=tasks)  # fmt: skip
        return info.model_copy(update={"reason": self.reason})

    def exit_codes(self, info: JobInfo) -> dict[int, int | None]:
        return info.exit_codes


def run_waiting(
    monkeypatch: pytest.MonkeyPatch,
    state: JobState,
    codes: dict[int, int | None],
    *args: str,
    reason: str = "",
) -> Any:
    class Submitting:
        def __init__(self, *_: Any, **__: Any) -> None:
            pass

        def __enter__(self) -> Submitting:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def submit(self, spec: JobSpec) -> Any:
            job = CodedJob(spec.name, spec, state, codes, reason)
            job.last = job_info(spec)  # type: ignore[attr-defined]
            return job

    monkeypatch.setattr(cli, "Client", Submitting)
    return invoke("run", "--wait", "--name", "x", *args, "img")


@pytest.mark.parametrize(
    ("state", "codes", "status"),
    [
        ("complete", {0: 0}, 0),
        ("failed", {0: 3}, 3),
        ("failed", {0: 137}, 137),
        ("failed", {0: 0, 1: 2, 2: 0}, 2),
        ("failed", {0: None}, 1),  # never started: no exit code
        ("failed", {0: 300}, 1),  # not an exit status a process can have
        ("failed", {0: -1}, 1),
        ("cancelled", {0: 143}, 1),
    ],
)
def test_run_wait_exits_with_the_containers_exit_code(
    monkeypatch: pytest.MonkeyPatch, state: JobState, codes: dict[int, int | None], status: int
) -> None:
    result = run_waiting(monkeypatch, state, codes, "--replicas", str(len(codes)), reason="why")
    assert result.exit_code == status, result.output
    if state != "complete":
        assert f"error: job x {state}: why" in result.stderr


def test_run_wait_of_a_service_keeps_exiting_0_or_1(monkeypatch: pytest.MonkeyPatch) -> None:
    running = run_waiting(monkeypatch, "running", {0: None}, "--kind", "service")
    assert running.exit_code == 0, running.output
    failed = run_waiting(monkeypatch, "failed", {0: 3}, "--kind", "service", reason="crash")
    assert failed.exit_code == 1
    assert "error: job x failed: crash" in failed.stderr


def test_job_exit_codes_list_current_attempts_when_the_info_left_some_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks = [
        attempt("big", 0, 0, code=0),
        attempt("big", 1, 0, code=1),
        attempt("big", 1, 1, code=0),
    ]
    master = FakeMaster([job_named("big")], tasks)
    client = client_with(monkeypatch, master)
    spec = JobSpec(name="big", image="img", replicas=2)
    info = JobInfo(job_id="big", state="complete", spec=spec, submitted_at=NOW,
                   tasks=tasks[:1], tasks_omitted=2)  # fmt: skip
    assert Job(client, "big").exit_codes(info) == {0: 0, 1: 0}
    assert Job(client, "big").exit_codes(info.model_copy(update={"tasks_omitted": 0})) == {0: 0}
    assert task_of("big", 0).slot == 0  # the shared factory still builds these ids
