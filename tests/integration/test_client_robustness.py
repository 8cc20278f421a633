"""The SDK and CLI against hostile or missing peers: no cluster, no master, garbage on
corral.status, malformed URLs, paged listings and a worker's refusal, with the real broker."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any

import pika
import pytest

from bus import topology
from bus.connection import Bus
from corral import Client, CorralError, NoCluster, NoMaster
from schemas.envelope import encode
from schemas.limits import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES
from schemas.messages import JobEvent
from tests.cluster import Cluster
from tests.conftest import TEST_IMAGE, Broker

pytestmark = pytest.mark.integration

DEEP = 100_000  # far past MAX_JSON_DEPTH, and past Python's own recursion limit


def hostile_bodies(job_id: str) -> list[bytes]:
    """Messages no reader of corral.status may choke on."""
    envelope = {"type": "job.status", "version": 1, "sender": "x"}
    nested = json.dumps({**envelope, "payload": {"job_id": job_id, "state": "failed"}})
    return [
        b"\x00\xff not json at all",
        b"[" * DEEP + b"]" * DEEP,
        nested.replace('"failed"', "[" * DEEP + "]" * DEEP).encode(),
        json.dumps({**envelope, "payload": {"job_id": job_id, "state": "exploded"}}).encode(),
        nested.replace('"failed"', "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH).encode(),
    ]


class Heckler:
    """Publishes hostile bodies (and once an oversized one) on corral.status with raw pika,
    in rounds, on a thread of its own, until stopped."""

    def __init__(self, url: str, routing_key: str, extra: bytes | None = None) -> None:
        self.url = url
        self.routing_key = routing_key
        self.extra = extra
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Heckler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        job_id = self.routing_key.split(".")[1]
        channel.basic_publish(
            topology.STATUS_EXCHANGE, self.routing_key, b"{" + b" " * MAX_MESSAGE_BYTES + b"}"
        )
        while not self._stop.is_set():
            for body in hostile_bodies(job_id) + ([self.extra] if self.extra else []):
                channel.basic_publish(topology.STATUS_EXCHANGE, self.routing_key, body)
            self.rounds += 1
            connection.process_data_events(time_limit=0.3)
        connection.close()


def vhost_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])


def corral(*args: str, url: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args, "--amqp", url],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def declare_topology(url: str) -> None:
    """What a daemon declares on connecting: corral.api exists, with nobody consuming it."""
    bus = Bus(url, name="test-setup")
    bus.connect(attempts=3)
    bus.close()


def test_a_vhost_without_a_cluster_fails_at_once_and_is_left_untouched(
    vhost_url: str, broker: Broker
) -> None:
    started = time.monotonic()
    with Client(vhost_url, timeout=10) as client, pytest.raises(NoCluster) as raised:
        client.nodes()
    assert time.monotonic() - started < 3
    assert "no Corral cluster runs on" in str(raised.value)
    assert "corral.api does not exist" in str(raised.value)
    vhost = urllib.parse.quote(vhost_of(vhost_url), safe="")
    assert broker.api("GET", f"queues/{vhost}") == []
    exchanges = {e["name"] for e in broker.api("GET", f"exchanges/{vhost}")}
    assert not {name for name in exchanges if name.startswith("corral.")}

    result = corral("jobs", url=vhost_url)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no Corral cluster runs on")
    assert "Traceback" not in result.stderr


def test_no_master_fails_at_once(vhost_url: str) -> None:
    declare_topology(vhost_url)
    started = time.monotonic()
    with Client(vhost_url, timeout=10) as client, pytest.raises(NoMaster) as raised:
        client.submit({"name": "x", "image": TEST_IMAGE})
    assert time.monotonic() - started < 3
    assert str(raised.value).startswith("no master is running")


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The lines of a child's output, read on a thread so the test can wait with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], timeout: float = 15) -> str:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no output within {timeout:g} s")


@pytest.fixture
def watch(vhost_url: str) -> Iterator[subprocess.Popen[str]]:
    declare_topology(vhost_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "corral", "watch", "job.#", "--amqp", vhost_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_watch_warns_without_a_master_and_survives_garbage(
    vhost_url: str, watch: subprocess.Popen[str]
) -> None:
    assert watch.stderr is not None and watch.stdout is not None
    warning = next_line(lines_of(watch.stderr))
    assert warning.startswith("warning: no master is running"), warning
    assert "watching anyway" in warning
    valid = encode(JobEvent(job_id="late", state="failed", reason="x"), sender="test")
    stdout = lines_of(watch.stdout)
    with Heckler(vhost_url, "job.late.failed", extra=valid) as heckler:
        line = next_line(stdout)
        assert heckler.rounds >= 1
    assert line.rstrip("\n").endswith("job.late.failed  job late: failed (x)")
    assert watch.poll() is None


def test_wait_and_run_wait_survive_garbage_on_the_status_exchange(cluster: Cluster) -> None:
    spec = {"name": "calm", "image": TEST_IMAGE, "command": ["sleep", "2"]}
    with Heckler(cluster.amqp_url, "job.calm.running") as heckler:
        info = cluster.client.submit(spec).wait(timeout=60)
        assert heckler.rounds >= 2
    assert info.state == "complete"

    with Heckler(cluster.amqp_url, "job.calm2.running") as heckler:
        result = cluster.cli(
            "run", "--wait", "--timeout", "60", "--name", "calm2", TEST_IMAGE, "sleep", "2"
        )
    assert result.returncode == 0, result.stderr
    assert "job calm2: complete" in result.stdout
    assert "Traceback" not in result.stderr


def test_listings_follow_pages_and_a_workers_refusal_reads_as_an_error(cluster: Cluster) -> None:
    spec: dict[str, Any] = {
        "name": "many",
        "image": TEST_IMAGE,
        "command": ["echo", "hi"],
        "replicas": 5,
        "cpu": 0.1,
        "restart": {"max_retries": 0},
    }
    info = cluster.client.submit(spec).wait(timeout=60)
    assert info.state == "complete"
    with Client(cluster.amqp_url, page_size=2) as small_pages:
        assert len(small_pages.tasks("many")) == 5
        assert [j.job_id for j in small_pages.jobs()] == ["many"]
        assert len(small_pages.nodes()) == 2
        task = small_pages.find_task(info.tasks[0].task_id)
    jobs = cluster.cli("jobs")
    assert jobs.returncode == 0, jobs.stderr
    assert jobs.stdout.splitlines()[1].split()[:4] == ["many", "batch", "complete", "0/5"]
    ps = cluster.cli("ps", "many", "-o", "json")
    assert len(json.loads(ps.stdout)) == 5

    for container in cluster.containers("many"):
        if container.labels.get("corral.task") == task.task_id:
            container.remove(force=True)
    with pytest.raises(CorralError) as raised:
        "".join(cluster.client.logs(task.task_id))
    assert str(raised.value).startswith(f"worker {task.node_id}: ")
    assert "unexpected answer" not in str(raised.value)


@pytest.mark.parametrize("command", ["master", "worker"])
def test_a_daemon_refuses_a_malformed_url_without_a_traceback(command: str) -> None:
    result = corral(command, url="amqp://guest:hunter22@localhost:notaport/")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: invalid --amqp URL 'amqp://guest:***@localhost:notaport/' (the port"
        " 'notaport' is not a number): expected amqp://USER:PASSWORD@HOST:PORT/VHOST"
    )
