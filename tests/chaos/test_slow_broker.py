"""A broker that accepts connections but never answers: the daemons wait it out, then work.

Pointing a master and a worker at such a listener used to end both with
`AMQPConnectorStackTimeout` after 15 s, escaping the reconnect loop.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.conftest import Broker
from tests.integration.test_cluster import batch
from tests.proxy import HangingThenForwarding

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

HANG_SECONDS = 60


@pytest.fixture
def proxy(broker: Broker) -> Iterator[HangingThenForwarding]:
    front = HangingThenForwarding((broker.host, broker.port))
    yield front
    front.close()


def test_daemons_outlast_a_broker_that_never_answers(
    vhost_url: str, tmp_path: Path, docker_engine: None, proxy: HangingThenForwarding
) -> None:
    parts = urllib.parse.urlsplit(vhost_url)
    user = f"{parts.username}:{parts.password}"
    hanging_url = f"amqp://{user}@127.0.0.1:{proxy.port}{parts.path}"
    cluster = Cluster(hanging_url, tmp_path)
    try:
        cluster.start_master()
        cluster.start_worker("w1")
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline:
            for name, process in cluster.processes.items():
                assert process.poll() is None, f"{name} exited:\n{cluster.logs()}"
            time.sleep(1)
        assert proxy.accepted >= 4, "both daemons kept trying to connect"

        proxy.forward()
        cluster.wait_nodes_ready(1, timeout=60)
        info = cluster.client.submit(batch("after-the-wait", "echo hello")).wait(timeout=60)
        assert info.state == "complete"
        logs = cluster.logs()
        assert "Traceback" not in logs
        assert "cannot connect to the broker" in logs
    finally:
        print(cluster.logs())
        cluster.close()
