"""Several broker URLs with the real broker: a node that refuses is passed over, each
reconnect moves on to the next node, and the CLI takes --amqp more than once."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.connection import Bus
from bus.errors import ConnectionLost
from corral.errors import redact_url
from tests.cluster import wait_until

pytestmark = pytest.mark.integration


def on_port(url: str, netloc_host: str) -> str:
    """`url` with its host and port replaced (same user, password and vhost)."""
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc_host}"))


@pytest.fixture
def refused(vhost_url: str) -> str:
    """A URL where nothing listens (the connection is refused at once)."""
    return on_port(vhost_url, "127.0.0.1:1")


@pytest.fixture
def bus_of(vhost_url: str) -> Iterator[list[Bus]]:
    made: list[Bus] = []
    yield made
    for bus in made:
        bus.close()


def test_a_bus_connects_through_the_second_url_when_the_first_is_refused(
    vhost_url: str, refused: str, bus_of: list[Bus]
) -> None:
    bus = Bus(f"{refused},{vhost_url}", name="multi-url")
    bus_of.append(bus)
    bus.connect(attempts=1)
    assert bus.connected
    assert bus.connected_url == redact_url(vhost_url)
    bus.close()
    assert bus.connected_url is None


def test_each_reconnect_starts_at_the_node_after_the_one_used_last(
    vhost_url: str, refused: str, bus_of: list[Bus]
) -> None:
    # Two names for the one broker we have stand for two cluster nodes.
    parts = urllib.parse.urlsplit(vhost_url)
    node_a = on_port(vhost_url, f"127.0.0.1:{parts.port or 5672}")
    node_b = on_port(vhost_url, f"localhost:{parts.port or 5672}")
    bus = Bus(f"{refused},{node_a},{node_b}", name="multi-url-rotation")
    bus_of.append(bus)
    seen = []
    for _ in range(3):
        bus.connect(attempts=1)
        seen.append(bus.connected_url)
        bus.lost(ConnectionLost("a test drops the connection"))
    # refused, then a; after a: b; after b: (refused) then a.
    assert seen == [redact_url(node_a), redact_url(node_b), redact_url(node_a)]


def corral(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CORRAL_AMQP_URL": "", **(env or {})},
    )


def declare_topology(url: str) -> None:
    """What a daemon declares on connecting: corral.api exists, with nobody consuming it."""
    bus = Bus(url, name="test-setup")
    bus.connect(attempts=3)
    bus.close()


def test_the_cli_takes_amqp_more_than_once_and_a_list_in_the_environment(
    vhost_url: str, refused: str
) -> None:
    declare_topology(vhost_url)
    # Reaching the broker through the second URL, it finds corral.api without a master.
    result = corral("nodes", "--amqp", refused, "--amqp", vhost_url)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: no master is running"), result.stderr
    result = corral("nodes", env={"CORRAL_AMQP_URL": f"{refused},{vhost_url}"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: no master is running"), result.stderr
    assert redact_url(f"{refused},{vhost_url}") in result.stderr
    result = corral("master", "--amqp", f"{refused},{vhost_url}", "--amqp", "amqp://h:port/")
    assert result.returncode == 2
    assert "(URL 3 of 3: the port 'port' is not a number)" in result.stderr


def test_a_daemon_joins_repeated_amqp_options(vhost_url: str, refused: str, tmp_path: Path) -> None:
    log_path = tmp_path / "master.log"
    with log_path.open("wb") as log:
        master = subprocess.Popen(
            [sys.executable, "-m", "corral", "master", "--amqp", refused, "--amqp", vhost_url],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CORRAL_AMQP_URL": "", "PYTHONUNBUFFERED": "1"},
        )
    try:
        expected = f"connected to the broker at {redact_url(vhost_url)}"
        wait_until(lambda: expected in log_path.read_text(), what=expected)
    finally:
        master.terminate()
        master.wait(timeout=15)
