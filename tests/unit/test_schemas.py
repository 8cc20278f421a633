"""Job specs, job files and the message envelope: what is accepted, and what errors say."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    ApiError,
    CancelJob,
    GetJob,
    Heartbeat,
    InvalidMessage,
    JobEvent,
    JobFileError,
    ListJobs,
    ListNodes,
    ListTasks,
    LogChunk,
    LogsRequest,
    NodeEvent,
    Payload,
    Reply,
    ScaleJob,
    StartTask,
    StopTask,
    SubmitJob,
    SubmitJobs,
    TaskStatus,
    decode,
    encode,
    format_size,
    load_job_file,
    parse_job_text,
)
from schemas.api import (
    GetLogs,
    GetMasters,
    GetStatus,
    GetTask,
    PurgeJob,
    RollbackJob,
    SetNodeSchedule,
    UpdateJob,
)
from schemas.envelope import PAYLOAD_TYPES, PROTOCOL_VERSION
from schemas.messages import (
    CommandRefused,
    JobNames,
    LeaderAnnounced,
    MasterBeat,
    NetNode,
    NetUpdate,
    SlotAddress,
)
from tests.unit.factories import GiB, MiB, heartbeat, job_spec, running


def rejection(**fields: object) -> str:
    """The validation error text for a spec with `fields`."""
    with pytest.raises(ValidationError) as caught:
        job_spec(**fields)
    return str(caught.value)


# -- JobSpec --


def test_defaults() -> None:
    spec = job_spec()
    assert (spec.kind, spec.replicas, spec.placement) == ("batch", 1, "spread")
    assert (spec.cpu, spec.memory) == (0.1, 64 * MiB)
    assert spec.restart.condition is None
    assert spec.ports == [] and spec.constraints == [] and spec.command is None


@pytest.mark.parametrize(
    ("kind", "condition", "effective"),
    [
        ("batch", None, "on-failure"),
        ("service", None, "always"),
        ("service", "never", "never"),
        ("batch", "always", "always"),
    ],
)
def test_restart_condition_defaults_by_kind(
    kind: str, condition: str | None, effective: str
) -> None:
    spec = job_spec(kind=kind, restart={"condition": condition})
    assert spec.restart_condition == effective


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("256m", 256 * MiB),
        ("1g", GiB),
        ("512Mi", 512 * MiB),
        ("1.5g", 3 * GiB // 2),
        ("6m", 6 * MiB),
        (100_000_000, 100_000_000),
    ],
)
def test_memory_sizes(given: object, size: int) -> None:
    assert job_spec(memory=given).memory == size


@pytest.mark.parametrize("given", ["1k", 1024, "5m", "lots", "12 parsecs", True, -1])
def test_memory_too_small_or_unreadable_is_rejected(given: object) -> None:
    assert "memory" in rejection(memory=given)


@pytest.mark.parametrize(("size", "text"), [(256 * MiB, "256Mi"), (GiB, "1Gi"), (1000, "1000")])
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("given", "host_ip", "host", "container", "protocol"),
    [
        ("8080:80", "127.0.0.1", 8080, 80, "tcp"),
        ("127.0.0.1:8080:80/udp", "127.0.0.1", 8080, 80, "udp"),
        ("0.0.0.0:53:53/udp", "0.0.0.0", 53, 53, "udp"),
        ({"host": 9000, "container": 90}, "127.0.0.1", 9000, 90, "tcp"),
    ],
)
def test_ports(given: object, host_ip: str, host: int, container: int, protocol: str) -> None:
    (port,) = job_spec(ports=[given]).ports
    assert (port.host_ip, port.host, port.container, port.protocol) == (
        host_ip,
        host,
        container,
        protocol,
    )


@pytest.mark.parametrize("given", ["8080", "1:2:3:4", ":80", "8080:80/sctp", "70000:80"])
def test_bad_ports_are_rejected(given: str) -> None:
    assert "ports.0" in rejection(ports=[given])


def test_a_host_port_listed_twice_is_rejected() -> None:
    assert "host port 8080/tcp is listed twice" in rejection(ports=["8080:80", "8080:81"])


def test_the_same_host_port_on_tcp_and_udp_is_fine() -> None:
    assert len(job_spec(ports=["8080:80", "8080:80/udp"]).ports) == 2


def test_command_as_a_string_is_rejected_with_a_list_suggested() -> None:
    text = rejection(command="echo hello")
    assert "command" in text and "expected a list of strings" in text


def test_command_as_a_list() -> None:
    assert job_spec(command=["sh", "-c", "echo hi"]).command == ["sh", "-c", "echo hi"]


def test_reserved_label_prefix_is_rejected() -> None:
    assert "reserved" in rejection(labels={"corral.task": "x"})
    assert job_spec(labels={"team": "x"}).labels == {"team": "x"}


@pytest.mark.parametrize("name", ["a", "web-api", "x1", "a" * 63])
def test_valid_names(name: str) -> None:
    assert job_spec(name).name == name


@pytest.mark.parametrize(
    "name",
    [
        "Web",
        "-web",
        "web-",
        "web_api",
        "web.api",
        "",
        "a" * 64,
        "web\n",
    ],
)
def test_invalid_names_are_rejected_with_help(name: str) -> None:
    text = rejection(name=name)
    assert "is not a valid job name" in text and "e.g. web-api" in text


@pytest.mark.parametrize(
    ("fields", "where"),
    [({"colour": "red"}, "colour"), ({"restart": {"retries": 2}}, "restart.retries")],
)
def test_unknown_fields_are_rejected(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(JobFileError, match=rf"<job>: {where}: unknown field"):
        parse_job_text(json.dumps({"name": "web", "image": "busybox", **fields}))


def test_constraints() -> None:
    spec = job_spec(constraints=["zone=a", "disk!=hdd"])
    assert spec.constraint_pairs() == [("zone", "a", True), ("disk", "hdd", False)]


@pytest.mark.parametrize("constraint", ["zone", "zone==a", "=a"])
def test_malformed_constraints_are_rejected(constraint: str) -> None:
    assert "constraints.0" in rejection(constraints=[constraint])


# -- job files --


def test_parse_yaml() -> None:
    spec = parse_job_text("name: web\nimage: nginx\nkind: service\nreplicas: 3\nmemory: 256m\n")
    assert (spec.name, spec.kind, spec.replicas, spec.memory) == ("web", "service", 3, 256 * MiB)


def test_parse_json() -> None:
    spec = parse_job_text('{"name": "web", "image": "nginx", "command": ["sleep", "1"]}')
    assert spec.command == ["sleep", "1"]


def test_parse_yaml_flow_mapping() -> None:
    assert parse_job_text("{name: web, image: nginx}").name == "web"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "name: web\nimage: nginx\ncpu: 0\n",
            "job.yaml: cpu: Input should be greater than or equal to 0.01",
        ),
        ("image: nginx\n", "job.yaml: name: required field is missing"),
        ("- name: web\n", "job.yaml: expected a mapping of job fields"),
        ("name: [web\n", "job.yaml: not valid YAML or JSON"),
        ('{"name": "web"', "job.yaml: not valid YAML or JSON"),
    ],
)
def test_job_text_errors_name_the_source_and_field(text: str, problem: str) -> None:
    with pytest.raises(JobFileError) as caught:
        parse_job_text(text, "job.yaml")
    assert str(caught.value).startswith(problem)


def test_load_job_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: web\nimage: nginx\n")
    assert load_job_file(path).name == "web"
    path.write_text("name: web\nimage: nginx\ncpu: -1\n")
    with pytest.raises(JobFileError, match=rf"^{re.escape(str(path))}: cpu: "):
        load_job_file(path)
    with pytest.raises(JobFileError, match=r"missing\.yaml: cannot read"):
        load_job_file(tmp_path / "missing.yaml")


# -- the envelope --

NOW = datetime(2030, 1, 1, tzinfo=UTC)
PAYLOADS: list[Payload] = [
    heartbeat("n1", labels={"zone": "a"}, tasks=[running("web-0-0")], seq=4),
    StartTask(task_id="web-0-0", job_id="web", slot=0, node_id="n1", spec=job_spec()),
    StopTask(task_id="web-0-0", job_id="web", node_id="n1", reason="fenced", grace=2.5),
    TaskStatus(task_id="web-0-0", job_id="web", node_id="n1", state="exited", exit_code=3),
    JobEvent(job_id="web", state="failed", reason="gave up"),
    NodeEvent(node_id="n1", state="down", reason="silent"),
    LogsRequest(task_id="web-0-0", follow=True, tail=10),
    LogChunk(task_id="web-0-0", data="hello\n", end=True),
    Reply(ok=False, error=ApiError(code="conflict", message="busy", field="name")),
    Reply(ok=True, result={"job_id": "web", "at": NOW.isoformat()}),
    SubmitJob(spec=job_spec(ports=["8080:80"], memory="1g")),
    SubmitJobs(specs=[job_spec(name="a"), job_spec(name="b", replicas=3)]),
    CancelJob(job_id="web"),
    ScaleJob(job_id="web", replicas=5),
    UpdateJob(job_id="web", spec=job_spec(health={"tcp": 80}, update={"order": "start-first"})),
    RollbackJob(job_id="web"),
    PurgeJob(job_id="web"),
    SetNodeSchedule(node_id="n1", action="drain"),
    GetTask(task_id="web-0-0"),
    GetJob(job_id="web"),
    ListJobs(include_done=False),
    ListTasks(job_id="web"),
    ListNodes(),
    GetMasters(),
    GetStatus(),
    GetLogs(task_id="web-0-0", follow=True, tail=10),
    LeaderAnnounced(master="m1", epoch=42),
    NetUpdate(
        view="3f9a1c0b2d4e",
        seq=7,
        full=True,
        cidr="10.210.0.0/16",
        nodes=[NetNode(node_id="n1", subnet="10.210.1.0/24", addr="192.168.1.10")],
        jobs=[
            JobNames(
                job_id="web",
                serving=["10.210.1.2"],
                slots=[SlotAddress(slot=0, address="10.210.1.2")],
            ),
            JobNames(job_id="gone"),
        ],
    ),
    CommandRefused(
        node_id="n1",
        command="assign.start",
        task_id="web-0-0",
        epoch=3,
        max_epoch=9,
        reason="stale command",
    ),
    MasterBeat(
        master="m1",
        instance="abc123",
        role="standby",
        epoch=9,
        applied=120,
        started_at=1.5,
        broker="127.0.0.1:5672",
    ),
]


def test_every_payload_type_has_a_round_trip_case() -> None:
    assert {p.TYPE for p in PAYLOADS} == set(PAYLOAD_TYPES)


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.TYPE)
def test_round_trip(payload: Payload) -> None:
    message = decode(encode(payload, sender="test@host", epoch=7))
    assert message.payload == payload
    assert type(message.payload) is type(payload)
    assert (message.envelope.type, message.envelope.sender) == (payload.TYPE, "test@host")
    assert (message.envelope.epoch, message.envelope.version) == (7, PROTOCOL_VERSION)


def envelope(payload: object, **fields: object) -> bytes:
    return json.dumps({"type": "api.submit", "version": 1, "payload": payload, **fields}).encode()


SUBMIT = {"spec": {"name": "web", "image": "nginx"}}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "body is not JSON"),
        (b"\xff\xfe\x00", "body is not JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (envelope(SUBMIT, type="api.nope"), "type: unknown message type 'api.nope'"),
        (envelope(SUBMIT, version=2), "version: this node speaks protocol version 1, got 2"),
        (envelope({"spec": {"name": "web", "image": "x", "cpu": 0}}), "payload.spec.cpu: "),
        (envelope({"spec": {"image": "x"}}), "payload.spec.name: required field is missing"),
        (envelope({**SUBMIT, "priority": 1}), "payload.priority: unknown field"),
        (envelope([1]), "payload: Input should be a valid dictionary"),
        (b'{"payload": {}}', "type: required field is missing"),
    ],
)
def test_decode_rejects_with_a_reason(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(body)
    assert problem in str(caught.value)


def test_unknown_envelope_fields_are_ignored() -> None:
    assert decode(envelope(SUBMIT, colour="red")).payload == SubmitJob.model_validate(SUBMIT)


def test_expect() -> None:
    message = decode(encode(CancelJob(job_id="web")))
    assert message.expect(CancelJob).job_id == "web"
    wrong = re.escape("expected a 'api.scale' message, got 'api.cancel'")
    with pytest.raises(InvalidMessage, match=wrong):
        message.expect(ScaleJob)


def test_heartbeat_node_id_is_validated() -> None:
    body = encode(heartbeat("n1")).replace(b'"node_id":"n1"', b'"node_id":"bad id!"')
    with pytest.raises(InvalidMessage, match=r"payload\.node_id"):
        decode(body).expect(Heartbeat)
