"""Strict types on the wire, and the forward-compatibility rules (docs/protocol.md §1)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    CancelJob,
    Heartbeat,
    InvalidMessage,
    JobInfo,
    JobSpec,
    ListJobs,
    ListTasks,
    LogChunk,
    NodeInfo,
    Page,
    Reply,
    StartTask,
    TaskInfo,
    TaskStatus,
    decode,
    encode,
)
from schemas.envelope import PAYLOAD_TYPES
from schemas.limits import MAX_TEXT_LENGTH
from tests.unit.factories import heartbeat, job_spec


def body(message_type: str, payload: dict[str, Any], **envelope: Any) -> bytes:
    return json.dumps({"type": message_type, "payload": payload, **envelope}).encode()


def refusal(raw: bytes) -> str:
    with pytest.raises(InvalidMessage) as caught:
        decode(raw)
    return str(caught.value)


SPEC = {"name": "web", "image": "busybox"}
HEARTBEAT = json.loads(encode(heartbeat("n1")))["payload"]
STATUS = {"task_id": "web-0-0", "job_id": "web", "node_id": "n1", "state": "exited"}


# -- strict types --


@pytest.mark.parametrize(
    ("message_type", "payload", "where"),
    [
        ("api.submit", {"spec": {**SPEC, "cpu": True}}, "payload.spec.cpu"),
        ("api.submit", {"spec": {**SPEC, "replicas": True}}, "payload.spec.replicas"),
        ("api.submit", {"spec": {**SPEC, "replicas": 2.0}}, "payload.spec.replicas"),
        ("api.submit", {"spec": {**SPEC, "cpu": "0.5"}}, "payload.spec.cpu"),
        ("api.submit", {"spec": {**SPEC, "pull": 1}}, "payload.spec.pull"),
        ("api.submit", {"spec": {**SPEC, "pull": "true"}}, "payload.spec.pull"),
        ("api.submit", {"spec": {**SPEC, "env": {"A": 1}}}, "payload.spec.env.A"),
        ("api.submit", {"spec": {**SPEC, "stop_grace": "5"}}, "payload.spec.stop_grace"),
        ("api.jobs", {"include_done": "yes"}, "payload.include_done"),
        ("api.jobs", {"include_done": 0}, "payload.include_done"),
        ("api.jobs", {"limit": "10"}, "payload.limit"),
        ("api.scale", {"job_id": "web", "replicas": "3"}, "payload.replicas"),
        ("api.scale", {"job_id": "web", "replicas": True}, "payload.replicas"),
        ("heartbeat", {**HEARTBEAT, "seq": "many"}, "payload.seq"),
        ("heartbeat", {**HEARTBEAT, "interval": True}, "payload.interval"),
        ("task.status", {**STATUS, "exit_code": "3"}, "payload.exit_code"),
        ("task.status", {**STATUS, "retryable": "no"}, "payload.retryable"),
        ("logs.request", {"task_id": "web-0-0", "tail": True}, "payload.tail"),
    ],
)
def test_no_value_is_coerced_to_another_json_type(
    message_type: str, payload: dict[str, Any], where: str
) -> None:
    assert f"{where}: Input should be a valid" in refusal(body(message_type, payload))


@pytest.mark.parametrize(
    ("field", "value"), [("version", "1"), ("version", True), ("epoch", "7"), ("sender", 5)]
)
def test_envelope_fields_are_strict_too(field: str, value: object) -> None:
    assert f"{field}: Input should be a valid" in refusal(body("api.nodes", {}, **{field: value}))


def test_a_boolean_is_not_a_size() -> None:
    problem = refusal(body("api.submit", {"spec": {**SPEC, "memory": True}}))
    assert "payload.spec.memory: expected a size such as 256m or 1g" in problem


def test_an_integer_is_a_number() -> None:
    message = decode(body("api.submit", {"spec": {**SPEC, "cpu": 2, "stop_grace": 3}}))
    spec = message.payload.spec  # type: ignore[attr-defined]
    assert (spec.cpu, spec.stop_grace) == (2.0, 3.0)


def test_the_friendly_spec_forms_work_on_the_wire() -> None:
    spec = {**SPEC, "memory": "256m", "ports": ["8080:80", "0.0.0.0:53:53/udp"]}
    message = decode(body("api.submit", {"spec": spec}))
    ports = message.payload.spec.ports  # type: ignore[attr-defined]
    assert [(p.host_ip, p.host, p.container, p.protocol) for p in ports] == [
        ("127.0.0.1", 8080, 80, "tcp"),
        ("0.0.0.0", 53, 53, "udp"),
    ]


# -- date-times --


@pytest.mark.parametrize(
    "sent_at", ["2026-11-27T10:32:14.717945Z", "2026-11-27T10:32:14+01:00", "2026-11-27 10:32:14"]
)
def test_date_times_are_read_from_iso_strings(sent_at: str) -> None:
    assert decode(body("api.nodes", {}, sent_at=sent_at)).envelope.sent_at.year == 2026


@pytest.mark.parametrize(
    "sent_at", [1700000000, "1700000000", True, "yesterday", "2026-13-01T00:00"]
)
def test_other_date_times_are_refused(sent_at: object) -> None:
    assert "sent_at: " in refusal(body("api.nodes", {}, sent_at=sent_at))


def test_info_models_read_the_masters_json() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    task = TaskInfo(
        task_id="web-0-0", job_id="web", slot=0, attempt=0, state="running", updated_at=at
    )
    info = JobInfo(job_id="web", state="running", spec=job_spec(), submitted_at=at, tasks=[task])
    assert JobInfo.model_validate(info.model_dump(mode="json")) == info
    assert JobInfo.model_validate_json(info.model_dump_json()) == info


# -- free text is cut, not refused --


def test_long_free_text_is_cut() -> None:
    long = "x" * (MAX_TEXT_LENGTH * 3)
    status = decode(body("task.status", {**STATUS, "reason": long})).payload
    assert isinstance(status, TaskStatus)
    assert len(status.reason) == MAX_TEXT_LENGTH and status.reason.endswith("…")
    made = Reply(ok=False, error={"code": "invalid_message", "message": long})  # type: ignore[arg-type]
    assert made.error is not None and len(made.error.message) == MAX_TEXT_LENGTH
    assert len(decode(body("api.nodes", {}, sender=long)).envelope.sender) == 256


def test_long_log_output_is_refused() -> None:
    assert "payload.data" in refusal(body("logs.chunk", {"task_id": "t-0-0", "data": "x" * 2**19}))
    assert LogChunk(task_id="t-0-0", data="x" * 65536).data


# -- forward compatibility --

OPEN = [
    "heartbeat",
    "task.status",
    "job.status",
    "node.status",
    "logs.chunk",
    "api.reply",
    "master.beat",
    "leader.announce",
    "command.refused",
    "net.update",
]
CLOSED = sorted(set(PAYLOAD_TYPES) - set(OPEN))
MINIMAL: dict[str, dict[str, Any]] = {
    "heartbeat": HEARTBEAT,
    "task.status": STATUS,
    "job.status": {"job_id": "web", "state": "running"},
    "node.status": {"node_id": "n1", "state": "ready"},
    "logs.chunk": {"task_id": "web-0-0"},
    "api.reply": {"ok": True},
    "api.submit": {"spec": SPEC},
    "api.submit_many": {"specs": [SPEC]},
    "api.cancel": {"job_id": "web"},
    "api.scale": {"job_id": "web", "replicas": 1},
    "api.update": {"job_id": "web", "spec": {"name": "web", "image": "local/busybox"}},
    "api.rollback": {"job_id": "web"},
    "api.purge": {"job_id": "web"},
    "api.node": {"node_id": "n1", "action": "cordon"},
    "api.task": {"task_id": "web-0-0"},
    "api.job": {"job_id": "web"},
    "api.jobs": {},
    "api.tasks": {},
    "api.nodes": {},
    "api.masters": {},
    "api.status": {},
    "api.logs": {"task_id": "web-0-0"},
    "master.beat": {"master": "m1", "instance": "abc", "role": "active"},
    "leader.announce": {"master": "m1", "epoch": 4},
    "command.refused": {"node_id": "n1"},
    "net.update": {"view": "abc", "seq": 1},
    "assign.start": {
        "task_id": "web-0-0",
        "job_id": "web",
        "slot": 0,
        "node_id": "n1",
        "spec": SPEC,
    },
    "assign.stop": {"task_id": "web-0-0", "job_id": "web", "node_id": "n1"},
    "logs.request": {"task_id": "web-0-0"},
}


def test_every_type_is_either_open_or_closed() -> None:
    assert set(MINIMAL) == set(PAYLOAD_TYPES)
    assert {t for t, cls in PAYLOAD_TYPES.items() if cls.model_config["extra"] == "ignore"} == set(
        OPEN
    )


@pytest.mark.parametrize("message_type", OPEN)
def test_what_a_peer_emits_ignores_unknown_fields(message_type: str) -> None:
    message = decode(body(message_type, {**MINIMAL[message_type], "added_later": [1, {"x": 2}]}))
    assert "added_later" not in message.payload.model_dump()


@pytest.mark.parametrize("message_type", CLOSED)
def test_requests_and_commands_refuse_unknown_fields(message_type: str) -> None:
    problem = refusal(body(message_type, {**MINIMAL[message_type], "added_later": 1}))
    assert "payload.added_later: unknown field (remove it, or check its spelling)" in problem


@pytest.mark.parametrize("message_type", ["api.submit", "assign.start"])
def test_a_spec_refuses_unknown_fields_at_every_level(message_type: str) -> None:
    for spec, where in [
        ({**SPEC, "volumes": []}, "spec.volumes"),
        ({**SPEC, "restart": {"jitter": 1}}, "spec.restart.jitter"),
        ({**SPEC, "ports": [{"host": 1, "container": 2, "ip": "x"}]}, "spec.ports.0.ip"),
    ]:
        payload = {**MINIMAL[message_type], "spec": spec}
        assert f"payload.{where}: unknown field" in refusal(body(message_type, payload))


def test_unknown_envelope_fields_are_ignored() -> None:
    message = decode(body("api.nodes", {}, priority=5, trace={"id": "x"}))
    assert message.payload.TYPE == "api.nodes"


def test_a_nested_info_model_ignores_unknown_fields() -> None:
    node = {
        "node_id": "n1",
        "state": "ready",
        "capacity": {"cpus": 2.0, "memory": 1, "gpus": 1},
        "allocated": {"cpus": 0.0, "memory": 0},
        "last_seen": "2030-01-01T00:00:00Z",
        "zone": "a",
    }
    page = Page.model_validate({"items": [node], "next_cursor": None, "total": 1})
    assert NodeInfo.model_validate(page.items[0]).capacity.cpus == 2.0


def test_a_spec_echoed_by_a_newer_master_is_read_without_its_new_fields() -> None:
    at = "2030-01-01T00:00:00Z"
    spec = {**SPEC, "volumes": ["/data"], "restart": {"jitter": 0.1}, "ports": ["8080:80"]}
    info = JobInfo.model_validate(
        {"job_id": "web", "state": "pending", "spec": spec, "submitted_at": at}
    )
    assert info.spec.name == "web" and info.spec.ports[0].host == 8080
    with pytest.raises(ValueError, match=r"unknown field|Extra inputs"):
        JobSpec.model_validate(spec)  # the same spec submitted is refused


def test_an_echoed_spec_is_still_validated() -> None:
    bad = {
        "job_id": "web",
        "state": "pending",
        "spec": {**SPEC, "cpu": True},
        "submitted_at": "2030-01-01T00:00:00Z",
    }
    with pytest.raises(ValueError, match=r"spec\.cpu"):
        JobInfo.model_validate(bad)


def test_a_different_version_is_refused() -> None:
    assert "this node speaks protocol version 1, got 2" in refusal(body("api.nodes", {}, version=2))


# -- ids --


@pytest.mark.parametrize(
    ("message_type", "payload", "where"),
    [
        ("api.cancel", {"job_id": "Web"}, "payload.job_id"),
        ("api.job", {"job_id": "web.x"}, "payload.job_id"),
        ("api.tasks", {"job_id": "a" * 64}, "payload.job_id"),
        ("logs.request", {"task_id": "web 0 0"}, "payload.task_id"),
        ("logs.request", {"task_id": "w" * 101}, "payload.task_id"),
        ("task.status", {**STATUS, "task_id": "web.0.0"}, "payload.task_id"),
        ("task.status", {**STATUS, "node_id": "n.1"}, "payload.node_id"),
        ("task.status", {**STATUS, "container_id": "a b"}, "payload.container_id"),
        ("job.status", {"job_id": "#", "state": "running"}, "payload.job_id"),
        ("heartbeat", {**HEARTBEAT, "boot_id": ""}, "payload.boot_id"),
        ("heartbeat", {**HEARTBEAT, "labels": {"bad key": "x"}}, "payload.labels"),
        ("heartbeat", {**HEARTBEAT, "labels": {f"k{i}": "v" for i in range(65)}}, "payload.labels"),
        ("api.jobs", {"cursor": "x" * 513}, "payload.cursor"),
        ("api.jobs", {"cursor": "tab\there"}, "payload.cursor"),
    ],
)
def test_ids_are_bounded_patterns(message_type: str, payload: dict[str, Any], where: str) -> None:
    assert where in refusal(body(message_type, payload))


def test_ids_corral_makes_are_valid() -> None:
    assert CancelJob(job_id="a" * 63).job_id
    assert ListTasks(job_id="web-api").job_id == "web-api"
    assert TaskStatus(
        task_id="web-api-3f9a1c-9999-12", job_id="web-api", node_id="w_1", state="running"
    )
    assert ListJobs(cursor="WyJqb2JzIiwid2ViIl0").cursor
    assert StartTask(task_id="j-0-0", job_id="j", slot=0, node_id="n", spec=job_spec("j"))
    assert isinstance(
        decode(encode(heartbeat("n1", labels={"zone": "a/b.c-d_e"}))).payload, Heartbeat
    )


# -- robustness: any mix of known fields and odd values --

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = sorted({name for cls in PAYLOAD_TYPES.values() for name in cls.model_fields})


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.sampled_from(sorted(PAYLOAD_TYPES)),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=6),
)
def test_decode_of_any_payload_raises_nothing_but_invalid_message(
    message_type: str, payload: dict[str, Any]
) -> None:
    raw = json.dumps({"type": message_type, "payload": payload}, allow_nan=True).encode()
    with contextlib.suppress(InvalidMessage):
        decode(raw)
