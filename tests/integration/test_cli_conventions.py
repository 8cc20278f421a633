"""The CLI's conventions against a real cluster: `ps --watch` sees a new job's rows
appear and ends on Ctrl-C with 0; on a pseudo-terminal a watched table is redrawn and
its state cells coloured, unless NO_COLOR is set; a named context reaches the cluster
without --amqp or CORRAL_AMQP_URL."""

from __future__ import annotations

import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corral.colour import GREEN
from corral.listings import CLEAR
from tests.cluster import Cluster
from tests.integration.test_cluster import batch

pytestmark = pytest.mark.integration


def cli_env(cluster: Cluster, **more: str) -> dict[str, str]:
    env = {**os.environ, "CORRAL_AMQP_URL": cluster.client_url, **more}
    env.pop("NO_COLOR", None)
    env.pop("CORRAL_CONTEXT", None)
    if cluster.client_role:
        env["CORRAL_ROLE"] = cluster.client_role
    return env


def lines_of(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout lines, read on a thread as they come."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue[str], wanted: str, seen: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        seen.append(line)
        if wanted in line:
            return line
    raise AssertionError(f"no line with {wanted!r} within {timeout} s; saw {seen!r}")


def test_ps_watch_shows_a_new_jobs_row_and_ends_on_ctrl_c(cluster: Cluster) -> None:
    argv = [sys.executable, "-m", "corral", "ps", "--watch"]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(cluster)
    )
    try:
        seen: list[str] = []
        lines = lines_of(process)
        assert wait_for_line(lines, "TASK", seen, 20).split()[:2] == ["TASK", "JOB"]
        cluster.client.submit(batch("watched", "sleep 30"))
        row = wait_for_line(lines, "watched", seen, 20)
        assert row.split()[1] == "watched"
        while row.split()[4] != "running":  # printed again as it changes
            row = wait_for_line(lines, "watched", seen, 30)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "Traceback" not in err


def run_on_a_terminal(argv: list[str], env: dict[str, str], seconds: float) -> str:
    """What `argv` writes on a pseudo-terminal in `seconds` (then Ctrl-C), or until it ends."""
    parent, child = pty.openpty()
    process = subprocess.Popen(argv, stdout=child, stderr=child, env=env)
    os.close(child)
    output = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([parent], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        os.close(parent)
    return output.decode(errors="replace")


def test_on_a_terminal_tables_are_coloured_and_watches_redrawn(cluster: Cluster) -> None:
    corral = [sys.executable, "-m", "corral"]
    plain_env = cli_env(cluster)
    coloured = run_on_a_terminal([*corral, "nodes"], plain_env, 30)
    assert f"{GREEN}ready" in coloured, coloured
    assert GREEN not in run_on_a_terminal([*corral, "nodes"], {**plain_env, "NO_COLOR": "1"}, 30)
    piped = cluster.cli("nodes")
    assert piped.returncode == 0 and "\x1b" not in piped.stdout

    watched = run_on_a_terminal([*corral, "nodes", "--watch"], plain_env, 8)
    assert watched.startswith(CLEAR) and "as of " in watched, watched
    assert cluster.node_id("w1") in watched and f"{GREEN}ready" in watched


def test_a_context_reaches_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    env = cli_env(cluster, XDG_CONFIG_HOME=str(tmp_path))
    del env["CORRAL_AMQP_URL"]

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "corral", *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)

    added = corral("context", "add", "test", "--amqp", cluster.client_url, "--use")
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "corral" / "contexts.yaml").stat().st_mode & 0o077 == 0
    nodes = corral("nodes", "--no-headers", "-o", "wide")
    assert nodes.returncode == 0, nodes.stderr
    assert {line.split()[0] for line in nodes.stdout.splitlines()} == {
        cluster.node_id("w1"),
        cluster.node_id("w2"),
    }
    shown = corral("context", "show")
    assert "context: test (the current context" in shown.stdout
