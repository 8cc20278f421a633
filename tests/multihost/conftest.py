"""Fixtures of the multi-host tests: one rig of Docker-in-Docker hosts per session.

Every test here is marked `multihost` and `chaos` (so scripts/test.sh runs them in its
serial chaos run, after the rest), with a longer timeout: the first test's setup may
build the host image (scripts/host-image.sh, about 1.5 min) and the wheels (about
1 min); later sessions reuse both.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import IN_CI
from tests.multihost.rig import HOST_IMAGE, ROOT, Rig, RigError, build_wheels, docker

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 900  # covers building the image and the wheels in the first test's setup


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "multihost: runs Corral on Docker-in-Docker hosts (tests/multihost/rig.py)"
    )


@pytest.hookimpl(tryfirst=True)  # before tests/conftest.py orders the chaos tests last
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.multihost)
            item.add_marker(pytest.mark.chaos)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TIMEOUT_S))


def _unavailable(why: str) -> NoReturn:
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


def _ensure_host_image() -> None:
    if docker("image", "inspect", HOST_IMAGE, check=False).returncode == 0:
        return
    script = ROOT / "scripts" / "host-image.sh"
    try:
        built = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, timeout=TIMEOUT_S - 120
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"{script} did not finish within {TIMEOUT_S - 120} s")
    if built.returncode != 0:
        _unavailable(f"{script} failed:\n{built.stdout[-2000:]}\n{built.stderr[-2000:]}")


@pytest.fixture(scope="session")
def rig(docker_engine: None) -> Iterator[Rig]:
    """The rig (no hosts yet: tests add theirs and remove them); removed at the end."""
    _ensure_host_image()
    try:
        wheels = build_wheels()
    except RigError as exc:
        _unavailable(f"building the corral wheels failed: {exc}")
    running = Rig(wheels)
    try:
        yield running
    finally:
        running.close()
