"""The CLI over a job's lifetime, end to end: `run --wait` exits with the container's exit
code, and `corral logs` / `corral ps` show the current attempt of each slot of a job
that was retried (`--previous` and `-a` the older ones)."""

from __future__ import annotations

import re

import pytest

from schemas.api import TaskInfo
from tests.cluster import Cluster
from tests.conftest import TEST_IMAGE
from tests.integration.test_cluster import batch

pytestmark = pytest.mark.integration

# Each attempt prints a line of its own: `run <a random uuid>`.
RUN_LINE = r"run [0-9a-f-]{36}\n"
SAYS_WHICH_RUN = "echo run $(cat /proc/sys/kernel/random/uuid)"


def run_wait(cluster: Cluster, name: str, *args: str) -> tuple[int, str, str]:
    result = cluster.cli("run", "--wait", "--timeout", "60", "--name", name, *args)
    return result.returncode, result.stdout, result.stderr


def task_ids(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:]]


def test_run_wait_exits_with_the_containers_exit_code(cluster: Cluster) -> None:
    code, out, err = run_wait(
        cluster, "three", "--max-retries", "0", TEST_IMAGE, "sh", "-c", "exit 3"
    )
    assert code == 3, out + err
    assert "exit codes: slot 0: 3" in out
    assert "error: job three failed" in err

    code, out, err = run_wait(cluster, "fine", TEST_IMAGE, "true")
    assert code == 0, out + err
    assert "job fine: complete" in out

    code, out, err = run_wait(
        cluster, "pair", "--replicas", "2", "--max-retries", "0", TEST_IMAGE, "sh", "-c", "exit 5"
    )
    # The first slot to fail fails the job, and the other may be stopped before it exits.
    assert code == 5, out + err
    assert re.search(r"exit codes: .*slot \d: 5", out)


def test_run_wait_of_a_job_that_cannot_start_exits_1_with_the_reason(cluster: Cluster) -> None:
    code, out, err = run_wait(cluster, "ghost", "corral-test/no-such-image:1", "true")
    assert code == 1, out + err
    assert err.startswith("error: job ghost failed: ")
    assert "corral-test/no-such-image:1" in err


def retried(cluster: Cluster, name: str) -> list[TaskInfo]:
    """Run a batch job whose only slot fails 3 times; its attempts, oldest first."""
    spec = batch(
        name, f"{SAYS_WHICH_RUN}; exit 1", restart={"max_retries": 2, "backoff_initial": 0.5}
    )
    info = cluster.client.submit(spec).wait(timeout=60)
    assert info.state == "failed"
    assert [t.attempt for t in info.tasks] == [0, 1, 2]
    return info.tasks


def test_logs_and_ps_of_a_retried_job_show_its_newest_attempt(cluster: Cluster) -> None:
    attempts = retried(cluster, "flaky")
    newest = attempts[-1]

    logs = cluster.cli("logs", "flaky")
    assert logs.returncode == 0, logs.stderr
    assert re.fullmatch(rf"\[0\] {RUN_LINE}", logs.stdout)
    assert logs.stdout == "[0] " + "".join(cluster.client.logs(newest.task_id))

    # A prefix of the slot's task ids (`flaky-<submission>-0`) is its newest attempt.
    slot_prefix = newest.task_id.rsplit("-", 1)[0]
    by_prefix = cluster.cli("logs", slot_prefix)
    assert by_prefix.returncode == 0, by_prefix.stderr
    assert "[0] " + by_prefix.stdout == logs.stdout

    ps = cluster.cli("ps", "flaky")
    assert ps.returncode == 0, ps.stderr
    assert task_ids(ps.stdout) == [newest.task_id]
    every = cluster.cli("ps", "-a", "flaky")
    assert every.returncode == 0, every.stderr
    assert task_ids(every.stdout) == [t.task_id for t in attempts]


def test_logs_previous_shows_the_attempt_before_the_newest(cluster: Cluster) -> None:
    attempts = retried(cluster, "flaky")
    newest = cluster.cli("logs", "flaky")
    previous = cluster.cli("logs", "--previous", "flaky")
    assert previous.returncode == 0, previous.stderr
    assert re.fullmatch(rf"\[0\] {RUN_LINE}", previous.stdout)
    assert previous.stdout != newest.stdout
    assert previous.stdout == "[0] " + "".join(cluster.client.logs(attempts[-2].task_id))
    by_task = cluster.cli("logs", "--previous", attempts[-1].task_id)
    assert "[0] " + by_task.stdout == previous.stdout


def test_logs_of_a_job_of_several_slots_prefix_each_and_refuse_follow(cluster: Cluster) -> None:
    info = cluster.client.submit(batch("trio", SAYS_WHICH_RUN, replicas=3)).wait(timeout=60)
    assert info.state == "complete", info.reason

    logs = cluster.cli("logs", "trio")
    assert logs.returncode == 0, logs.stderr
    assert re.fullmatch(rf"\[0\] {RUN_LINE}\[1\] {RUN_LINE}\[2\] {RUN_LINE}", logs.stdout)

    follow = cluster.cli("logs", "--follow", "trio")
    assert follow.returncode == 2
    assert "job trio has 3 slots: pick a task" in follow.stderr
    assert follow.stdout == ""
