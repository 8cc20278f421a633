"""Docker's own health checks, as DockerRuntime sets them up and reads them back.

Against the real engine with the local busybox image: a check of each kind is
created with the container, its verdicts arrive through `DockerRuntime.events`
(which must ask the engine for `health_status` events), list entries show the
verdict, and `health_reason` quotes a failed check. Every test runs its own node
id; its containers are force-removed by that label afterwards.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from schemas.job import HealthCheck, JobSpec
from schemas.messages import Health, StartTask
from worker.runtime import DockerRuntime, RuntimeEvent

pytestmark = pytest.mark.integration

IMAGE = "local/busybox:latest"
HTTPD = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"
FAST = {"interval": 0.2, "timeout": 1, "retries": 2}


class Events:
    """The runtime's events, read by a thread of their own."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.received: queue.Queue[RuntimeEvent] = queue.Queue()
        self.verdicts: dict[str, list[Health]] = {}  # task id -> verdicts not yet taken
        self.stop = threading.Event()
        self.reader = threading.Thread(target=self._read, args=(runtime,), daemon=True)
        self.reader.start()

    def _read(self, runtime: DockerRuntime) -> None:
        for event in runtime.events(self.stop):
            self.received.put(event)

    def health(self, task_id: str, timeout: float = 10.0) -> Health:
        """The next verdict on `task_id`'s container, in the order the engine gave them."""
        deadline = time.monotonic() + timeout
        while not self.verdicts.get(task_id):
            left = deadline - time.monotonic()
            try:
                event = self.received.get(timeout=max(left, 0.001))
            except queue.Empty:
                pytest.fail(f"no health event for {task_id} within {timeout} s")
            if event.kind == "health":
                self.verdicts.setdefault(event.task_id, []).append(event.health)
        return self.verdicts[task_id].pop(0)

    def close(self) -> None:
        self.stop.set()
        self.reader.join(timeout=5)


@pytest.fixture
def events(runtime: DockerRuntime) -> Iterator[Events]:
    reader = Events(runtime)
    yield reader
    reader.close()


def make_task(node_id: str, script: str, health: dict[str, Any]) -> StartTask:
    spec = JobSpec(
        name="hc", image=IMAGE, command=["sh", "-c", script], health=HealthCheck(**health)
    )
    return StartTask(
        task_id=f"task-{uuid.uuid4().hex[:8]}", job_id="hc", slot=0, node_id=node_id, spec=spec
    )


def test_an_http_check_against_httpd_turns_healthy(
    runtime: DockerRuntime, events: Events, engine: docker.DockerClient, node_id: str
) -> None:
    task = make_task(node_id, HTTPD, {"http": {"port": 8080, "path": "/index.html"}, **FAST})
    info = runtime.start(task, epoch=1)
    assert (info.state, info.health) == ("running", "starting")
    check = engine.containers.get(info.container_id).attrs["Config"]["Healthcheck"]
    assert check["Test"][0] == "CMD-SHELL"
    assert (check["Interval"], check["Timeout"], check["Retries"]) == (200_000_000, 10**9, 2)

    assert events.health(task.task_id) == "healthy"
    # A list entry (the agent's adoption) shows the verdict too.
    (listed,) = runtime.list_tasks()
    assert listed.health == "healthy"


def test_a_failing_command_check_turns_unhealthy_and_says_why(
    runtime: DockerRuntime, events: Events, node_id: str
) -> None:
    check = {"command": ["sh", "-c", "echo not ready yet; exit 1"], **FAST}
    task = make_task(node_id, "exec sleep 300", check)
    info = runtime.start(task, epoch=1)

    assert events.health(task.task_id) == "unhealthy"
    assert runtime.health_reason(info.container_id) == (
        "health check failed 2 times in a row: not ready yet"
    )
    (listed,) = runtime.list_tasks()
    assert listed.health == "unhealthy"


def test_tcp_and_http_checks_fail_on_a_closed_port_or_an_error_status(
    runtime: DockerRuntime, events: Events, node_id: str
) -> None:
    closed = runtime.start(make_task(node_id, HTTPD, {"tcp": 8081, **FAST}), epoch=1)
    missing = runtime.start(
        make_task(node_id, HTTPD, {"http": {"port": 8080, "path": "/nope?a='$x'"}, **FAST}),
        epoch=1,
    )
    assert events.health(closed.task_id) == "unhealthy"
    assert "Connection refused" in runtime.health_reason(closed.container_id)
    assert events.health(missing.task_id) == "unhealthy"
    assert "GET /nope?a='$x' on port 8080: HTTP/1.1 404" in runtime.health_reason(
        missing.container_id
    )


def test_a_tcp_check_passes_on_an_open_port(
    runtime: DockerRuntime, events: Events, node_id: str
) -> None:
    task = make_task(node_id, HTTPD, {"tcp": 8080, **FAST})
    runtime.start(task, epoch=1)
    assert events.health(task.task_id) == "healthy"


def test_the_reason_of_a_missing_container_is_a_key_error(runtime: DockerRuntime) -> None:
    with pytest.raises(KeyError):
        runtime.health_reason("0" * 64)
