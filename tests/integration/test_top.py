"""The live model and `corral top` against a real cluster (a master and one worker)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from corral import Client
from corral.live import LiveCluster, View
from tests.cluster import Cluster
from tests.conftest import TEST_IMAGE, Broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(
    broker: Broker, docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    vhost = f"corral-test-{uuid.uuid4().hex[:10]}"
    running = Cluster(broker.create_vhost(vhost), tmp_path_factory.mktemp("top"))
    try:
        running.start(workers=1)
        yield running
    finally:
        print(running.logs())
        running.close()
        broker.delete_vhost(vhost)


def service(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "service",
        "image": TEST_IMAGE,
        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
        "replicas": 1,
        "stop_grace": 1,
        "min_healthy": 0.5,
    }


class CountingClient(Client):
    """Counts the full task listings (the live model's initial load and its resyncs)."""

    listings = 0

    def iter_tasks(self, job_id: str | None = None, **options: Any) -> Any:
        if job_id is None:
            type(self).listings += 1
        return super().iter_tasks(job_id, **options)


def wait_view(live: LiveCluster, ready: Any, timeout: float = 60.0) -> View:
    """The first View for which `ready(view)` holds, woken by each change."""
    deadline = time.monotonic() + timeout
    view = live.view()
    while not ready(view):
        left = deadline - time.monotonic()
        assert left > 0, f"the live view never got there: {view}"
        view = live.wait(view.version, min(left, 1.0))
    return view


def test_a_submitted_job_shows_up_running_through_events(cluster: Cluster) -> None:
    live = LiveCluster(
        lambda: CountingClient(cluster.client_url, role=cluster.client_role),
        refresh=600.0,  # nothing is listed again while the test runs: events only
        resync=600.0,
    )
    live.start()
    try:
        first = wait_view(live, lambda view: view.connected)
        assert cluster.node_id("w1") in first.nodes and "live" not in first.jobs
        assert CountingClient.listings == 1
        cluster.client.submit(service("live"))
        view = wait_view(
            live,
            lambda view: (
                "live" in view.jobs
                and view.jobs["live"].state == "running"
                and view.task_counts.get("running", 0) >= 1
            ),
        )
        task = next(task for task in view.tasks.values() if task.job_id == "live")
        assert task.state == "running" and task.node_id == cluster.node_id("w1")
        assert CountingClient.listings == 1, "the job came from a listing, not from events"
        healthy = wait_view(live, lambda view: view.jobs["live"].healthy == 1)
        assert healthy.jobs["live"].task_counts == {"running": 1}
        cluster.client.cancel("live")
        wait_view(live, lambda view: view.jobs["live"].state == "cancelled")
    finally:
        live.stop()


# -- corral top in a pseudo-terminal --

ROWS, COLUMNS = 40, 140
CSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


class Terminal:
    """`corral top` with a pseudo-terminal of ROWS x COLUMNS as its stdin, stdout and
    stderr; `screen` is what it wrote, escape sequences removed."""

    def __init__(self, cluster: Cluster) -> None:
        self.fd, follower = os.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.modes = termios.tcgetattr(follower)
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("COLUMNS", "LINES", "NO_COLOR")
        }
        env.update(TERM="xterm-256color", CORRAL_AMQP_URL=cluster.client_url)
        if cluster.client_role:
            env["CORRAL_ROLE"] = cluster.client_role
        self.process = subprocess.Popen(
            [sys.executable, "-m", "corral", "top"],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=env,
            start_new_session=True,  # the pty becomes its controlling terminal
        )
        os.close(follower)
        self.output = b""

    @property
    def screen(self) -> str:
        return CSI.sub("", self.output.decode(errors="replace"))

    def read(self, timeout: float) -> bool:
        """Read what comes within `timeout` s; False at the end of the output."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        self.output += data
        return bool(data)

    def read_until(self, done: Callable[[str], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.screen):
            assert time.monotonic() < deadline, f"not on the screen:\n{self.screen[-3000:]}"
            assert self.read(0.2), f"corral top ended:\n{self.screen[-3000:]}"

    def finish(self) -> int:
        """Read to the end; the exit code."""
        deadline = time.monotonic() + 20
        while self.read(0.2) and time.monotonic() < deadline:
            pass
        return self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.fd)


def a_line_with(*words: str) -> Callable[[str], bool]:
    return lambda screen: any(all(word in line for word in words) for line in screen.splitlines())


@pytest.mark.parametrize("quit_by", ["q", "SIGINT"])
def test_top_shows_the_cluster_in_a_terminal_and_gives_it_back(
    cluster: Cluster, quit_by: str
) -> None:
    name = f"top-{quit_by.lower()}"
    cluster.client.submit(service(name))
    terminal = Terminal(cluster)
    try:
        terminal.read_until(a_line_with(cluster.node_id("w1"), "ready"))
        terminal.read_until(a_line_with(name, "service", "running", "1/1"))
        screen = terminal.screen
        assert "corral top" in screen and "broker connected" in screen
        assert "NODES 1" in screen and "JOBS" in screen and "EVENTS" in screen
        if quit_by == "q":
            os.write(terminal.fd, b"q")
        else:
            terminal.process.send_signal(signal.SIGINT)
        assert terminal.finish() == 0, terminal.screen[-3000:]
        tail = terminal.output[-200:]
        assert b"\x1b[?1049l" in tail, tail  # the alternate screen left
        assert b"\x1b[?25h" in tail, tail  # the cursor shown again
        assert b"Traceback" not in terminal.output
        assert termios.tcgetattr(terminal.fd)[3] == terminal.modes[3]  # echo, line mode back
    finally:
        terminal.close()
        cluster.client.cancel(name)


def test_top_once_prints_one_frame(cluster: Cluster) -> None:
    done = cluster.cli("top", "--once")
    assert done.returncode == 0, done.stderr
    assert cluster.node_id("w1") in done.stdout and "NODES 1" in done.stdout
    assert "\x1b" not in done.stdout  # not a terminal: no colour, no cursor moves
