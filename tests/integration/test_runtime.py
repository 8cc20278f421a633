"""DockerRuntime against the real Docker engine, with the local busybox image.

Every test runs its own node id; the `runtime` fixture force-removes whatever
containers carry that node's label when the test ends, passed or failed.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from schemas.job import JobSpec, PortMapping
from schemas.messages import StartTask
from tests.integration.conftest import RUN_ID, RUN_LABEL
from worker.runtime import (
    ContainerInfo,
    DockerRuntime,
    RuntimeEvent,
    RuntimeUnavailable,
    StartError,
)

pytestmark = pytest.mark.integration

IMAGE = "local/busybox:latest"


def containers_of(engine: docker.DockerClient, node_id: str) -> list[Container]:
    return engine.containers.list(all=True, filters={"label": f"corral.node={node_id}"})


def make_task(node_id: str, command: list[str] | None, **spec: Any) -> StartTask:
    return StartTask(
        task_id=f"task-{uuid.uuid4().hex[:8]}",
        job_id="job-1",
        slot=0,
        node_id=node_id,
        spec=JobSpec(name="test-job", image=spec.pop("image", IMAGE), command=command, **spec),
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def task_state(rt: DockerRuntime, task_id: str) -> ContainerInfo | None:
    return next((info for info in rt.list_tasks() if info.task_id == task_id), None)


def wait_exited(rt: DockerRuntime, task_id: str) -> None:
    def exited() -> bool:
        info = task_state(rt, task_id)
        return info is not None and info.state == "exited"

    wait_for(exited, f"task {task_id} to exit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_ping_and_unreachable_engine(
    runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.ping()
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(RuntimeUnavailable, match="not reachable"):
        DockerRuntime("rt-nowhere")


def test_start_sets_labels_and_limits(
    runtime: DockerRuntime, engine: docker.DockerClient, node_id: str
) -> None:
    task = make_task(
        node_id, ["sleep", "300"], cpu=0.5, memory="64m", labels={"team": "infra"}, env={"A": "1"}
    )
    info = runtime.start(task, epoch=7)

    assert info.state == "running"
    assert (info.task_id, info.job_id, info.cpu, info.memory, info.epoch) == (
        task.task_id,
        "job-1",
        0.5,
        64 * 1024 * 1024,
        7,
    )
    container = engine.containers.get(info.container_id)
    assert container.name == f"corral-{task.task_id}"
    assert container.labels == {
        "corral.managed": "true",
        "corral.node": node_id,
        "corral.task": task.task_id,
        "corral.job": "job-1",
        "corral.slot": "0",
        "corral.epoch": "7",
        "corral.cpu": "0.5",
        "corral.memory": str(64 * 1024 * 1024),
        "team": "infra",
        RUN_LABEL: RUN_ID,
    }
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["AutoRemove"] is False
    assert host["RestartPolicy"]["Name"] in ("", "no")
    assert "A=1" in container.attrs["Config"]["Env"]
    assert runtime.list_tasks() == [info]


def test_start_is_idempotent(
    runtime: DockerRuntime, engine: docker.DockerClient, node_id: str
) -> None:
    task = make_task(node_id, ["sleep", "300"])
    first = runtime.start(task, epoch=1)
    again = runtime.start(task, epoch=1)
    assert again.container_id == first.container_id

    racing = make_task(node_id, ["sleep", "300"])
    barrier = threading.Barrier(2)

    def start_after_barrier() -> ContainerInfo:
        barrier.wait()
        return runtime.start(racing, epoch=1)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: start_after_barrier(), range(2)))
    assert results[0].container_id == results[1].container_id
    assert results[0].state == "running"

    ids = sorted(c.id or "" for c in containers_of(engine, node_id))
    assert ids == sorted([first.container_id, results[0].container_id])


def test_start_of_a_created_container_starts_it(
    runtime: DockerRuntime, engine: docker.DockerClient, node_id: str
) -> None:
    task = make_task(node_id, ["sleep", "300"])
    info = runtime.start(task, epoch=1)
    engine.containers.get(info.container_id).kill()
    wait_exited(runtime, task.task_id)
    # An exited container is reported, not restarted: restarting is the master's decision.
    exited = runtime.start(task, epoch=1)
    assert (exited.container_id, exited.state, exited.exit_code) == (
        info.container_id,
        "exited",
        137,
    )


def test_missing_image_is_not_retryable(runtime: DockerRuntime, node_id: str) -> None:
    task = make_task(node_id, None, image="local/no-such-image:1.0")
    with pytest.raises(StartError) as caught:
        runtime.start(task, epoch=1)
    assert caught.value.retryable is False
    assert "local/no-such-image:1.0" in caught.value.reason
    assert node_id in caught.value.reason


def test_missing_executable_is_not_retryable_and_leaves_nothing(
    runtime: DockerRuntime, engine: docker.DockerClient, node_id: str
) -> None:
    with pytest.raises(StartError) as caught:
        runtime.start(make_task(node_id, ["no-such-program"]), epoch=1)
    assert caught.value.retryable is False
    assert "executable file not found" in caught.value.reason
    assert "\n" not in caught.value.reason
    assert containers_of(engine, node_id) == []


def test_events_report_start_and_exit(
    runtime: DockerRuntime, engine: docker.DockerClient, node_id: str
) -> None:
    stop = threading.Event()
    received: queue.Queue[RuntimeEvent] = queue.Queue()

    def read() -> None:
        for event in runtime.events(stop):
            received.put(event)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        quick = runtime.start(make_task(node_id, ["sh", "-c", "exit 3"]), epoch=1)
        assert next_event(received).kind == "running"
        exited = next_event(received)
        assert (exited.kind, exited.exit_code, exited.container_id) == (
            "exited",
            3,
            quick.container_id,
        )

        sleeper = runtime.start(make_task(node_id, ["sleep", "300"]), epoch=1)
        assert next_event(received).kind == "running"
        engine.containers.get(sleeper.container_id).kill()
        killed = next_event(received)
        assert (killed.task_id, killed.kind, killed.exit_code) == (sleeper.task_id, "exited", 137)

        # Windows overlap by a second: nothing may be delivered twice as they roll over.
        with pytest.raises(queue.Empty):
            received.get(timeout=2.5)
    finally:
        stopped_at = time.monotonic()
        stop.set()
        reader.join(timeout=5)
    assert not reader.is_alive()
    assert time.monotonic() - stopped_at < 2.0


def next_event(received: queue.Queue[RuntimeEvent]) -> RuntimeEvent:
    try:
        return received.get(timeout=10)
    except queue.Empty:
        pytest.fail("no runtime event within 10 s")


def test_terminate_signals_without_waiting_and_remove_kills(
    runtime: DockerRuntime, engine: docker.DockerClient, node_id: str
) -> None:
    # sleep as PID 1 ignores SIGTERM: terminate must return anyway, leaving it running.
    task = make_task(node_id, ["sleep", "300"])
    runtime.start(task, epoch=1)
    assert runtime.terminate(task.task_id) == "signalled"
    info = task_state(runtime, task.task_id)
    assert info is not None and info.state == "running"
    assert runtime.remove(task.task_id) is True
    assert containers_of(engine, node_id) == []
    assert runtime.remove(task.task_id) is False
    assert runtime.terminate(task.task_id) == "gone"
    assert runtime.list_tasks() == []


def test_terminate_ends_a_polite_container_and_removes_an_ended_one(
    runtime: DockerRuntime, engine: docker.DockerClient, node_id: str
) -> None:
    script = "trap 'exit 0' TERM; echo ready; while true; do sleep 1; done"
    polite = make_task(node_id, ["sh", "-c", script])
    runtime.start(polite, epoch=1)
    # Until the trap is set, PID 1 ignores SIGTERM.
    wait_for(
        lambda: b"ready" in b"".join(runtime.logs(polite.task_id, follow=False, tail=None)),
        "the trap to be set",
    )
    assert runtime.terminate(polite.task_id) == "signalled"
    wait_exited(runtime, polite.task_id)
    # Not running any more: terminate removes it at once.
    assert runtime.terminate(polite.task_id) == "removed"
    assert containers_of(engine, node_id) == []


def test_published_port_serves_and_conflict_is_retryable(
    runtime: DockerRuntime, engine: docker.DockerClient, node_id: str
) -> None:
    port = free_port()
    serve = ["sh", "-c", "mkdir -p /w && echo hi > /w/index.html && httpd -f -p 80 -h /w"]
    ports = [PortMapping(container=80, host=port)]
    runtime.start(make_task(node_id, serve, ports=ports), epoch=1)

    body: list[bytes] = []

    def served() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                body.append(response.read())
                return True
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for(served, f"httpd on 127.0.0.1:{port}")
    assert body[-1] == b"hi\n"

    clash = make_task(node_id, serve, ports=ports)
    with pytest.raises(StartError) as caught:
        runtime.start(clash, epoch=1)
    assert caught.value.retryable is True
    assert "already allocated" in caught.value.reason
    assert task_state(runtime, clash.task_id) is None


def test_logs(runtime: DockerRuntime, node_id: str) -> None:
    task = make_task(node_id, ["sh", "-c", "echo one; echo two"])
    noisy = make_task(node_id, ["sh", "-c", "echo oops >&2"])
    runtime.start(task, epoch=1)
    runtime.start(noisy, epoch=1)
    wait_exited(runtime, task.task_id)
    wait_exited(runtime, noisy.task_id)

    assert b"".join(runtime.logs(task.task_id, follow=False, tail=None)) == b"one\ntwo\n"
    # On an exited container, following ends with the logs.
    assert b"".join(runtime.logs(task.task_id, follow=True, tail=1)) == b"two\n"
    assert b"".join(runtime.logs(noisy.task_id, follow=False, tail=None)) == b"oops\n"
    with pytest.raises(KeyError):
        runtime.logs("no-such-task", follow=False, tail=None)


def test_followed_logs_can_be_closed_from_another_thread(
    runtime: DockerRuntime, node_id: str
) -> None:
    task = make_task(node_id, ["sh", "-c", "echo ready; exec sleep 300"])
    runtime.start(task, epoch=1)
    stream = runtime.logs(task.task_id, follow=True, tail=None)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(stream))
    reader.start()
    wait_for(lambda: b"ready" in b"".join(chunks), "the first log line")
    stream.close()
    reader.join(timeout=5)
    assert not reader.is_alive()
