"""The quick start's first command, `./scripts/demo.sh`, as a new user runs it: it makes a
broker user per role, starts a master and two workers as those users, and runs its
demo jobs; the broker's own list of connections shows no Corral process as guest.
Then `./scripts/demo.sh stop` stops what it started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo(*args: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/demo.sh", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "CORRAL_DEMO_PORT": str(port)},
        check=False,
    )


LIST_CONNECTIONS = ["rabbitmqctl", "-q", "list_connections", "--formatter", "json"]


def connections() -> list[dict[str, object]]:
    """The broker's own list of connections: each one's user and client properties."""
    command = [*LIST_CONNECTIONS, "user", "client_properties"]
    listed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    result: list[dict[str, object]] = json.loads(listed.stdout)
    return result


@pytest.fixture
def port(docker_engine: None) -> Iterator[int]:
    chosen = free_port()
    yield chosen
    demo("stop", port=chosen)


def test_the_demo_runs_every_process_as_its_role_user(port: int) -> None:
    done = demo(port=port)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "broker users: one per role" in done.stdout
    assert "Hello from Corral" in done.stdout and "result: 42" in done.stdout
    names: dict[str, object] = {}
    for connection in connections():
        triples = connection["client_properties"]  # [name, type, value] each
        assert isinstance(triples, list)
        properties = {name: value for name, _kind, value in triples}
        names[str(properties.get("connection_name", ""))] = connection["user"]
    demo_users = {name: user for name, user in names.items() if "demo" in name}
    assert demo_users, names
    assert names.get("master:demo-master") == "corral-master"
    assert {user for name, user in demo_users.items() if name.startswith("worker")} == {
        "worker-demo-w1",
        "worker-demo-w2",
    }
    assert "guest" not in demo_users.values()
    env = (ROOT / ".corral" / "env").read_text()
    assert "corral-admin" in env and "CORRAL_ROLE=admin" in env
