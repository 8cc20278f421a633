"""The `corral` CLI's parsing and error handling, with the SDK client replaced by a recorder."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from corral import cli
from corral.client import Event
from corral.errors import ApiFailure, CorralError, NoCluster, NoMaster
from schemas.api import JobInfo, NodeInfo, TaskInfo
from schemas.job import JobSpec
from schemas.messages import JobEvent, JobState, Resources

NOW = datetime(2030, 1, 1, tzinfo=UTC)
COMMANDS = ["run", "submit", "jobs", "ps", "nodes", "cancel", "scale", "logs", "watch"]
COMMANDS += ["master", "worker"]


def job_info(spec: JobSpec, state: JobState = "pending", reason: str = "") -> JobInfo:
    task = TaskInfo(
        task_id=f"{spec.name}-0",
        job_id=spec.name,
        slot=0,
        attempt=0,
        state="exited" if state in ("complete", "failed") else "pending",
        exit_code=3 if state == "failed" else None,
        updated_at=NOW,
    )
    info = JobInfo(job_id=spec.name, state=state, spec=spec, submitted_at=NOW, tasks=[task])
    return info.model_copy(update={"reason": reason})  # unvalidated: any text a master may send


@dataclass
class FakeJob:
    id: str
    last: JobInfo
    final_state: JobState

    final_reason: str = "slot 0 failed"

    def wait(self, timeout: float | None = None) -> JobInfo:
        return job_info(self.last.spec, self.final_state, reason=self.final_reason)

    def exit_codes(self, info: JobInfo) -> dict[int, int | None]:
        return info.exit_codes


@dataclass
class Recorder:
    """What the fake client saw; one per test (no class-level state)."""

    specs: list[JobSpec] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    final_state: JobState = "complete"
    final_reason: str = "slot 0 failed"
    error: CorralError | None = None
    master_error: CorralError | None = None
    job_pages: list[list[JobInfo]] = field(default_factory=list)
    task_pages: list[list[TaskInfo]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class FakeClient:
    """Stands in for corral.Client; what it is asked and answers live in `seen`."""

    def __init__(self, seen: Recorder, url: str | None = None, **_: Any) -> None:
        self.seen = seen
        seen.urls.append(url or "")

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def submit(self, spec: JobSpec) -> FakeJob:
        self.seen.specs.append(spec)
        return FakeJob(spec.name, job_info(spec), self.seen.final_state, self.seen.final_reason)

    def iter_nodes(self) -> Iterator[list[NodeInfo]]:
        if self.seen.error is not None:
            raise self.seen.error
        resources = Resources(cpus=2, memory=2 * 1024**3)
        yield [NodeInfo(node_id="n1", state="ready", capacity=resources,
                        allocated=resources, last_seen=NOW)]  # fmt: skip

    def iter_jobs(self) -> Iterator[list[JobInfo]]:
        yield from self.seen.job_pages

    def iter_tasks(self, job_id: str | None = None) -> Iterator[list[TaskInfo]]:
        yield from self.seen.task_pages

    def check_master(self) -> None:
        if self.seen.master_error is not None:
            raise self.seen.master_error

    def events(self, pattern: str = "#") -> Iterator[Event]:
        yield from self.seen.events


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    seen = Recorder()
    monkeypatch.setattr(cli, "Client", functools.partial(FakeClient, seen))
    yield seen


runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args), prog_name="corral")


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_command_has_help(command: str) -> None:
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: corral" in result.output


def test_run_takes_everything_after_the_image_as_the_command(recorder: Recorder) -> None:
    result = invoke("run", "--name", "x", "local/busybox", "sh", "-c", "exit 3")
    assert result.exit_code == 0, result.output
    (spec,) = recorder.specs
    assert spec.name == "x"
    assert spec.image == "local/busybox"
    assert spec.command == ["sh", "-c", "exit 3"]


def test_run_passes_option_lookalikes_after_the_image_to_the_command(recorder: Recorder) -> None:
    result = invoke("run", "img", "ls", "-la", "--help", "--name", "y")
    assert result.exit_code == 0, result.output
    (spec,) = recorder.specs
    assert spec.command == ["ls", "-la", "--help", "--name", "y"]
    assert re.fullmatch(r"img-[0-9a-f]{4}", spec.name)


def test_run_parses_env_ports_memory_and_the_rest(recorder: Recorder) -> None:
    result = invoke(
        "run", "--env", "A=1", "-e", "B=x=y", "--port", "8080:80", "--memory", "128m",
        "--cpu", "0.5", "--replicas", "3", "--kind", "service", "--label", "team=web",
        "--constraint", "disk=ssd", "--restart", "never", "--max-retries", "5",
        "--amqp", "amqp://u:p@broker:5672/", "registry:5000/team/web_app:1.2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (spec,) = recorder.specs
    assert spec.env == {"A": "1", "B": "x=y"}
    assert (spec.ports[0].host, spec.ports[0].container) == (8080, 80)
    assert spec.memory == 128 * 1024**2
    assert (spec.cpu, spec.replicas, spec.kind) == (0.5, 3, "service")
    assert spec.labels == {"team": "web"}
    assert spec.constraints == ["disk=ssd"]
    assert (spec.restart.condition, spec.restart.max_retries) == ("never", 5)
    assert spec.command is None
    assert re.fullmatch(r"web-app-[0-9a-f]{4}", spec.name)
    assert recorder.urls == ["amqp://u:p@broker:5672/"]


def test_run_prints_the_job_and_its_tasks(recorder: Recorder) -> None:
    result = invoke("run", "--name", "hello", "img")
    assert result.exit_code == 0, result.output
    assert "job hello: pending" in result.stdout
    assert "hello-0" in result.stdout


def test_an_invalid_cpu_names_the_field_and_submits_nothing(recorder: Recorder) -> None:
    result = invoke("run", "--cpu", "-1", "img")
    assert result.exit_code != 0
    assert "cpu" in result.stderr
    assert result.stderr.startswith("error: ")
    assert recorder.specs == []


def test_a_bad_key_value_is_a_usage_error_naming_the_option(recorder: Recorder) -> None:
    result = invoke("run", "--env", "NOVALUE", "img")
    assert result.exit_code == 2
    assert "--env" in result.stderr
    assert recorder.specs == []


def test_an_unknown_option_before_the_image_is_a_usage_error(recorder: Recorder) -> None:
    result = invoke("run", "--bogus", "img")
    assert result.exit_code == 2
    assert recorder.specs == []


def test_run_wait_exits_with_the_exit_code_when_a_batch_job_fails(recorder: Recorder) -> None:
    recorder.final_state = "failed"
    result = invoke("run", "--wait", "--name", "boom", "img", "false")
    assert result.exit_code == 3
    assert "job boom: failed" in result.stdout
    assert "exit codes: slot 0: 3" in result.stdout
    assert "error: job boom failed: slot 0 failed" in result.stderr


def test_run_wait_exits_0_when_the_job_completes(recorder: Recorder) -> None:
    result = invoke("run", "--wait", "--timeout", "5", "--name", "ok", "img", "true")
    assert result.exit_code == 0, result.output
    assert "job ok: complete" in result.stdout


def test_submit_of_a_bad_file_names_the_file_and_the_field(
    recorder: Recorder, tmp_path: Path
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: web\nimage: local/busybox\ncpu: lots\n")
    result = invoke("submit", str(path))
    assert result.exit_code == 1
    assert str(path) in result.stderr
    assert "cpu" in result.stderr
    assert "Traceback" not in result.output
    assert recorder.specs == []


def test_submit_reads_yaml(recorder: Recorder, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: web\nimage: local/busybox\ncommand: [sleep, '5']\n")
    result = invoke("submit", str(path))
    assert result.exit_code == 0, result.output
    assert recorder.specs[0].command == ["sleep", "5"]


def test_sdk_errors_print_one_line_and_exit_1(recorder: Recorder) -> None:
    recorder.error = NoMaster("amqp://guest:secret@h:5672/", 2)
    result = invoke("nodes")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no master answered on corral.api within 2 s")
    assert "secret" not in result.stderr
    assert "Traceback" not in result.output


def test_nodes_table_and_json(recorder: Recorder) -> None:
    table = invoke("nodes")
    assert table.exit_code == 0, table.output
    assert table.stdout.split("\n")[1].split() == [
        "n1",
        "ready",
        "2/2",
        "2Gi/2Gi",
        "0",
        "-",
        "-",
        "-",
    ]
    as_json = invoke("nodes", "--output", "json")
    assert '"node_id": "n1"' in as_json.stdout


def test_worker_rejects_a_bad_memory_size() -> None:
    result = invoke("worker", "--memory", "lots")
    assert result.exit_code == 2
    assert "--memory" in result.stderr


@pytest.mark.parametrize(
    ("image", "base"),
    [("local/busybox", "busybox"), ("a/b/c@sha256:00", "c"), ("___", "job"), ("X.Y:1", "x-y")],
)
def test_default_name(image: str, base: str) -> None:
    name = cli.default_name(image)
    assert re.fullmatch(rf"{base}-[0-9a-f]{{4}}", name)
    JobSpec(name=name, image="local/busybox")  # a valid job name


@pytest.mark.parametrize("command", ["jobs", "ps", "nodes", "watch", "master", "worker"])
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("localhost:5672", "it does not start with amqp:// or amqps://"),
        ("127.0.0.1", "it does not start with amqp:// or amqps://"),
        ("amqp://u:hunter22@h:notaport/", "the port 'notaport' is not a number"),
    ],
)
def test_a_malformed_amqp_url_is_a_usage_error_without_a_traceback(
    recorder: Recorder, command: str, url: str, problem: str
) -> None:
    result = invoke(command, "--amqp", url)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: invalid --amqp URL '{url.replace('hunter22', '***')}'")
    assert f"({problem}): expected amqp://USER:PASSWORD@HOST:PORT/VHOST" in result.stderr
    assert "hunter22" not in result.output
    assert "Traceback" not in result.output
    assert recorder.urls == []


def test_a_malformed_url_from_the_environment_says_where_it_came_from(recorder: Recorder) -> None:
    result = runner.invoke(cli.app, ["jobs"], env={"CORRAL_AMQP_URL": "broker:5672"})
    assert result.exit_code == 2
    assert "(it came from CORRAL_AMQP_URL)" in result.stderr


def listed_job(name: str, image: str, counts: dict[str, int], reason: str = "") -> JobInfo:
    # model_copy skips validation: the output must be safe whatever the schemas let through.
    spec = JobSpec(name=name, image="img", replicas=3).model_copy(update={"image": image})
    info = JobInfo(job_id=name, state="running", spec=spec, submitted_at=NOW, task_counts=counts)
    return info.model_copy(update={"reason": reason})


def test_jobs_shows_running_from_task_counts_and_escapes_control_characters(
    recorder: Recorder,
) -> None:
    evil = listed_job("evil", "img\n\x1b[2Jfake  row", {"running": 1}, reason="bad\rthing")
    recorder.job_pages = [[listed_job("web", "nginx", {"running": 2, "pending": 1})], [evil]]
    result = invoke("jobs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[1].split()[:4] == ["web", "batch", "running", "2/3"]
    assert "img\\n\\x1b[2Jfake  row" in lines[2] and "bad\\rthing" in lines[2]
    assert "\x1b" not in result.stdout
    as_json = invoke("jobs", "-o", "json")
    assert [job["spec"]["image"] for job in json.loads(as_json.stdout)] == [
        "nginx",
        "img\n\x1b[2Jfake  row",
    ]


def test_ps_streams_pages_and_widens_columns_only_forward(recorder: Recorder) -> None:
    def task(job: str, slot: int) -> TaskInfo:
        return TaskInfo(task_id=f"{job}-0-{slot}", job_id=job, slot=slot, attempt=0,
                        state="running", node_id="n1", updated_at=NOW)  # fmt: skip

    recorder.task_pages = [[task("a", 0)], [task("a-much-longer-name", 1)], []]
    result = invoke("ps")
    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.splitlines()
    assert header.startswith("TASK   JOB")
    assert first.startswith("a-0-0  a    ")
    assert second.startswith("a-much-longer-name-0-1  a-much-longer-name  n1")
    items = [t.model_dump(mode="json") for page in recorder.task_pages for t in page]
    assert invoke("ps", "-o", "json").stdout == json.dumps(items, indent=2) + "\n"


def test_watch_warns_without_a_master_and_keeps_watching(recorder: Recorder) -> None:
    recorder.master_error = NoMaster("amqp://guest:secret@h:5672/")
    failed = JobEvent(job_id="x", state="failed").model_copy(update={"reason": "a\x1b]0;pwned\x07"})
    recorder.events = [Event("job.x.failed", failed, NOW)]
    result = invoke("watch")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: no master is running")
    assert "watching anyway" in result.stderr and "secret" not in result.stderr
    assert result.stdout.endswith("job.x.failed  job x: failed (a\\x1b]0;pwned\\x07)\n")


def test_watch_on_a_vhost_without_a_cluster_is_an_error(recorder: Recorder) -> None:
    recorder.master_error = NoCluster("amqp://guest:guest@h:5672/")
    result = invoke("watch")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no Corral cluster runs on amqp://guest:***@h:5672/")


def test_remote_text_in_errors_and_wait_results_is_escaped(recorder: Recorder) -> None:
    recorder.error = ApiFailure("internal", "boom\x1b[31m")
    result = invoke("nodes")
    assert result.exit_code == 1
    assert "boom\\x1b[31m" in result.stderr and "\x1b" not in result.stderr
    recorder.final_state, recorder.final_reason = "failed", "slot 0\nexited\x9b"
    waited = invoke("run", "--wait", "--name", "boom", "img")
    assert waited.exit_code == 3
    assert "error: job boom failed: slot 0\nexited\\x9b" in waited.stderr
