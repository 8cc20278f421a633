"""The job spec's size and content limits: each error names the field and the fix."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import JobFileError, parse_job_text
from schemas.limits import (
    MAX_COMMAND_ARGS,
    MAX_CONSTRAINTS,
    MAX_ENV_VARS,
    MAX_LABELS,
    MAX_PORTS,
    MAX_SPEC_BYTES,
    MIN_BACKOFF,
    MIN_CPU,
    KiB,
    MiB,
)
from tests.unit.factories import job_spec


def rejection(**fields: object) -> str:
    with pytest.raises(ValidationError) as caught:
        job_spec(**fields)
    return str(caught.value)


# -- size --


def test_a_spec_over_the_size_limit_is_refused_with_the_fix() -> None:
    env = {f"V{i}": "x" * 60 * KiB for i in range(5)}
    problem = rejection(env=env)
    assert f"more than the {MAX_SPEC_BYTES // KiB} KiB a job spec may have" in problem
    assert "make env, secret_env, command or labels smaller" in problem


def test_a_40_mib_env_value_is_refused_by_its_own_limit() -> None:
    assert "env.BIG" in rejection(env={"BIG": "x" * 40 * MiB})


def test_a_spec_just_under_the_size_limit_is_fine() -> None:
    env = {f"V{i}": "x" * 60 * KiB for i in range(4)}
    assert len(job_spec(env=env).model_dump_json()) < MAX_SPEC_BYTES


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("command", ["x"] * (MAX_COMMAND_ARGS + 1), "command"),
        ("command", ["x" * (64 * KiB + 1)], "command.0"),
        ("env", {f"K{i}": "" for i in range(MAX_ENV_VARS + 1)}, "env"),
        ("labels", {f"k{i}": "" for i in range(MAX_LABELS + 1)}, "labels"),
        ("labels", {"k": "v" * 1025}, "labels.k"),
        ("labels", {"k" * 129: "v"}, "labels"),
        ("constraints", ["a=b"] * (MAX_CONSTRAINTS + 1), "constraints"),
        ("constraints", ["a=" + "b" * 1025], "constraints.0"),
        ("ports", [f"{1000 + i}:80" for i in range(MAX_PORTS + 1)], "ports"),
        ("image", "a" * 513, "image"),
    ],
)
def test_every_list_map_and_string_is_bounded(field: str, value: object, where: str) -> None:
    assert where in rejection(**{field: value})


# -- env --


@pytest.mark.parametrize("key", ["PATH=/x;Y", "", "1ABC", "A B", "A\x00B", "É", "A" * 257])
def test_bad_env_names_are_refused(key: str) -> None:
    problem = rejection(env={key: "x"})
    assert "is not a valid variable name" in problem and "(e.g. LOG_LEVEL)" in problem


@pytest.mark.parametrize("key", ["PATH", "_x", "log.level", "my-var", "A1"])
def test_good_env_names(key: str) -> None:
    assert job_spec(env={key: "x"}).env == {key: "x"}


def test_an_env_value_with_a_nul_is_refused() -> None:
    assert "NUL" in rejection(env={"A": "x\x00y"})


def test_a_command_argument_with_a_nul_is_refused() -> None:
    assert "argument 1 contains a NUL" in rejection(command=["sh", "a\x00b"])


# -- host_ip --


@pytest.mark.parametrize("host_ip", ["not-an-ip", "256.0.0.1", "localhost", ""])
def test_host_ip_must_be_an_ip_address(host_ip: str) -> None:
    problem = rejection(ports=[{"host": 80, "container": 80, "host_ip": host_ip}])
    assert "ports.0.host_ip" in problem


@pytest.mark.parametrize(
    ("host_ip", "normal"), [("0.0.0.0", "0.0.0.0"), ("::1", "::1"), ("0:0::0:1", "::1")]
)
def test_ip_addresses_are_normalised(host_ip: str, normal: str) -> None:
    (port,) = job_spec(ports=[{"host": 80, "container": 80, "host_ip": host_ip}]).ports
    assert port.host_ip == normal


def test_the_short_port_form_needs_an_ip_and_numbers() -> None:
    assert "is not an IP address" in rejection(ports=["nowhere:80:80"])
    assert "ports must be numbers" in rejection(ports=["http:80"])


# -- image --


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "local/busybox:latest",
        "localhost:5000/team/app:1.2-rc_3",
        "ghcr.io/org/img",
        "[::1]:5000/foo:bar",
        "nginx@sha256:" + "a" * 64,
        "registry.example.com/app:v1@sha256:" + "0" * 64,
    ],
)
def test_valid_image_references(image: str) -> None:
    assert job_spec(image=image).image == image


@pytest.mark.parametrize(
    "image",
    [
        "Busybox",
        "busy box",
        "busybox\n",
        "busybox:",
        "-x",
        "a//b",
        "x:bad tag",
        "x@sha256:12",
        "\x1b[31m",
    ],
)
def test_invalid_image_references_are_refused(image: str) -> None:
    problem = rejection(image=image)
    assert "is not a valid image reference" in problem and "e.g. local/busybox:latest" in problem


# -- cpu --


@pytest.mark.parametrize("cpu", [MIN_CPU, 0.25, 0.1, 0.3, 1, 2.5, 1023.999, 1024])
def test_cpu_in_steps_of_a_thousandth(cpu: float) -> None:
    assert job_spec(cpu=cpu).cpu == pytest.approx(cpu)


def test_cpu_is_rounded_to_its_step() -> None:
    assert job_spec(cpu=0.1 + 0.2).cpu == 0.3


@pytest.mark.parametrize(
    ("cpu", "problem"),
    [
        (0.001, "greater than or equal to 0.01"),
        (1e-12, "greater than or equal to 0.01"),
        (0, "greater than or equal to 0.01"),
        (0.0105, "multiple of 0.001"),
        (1024.5, "less than or equal to 1024"),
    ],
)
def test_cpu_below_runcs_minimum_or_between_steps_is_refused(cpu: float, problem: str) -> None:
    assert problem in rejection(cpu=cpu)


# -- restart backoff --


def test_backoff_has_a_minimum() -> None:
    assert "backoff_initial" in rejection(restart={"backoff_initial": 1e-9})
    assert "backoff_max" in rejection(restart={"backoff_initial": 1, "backoff_max": 0.1})
    policy = job_spec(restart={"backoff_initial": MIN_BACKOFF, "backoff_max": MIN_BACKOFF}).restart
    assert policy.backoff_initial == policy.backoff_max == MIN_BACKOFF


def test_backoff_max_below_backoff_initial_is_refused_with_the_fix() -> None:
    problem = rejection(restart={"backoff_initial": 60})
    assert "backoff_max (30 s) is less than backoff_initial (60 s)" in problem
    assert "raise backoff_max or lower backoff_initial" in problem


# -- memory --


def test_memory_has_an_upper_bound() -> None:
    assert "at most 1Pi" in rejection(memory="99999999t")


# -- job files stay friendly, but never turn booleans into numbers --


def test_numeric_env_values_in_yaml_become_the_text_written() -> None:
    spec = parse_job_text(
        "name: web\nimage: nginx\nenv: {PORT: 8080, UMASK: 0022, RATIO: 0.50, T: '1'}\n"
    )
    assert spec.env == {"PORT": "8080", "UMASK": "0022", "RATIO": "0.50", "T": "1"}


@pytest.mark.parametrize("value", ["yes", "true", "off"])
def test_boolean_env_values_in_yaml_must_be_quoted(value: str) -> None:
    with pytest.raises(JobFileError, match=r"env\.DEBUG: YAML read this as a boolean; quote it"):
        parse_job_text(f"name: web\nimage: nginx\nenv: {{DEBUG: {value}}}\n")


@pytest.mark.parametrize(
    ("line", "where"), [("cpu: true", "cpu"), ("replicas: yes", "replicas"), ("pull: 1", "pull")]
)
def test_booleans_and_numbers_stay_apart_in_yaml(line: str, where: str) -> None:
    with pytest.raises(JobFileError, match=rf"<job>: {where}: Input should be a valid"):
        parse_job_text(f"name: web\nimage: nginx\n{line}\n")


def test_yaml_ports_and_sizes_still_work() -> None:
    spec = parse_job_text('name: web\nimage: nginx\nmemory: 256m\nports: ["8080:80"]\n')
    assert (spec.memory, spec.ports[0].host, spec.ports[0].container) == (256 * MiB, 8080, 80)


def test_a_huge_or_deep_job_file_is_refused() -> None:
    with pytest.raises(JobFileError, match="more than the 1048576 a job file may have"):
        parse_job_text("name: web\n" + "#" * MiB)
    with pytest.raises(JobFileError, match=r"nested too deeply|not valid YAML"):
        parse_job_text("env: " + "[" * 5000)


def test_json_job_files_follow_the_same_rules() -> None:
    text = json.dumps({"name": "web", "image": "nginx", "env": {"N": 3}, "replicas": 2})
    assert parse_job_text(text).env == {"N": "3"}
