"""Health, rolling updates, drains and history from the CLI: the spec changes `corral
update` makes, the columns of `jobs` / `ps` / `nodes`, `inspect`'s description, and
when each `--wait` ends and how. Pure functions fed JobInfo objects, and the commands
against a scripted client (no broker)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from corral import cli, output, waiting
from corral.describe import describe_job, describe_task, dns_names, spec_lines
from corral.errors import ApiFailure
from corral.job import Job, current_tasks, is_settled, rollout_ended, trouble
from corral.specs import UPDATE_OPTIONS, SpecChanges, spec_error, updated_spec
from schemas.api import (
    EventInfo,
    JobInfo,
    NodeInfo,
    RolloutInfo,
    TaskInfo,
    VersionInfo,
)
from schemas.job import JobSpec
from schemas.messages import Health, JobState, Resources, TaskState

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
T = TypeVar("T")
runner = CliRunner()


def web_spec(**fields: Any) -> JobSpec:
    data = {"name": "web", "image": "local/busybox:1", "kind": "service", "replicas": 3}
    return JobSpec.model_validate({**data, **fields})


def task(
    slot: int,
    attempt: int = 0,
    state: TaskState = "running",
    *,
    healthy: bool = True,
    health: Health = "",
    restarts: int = 0,
    version: int = 1,
    retiring: bool = False,
    reason: str = "",
    code: int | None = None,
) -> TaskInfo:
    return TaskInfo(
        task_id=f"web-1a2b3c-{slot}-{attempt}",
        job_id="web",
        slot=slot,
        attempt=attempt,
        state=state,
        node_id="n1",
        exit_code=code,
        updated_at=NOW,
        version=version,
        health=health,
        healthy=healthy,
        restarts=restarts,
        retiring=retiring,
        reason=reason,
    )


def rollout(state: str, done: int = 0, total: int = 3, reason: str = "") -> RolloutInfo:
    return RolloutInfo(
        state=state, from_version=2, to_version=3, done=done, total=total, reason=reason
    )


def service(
    state: JobState = "running",
    tasks: list[TaskInfo] | None = None,
    **fields: Any,
) -> JobInfo:
    tasks = [task(0), task(1), task(2)] if tasks is None else tasks
    healthy = sum(1 for t in tasks if t.healthy and not t.retiring)
    info = JobInfo(
        job_id="web", state=state, spec=web_spec(), submitted_at=NOW, tasks=tasks, healthy=healthy
    )
    return info.model_copy(update=fields)  # unvalidated: any text a master may send


def node(tasks: int = 0, *, cordoned: bool = False, draining: bool = False) -> NodeInfo:
    room = Resources(cpus=2, memory=1024**3)
    return NodeInfo(
        node_id="w1",
        state="ready",
        capacity=room,
        allocated=room,
        tasks=tasks,
        last_seen=NOW,
        cordoned=cordoned,
        draining=draining,
    )


# -- the changes `corral update` makes --


def test_update_merges_env_removes_variables_and_splits_the_command() -> None:
    spec = web_spec(env={"A": "1", "B": "2"}, command=["httpd"])
    changes = SpecChanges(
        image="local/busybox:2",
        env={"B": "", "C": "3"},
        env_rm=["A"],
        cpu=0.5,
        memory="128m",
        command="sh -c 'exec httpd -f'",
        parallelism=2,
        order="start-first",
    )
    new = updated_spec(spec, changes)
    assert new.env == {"B": "", "C": "3"}
    assert (new.image, new.cpu, new.memory) == ("local/busybox:2", 0.5, 128 * 1024**2)
    assert new.command == ["sh", "-c", "exec httpd -f"]
    assert (new.update.parallelism, new.update.order) == (2, "start-first")
    assert (new.name, new.replicas, new.kind) == ("web", 3, "service")
    assert updated_spec(spec, SpecChanges(command="")).command is None  # the image's own
    assert updated_spec(spec, SpecChanges(cpu=1.0)).update == spec.update


def test_update_refuses_what_it_cannot_change_naming_the_option() -> None:
    with pytest.raises(typer.BadParameter, match="has no variable 'NOPE'"):
        updated_spec(web_spec(), SpecChanges(env_rm=["NOPE"]))
    with pytest.raises(typer.BadParameter, match="cannot split"):
        updated_spec(web_spec(), SpecChanges(command="sh -c 'unclosed"))
    with pytest.raises(ValidationError) as caught:
        updated_spec(web_spec(), SpecChanges(memory="1k"))
    assert spec_error(caught.value, UPDATE_OPTIONS).endswith("(check --memory)")
    assert SpecChanges().empty() and not SpecChanges(env={"A": ""}).empty()


# -- columns --


def test_jobs_state_shows_a_rollout_under_way_and_a_degraded_services_healthy_count() -> None:
    assert output.job_state_cell(service()) == "running"
    degraded = service("degraded", [task(0), task(1, healthy=False), task(2)])
    assert output.job_state_cell(degraded) == "degraded 2/3"
    updating = service(rollout=rollout("updating", done=2, total=4))
    assert output.job_state_cell(updating) == "updating 2/4 v2→v3"
    assert output.job_state_cell(service(rollout=rollout("done", 3))) == "running"
    row = output.job_row(updating, NOW)
    assert row[:4] == ["web", "service", "updating 2/4 v2→v3", "3/3"]


def test_task_rows_show_health_restarts_version_and_a_crash_loop() -> None:
    assert output.TASK_HEADERS[5:8] == ("HEALTH", "RESTARTS", "VER")
    looping = task(
        1,
        4,
        "pending",
        healthy=False,
        restarts=2,
        version=3,
        reason="restarting after web-1a2b3c-1-3 exited with code 1 (in 4 s)",
    )
    row = output.task_row(looping, NOW)
    assert row[3:8] == ["-", "pending", "-", "2", "3"]
    assert row[-1].startswith("crash loop: restarting after")
    assert output.task_row(task(0), NOW)[5] == "healthy"
    assert output.task_row(task(0, healthy=False, health="starting"), NOW)[5] == "starting"
    assert output.task_row(task(0, healthy=False, health="unhealthy"), NOW)[5] == "unhealthy"
    retiring = output.task_row(task(0, retiring=True, restarts=5), NOW)
    assert retiring[4] == "retiring" and not retiring[-1].startswith("crash loop")
    ended = output.task_row(task(0, 1, "exited", healthy=False, restarts=3, code=1), NOW)
    assert ended[-1] == "-"  # an ended attempt is history, not a crash loop


def test_node_state_shows_disconnected_cordoned_and_draining() -> None:
    assert output.node_row(node())[1] == "ready"
    assert output.node_row(node(cordoned=True))[1] == "ready,cordoned"
    assert output.node_row(node(cordoned=True, draining=True))[1] == "ready,draining"
    gone = node().model_copy(update={"state": "disconnected"})
    assert output.node_state(gone) == "disconnected"


# -- when `--wait` ends --


def test_a_service_settles_when_every_replica_is_healthy_or_it_cannot_get_there() -> None:
    starting = service("pending", [task(0), task(1, healthy=False), task(2, healthy=False)])
    assert not is_settled(starting) and trouble(starting) == ""
    assert is_settled(service("running"))
    looping = service("degraded", [task(0), task(1, 3, "pending", healthy=False, restarts=2)])
    assert is_settled(looping)
    assert trouble(looping).startswith("crash loop: slot 1 failed 2 times in a row")
    by_reason = service("degraded", [], reason="crash loop: slot 4 exited with code 1")
    assert trouble(by_reason) == "crash loop: slot 4 exited with code 1"
    sick = service("degraded", [task(0), task(1, healthy=False, health="unhealthy")])
    assert "slot 1 is unhealthy" in trouble(sick)


def test_trouble_looks_only_at_the_current_task_of_each_wanted_slot() -> None:
    beyond = task(5, healthy=False, health="unhealthy")  # scaled away, stopping
    retired = task(0, 0, healthy=False, health="unhealthy", retiring=True)
    older = task(1, 0, "exited", healthy=False, restarts=4)
    info = service("degraded", [retired, task(0, 1), older, task(1, 1, restarts=4), beyond])
    assert [t.task_id for t in current_tasks(info)] == ["web-1a2b3c-0-1", "web-1a2b3c-1-1"]
    assert trouble(info) == ""  # slot 1's current attempt is healthy: its loop is over


def test_service_verdict() -> None:
    assert waiting.service_verdict(service()) == waiting.Verdict(0, "job web: 3/3 healthy")
    looping = service("degraded", [], reason="crash loop: slot 0 exited with code 1")
    verdict = waiting.service_verdict(looping)
    assert verdict.code == 1
    assert verdict.message.startswith("job web degraded: crash loop: slot 0 exited with code 1")
    assert waiting.service_verdict(service("failed", reason="boom")).message == (
        "job web failed: boom"
    )


def test_rollout_ended_and_its_verdicts() -> None:
    started = service(version=3, rollout=rollout("updating"))
    assert not rollout_ended(started)
    assert not rollout_ended(service(rollout=rollout("rolling-back")))
    assert rollout_ended(service(rollout=rollout("done", 3)))
    assert rollout_ended(service("cancelled", rollout=rollout("updating")))

    def verdict(info: JobInfo, rollback: bool = False) -> waiting.Verdict:
        return waiting.rollout_verdict(started, info, rollback=rollback)

    assert verdict(service(version=3, rollout=rollout("done", 3))) == waiting.Verdict(
        0, "job web: version 3 rolled out, 3/3 healthy"
    )
    undone = RolloutInfo(
        state="rolled-back",
        from_version=3,
        to_version=4,
        reason="task web-1a2b3c-0-5 exited with code 1",
    )
    failed = verdict(service(version=4, rollout=undone))
    assert failed.code == 1
    assert failed.message == (
        "the update of job web to version 3 was rolled back (it now runs version 4,"
        " 3/3 healthy): task web-1a2b3c-0-5 exited with code 1"
    )
    assert verdict(service(version=4, rollout=undone), rollback=True).code == 0
    assert verdict(service(rollout=rollout("paused", reason="no room"))).message.endswith(
        "ended paused: no room"
    )
    cancelled = verdict(service("cancelled", reason="by request"))
    assert cancelled == waiting.Verdict(1, "job web cancelled during its update: by request")
    assert verdict(service(version=3)).code == 0  # nothing was rolled out


def test_progress_prints_a_line_only_when_it_changes(capsys: pytest.CaptureFixture[str]) -> None:
    progress = waiting.Progress(waiting.job_progress)
    for info in [service("pending", [task(0), task(1, healthy=False)]), service("pending")]:
        progress(info)
        progress(info)
    progress(service("failed"))  # nothing to say once it ended
    assert capsys.readouterr().err.splitlines() == [
        "web: 1/3 healthy (pending)",
        "web: 3/3 healthy (pending)",
    ]
    batch = JobInfo(
        job_id="b", state="running", spec=JobSpec(name="b", image="i"), submitted_at=NOW
    )
    assert waiting.job_progress(batch) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def test_drain_wait_shows_the_tasks_left_until_there_are_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers = iter(
        [
            node(3, draining=True, cordoned=True),
            node(1, draining=True, cordoned=True),
            node(0, draining=True, cordoned=True),
        ]
    )
    clock = Clock()
    waiting.wait_drained(lambda: next(answers), "w1", None, sleep=clock.sleep, clock=clock)
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "node w1: ready,draining, 3 tasks left",
        "node w1: ready,draining, 1 tasks left",
    ]
    assert out == "node w1: drained (ready,draining, no tasks)\n"
    assert clock.now == 2 * waiting.DRAIN_POLL


def test_drain_wait_gives_up_after_its_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    with pytest.raises(typer.Exit) as exited:
        waiting.wait_drained(
            lambda: node(2, draining=True), "w1", 2.5, sleep=clock.sleep, clock=clock
        )
    assert exited.value.exit_code == 1
    assert "gave up waiting after 2.5 s: node w1: ready,draining, 2 tasks left" in (
        capsys.readouterr().err
    )
    assert clock.now == 2.5
    uncordoned = waiting.drain_verdict("w1", node(2))
    assert uncordoned.code == 1 and "uncordoned before it drained" in uncordoned.message
    assert waiting.drain_verdict("w1", None).code == 0


# -- inspect --


def described_job() -> JobInfo:
    v2 = VersionInfo(
        version=2, spec=web_spec(), created_at=NOW - timedelta(minutes=5), reason="update"
    )
    v3 = VersionInfo(
        version=3, spec=web_spec(image="local/busybox:2"), created_at=NOW, reason="update"
    )
    events = [
        EventInfo(at=NOW - timedelta(seconds=30), task_id="web-1a2b3c-1-3", text="exited 1"),
        EventInfo(at=NOW, text="rollout to version 3 started\x1b[2J"),
    ]
    tasks = [
        task(0, 1, version=3),
        task(0, 0, retiring=True, version=2),
        task(1, 3, "pending", healthy=False, restarts=2, version=3, reason="backoff"),
        task(2, version=2),
    ]
    spec = web_spec(
        image="local/busybox:2",
        env={"MODE": "prod"},
        ports=["8080:80"],
        health={"tcp": 80},
        update={"parallelism": 2},
    )
    return service(
        "degraded",
        tasks,
        spec=spec,
        version=3,
        versions=[v2, v3],
        events=events,
        rollout=rollout("updating", 1),
        reason="crash loop: slot 1",
    )


def test_describe_job_shows_spec_versions_placement_and_events() -> None:
    text = describe_job(described_job(), NOW)
    lines = text.splitlines()
    assert lines[0] == "Name:       web"
    assert "State:      degraded, 2/3 healthy: crash loop: slot 1" in lines
    assert "Rollout:    updating 1/3 v2→v3" in lines
    assert "Spec (version 3):" in lines
    assert "  image: local/busybox:2" in lines and "  memory: 64Mi" in lines
    assert "  env: {MODE: prod}" in lines and "  ports: ['8080:80']" in lines
    assert "  update: {parallelism: 2}" in lines
    assert not any(line.startswith("  name:") or "stop_grace" in line for line in lines)
    tasks = lines[lines.index("Tasks:") + 1 :]
    assert tasks[0].split() == [
        "SLOT",
        "TASK",
        "NODE",
        "ADDRESS",
        "STATE",
        "HEALTH",
        "RESTARTS",
        "VER",
        "EXIT",
        "REASON",
    ]
    assert tasks[1].split()[:5] == ["0", "web-1a2b3c-0-0", "n1", "-", "retiring"]
    assert tasks[2].split()[:3] == ["0", "web-1a2b3c-0-1", "n1"]
    assert tasks[3].split() == [
        "1",
        "web-1a2b3c-1-3",
        "n1",
        "-",
        "pending",
        "-",
        "2",
        "3",
        "-",
        "backoff",
    ]
    assert "  2        5m       update" in lines
    assert lines[-1].split() == ["0s", "-", "rollout", "to", "version", "3", "started\\x1b[2J"]
    assert "\x1b" not in text


def test_describe_task_shows_its_fields_version_and_events() -> None:
    info = described_job()
    one = info.model_copy(update={"tasks": [info.tasks[2]], "versions": info.versions[1:]})
    text = describe_task(one, "web-1a2b3c-1-3", NOW)
    lines = text.splitlines()
    assert lines[0] == "Task:       web-1a2b3c-1-3"
    assert "State:      pending (crash loop)" in lines
    assert "Restarts:   2 failures in a row before this attempt" in lines
    assert "Spec (version 3):" in lines
    missing = describe_task(one, "web-1a2b3c-9-9", NOW)
    assert missing == "the master's answer holds no task web-1a2b3c-9-9 (job web)"


def test_spec_lines_are_compact_and_escaped_later() -> None:
    lines = spec_lines(web_spec(command=["sh", "-c", "echo hi"], ports=["0.0.0.0:53:53/udp"]))
    assert lines == [
        "image: local/busybox:1",
        "command: [sh, -c, echo hi]",
        "cpu: 0.1",
        "memory: 64Mi",
        "replicas: 3",
        "kind: service",
        "ports: ['0.0.0.0:53:53/udp']",
    ]


# -- the commands, against a scripted client --


@dataclass
class Master:
    """What the scripted client answers, and what it was asked; one per test."""

    # Each api.job answer in turn (the last repeats), by job.
    jobs: dict[str, list[JobInfo]] = field(default_factory=dict)
    tasks: dict[str, JobInfo] = field(default_factory=dict)
    nodes: list[NodeInfo] = field(default_factory=list)
    refuse: dict[str, ApiFailure] = field(default_factory=dict)
    asked: list[tuple[str, Any]] = field(default_factory=list)

    def answer(self, request: str, argument: Any, result: T) -> T:
        self.asked.append((request, argument))
        if request in self.refuse:
            raise self.refuse[request]
        return result


class Scripted:
    """Stands in for corral.Client: answers from `master`, and waits like the real one."""

    def __init__(self, master: Master, *_: Any, **__: Any) -> None:
        self.master = master

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def job(self, job_id: str) -> JobInfo:
        answers = self.master.jobs.get(job_id)
        if not answers:
            raise ApiFailure("not_found", f"no job named {job_id!r}", "job_id")
        info = answers.pop(0) if len(answers) > 1 else answers[0]
        return self.master.answer("job", job_id, info)

    def task(self, task_id: str) -> JobInfo:
        if task_id not in self.master.tasks:
            raise ApiFailure("not_found", f"no task {task_id!r}", "task_id")
        return self.master.answer("task", task_id, self.master.tasks[task_id])

    def find_task(self, query: str) -> TaskInfo:
        for task_id, info in self.master.tasks.items():
            if task_id.startswith(query):
                return info.tasks[0]
        raise ApiFailure("not_found", f"no task {query!r}")

    def submit(self, spec: JobSpec) -> Job:
        info = JobInfo(job_id=spec.name, state="pending", spec=spec, submitted_at=NOW)
        # A real Job: its wait reads the scripted answers through `job` below.
        return Job(self, spec.name, self.master.answer("submit", spec, info))  # type: ignore[arg-type]

    def update(self, job_id: str, spec: JobSpec) -> JobInfo:
        started = service(spec=spec, version=3, rollout=rollout("updating"))
        return self.master.answer("update", spec, started)

    def rollback(self, job_id: str) -> JobInfo:
        started = service(version=4, rollout=rollout("rolling-back"))
        return self.master.answer("rollback", job_id, started)

    def purge(self, job_id: str) -> JobInfo:
        return self.master.answer("purge", job_id, service("cancelled"))

    def cordon(self, node_id: str) -> NodeInfo:
        return self.master.answer("cordon", node_id, node(2, cordoned=True))

    def drain(self, node_id: str) -> NodeInfo:
        return self.master.answer("drain", node_id, node(2, cordoned=True, draining=True))

    def iter_nodes(self) -> Iterator[list[NodeInfo]]:
        yield [self.master.nodes.pop(0) if len(self.master.nodes) > 1 else self.master.nodes[0]]

    # What Job.wait uses: no events ever come, so it re-reads the job at once.
    def _subscribe(self, queue: object) -> Any:
        return self

    def _receive(self, subscription: object, timeout: float) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def master(monkeypatch: pytest.MonkeyPatch) -> Master:
    seen = Master()
    monkeypatch.setattr(cli, "Client", functools.partial(Scripted, seen))
    monkeypatch.setattr(waiting, "DRAIN_POLL", 0.0)
    return seen


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args), prog_name="corral")


def sent(master: Master, request: str) -> list[Any]:
    return [argument for asked, argument in master.asked if asked == request]


def test_update_sends_the_jobs_spec_with_the_changes(master: Master) -> None:
    master.jobs["web"] = [service(spec=web_spec(env={"A": "1"}), version=2)]
    result = invoke(
        "update",
        "web",
        "--image",
        "local/busybox:2",
        "-e",
        "B=2",
        "--env-rm",
        "A",
        "--start-first",
        "--parallelism",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "updating web to version 3\n"
    (spec,) = sent(master, "update")
    assert (spec.image, spec.env, spec.replicas) == ("local/busybox:2", {"B": "2"}, 3)
    assert (spec.update.order, spec.update.parallelism) == ("start-first", 2)


def test_update_without_a_change_says_so(master: Master) -> None:
    master.jobs["web"] = [service(version=2)]
    nothing = invoke("update", "web")
    assert nothing.exit_code == 2 and "nothing to change: give --image" in nothing.stderr
    same = invoke("update", "web", "--image", "local/busybox:1")
    assert same.exit_code == 0, same.output
    assert same.stdout == "job web: no change (version 2 has that spec)\n"
    assert sent(master, "update") == []
    bad = invoke("update", "web", "--cpu", "-1")
    assert bad.exit_code == 2 and "(check --cpu)" in bad.stderr


def test_update_wait_shows_progress_and_fails_when_the_master_rolls_it_back(
    master: Master,
) -> None:
    undone = RolloutInfo(
        state="rolled-back", from_version=3, to_version=4, reason="web-1a2b3c-0-5 turned unhealthy"
    )
    master.jobs["web"] = [
        service(version=2),  # what `update` reads first
        service(version=3, rollout=rollout("updating", 0)),
        service(version=3, rollout=rollout("updating", 1)),
        service(version=4, rollout=undone.model_copy(update={"state": "rolling-back"})),
        service(version=4, rollout=undone),
    ]
    result = invoke("update", "--wait", "web", "--image", "local/busybox:2")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "web: updating 0/3 v2→v3, 3/3 healthy",
        "web: updating 1/3 v2→v3, 3/3 healthy",
        "web: rolling-back 0/0 v3→v4, 3/3 healthy",
        "error: the update of job web to version 3 was rolled back (it now runs version 4,"
        " 3/3 healthy): web-1a2b3c-0-5 turned unhealthy",
    ]


def test_rollback_wait_exits_0_once_it_is_done(master: Master) -> None:
    done = RolloutInfo(state="done", from_version=3, to_version=4, done=3, total=3)
    master.jobs["web"] = [service(version=4, rollout=done)]
    result = invoke("rollback", "--wait", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "rolling web back to its previous spec, as version 4",
        "job web: version 4 rolled back to an earlier spec, 3/3 healthy",
    ]


def test_submit_of_a_running_service_updates_it(master: Master, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text("name: web\nkind: service\nimage: local/busybox:2\nreplicas: 3\n")
    master.refuse["submit"] = ApiFailure("conflict", "job 'web' is still running", "name")
    master.jobs["web"] = [service(version=2)]
    result = invoke("submit", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == "updating web to version 3\n"
    assert sent(master, "update")[0].image == "local/busybox:2"
    # A batch job of that name is not updated: the master's refusal stands.
    master.jobs["web"] = [service().model_copy(update={"spec": JobSpec(name="web", image="i")})]
    refused = invoke("submit", str(path))
    assert refused.exit_code == 1
    assert refused.stderr == "error: job 'web' is still running\n"


def test_run_wait_of_a_service_shows_progress_and_fails_on_a_crash_loop(
    master: Master,
) -> None:
    master.jobs["web"] = [
        service("pending", [task(0, healthy=False), task(1, healthy=False)]),
        service("degraded", [task(0), task(1, healthy=False)]),
        service("degraded", [task(0), task(1, 2, "pending", healthy=False, restarts=2)]),
    ]
    result = invoke(
        "run", "--wait", "--kind", "service", "--replicas", "3", "--name", "web", "local/busybox:1"
    )
    assert result.exit_code == 1, result.output
    err = result.stderr.splitlines()
    assert err[:2] == ["web: 0/3 healthy (pending)", "web: 1/3 healthy (degraded)"]
    assert err[-1].startswith("error: job web degraded: crash loop: slot 1 failed 2 times")
    master.jobs["web"] = [service("pending", [task(0, healthy=False)]), service("running")]
    healthy = invoke("run", "--wait", "--kind", "service", "--name", "web", "local/busybox:1")
    assert healthy.exit_code == 0, healthy.output
    assert "job web: running" in healthy.stdout


def test_inspect_finds_a_job_then_a_task_then_a_prefix(master: Master) -> None:
    info = described_job()
    master.jobs["web"] = [info]
    one = info.model_copy(update={"tasks": [info.tasks[2]]})
    master.tasks["web-1a2b3c-1-3"] = one
    job = invoke("inspect", "web")
    assert job.exit_code == 0, job.output
    assert job.stdout.startswith("Name:       web\n")
    by_id = invoke("inspect", "web-1a2b3c-1-3")
    assert by_id.stdout.startswith("Task:       web-1a2b3c-1-3\n")
    assert invoke("inspect", "web-1a2b3c-1").stdout == by_id.stdout
    as_json = invoke("inspect", "--format", "json", "web")
    assert json.loads(as_json.stdout)["rollout"]["state"] == "updating"
    neither = invoke("inspect", "nothing")
    assert neither.exit_code == 1
    assert neither.stderr.startswith("error: no job or task is called 'nothing'")


def test_purge_cordon_and_drain_wait(master: Master) -> None:
    master.refuse["purge"] = ApiFailure("conflict", "job 'web' is still running: cancel it")
    refused = invoke("purge", "web")
    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: job 'web' is still running: cancel it\n",
    )
    del master.refuse["purge"]
    assert invoke("purge", "web").stdout == (
        "job web (cancelled) purged: its containers are removed\n"
    )
    assert invoke("cordon", "w1").stdout == "node w1: ready,cordoned, 2 tasks\n"
    master.nodes = [node(1, cordoned=True, draining=True), node(0, cordoned=True, draining=True)]
    drained = invoke("drain", "--wait", "w1")
    assert drained.exit_code == 0, drained.output
    assert drained.stdout.splitlines() == [
        "node w1: ready,draining, 2 tasks",
        "node w1: drained (ready,draining, no tasks)",
    ]
    assert drained.stderr == "node w1: ready,draining, 1 tasks left\n"


def test_daemon_options_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral import daemons

    seen: list[Any] = []
    monkeypatch.setattr(daemons, "setup_logging", lambda level: None)
    monkeypatch.setattr(daemons, "_run_daemon", lambda serve, url: seen.append(serve))
    monkeypatch.setattr("master.daemon.serve", lambda settings: settings)
    monkeypatch.setattr("worker.agent.serve", lambda settings: settings)
    master_args = [
        "master",
        "--agent-grace",
        "5",
        "--ended-job-ttl",
        "60",
        "--keep-containers",
        "0",
    ]
    assert invoke(*master_args).exit_code == 0
    settings = seen.pop()()
    assert (settings.agent_grace, settings.ended_job_ttl, settings.keep_containers) == (5, 60, 0)
    assert invoke("worker", "--leave-on-terminate", "--leave-timeout", "9").exit_code == 0
    settings = seen.pop()()
    assert (settings.leave_on_terminate, settings.leave_timeout) == (True, 9.0)
    assert invoke("worker").exit_code == 0
    assert seen.pop()().leave_on_terminate is False


def test_inspect_names_a_jobs_dns_names_and_the_addresses_they_resolve_to() -> None:
    tasks = [
        task(0).model_copy(update={"address": "10.210.1.2"}),
        task(1, healthy=False).model_copy(update={"address": "10.210.2.2"}),
    ]
    text = dns_names(service(tasks=tasks))
    assert text.startswith("web, web.corral -> 10.210.1.2;")  # the healthy one only
    assert "<slot>.web[.corral]" in text
    starting = [t.model_copy(update={"healthy": False}) for t in tasks]
    assert "-> 10.210.1.2, 10.210.2.2;" in dns_names(service(tasks=starting))
    isolated = service(tasks=tasks)
    isolated = isolated.model_copy(
        update={"spec": web_spec().model_copy(update={"network": "none"})}
    )
    assert dns_names(isolated) == "none (network: none)"
    assert "DNS names:" in describe_job(service(tasks=tasks), NOW)
