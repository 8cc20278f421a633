"""Shared fixtures: the real broker (one vhost per test) and the real Docker engine.

The broker is `CORRAL_TEST_AMQP_URL`, else a RabbitMQ answering on
127.0.0.1:5672, else one started through testcontainers. Without any, the
integration tests skip on a laptop but fail in CI (`CORRAL_IN_CI=1`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.admin import Management
from tests.accounts import Accounts
from tests.cluster import Cluster

IN_CI = bool(os.environ.get("CORRAL_IN_CI") or os.environ.get("CI"))
TEST_IMAGE = "local/busybox:latest"


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"{why} (CI must run the integration tests: run scripts/bootstrap.sh)")
    pytest.skip(why)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Broker:
    """A RabbitMQ we may create vhosts on (through its management API)."""

    def __init__(self, amqp_url: str, management_url: str) -> None:
        self.amqp_url = amqp_url
        parts = urllib.parse.urlsplit(amqp_url)
        self.user = urllib.parse.unquote(parts.username or "guest")
        self.password = urllib.parse.unquote(parts.password or "guest")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5672
        self.management_url = management_url.rstrip("/")
        self._accounts: Accounts | None = None

    @property
    def accounts(self) -> Accounts:
        """This test process's role users on this broker (made on first use)."""
        if self._accounts is None:
            api = Management(self.management_url, self.user, self.password)
            self._accounts = Accounts(api, f"amqp://{self.host}:{self.port}")
        return self._accounts

    def close(self) -> None:
        if self._accounts is not None:
            self._accounts.close()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.management_url}/api/{path}", data=data, method=method
        )
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def url_for(self, vhost: str) -> str:
        quoted = urllib.parse.quote(vhost, safe="")
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{quoted}"

    def create_vhost(self, vhost: str) -> str:
        """Make `vhost`; the URL of this process's master user there (tests.accounts): no
        test runs as the broker's administrator (guest)."""
        name = urllib.parse.quote(vhost, safe="")
        self.api("PUT", f"vhosts/{name}", {})
        self.api(
            "PUT",
            f"permissions/{name}/{urllib.parse.quote(self.user)}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        return self.accounts.add_vhost(vhost)

    def delete_vhost(self, vhost: str) -> None:
        # The broker may be restarting; a leftover vhost is only clutter.
        with contextlib.suppress(urllib.error.URLError, OSError):
            self.api("DELETE", f"vhosts/{urllib.parse.quote(vhost, safe='')}")

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        path = f"queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}"
        result: dict[str, Any] = self.api("GET", path)
        return result


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    url = os.environ.get("CORRAL_TEST_AMQP_URL")
    if url is None and _answers("127.0.0.1", 5672):
        url = "amqp://guest:guest@127.0.0.1:5672/"
    if url is not None:
        host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
        management = os.environ.get("CORRAL_TEST_MANAGEMENT_URL", f"http://{host}:15672")
        candidate = Broker(url, management)
        try:
            candidate.api("GET", "overview")
        except (urllib.error.URLError, OSError) as exc:
            _unavailable(f"RabbitMQ management API at {management} does not answer: {exc}")
        try:
            yield candidate
        finally:
            candidate.close()
        return
    yield from _testcontainers_broker()


def _testcontainers_broker() -> Iterator[Broker]:
    try:
        from testcontainers.rabbitmq import RabbitMqContainer
    except ImportError as exc:
        _unavailable(f"no RabbitMQ on 127.0.0.1:5672 and testcontainers is unusable: {exc}")
        return
    try:
        container = RabbitMqContainer("rabbitmq:3-management").with_exposed_ports(5672, 15672)
        container.start()
    except Exception as exc:
        _unavailable(f"no RabbitMQ on 127.0.0.1:5672 and testcontainers failed: {exc}")
        return
    try:
        host = container.get_container_host_ip()
        amqp = f"amqp://guest:guest@{host}:{container.get_exposed_port(5672)}/"
        yield Broker(amqp, f"http://{host}:{container.get_exposed_port(15672)}")
    finally:
        container.stop()


@pytest.fixture
def vhost_url(broker: Broker) -> Iterator[str]:
    """An AMQP URL on a fresh vhost of its own, deleted afterwards."""
    vhost = f"corral-test-{uuid.uuid4().hex[:10]}"
    url = broker.create_vhost(vhost)
    yield url
    broker.delete_vhost(vhost)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The Docker engine answers and the local test image exists."""
    import docker

    try:
        client = docker.from_env()
        client.images.get(TEST_IMAGE)
    except Exception as exc:
        _unavailable(
            f"Docker engine or image {TEST_IMAGE} unavailable ({exc}); run scripts/bootstrap.sh"
        )


@pytest.fixture
def cluster(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    """A master and two workers (2 CPUs, 1 GiB each) on a vhost of their own."""
    running = Cluster(vhost_url, tmp_path)
    try:
        running.start(workers=2)
        yield running
    finally:
        print(running.logs())  # shown by pytest only when the test failed
        running.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Chaos tests (which restart the shared broker) run last."""
    items.sort(key=lambda item: item.get_closest_marker("chaos") is not None)
