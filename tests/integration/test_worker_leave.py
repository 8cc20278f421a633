"""A worker with `leave_on_terminate` leaves the cluster on SIGTERM; without it, it only stops.

Each test runs one worker process (`worker.agent.serve` with the settings given as
JSON: the CLI flag is not needed) and no master. Raw pika plays the master's
side (as the master's broker user, which the worker trusts): it declares what a
master declares, reads the heartbeats and task statuses and, where a test needs
it, sends the StopTask a master would. The worker's task is a container started beforehand
through `DockerRuntime` with the worker's node id, which the worker adopts; it
ends at once on SIGTERM, so stops are quick.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from bus import topology
from schemas.envelope import encode
from schemas.job import JobSpec
from schemas.messages import Heartbeat, StartTask, StopTask, TaskStatus
from tests.cluster import wait_until
from tests.conftest import TEST_IMAGE
from tests.rawamqp import RawMaster
from worker.runtime import DockerRuntime
from worker.settings import WorkerSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN_LABEL = "test.corral.leave"
ENDS_ON_TERM = 'trap "exit 0" TERM; while true; do sleep 0.2; done'
SERVE = """
import logging, sys
from worker.agent import serve
from worker.settings import WorkerSettings
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
logging.getLogger("pika").setLevel(logging.WARNING)
serve(WorkerSettings.model_validate_json(sys.argv[1]))
"""


class Master(RawMaster):
    """Raw pika in the master's place: private queues on heartbeats and task statuses."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.beats = self.subscribe(topology.HEARTBEAT_EXCHANGE, "#")
        self.statuses = self.subscribe(topology.STATUS_EXCHANGE, "task.#")

    def take(self, queue: str, kind: str) -> list[dict[str, Any]]:
        """The payloads of type `kind` waiting in `queue` (read destructively)."""
        return [m["payload"] for m in self.messages(queue) if m["type"] == kind]

    def beat(self) -> dict[str, Any] | None:
        """The newest waiting heartbeat, if any."""
        beats = self.take(self.beats, Heartbeat.TYPE)
        return beats[-1] if beats else None

    def stop(self, node_id: str, task_id: str, job_id: str) -> None:
        command = StopTask(task_id=task_id, job_id=job_id, node_id=node_id, grace=5)
        body = encode(command, sender="raw-master", epoch=1)
        self.publish(topology.ASSIGN_EXCHANGE, node_id, body)


class Node:
    """One worker process and the container it adopts."""

    def __init__(self, url: str, workdir: Path, engine: docker.DockerClient) -> None:
        self.url = url
        self.workdir = workdir
        self.engine = engine
        self.run_id = uuid.uuid4().hex[:8]
        self.node_id = f"leave-{self.run_id}"
        self.process: subprocess.Popen[bytes] | None = None
        self.task_id = ""
        self.job_id = "leaver"

    def start_task(self) -> str:
        """Start the task's container (as an earlier run of the worker would have)."""
        runtime = DockerRuntime(self.node_id, extra_labels={RUN_LABEL: self.run_id})
        spec = JobSpec(name=self.job_id, image=TEST_IMAGE, command=["sh", "-c", ENDS_ON_TERM])
        task = StartTask(
            task_id=f"{self.job_id}-{self.run_id}-0-0",  # unique: tests run side by side
            job_id=self.job_id,
            slot=0,
            node_id=self.node_id,
            spec=spec,
        )
        try:
            runtime.start(task, epoch=1)
        finally:
            runtime.close()
        self.task_id = task.task_id
        return task.task_id

    def start_worker(self, **options: Any) -> None:
        settings = WorkerSettings(
            amqp_url=self.url,
            node_id=self.node_id,
            cpus=1,
            memory=2**30,
            state_dir=self.workdir / "state",
            heartbeat_interval=0.2,
            container_labels={RUN_LABEL: self.run_id},
            **options,
        )
        log = open(self.workdir / "worker.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, settings.model_dump_json()],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def signal(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def exit_code(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def containers(self) -> list[Any]:
        return list(
            self.engine.containers.list(all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"})
        )

    def log(self) -> str:
        path = self.workdir / "worker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for container in self.containers():
            container.remove(force=True)


@pytest.fixture
def engine(docker_engine: None) -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def node(vhost_url: str, tmp_path: Path, engine: docker.DockerClient) -> Iterator[Node]:
    running = Node(vhost_url, tmp_path, engine)
    try:
        yield running
    finally:
        print(running.log()[-6000:])  # shown by pytest only when the test failed
        running.close()


@pytest.fixture
def master(node: Node) -> Iterator[Master]:
    client = Master(node.url)
    yield client
    client.close()


def serving(node: Node, master: Master, **options: Any) -> dict[str, Any]:
    """Start the task, then the worker; its first heartbeat that lists the task."""
    task_id = node.start_task()
    node.start_worker(**options)

    def listing() -> dict[str, Any] | None:
        beat = master.beat()
        return beat if beat and [t["task_id"] for t in beat["tasks"]] == [task_id] else None

    return wait_until(listing, what="a heartbeat listing the adopted task")


def leaving_beat(master: Master) -> dict[str, Any]:
    def leaving() -> dict[str, Any] | None:
        beat = master.beat()
        return beat if beat and beat["leaving"] else None

    return wait_until(leaving, timeout=5, what="a heartbeat with leaving=true")


def test_without_the_flag_sigterm_stops_only_the_agent(node: Node, master: Master) -> None:
    beat = serving(node, master)
    assert beat["leaving"] is False
    node.signal()
    assert node.exit_code(timeout=10) == 0
    assert [c.status for c in node.containers()] == ["running"]
    assert not any(b["leaving"] for b in master.take(master.beats, Heartbeat.TYPE))
    assert "its containers keep running" in node.log()


def test_a_leave_that_times_out_stops_the_containers_itself(node: Node, master: Master) -> None:
    serving(node, master, leave_on_terminate=True, leave_timeout=1.5)
    node.signal()
    beat = leaving_beat(master)
    assert [t["task_id"] for t in beat["tasks"]] == [node.task_id]  # still here: not moved yet

    assert node.exit_code(timeout=20) == 0
    assert node.containers() == []
    log = node.log()
    assert "leaving the cluster: waiting for the master to move 1 task(s)" in log
    assert "leave timed out after 1.5 s: stopping the 1 container(s) still here" in log
    assert "left the cluster" in log
    statuses = master.take(master.statuses, TaskStatus.TYPE)
    stopped = [s for s in statuses if s["state"] == "stopped"]
    assert [s["task_id"] for s in stopped] == [node.task_id]
    assert "left the cluster before the task was moved" in stopped[0]["reason"]


def test_a_leaving_worker_exits_once_the_master_has_stopped_its_tasks(
    node: Node, master: Master
) -> None:
    serving(node, master, leave_on_terminate=True, leave_timeout=120)
    node.signal()
    leaving_beat(master)
    assert node.process is not None and node.process.poll() is None  # waits for the master

    master.stop(node.node_id, node.task_id, node.job_id)
    assert node.exit_code(timeout=15) == 0  # long before the leave's timeout
    assert node.containers() == []
    assert "leave timed out" not in node.log()
    assert f"worker {node.node_id} left the cluster" in node.log()


def test_a_second_sigterm_while_leaving_exits_at_once_and_keeps_the_containers(
    node: Node, master: Master
) -> None:
    serving(node, master, leave_on_terminate=True, leave_timeout=120)
    node.signal()
    leaving_beat(master)
    node.signal()
    assert node.exit_code(timeout=10) == 0
    assert [c.status for c in node.containers()] == ["running"]
    assert "stopped before it could leave: 1 container(s) keep running" in node.log()


def test_a_leaving_worker_refuses_new_tasks(node: Node, master: Master) -> None:
    serving(node, master, leave_on_terminate=True, leave_timeout=120)
    node.signal()
    leaving_beat(master)
    spec = JobSpec(name="late", image=TEST_IMAGE, command=["sleep", "600"])
    late = StartTask(task_id="late-0-0", job_id="late", slot=0, node_id=node.node_id, spec=spec)
    master.publish(
        topology.ASSIGN_EXCHANGE, node.node_id, encode(late, sender="raw-master", epoch=1)
    )

    def refusal() -> dict[str, Any] | None:
        statuses = master.take(master.statuses, TaskStatus.TYPE)
        return next((s for s in statuses if s["task_id"] == late.task_id), None)

    status = wait_until(refusal, timeout=10, what="the late task's status")
    assert (status["state"], status["retryable"]) == ("failed", True)
    assert "is leaving the cluster" in status["reason"]
    assert [c.labels["corral.task"] for c in node.containers()] == [node.task_id]
