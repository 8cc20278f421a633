from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster


@pytest.fixture
def cluster(vhost_url: str, tmp_path: Path, docker_engine: None) -> Iterator[Cluster]:
    """A master and two workers on a vhost of their own."""
    running = Cluster(vhost_url, tmp_path)
    try:
        running.start(workers=2)
        yield running
    finally:
        print(running.logs())
        running.close()
