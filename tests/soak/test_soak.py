"""Ten minutes of submits, cancels and bad input: memory follows the history kept, not time.

Marked `soak` and left out of the default run (pyproject's addopts); run it with
`./scripts/test.sh -m soak tests/soak` (CORRAL_SOAK_SECONDS shortens or lengthens it).
The master keeps 20 ended jobs, 2 ended attempts per slot and 200 request ids, so after a warm-up
its resident memory must stay flat however many jobs went through it; the
dead-letter queue must stay within its bounds however much garbage arrives.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path

import pytest

from bus import topology
from corral.errors import CorralError
from tests.cluster import Cluster
from tests.conftest import Broker
from tests.integration.test_cluster import batch, service
from tests.rawamqp import RawClient

pytestmark = [pytest.mark.integration, pytest.mark.soak]

SECONDS = float(os.environ.get("CORRAL_SOAK_SECONDS", "600"))
KEEP_ENDED_JOBS = 20
# Allowed growth of the master's RSS after the warm-up (allocator noise, caches).
RSS_SLACK = 8 * 1024 * 1024


@pytest.mark.timeout(SECONDS + 300)
def test_memory_follows_the_history_kept_and_dead_letters_stay_bounded(
    vhost_url: str, tmp_path: Path, docker_engine: None, broker: Broker
) -> None:
    cluster = Cluster(vhost_url, tmp_path)
    extra = (
        *("--keep-ended-jobs", str(KEEP_ENDED_JOBS)),
        *("--keep-attempts", "2"),
        *("--remember-requests", "200"),
    )
    cluster.start_master(extra=extra)
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    try:
        cluster.wait_nodes_ready(2)
        samples = _churn(cluster)
    finally:
        print(cluster.logs())
        cluster.close()
    warm = [rss for at, rss in samples if SECONDS * 0.25 <= at < SECONDS * 0.5]
    late = [rss for at, rss in samples if at >= SECONDS * 0.75]
    print(f"master RSS MiB: {[round(rss / 2**20, 1) for _, rss in samples]}")
    assert warm and late
    assert max(late) <= max(warm) + RSS_SLACK, (max(warm), max(late))

    vhost = urllib.parse.unquote(urllib.parse.urlsplit(vhost_url).path[1:])
    dead = broker.queue(vhost, topology.DEAD_QUEUE)
    assert dead["messages"] <= topology.DEAD_LETTERS_MAX
    assert dead.get("message_bytes", 0) <= topology.DEAD_LETTERS_MAX_BYTES


def _churn(cluster: Cluster) -> list[tuple[float, int]]:
    """Submit, cancel and spam until SECONDS have passed; (elapsed, master RSS) samples."""
    client = cluster.client
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    garbage = b'{"type": "api.submit", "payload": {"spec": {"name": "x", "cpu": -1}}}'
    with RawClient(cluster.amqp_url) as raw:
        for round_ in range(1_000_000):
            elapsed = time.monotonic() - started
            if elapsed >= SECONDS:
                break
            try:
                client.submit(service(f"soak-svc-{round_}"))
                client.cancel(f"soak-svc-{round_}")
                client.submit(batch(f"soak-batch-{round_}", "exit 1", restart={"max_retries": 1}))
                for _ in range(20):
                    raw.publish(garbage + b" " * 100_000)  # dead-lettered, 64 KiB of it kept
                raw.call({"type": "api.nodes"})
            except CorralError as exc:  # a slow moment is not the point here
                print(f"round {round_}: {exc}")
            if round_ % 5 == 0:
                samples.append((elapsed, cluster.rss("master")))
                jobs = client.jobs()
                ended = [job for job in jobs if job.state in ("complete", "failed", "cancelled")]
                assert len(ended) <= KEEP_ENDED_JOBS, len(ended)
    return samples
