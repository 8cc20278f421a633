"""Fixtures of the tests that drive a worker's Docker runtime directly (no master, no bus)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import docker
import pytest

from worker.runtime import DockerRuntime

RUN_LABEL = "test.corral.run"  # on every container a runtime of these tests creates
RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def node_id() -> str:
    return f"rt-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def runtime(node_id: str, engine: docker.DockerClient) -> Iterator[DockerRuntime]:
    """A runtime for a node of its own; its containers are removed afterwards."""
    rt = DockerRuntime(node_id, extra_labels={RUN_LABEL: RUN_ID})
    yield rt
    rt.close()
    for container in engine.containers.list(all=True, filters={"label": f"corral.node={node_id}"}):
        container.remove(force=True)
