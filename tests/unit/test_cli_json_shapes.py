"""Every listing's JSON (and YAML) shape is documented and stable: the fields of what
`jobs`, `ps`, `nodes` and `masters` print with `-o json|yaml` are pinned here.

Fields may be added within a major version, never renamed or removed (docs/cli.md).
If a test here fails, a field changed: add it to the list and to docs/cli.md if it
is new; a rename or a removal waits for the next major version.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from corral.formats import data, stream_json, stream_yaml
from schemas.api import JobInfo, MasterInfo, NodeInfo, RolloutInfo, TaskInfo
from schemas.job import JobSpec
from schemas.messages import Resources

DOCS = Path(__file__).resolve().parents[2] / "docs"
NOW = datetime(2030, 1, 1, tzinfo=UTC)

JOB_FIELDS = [
    "job_id", "state", "reason", "spec", "submitted_at", "tasks", "task_counts",
    "tasks_omitted", "version", "healthy", "rollout", "versions", "events", "ended_at",
    "owner",
]  # fmt: skip
TASK_FIELDS = [
    "task_id", "job_id", "slot", "attempt", "state", "node_id", "container_id", "exit_code",
    "reason", "updated_at", "started_at", "version", "health", "healthy", "restarts",
    "retiring", "address",
]  # fmt: skip
NODE_FIELDS = [
    "node_id", "state", "capacity", "allocated", "labels", "tasks", "last_seen", "reason",
    "cordoned", "draining", "subnet", "addr",
]  # fmt: skip
MASTER_FIELDS = [
    "name", "instance", "role", "epoch", "applied", "lag", "last_seen_ago", "started_at",
    "broker",
]  # fmt: skip
ROLLOUT_FIELDS = ["state", "from_version", "to_version", "done", "total", "reason"]
RESOURCES_FIELDS = ["cpus", "memory"]

LISTINGS: list[tuple[str, type[BaseModel], list[str]]] = [
    ("jobs", JobInfo, JOB_FIELDS),
    ("ps", TaskInfo, TASK_FIELDS),
    ("nodes", NodeInfo, NODE_FIELDS),
    ("masters", MasterInfo, MASTER_FIELDS),
]


def sample(model: type[BaseModel]) -> BaseModel:
    room = Resources(cpus=1, memory=1024**3)
    examples: dict[type[BaseModel], BaseModel] = {
        JobInfo: JobInfo(job_id="web", state="running", submitted_at=NOW,
                         spec=JobSpec(name="web", image="img")),
        TaskInfo: TaskInfo(task_id="web-1a2b3c-0-0", job_id="web", slot=0, attempt=0,
                           state="running", updated_at=NOW),
        NodeInfo: NodeInfo(node_id="n1", state="ready", capacity=room, allocated=room,
                           last_seen=NOW),
        MasterInfo: MasterInfo(name="m1", instance="0123456789ab", role="active",
                               last_seen_ago=0.5),
    }  # fmt: skip
    return examples[model]


@pytest.mark.parametrize(("command", "model", "fields"), LISTINGS)
def test_the_fields_of_each_listing_are_pinned(
    command: str, model: type[BaseModel], fields: list[str]
) -> None:
    assert list(model.model_fields) == fields, f"`corral {command} -o json` changed"


@pytest.mark.parametrize(("command", "model", "fields"), LISTINGS)
def test_json_and_yaml_print_exactly_those_fields(
    command: str, model: type[BaseModel], fields: list[str]
) -> None:
    item = sample(model)
    assert list(data(item)) == fields
    assert [list(obj) for obj in json.loads("".join(stream_json([item])))] == [fields]
    assert [list(obj) for obj in yaml.safe_load("".join(stream_yaml([item])))] == [fields]


def test_the_nested_objects_are_pinned_too() -> None:
    assert list(RolloutInfo.model_fields) == ROLLOUT_FIELDS
    assert list(Resources.model_fields) == RESOURCES_FIELDS


@pytest.mark.parametrize(("command", "model", "fields"), LISTINGS)
def test_docs_cli_documents_every_field(
    command: str, model: type[BaseModel], fields: list[str]
) -> None:
    text = (DOCS / "cli.md").read_text()
    start = text.index(f"### `corral {command}`: `{model.__name__}`")
    section = text[start : text.index("\n### ", start + 1)]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert documented == fields


@pytest.mark.parametrize(
    ("schema", "fields"),
    [("JobInfo", JOB_FIELDS), ("TaskInfo", TASK_FIELDS), ("NodeInfo", NODE_FIELDS)],
)
def test_the_generated_contracts_agree(schema: str, fields: list[str]) -> None:
    contract = json.loads((DOCS / "schema" / f"{schema}.json").read_text())
    assert list(contract["properties"]) == fields
