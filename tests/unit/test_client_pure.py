"""The SDK's pure parts: error texts, URL redaction, settling rules, CLI rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral import output
from corral.client import Event
from corral.errors import ApiFailure, BrokerUnreachable, NoMaster, WaitTimeout, redact_url, scrub
from corral.job import is_settled
from schemas.api import JobInfo, TaskInfo
from schemas.job import JobSpec
from schemas.messages import JobEvent, JobState, TaskState, TaskStatus

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def task(slot: int, attempt: int, state: TaskState, code: int | None = None) -> TaskInfo:
    return TaskInfo(
        task_id=f"j-{slot}-{attempt}", job_id="j", slot=slot, attempt=attempt,
        state=state, exit_code=code, updated_at=NOW,
    )  # fmt: skip


def job(state: JobState, kind: str = "batch", tasks: list[TaskInfo] | None = None) -> JobInfo:
    spec = JobSpec.model_validate({"name": "j", "image": "img", "kind": kind, "replicas": 2})
    return JobInfo(job_id="j", state=state, spec=spec, submitted_at=NOW, tasks=tasks or [])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("amqp://u:p%40ss@h/vh", "amqp://u:***@h/vh"),
        ("amqp://h:5672/", "amqp://h:5672/"),
        ("amqp://user@h/", "amqp://user@h/"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_hides_the_password_anywhere_in_a_text() -> None:
    url = "amqp://admin:hunter22@broker/"
    text = scrub(f"refused credentials in {url!r}; password hunter22", url)
    assert "hunter22" not in text
    assert "amqp://admin:***@broker/" in text


def test_error_sentences_never_show_the_password() -> None:
    url = "amqp://admin:hunter22@broker:5672/"
    no_master = str(NoMaster(url, 10))
    assert no_master == (
        "no master answered on corral.api within 10 s — is `corral master` running"
        " against amqp://admin:***@broker:5672/?"
    )
    unreachable = str(BrokerUnreachable(url, f"ConnectionRefusedError: in {url}"))
    assert "hunter22" not in unreachable
    assert "start it, or pass --amqp / set CORRAL_AMQP_URL" in unreachable


def test_api_failure_keeps_code_and_field_and_reads_as_a_sentence() -> None:
    error = ApiFailure("invalid", "Input should be greater than 0", "spec.cpu")
    assert (error.code, error.field) == ("invalid", "spec.cpu")
    assert str(error) == "spec.cpu: Input should be greater than 0"
    assert str(ApiFailure("not_found", "no job named 'x'", "job_id")) == "no job named 'x'"


def test_wait_timeout_is_a_timeout_error_naming_job_state_and_reason() -> None:
    error = WaitTimeout("web", 5, "pending", "no node has 8 free CPUs")
    assert isinstance(error, TimeoutError)
    assert str(error) == "job web is still pending after 5 s (no node has 8 free CPUs)"


@pytest.mark.parametrize(
    ("state", "kind", "settled"),
    [
        ("pending", "batch", False),
        ("running", "batch", False),
        ("complete", "batch", True),
        ("failed", "batch", True),
        ("cancelled", "batch", True),
        ("pending", "service", False),
        ("running", "service", True),
        ("failed", "service", True),
    ],
)
def test_is_settled(state: JobState, kind: str, settled: bool) -> None:
    assert is_settled(job(state, kind)) is settled


def test_exit_codes_use_the_newest_attempt_of_each_slot() -> None:
    info = job(
        "failed", tasks=[task(0, 0, "exited", 3), task(0, 1, "exited", 0), task(1, 0, "lost")]
    )
    assert output.exit_codes(info) == "slot 0: 0, slot 1: -"


def test_table_aligns_columns_and_trims_the_last() -> None:
    text = output.table(["A", "LONGER"], [["xyz", "1"], ["", "22"]])
    assert text.split("\n") == ["A    LONGER", "xyz  1", "     22"]


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (59, "59s"), (60, "1m"), (7200, "2h"), (90000, "1d")]
)
def test_age(seconds: int, shown: str) -> None:
    assert output.age(NOW - timedelta(seconds=seconds), NOW) == shown


def test_event_lines() -> None:
    status = TaskStatus(task_id="j-0-0", job_id="j", node_id="n1", state="exited", exit_code=3)
    event = Event("task.j.j-0-0.exited", status, NOW)
    line = output.event_line(event)
    assert line.endswith("  task.j.j-0-0.exited  task j-0-0 on n1: exited exit 3")
    assert line[2] == ":" and line[5] == ":"
    failed = Event("job.j.failed", JobEvent(job_id="j", state="failed", reason="gave up"), NOW)
    assert output.event_summary(failed) == "job j: failed (gave up)"
    assert '"routing_key": "job.j.failed"' in output.event_json(failed)
