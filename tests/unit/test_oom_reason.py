"""A task the kernel killed at its memory limit is reported as `out of memory (limit 16Mi)`.

The engine's side is decoded without Docker (`worker.containers`): a full inspect
says `State.OOMKilled`, and the event stream says `oom` before the container's
`die`. The agent forwards the reason in its exit report, and the master keeps it
as the task's reason, which `corral ps` shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from master.controller import Controller
from master.settings import MasterSettings
from master.views import task_info
from schemas.messages import Payload, TaskStatus
from tests.unit.factories import MiB, heartbeat, job_spec
from worker.agent import WorkerAgent
from worker.containers import (
    JOB,
    MEMORY,
    TASK,
    ContainerInfo,
    EventDecoder,
    RuntimeEvent,
    container_info,
    exit_reason,
)
from worker.runtime import DockerRuntime
from worker.settings import WorkerSettings

NODE = "n1"
OOM = "out of memory (limit 16Mi)"


def labels(task_id: str = "web-0-0", memory: int = 16 * MiB) -> dict[str, str]:
    return {TASK: task_id, JOB: "web", MEMORY: str(memory)}


def inspected(status: str, exit_code: int, *, oom_killed: bool) -> dict[str, Any]:
    """A container's attributes as a full inspect gives them."""
    state = {"Status": status, "ExitCode": exit_code, "OOMKilled": oom_killed}
    return {"Config": {"Labels": labels()}, "State": state}


def engine_event(
    action: str, container: str = "c1", *, at: int = 1, exit_code: int | None = None, **extra: str
) -> dict[str, Any]:
    """One decoded engine event: labels come with the actor's attributes."""
    attributes = {**labels(), **extra}
    if exit_code is not None:
        attributes["exitCode"] = str(exit_code)
    return {
        "Type": "container",
        "Action": action,
        "Actor": {"ID": container, "Attributes": attributes},
        "timeNano": at,
    }


# -- the reason --


@pytest.mark.parametrize(
    ("memory", "limit"), [(16 * MiB, "16Mi"), (64 * MiB, "64Mi"), (2048 * MiB, "2Gi")]
)
def test_the_limit_is_written_like_a_job_spec_size(memory: int, limit: str) -> None:
    assert exit_reason(137, oom_killed=True, memory=memory) == f"out of memory (limit {limit})"


def test_no_reason_without_an_oom_kill_or_after_a_clean_exit() -> None:
    assert exit_reason(137, oom_killed=False, memory=16 * MiB) == ""
    assert exit_reason(0, oom_killed=True, memory=16 * MiB) == ""  # only a child was killed
    assert exit_reason(1, oom_killed=True, memory=16 * MiB) == OOM
    assert exit_reason(137, oom_killed=True, memory=0) == "out of memory"


# -- what the engine says --


def test_an_inspected_oom_killed_container_keeps_its_exit_code_and_says_why() -> None:
    info = container_info(inspected("exited", 137, oom_killed=True), "c1")
    assert (info.state, info.exit_code, info.reason) == ("exited", 137, OOM)


def test_a_container_killed_otherwise_has_no_reason() -> None:
    assert container_info(inspected("exited", 137, oom_killed=False), "c1").reason == ""
    assert container_info(inspected("running", 0, oom_killed=True), "c1").reason == ""
    sparse = {"Labels": labels(), "State": "exited"}  # a list entry: no OOMKilled to read
    assert container_info(sparse, "c1").reason == ""


def test_an_oom_event_before_the_die_makes_its_exit_out_of_memory() -> None:
    decoder = EventDecoder()
    assert decoder.decode(engine_event("oom", at=1)) is None
    event = decoder.decode(engine_event("die", at=2, exit_code=137))
    assert event == RuntimeEvent("web-0-0", "web", "c1", "exited", 137, OOM)


def test_a_die_without_an_oom_event_has_no_reason() -> None:
    decoder = EventDecoder()
    decoder.decode(engine_event("oom", "other", at=1))
    event = decoder.decode(engine_event("die", at=2, exit_code=137))
    assert event is not None and (event.exit_code, event.reason) == (137, "")
    assert decoder.oom_killed == {"other"}


def test_the_oom_mark_lasts_across_windows_until_the_die() -> None:
    decoder = EventDecoder()
    decoder.decode(engine_event("oom", at=1_000_000_000))
    decoder.forget_before(5)
    assert decoder.decode(engine_event("die", at=5_000_000_000, exit_code=137)) is not None
    assert decoder.oom_killed == set()
    # The overlapping next window replays the die: it is not reported twice.
    assert decoder.decode(engine_event("die", at=5_000_000_000, exit_code=137)) is None


def test_an_oom_of_a_container_that_is_no_task_is_ignored() -> None:
    decoder = EventDecoder()
    raw = engine_event("oom")
    del raw["Actor"]["Attributes"][TASK]
    assert decoder.decode(raw) is None
    assert decoder.oom_killed == set()


# -- the agent's exit report --


@dataclass
class RecordingBus:
    published: list[Payload] = field(default_factory=list)

    def publish(self, exchange: str, routing_key: str, payload: Payload, **_: Any) -> None:
        self.published.append(payload)


@pytest.fixture
def agent(tmp_path: Path) -> tuple[WorkerAgent, RecordingBus]:
    settings = WorkerSettings(
        amqp_url="amqp://127.0.0.1/", node_id=NODE, state_dir=tmp_path, network=False
    )
    built = WorkerAgent(settings, runtime=cast(DockerRuntime, object()))
    bus = RecordingBus()
    built.bus = cast(Any, bus)
    return built, bus


def test_the_exit_report_carries_the_reason_and_the_exit_code(
    agent: tuple[WorkerAgent, RecordingBus],
) -> None:
    worker, bus = agent
    worker.containers["web-0-0"] = ContainerInfo(
        "web-0-0", "web", "c1", "running", None, cpu=0.1, memory=16 * MiB, epoch=1
    )
    worker._on_runtime_event(RuntimeEvent("web-0-0", "web", "c1", "exited", 137, OOM))
    (status,) = bus.published
    assert isinstance(status, TaskStatus)
    assert (status.state, status.exit_code, status.reason) == ("exited", 137, OOM)
    assert worker.containers["web-0-0"].reason == OOM


def test_an_adopted_oom_killed_container_is_reported_with_its_reason(
    agent: tuple[WorkerAgent, RecordingBus],
) -> None:
    worker, bus = agent
    worker._report_container(container_info(inspected("exited", 137, oom_killed=True), "c1"))
    (status,) = bus.published
    assert isinstance(status, TaskStatus)
    assert (status.state, status.exit_code, status.reason) == ("exited", 137, OOM)


# -- the master keeps it --


def test_the_master_keeps_the_workers_reason_for_ps() -> None:
    master = Controller(MasterSettings(amqp_url="amqp://x"), epoch=7)
    master.heartbeat(heartbeat("a"), 0.0)
    master.submit(job_spec(memory="16m", restart={"max_retries": 0}), 1.0)
    master.drain()
    running = TaskStatus(task_id="web-0-0", job_id="web", node_id="a", state="running")
    master.task_status(running, 2.0)
    ended = running.model_copy(update={"state": "exited", "exit_code": 137, "reason": OOM})
    master.task_status(ended, 3.0)
    info = task_info(master.state.tasks["web-0-0"])
    assert (info.state, info.exit_code, info.reason) == ("exited", 137, OOM)
