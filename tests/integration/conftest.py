from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster


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
