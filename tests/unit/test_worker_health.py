"""Health checks on the worker: Docker's own, translated, decoded and reported.

The pure parts (`worker.health`, `EventDecoder`, `container_info`) are called with
the dicts the engine gives. The http check's shell script is run by the local
`sh` against a fake `nc`, so its quoting and its verdicts are checked without
Docker. The agent's handlers are called as the bus thread would call them, with
a recording bus, a fake runtime and an executor that runs at once.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar, cast

import pytest

from schemas.job import HealthCheck, HttpCheck
from schemas.messages import Health, Heartbeat, Payload, StartTask, TaskStatus
from tests.unit.factories import MiB, job_spec
from worker.agent import WorkerAgent
from worker.containers import (
    JOB,
    TASK,
    ContainerInfo,
    EventDecoder,
    RuntimeEvent,
    container_info,
)
from worker.health import (
    MAX_OUTPUT_CHARS,
    configured_health,
    container_health,
    docker_healthcheck,
    health_event,
    unhealthy_reason,
)
from worker.runtime import DockerRuntime
from worker.settings import WorkerSettings
from worker.standbys import Pending as _Pending

P = ParamSpec("P")
T = TypeVar("T")

NODE = "n1"
TASK_ID = "web-0-0"

# -- the check Docker runs --


def test_a_command_check_runs_as_is_with_times_in_nanoseconds() -> None:
    check = HealthCheck(
        command=["test", "-f", "/ready"], interval=0.2, timeout=1.5, retries=2, start_period=3
    )
    assert docker_healthcheck(check) == {
        "test": ["CMD", "test", "-f", "/ready"],
        "interval": 200_000_000,
        "timeout": 1_500_000_000,
        "retries": 2,
        "start_period": 3_000_000_000,
    }
    assert all(
        type(value) is int for key, value in docker_healthcheck(check).items() if key != "test"
    )


def test_a_tcp_check_connects_with_nc_inside_the_container() -> None:
    test = docker_healthcheck(HealthCheck(tcp=6379, timeout=2.5))["test"]
    assert test == ["CMD-SHELL", "nc -w 3 127.0.0.1 6379 </dev/null >/dev/null"]


@pytest.fixture
def fake_nc(tmp_path: Path) -> Callable[[str, str], tuple[int, str, bytes]]:
    """Runs an http check's script with a fake `nc` first on PATH: it saves its
    arguments and what it was sent, and answers `answer`. Returns the script's exit
    code, its output and the request."""
    nc = tmp_path / "nc"
    nc.write_text(
        '#!/bin/sh\necho "$@" > "$NC_DIR/args"\ncat > "$NC_DIR/request"\nprintf "$NC_ANSWER"\n'
    )
    nc.chmod(0o755)

    def run(path: str, answer: str) -> tuple[int, str, bytes]:
        check = HealthCheck(http=HttpCheck(port=8080, path=path))
        (script,) = docker_healthcheck(check)["test"][1:]
        env = {
            "PATH": f"{tmp_path}:{os.environ['PATH']}",
            "NC_DIR": str(tmp_path),
            "NC_ANSWER": answer,
        }
        done = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10
        )
        assert (tmp_path / "args").read_text().split() == ["-w", "1", "127.0.0.1", "8080"]
        return done.returncode, done.stdout + done.stderr, (tmp_path / "request").read_bytes()

    return run


@pytest.mark.parametrize(
    "answer",
    [r"HTTP/1.1 200 OK\r\n\r\nok", r"HTTP/1.0 204 No Content\r\n\r\n", r"HTTP/1.1 302 Found\r\n"],
)
def test_an_http_check_passes_on_2xx_and_3xx(
    fake_nc: Callable[[str, str], tuple[int, str, bytes]], answer: str
) -> None:
    code, output, request = fake_nc("/healthz", answer)
    assert (code, output) == (0, "")
    assert request == b"GET /healthz HTTP/1.0\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (r"HTTP/1.1 404 Not Found\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (r"HTTP/1.1 500 Oops\r\n", "HTTP/1.1 500 Oops"),
        ("", "no answer"),
        ("nc: can't connect to remote host (127.0.0.1): Connection refused", "Connection refused"),
        (r"SSH-2.0-OpenSSH_9.2\r\n", "SSH-2.0-OpenSSH_9.2"),
    ],
)
def test_an_http_check_fails_otherwise_and_says_what_it_got(
    fake_nc: Callable[[str, str], tuple[int, str, bytes]], answer: str, said: str
) -> None:
    code, output, _request = fake_nc("/healthz", answer)
    assert code == 1
    assert output.startswith("GET /healthz on port 8080: ")
    assert said in output


@pytest.mark.parametrize(
    "path", ["/a'b", '/a"b', "/$HOME/x", "/`id`", "/$(touch${IFS}pwned)", "/50%25%s;|&<>", "/\\n"]
)
def test_an_http_path_reaches_the_server_verbatim(
    fake_nc: Callable[[str, str], tuple[int, str, bytes]], path: str, tmp_path: Path
) -> None:
    code, _output, request = fake_nc(path, r"HTTP/1.0 200 OK\r\n")
    assert code == 0
    assert request == f"GET {path} HTTP/1.0\r\n\r\n".encode()
    assert not (tmp_path / "pwned").exists()


# -- what Docker says --


def test_health_events_are_read_from_the_action() -> None:
    assert health_event("health_status: healthy") == "healthy"
    assert health_event("health_status: unhealthy") == "unhealthy"
    assert health_event("health_status: starting") == "starting"
    assert health_event("health_status: sideways") is None
    assert health_event("start") is None
    assert health_event("exec_start: sh -c true") is None


def engine_event(action: str, container: str = "c1", *, at: int = 1) -> dict[str, Any]:
    return {
        "Type": "container",
        "Action": action,
        "Actor": {"ID": container, "Attributes": {TASK: TASK_ID, JOB: "web", "name": "x"}},
        "timeNano": at,
    }


def test_a_health_event_becomes_a_runtime_event_with_the_verdict() -> None:
    decoder = EventDecoder()
    event = decoder.decode(engine_event("health_status: healthy"))
    assert event == RuntimeEvent(TASK_ID, "web", "c1", "health", None, health="healthy")


def test_a_health_event_replayed_by_the_next_window_is_decoded_once() -> None:
    decoder = EventDecoder()
    assert decoder.decode(engine_event("health_status: unhealthy", at=5_000_000_000))
    decoder.forget_before(5)
    assert decoder.decode(engine_event("health_status: unhealthy", at=5_000_000_000)) is None
    # Another verdict at the same instant, or the same one later, is news.
    assert decoder.decode(engine_event("health_status: healthy", at=5_000_000_000))
    assert decoder.decode(engine_event("health_status: unhealthy", at=6_000_000_000))


def test_health_events_of_other_containers_or_verdicts_are_ignored() -> None:
    decoder = EventDecoder()
    other = engine_event("health_status: healthy")
    del other["Actor"]["Attributes"][TASK]
    assert decoder.decode(other) is None
    assert decoder.decode(engine_event("health_status: sideways")) is None
    assert decoder.seen == set()


def inspected(status: str, health: dict[str, Any] | None) -> dict[str, Any]:
    state: dict[str, Any] = {"Status": status, "ExitCode": 0}
    if health is not None:
        state["Health"] = health
    return {"Config": {"Labels": {TASK: TASK_ID, JOB: "web"}}, "State": state}


@pytest.mark.parametrize("verdict", ["starting", "healthy", "unhealthy"])
def test_an_inspected_running_container_has_its_health_status(verdict: str) -> None:
    info = container_info(inspected("running", {"Status": verdict, "Log": []}), "c1")
    assert info.health == verdict


def test_no_check_or_an_ended_container_has_no_health() -> None:
    assert container_info(inspected("running", None), "c1").health == ""
    # Docker leaves "unhealthy" on a stopped container: that is not news about a task.
    assert container_info(inspected("exited", {"Status": "unhealthy"}), "c1").health == ""


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        ("Up 3 seconds (healthy)", "healthy"),
        ("Up Less than a second (health: starting)", "starting"),
        ("Up 2 hours (unhealthy)", "unhealthy"),
        ("Up 2 hours", ""),
        ("", ""),
    ],
)
def test_a_list_entry_has_the_health_its_status_text_shows(status: str, verdict: str) -> None:
    sparse = {"Labels": {TASK: TASK_ID, JOB: "web"}, "State": "running", "Status": status}
    assert container_health(sparse) == verdict
    assert container_info(sparse, "c1").health == verdict


def test_a_started_container_with_a_check_is_starting() -> None:
    assert configured_health({"Config": {"Healthcheck": {"Test": ["CMD", "true"]}}}) == "starting"
    assert configured_health({"Config": {"Healthcheck": {"Test": ["NONE"]}}}) == ""
    assert configured_health({"Config": {}}) == ""
    assert configured_health({"State": "created"}) == ""  # a list entry: unknown


def test_the_unhealthy_reason_quotes_the_last_check_on_one_line() -> None:
    health = {
        "Status": "unhealthy",
        "FailingStreak": 3,
        "Log": [
            {"ExitCode": 1, "Output": "old"},
            {"ExitCode": 1, "Output": "GET / on port 80:\n  HTTP/1.1 503\r\n"},
        ],
    }
    assert unhealthy_reason(health) == (
        "health check failed 3 times in a row: GET / on port 80: HTTP/1.1 503"
    )


def test_the_unhealthy_reason_is_cut_or_falls_back_to_the_exit_code() -> None:
    long = {"FailingStreak": 2, "Log": [{"ExitCode": 1, "Output": "x" * 5000}]}
    reason = unhealthy_reason(long)
    assert reason.endswith("…")
    assert len(reason) == len("health check failed 2 times in a row: ") + MAX_OUTPUT_CHARS
    silent = {"FailingStreak": 1, "Log": [{"ExitCode": 1, "Output": ""}]}
    assert unhealthy_reason(silent) == "health check failed (exit code 1)"
    assert unhealthy_reason({}) == "health check failed"


# -- the agent --


class InlineExecutor(Executor):
    """Runs what is submitted at once, on the calling thread."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@dataclass
class RecordingBus:
    published: list[Payload] = field(default_factory=list)
    calls: list[Callable[[], None]] = field(default_factory=list)

    def publish(self, exchange: str, routing_key: str, payload: Payload, **_: Any) -> None:
        self.published.append(payload)

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        self.calls.append(fn)

    def run_calls(self) -> None:
        """Run what other threads handed to the bus thread, as the bus would."""
        while self.calls:
            self.calls.pop(0)()

    def statuses(self) -> list[TaskStatus]:
        found = [p for p in self.published if isinstance(p, TaskStatus)]
        self.published.clear()
        return found


@dataclass
class FakeRuntime:
    reason: str = "health check failed 3 times in a row: nc: can't connect"
    inspected: list[str] = field(default_factory=list)

    def health_reason(self, container_id: str) -> str:
        self.inspected.append(container_id)
        return self.reason


@dataclass
class Agent:
    worker: WorkerAgent
    bus: RecordingBus
    runtime: FakeRuntime

    def event(
        self,
        kind: Literal["running", "exited", "health"],
        health: Health = "",
        *,
        exit_code: int | None = None,
        settle: bool = True,
    ) -> None:
        """The bus thread gets an event of the task's container `c1`; with `settle`, what
        it handed to a pool has come back too."""
        self.worker._on_runtime_event(
            RuntimeEvent(TASK_ID, "web", "c1", kind, exit_code, health=health)
        )
        if settle:
            self.bus.run_calls()


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    settings = WorkerSettings(
        amqp_url="amqp://127.0.0.1/", node_id=NODE, state_dir=tmp_path, network=False
    )
    runtime = FakeRuntime()
    worker = WorkerAgent(settings, runtime=cast(DockerRuntime, runtime))
    bus = RecordingBus()
    worker.bus = cast(Any, bus)
    worker._short_calls = cast(Any, InlineExecutor())
    return Agent(worker, bus, runtime)


def running(health: Health = "starting") -> ContainerInfo:
    return ContainerInfo(
        TASK_ID, "web", "c1", "running", None, cpu=0.1, memory=16 * MiB, epoch=1, health=health
    )


def start_task() -> StartTask:
    spec = job_spec(health={"command": ["true"]})
    return StartTask(task_id=TASK_ID, job_id="web", slot=0, node_id=NODE, spec=spec)


def started(agent: Agent, health: Health = "starting") -> None:
    """The task's start came back: its first report (running, `health`)."""
    agent.worker._started(start_task(), running(health))
    (status,) = agent.bus.statuses()
    assert (status.state, status.health) == ("running", health)


def test_each_change_of_health_is_published_once_as_running(agent: Agent) -> None:
    started(agent)
    agent.event("health", "healthy")
    agent.event("health", "healthy")  # the same verdict again: nothing new
    (status,) = agent.bus.statuses()
    assert (status.state, status.health, status.reason) == ("running", "healthy", "")
    assert status.container_id == "c1"
    assert agent.worker.containers[TASK_ID].health == "healthy"


def test_unhealthy_is_published_with_the_checks_output_read_off_the_bus_thread(
    agent: Agent,
) -> None:
    started(agent, "healthy")
    agent.event("health", "unhealthy", settle=False)
    assert agent.bus.statuses() == []  # the reason is being read
    assert agent.worker.containers[TASK_ID].health == "unhealthy"  # the heartbeat says so already
    agent.bus.run_calls()
    (status,) = agent.bus.statuses()
    assert (status.state, status.health) == ("running", "unhealthy")
    assert status.reason == agent.runtime.reason
    assert agent.runtime.inspected == ["c1"]
    # It recovers: that is news too.
    agent.event("health", "healthy")
    (status,) = agent.bus.statuses()
    assert (status.health, status.reason) == ("healthy", "")


def test_an_unhealthy_verdict_that_recovered_before_its_reason_was_read_is_not_published(
    agent: Agent,
) -> None:
    started(agent, "healthy")
    agent.event("health", "unhealthy", settle=False)
    agent.event("health", "healthy")
    assert agent.bus.statuses() == []  # healthy was published last; it still is


def test_no_health_is_published_after_the_task_ended_or_was_stopped(agent: Agent) -> None:
    started(agent)
    agent.event("exited", exit_code=1)
    (ended,) = agent.bus.statuses()
    assert (ended.state, ended.health) == ("exited", "")
    agent.event("health", "unhealthy")
    agent.event("health", "healthy")
    assert agent.bus.statuses() == []
    assert agent.runtime.inspected == []


def test_a_verdict_before_the_start_result_is_kept(agent: Agent) -> None:
    agent.worker._busy[TASK_ID] = _Pending()  # its start is under way
    agent.event("health", "healthy")
    assert agent.bus.statuses() == []
    agent.worker._started(start_task(), running("starting"))
    (status,) = agent.bus.statuses()
    assert (status.state, status.health) == ("running", "healthy")


def test_the_heartbeat_lists_each_tasks_health(agent: Agent) -> None:
    started(agent)
    agent.event("health", "healthy")
    agent.worker._beat()
    (beat,) = [p for p in agent.bus.published if isinstance(p, Heartbeat)]
    assert [(t.task_id, t.health) for t in beat.tasks] == [(TASK_ID, "healthy")]


def test_an_adopted_unhealthy_container_keeps_its_health_and_says_why(agent: Agent) -> None:
    sparse = {
        "Labels": {TASK: TASK_ID, JOB: "web"},
        "State": "running",
        "Status": "Up 5 minutes (unhealthy)",
    }
    agent.worker.runtime.list_tasks = lambda: [container_info(sparse, "c1")]  # type: ignore[method-assign]
    agent.worker._adopt()
    agent.bus.run_calls()
    (status,) = agent.bus.statuses()
    assert (status.state, status.health) == ("running", "unhealthy")
    assert status.reason == agent.runtime.reason
    assert agent.worker.containers[TASK_ID].health == "unhealthy"


def test_a_task_that_was_unhealthy_from_the_start_is_reported_once_with_the_reason(
    agent: Agent,
) -> None:
    agent.worker._busy[TASK_ID] = _Pending()
    agent.event("health", "unhealthy")
    agent.worker._started(start_task(), running("starting"))
    agent.bus.run_calls()
    (status,) = agent.bus.statuses()
    assert (status.state, status.health, status.reason) == (
        "running",
        "unhealthy",
        agent.runtime.reason,
    )
