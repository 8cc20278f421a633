"""End to end: a task the kernel kills at its memory limit says so, with the limit."""

from __future__ import annotations

import json

import pytest

from tests.cluster import Cluster
from tests.integration.test_cluster import batch

pytestmark = pytest.mark.integration

# Reads 200 MB into a shell variable: far past a 16 MiB limit, so the kernel kills the shell.
HOG = 'a=$(head -c 200000000 /dev/zero | tr "\\0" x); echo ${#a}'
OOM = "out of memory (limit 16Mi)"


def test_an_oom_killed_task_is_reported_out_of_memory_with_its_limit(cluster: Cluster) -> None:
    info = cluster.client.submit(batch("hog", HOG, memory="16m")).wait(timeout=60)
    assert info.state == "failed"

    (task,) = cluster.client.job("hog").tasks
    assert task.state in ("exited", "failed")
    assert task.exit_code == 137  # the exit code stays: SIGKILL
    assert task.reason.startswith(OOM)

    rows = json.loads(cluster.cli("ps", "hog", "--output", "json").stdout)
    assert [(row["exit_code"], row["reason"]) for row in rows] == [(137, task.reason)]
    table = cluster.cli("ps", "hog")
    assert table.returncode == 0, table.stderr
    assert task.task_id in table.stdout and OOM in table.stdout
