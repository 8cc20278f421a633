"""Corral's wheel, and the compose stack built from it, with no registry and no index.

The wheel: scripts/wheel.sh builds it with `python -m build`; it installs with
`pip install --no-index` into a fresh venv, and `corral` runs from a directory outside
the source tree, every file of the packages in it.

The stack (chaos-marked: the first build takes minutes): scripts/compose-image.sh makes
local/corral:latest (a debootstrap base, the wheels), `docker-compose up -d` starts the
broker, three masters and two workers under a project of the test's own, a job file in a
temporary directory is submitted through the cli service, which runs in the directory it
is started from, and its container runs on the host's engine. `down -v` and the removal
of the job's containers (by the workers' node label) leave nothing behind.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
# The first build: debootstrap (some 2.5 min here), the wheels (1 min), the image (40 s).
IMAGE_TIMEOUT_S = 1200
READY_TIMEOUT_S = 180.0


def _unavailable(why: str) -> NoReturn:
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


def _run(
    argv: list[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (
        f"{shlex.join(str(a) for a in done.args)} exited {done.returncode}:\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


# -- the wheel ------------------------------------------------------------------------


def _packages() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        find = tomllib.load(handle)["tool"]["setuptools"]["packages"]["find"]
    return [str(pattern).rstrip("*.") for pattern in find["include"]]


def _package_files() -> set[str]:
    """The files of the packages that git tracks (what a clone builds from)."""
    listed = _ok(_run(["git", "-C", str(ROOT), "ls-files", "--", *_packages()], timeout=30))
    return {name for name in listed.stdout.splitlines() if "__pycache__" not in name}


def test_the_wheel_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    built = _ok(_run(["bash", str(ROOT / "scripts" / "wheel.sh")], timeout=900))
    where = dict(
        line.split("=", 1)
        for line in built.stdout.splitlines()
        if line.startswith(("corral_wheel=", "deps="))
    )
    wheel, deps = Path(where["corral_wheel"]), Path(where["deps"])

    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert _package_files() - in_wheel == set(), "package files missing from the wheel"

    venv = tmp_path / "venv"
    # This pip installs into it (ensurepip would add half a minute on a busy machine).
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120))
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    _ok(_run([*pip, "-q", "--no-index", "--find-links", str(deps), str(wheel)], timeout=300))

    # Nothing of the work tree's environment: not its venv, not its directory.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    version = _ok(_run(["corral", "--version"], cwd=outside, env=env, timeout=60))
    assert version.stdout.startswith("corral "), version.stdout
    usage = _ok(_run(["corral", "-h"], cwd=outside, env=env, timeout=60))
    assert "Usage: corral" in usage.stdout and "master" in usage.stdout
    where_from = _ok(
        _run(
            ["python", "-c", f"import {', '.join(_packages())}; print(corral.__file__)"],
            cwd=outside,
            env=env,
            timeout=60,
        )
    )
    assert Path(where_from.stdout.strip()).is_relative_to(venv), where_from.stdout


# -- the compose stack ----------------------------------------------------------------


class Stack:
    """One project of compose/docker-compose.yml, its workers' nodes `<project>-w1` and
    `<project>-w2`, its cli service run in `workdir` (the job files' directory). Every
    call blocks until docker-compose returns."""

    def __init__(self, project: str, workdir: Path) -> None:
        self.project = project
        self.workdir = workdir
        self.nodes = (f"{project}-w1", f"{project}-w2")
        # PWD: the directory the cli service sees as its own (docker-compose reads it
        # from the environment, as a shell would have set it).
        self.env = {**os.environ, "CORRAL_NODE_PREFIX": project, "PWD": str(workdir)}

    def compose(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *argv]
        return _run(command, cwd=self.workdir, env=self.env, timeout=timeout)

    def corral(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`corral ARGV` in a container of the cli service, removed afterwards."""
        return self.compose("run", "--rm", "-T", "cli", *argv, timeout=timeout)

    def listing(self, what: str) -> list[dict[str, Any]]:
        """`corral WHAT -o json`, or [] while it fails (no master active yet)."""
        done = self.corral(what, "-o", "json")
        if done.returncode != 0:
            return []
        listed: list[dict[str, Any]] = json.loads(done.stdout)
        return listed

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until both workers are ready and the three masters listed, one active."""
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            nodes = {node["node_id"]: node["state"] for node in self.listing("nodes")}
            if nodes != dict.fromkeys(self.nodes, "ready"):
                return False
            roles = sorted(master["role"] for master in self.listing("masters"))
            return roles == ["active", "standby", "standby"]

        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"the stack was not ready within {timeout:g} s")
            time.sleep(1)

    def containers(self) -> list[str]:
        """The ids of the containers the workers started on the host's engine."""
        found = []
        for node in self.nodes:
            done = _run(
                ["docker", "ps", "-aq", "--filter", f"label=corral.node={node}"], timeout=60
            )
            found += done.stdout.split()
        return found

    def down(self) -> None:
        """Remove the stack (its containers, network and volumes) and the job containers."""
        self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=300)
        left = self.containers()
        if left:
            _run(["docker", "rm", "-f", "-v", *left], timeout=120)


@pytest.fixture(scope="module")
def compose_image(docker_engine: None) -> None:
    """local/corral:latest, built by scripts/compose-image.sh (minutes the first time,
    seconds after)."""
    if shutil.which("docker-compose") is None:
        _unavailable("docker-compose is not installed (scripts/bootstrap.sh installs it)")
    script = ROOT / "scripts" / "compose-image.sh"
    try:
        built = _run(["bash", str(script)], timeout=IMAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _unavailable(f"{script} did not finish within {IMAGE_TIMEOUT_S} s")
    if built.returncode != 0:
        _unavailable(f"{script} failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}")
    print(built.stdout)  # the build's timings, shown with the test's output


@pytest.fixture
def stack(compose_image: None, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(f"corral-test-{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        _ok(running.compose("up", "-d", timeout=300))
        yield running
    finally:
        logs = running.compose("logs", "--no-color", "--tail", "60")
        print(logs.stdout[-20000:])  # shown by pytest only when the test failed
        running.down()
    leftovers = _run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={running.project}"],
        timeout=60,
    ).stdout.split()
    assert leftovers + running.containers() == [], "the stack left containers behind"


@pytest.mark.chaos
@pytest.mark.timeout(IMAGE_TIMEOUT_S + 600)
def test_the_compose_stack_runs_a_job_from_a_host_file(stack: Stack) -> None:
    stack.wait_ready()

    (stack.workdir / "hello.yaml").write_text(
        "name: hello\n"
        "image: local/busybox:latest\n"
        "command: [sh, -c, 'echo hello from the compose stack']\n"
        "cpu: 0.1\n"
        "memory: 32m\n"
    )
    submitted = _ok(stack.corral("submit", "hello.yaml", "--wait", timeout=180))
    assert "job hello: complete" in submitted.stdout, submitted.stdout

    logs = _ok(stack.corral("logs", "hello"))
    assert "hello from the compose stack" in logs.stdout, logs.stdout
    (task,) = json.loads(_ok(stack.corral("ps", "hello", "-o", "json")).stdout)
    assert task["state"] == "exited" and task["exit_code"] == 0, task
    assert task["node_id"] in stack.nodes, task

    # The workers started it on the host's own engine, labelled with their node.
    label = '{{index .Config.Labels "corral.node"}}'
    on_host = _ok(_run(["docker", "inspect", "-f", label, task["container_id"]], timeout=60))
    assert on_host.stdout.strip() == task["node_id"]
