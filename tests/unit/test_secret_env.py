"""Secret env: the spec field, how the CLI and job files give values (files read on the
submitting machine), `corral update` keeping them, `corral inspect`, and the worker
giving the container both env and secret_env."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from pydantic import ValidationError

from corral.describe import describe_job
from corral.specs import SpecChanges, load_job_file, parse_secret_pairs, updated_spec
from schemas.api import JobInfo
from schemas.envelope import describe_errors
from schemas.files import JobFileError
from schemas.job import JobSpec
from schemas.messages import StartTask
from tests.unit.factories import job_spec
from tests.unit.test_cli import Recorder, invoke, recorder  # noqa: F401  (a fixture)
from worker.runtime import DockerRuntime

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def problem(**fields: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        job_spec(**fields)
    return describe_errors(raised.value)


# -- the spec --


def test_secret_env_follows_the_rules_of_env() -> None:
    assert job_spec(secret_env={"TOKEN": "x"}).secret_env == {"TOKEN": "x"}
    assert "not a valid variable name" in problem(secret_env={"1BAD": "x"})
    assert "secret_env" in problem(secret_env={"1BAD": "x"})
    assert "NUL character" in problem(secret_env={"K": "a\x00b"})
    assert "at most 65536 characters" in problem(secret_env={"K": "x" * 65537})


def test_a_variable_may_not_be_both_plain_and_secret() -> None:
    assert problem(env={"A": "1", "B": "2"}, secret_env={"B": "3"}) == (
        "secret_env: 'B' also in env: give each variable once, in env or (if its value "
        "is secret) in secret_env"
    )


def test_secrets_count_in_the_size_of_a_spec() -> None:
    big = "x" * 60_000
    job_spec(env={f"E{i}": big for i in range(2)}, secret_env={f"S{i}": big for i in range(2)})
    text = problem(
        env={f"E{i}": big for i in range(2)}, secret_env={f"S{i}": big for i in range(3)}
    )
    assert "make env, secret_env, command or labels smaller" in text


# -- values from the command line --


def test_secret_pairs_take_values_or_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    (tmp_path / "crlf").write_bytes(b"line\r\n")
    (tmp_path / "two").write_text("a\n\n")
    pairs = parse_secret_pairs(
        [
            "A=plain",
            f"B=@{tmp_path / 'token'}",
            "C=@@literal",
            f"D=@{tmp_path / 'crlf'}",
            f"E=@{tmp_path / 'two'}",
            "F=",
        ],
        "--secret-env",
    )
    assert pairs == {
        "A": "plain",
        "B": "from-a-file",
        "C": "@literal",
        "D": "line",
        "E": "a\n",
        "F": "",
    }


def test_an_unreadable_secret_file_names_the_option_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(typer.BadParameter) as raised:
        parse_secret_pairs([f"TOKEN=@{missing}"], "--secret-env")
    assert raised.value.param_hint == "--secret-env"
    assert str(raised.value) == f"TOKEN: cannot read {missing}: No such file or directory"
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(typer.BadParameter, match="is not UTF-8 text"):
        parse_secret_pairs([f"TOKEN=@{tmp_path / 'binary'}"], "--secret-env")


def test_a_malformed_secret_pair_does_not_echo_its_text() -> None:
    with pytest.raises(typer.BadParameter) as raised:
        parse_secret_pairs(["hunter2"], "--secret-env")
    assert "hunter2" not in str(raised.value) and "KEY=VALUE" in str(raised.value)


def test_corral_run_sends_secrets_read_here(recorder: Recorder, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "pw").write_text("pa55\n")
    result = invoke(
        "run", "--name", "x", "-e", "A=1", "--secret-env", f"PW=@{tmp_path / 'pw'}",
        "local/busybox",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (spec,) = recorder.specs
    assert (spec.env, spec.secret_env) == ({"A": "1"}, {"PW": "pa55"})


def test_corral_run_with_an_unreadable_secret_file_fails(
    recorder: Recorder,  # noqa: F811
    tmp_path: Path,
) -> None:
    result = invoke("run", "--secret-env", f"PW=@{tmp_path / 'nope'}", "local/busybox")
    assert result.exit_code == 2
    assert "--secret-env" in result.output and str(tmp_path / "nope") in result.output
    assert recorder.specs == []


# -- values from job files --


def test_a_job_file_reads_secret_files_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db").write_text('pass "word"\n')
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: web\nimage: nginx\nenv: {PORT: 8080, UMASK: 0022}\n"
        "secret_env:\n  DB: {file: secrets/db}\n  PIN: 0042\n  PLAIN: text\n"
    )
    spec = load_job_file(job)
    assert spec.env == {"PORT": "8080", "UMASK": "0022"}
    assert spec.secret_env == {"DB": 'pass "word"', "PIN": "0042", "PLAIN": "text"}


def test_a_job_file_without_secret_references_reads_as_before(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: web\nimage: nginx\nsecret_env: {A: b}\n")
    assert load_job_file(job) == JobSpec(name="web", image="nginx", secret_env={"A": "b"})
    job.write_text("- not a mapping\n")
    with pytest.raises(JobFileError, match="expected a mapping"):
        load_job_file(job)


def test_a_bad_secret_reference_names_the_file_and_variable(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: web\nimage: nginx\nsecret_env: {DB: {path: x}}\n")
    with pytest.raises(JobFileError) as raised:
        load_job_file(job)
    assert str(raised.value) == (
        f"{job}: secret_env.DB: expected a string, or {{file: PATH}} to read the value from "
        "a file on this machine"
    )
    job.write_text("name: web\nimage: nginx\nsecret_env: {DB: {file: nope.txt}}\n")
    with pytest.raises(JobFileError) as raised:
        load_job_file(job)
    assert str(raised.value) == (
        f"{job}: secret_env.DB: cannot read {tmp_path / 'nope.txt'}: No such file or directory"
    )


# -- corral update --


def test_an_update_keeps_redacted_secrets_and_moves_variables_between_kinds() -> None:
    shown = job_spec(env={"A": "1", "B": "2"}, secret_env={"S": "***", "T": "***"})
    changes = SpecChanges(env={"S": "now-plain"}, secret_env={"A": "now-secret"}, env_rm=["T"])
    spec = updated_spec(shown, changes)
    assert spec.env == {"B": "2", "S": "now-plain"}
    assert spec.secret_env == {"A": "now-secret"}
    assert updated_spec(shown, SpecChanges(image="nginx")).secret_env == shown.secret_env
    assert not SpecChanges(secret_env={"A": "x"}).empty()


# -- corral inspect --


def test_inspect_shows_the_owner_and_secrets_as_the_master_sent_them() -> None:
    spec = job_spec(secret_env={"TOKEN": "***"}, env={"A": "***"})
    info = JobInfo(job_id="web", state="running", spec=spec, submitted_at=NOW, owner="alice")
    text = describe_job(info, NOW)
    assert "Owner:" in text and "alice" in text
    assert "secret_env: {TOKEN: '***'}" in text
    ownerless = info.model_copy(update={"owner": ""})
    assert "Owner:" not in describe_job(ownerless, NOW)


# -- the worker --


def test_the_container_gets_env_and_secret_env() -> None:
    created: dict[str, Any] = {}

    def create(image: str, command: Any, **kwargs: Any) -> str:
        created.update(kwargs)
        return "container"

    runtime = DockerRuntime.__new__(DockerRuntime)
    runtime.node_id, runtime._extra_labels = "n1", {}
    runtime._client = SimpleNamespace(containers=SimpleNamespace(create=create))  # type: ignore[assignment]
    spec = job_spec(env={"A": "1"}, secret_env={"S": "x"})
    task = StartTask(task_id="web-0-0", job_id="web", slot=0, node_id="n1", spec=spec)
    runtime._create(task, epoch=1, attachment=None)
    assert created["environment"] == {"A": "1", "S": "x"}
