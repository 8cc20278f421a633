"""Job specs on the submitting machine: from command-line options (the changes `corral
update` makes to a job's spec, validation errors that name the option to fix) and from
job files, with their secrets read here.

A secret's value may be given as a reference to a file on this machine: `--secret-env
KEY=@PATH`, or `secret_env: {KEY: {file: PATH}}` in a job file (PATH relative to the
job file). The file is read here, never by the master, and its text (UTF-8, one
trailing newline dropped) is the value sent.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import typer
import yaml
from pydantic import ValidationError

from schemas.envelope import describe_errors
from schemas.files import JobFileError, parse_job_text, read_job_text
from schemas.job import JobSpec
from schemas.limits import MAX_ENV_VALUE_LENGTH, MAX_JOB_FILE_BYTES

# The JobSpec field a validation error names -> the option that sets it.
FIELD_OPTIONS = {
    "name": "--name",
    "image": "IMAGE",
    "command": "CMD",
    "env": "--env",
    "secret_env": "--secret-env",
    "cpu": "--cpu",
    "memory": "--memory",
    "replicas": "--replicas",
    "kind": "--kind",
    "restart": "--restart/--max-retries",
    "constraints": "--constraint",
    "labels": "--label",
    "ports": "--port",
}


def spec_error(exc: ValidationError, options: Mapping[str, str] = FIELD_OPTIONS) -> str:
    """`invalid job: cpu: ... (check --cpu)`: the errors, and the options that set them."""
    fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    named = sorted(options[name] for name in fields if name in options)
    hint = f" (check {', '.join(named)})" if named else ""
    return f"invalid job: {describe_errors(exc)}{hint}"


# `corral update`'s options name some fields differently from `corral run`'s.
UPDATE_OPTIONS = {
    **FIELD_OPTIONS,
    "image": "--image",
    "command": "--command",
    "update": "--parallelism",
}


@dataclass(frozen=True)
class SpecChanges:
    """What `corral update` changes in a job's spec; None (or empty) leaves a field be.

    `env` sets variables (an empty value included), `secret_env` sets secret ones (a
    variable moves between the two when set in the other), and `env_rm` removes
    variables of either kind; `command` is split as a shell would split it (it is not
    run by one), and "" means the image's own command.
    """

    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    env_rm: Sequence[str] = ()
    cpu: float | None = None
    memory: str | None = None
    command: str | None = None
    parallelism: int | None = None
    order: Literal["stop-first", "start-first"] | None = None

    def empty(self) -> bool:
        fields = (self.image, self.cpu, self.memory, self.command, self.parallelism, self.order)
        variables = self.env or self.secret_env or self.env_rm
        return not variables and all(value is None for value in fields)


def updated_spec(spec: JobSpec, changes: SpecChanges) -> JobSpec:
    """`spec` with `changes` made. Raises typer.BadParameter for a variable to remove that
    the spec does not have or a command that does not split, ValidationError for a
    result that is not a valid spec (`spec_error(exc, UPDATE_OPTIONS)` explains it)."""
    data = spec.model_dump()
    env: dict[str, str] = {**data["env"], **changes.env}
    # The current secrets read back as "***": sent unchanged, the master keeps their values.
    secret: dict[str, str] = {**data["secret_env"], **changes.secret_env}
    for key in changes.env:
        secret.pop(key, None)
    for key in changes.secret_env:
        env.pop(key, None)
    for key in changes.env_rm:
        if key not in env and key not in secret:
            raise typer.BadParameter(
                f"job {spec.name} has no variable {key!r}", param_hint="--env-rm"
            )
        env.pop(key, None)
        secret.pop(key, None)
    data["env"], data["secret_env"] = env, secret
    top: dict[str, Any] = {"image": changes.image, "cpu": changes.cpu, "memory": changes.memory}
    data.update({key: value for key, value in top.items() if value is not None})
    if changes.command is not None:
        data["command"] = split_command(changes.command)
    policy = {"parallelism": changes.parallelism, "order": changes.order}
    data["update"].update({key: value for key, value in policy.items() if value is not None})
    return JobSpec.model_validate(data)


def split_command(text: str) -> list[str] | None:
    """`sh -c 'echo hi'` -> [sh, -c, echo hi]; "" -> None (the image's command)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise typer.BadParameter(f"cannot split {text!r}: {exc}", param_hint="--command") from None
    return words or None


def read_secret_file(path: Path) -> str:
    """The value a secret file gives: its text as UTF-8, without one trailing newline
    (editors add one). Raises ValueError saying what is wrong with the file."""
    try:
        with path.expanduser().open("rb") as file:
            data = file.read(4 * MAX_ENV_VALUE_LENGTH + 1)  # UTF-8: at most 4 bytes a char
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > 4 * MAX_ENV_VALUE_LENGTH:
        raise ValueError(f"{path} is larger than a variable's value may be (64 KiB)")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    return text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")


def parse_secret_pairs(values: Iterable[str] | None, option: str) -> dict[str, str]:
    """`--secret-env` values: `KEY=VALUE`, or `KEY=@PATH` to read the value from a file
    here (`KEY=@@x` is the value `@x`). BadParameter naming `option` (and the path)."""
    pairs: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():  # the text is not shown: it may be a secret
            raise typer.BadParameter(
                "expected KEY=VALUE or KEY=@FILE, got text with no KEY= before a value",
                param_hint=option,
            )
        if value.startswith("@@"):
            value = value[1:]
        elif value.startswith("@"):
            try:
                value = read_secret_file(Path(value[1:]))
            except ValueError as exc:
                raise typer.BadParameter(f"{key.strip()}: {exc}", param_hint=option) from None
        pairs[key.strip()] = value
    return pairs


def load_job_file(path: str | Path) -> JobSpec:
    """A job file, as `schemas.files.load_job_file` reads it, with its `secret_env`
    values read on this machine: a value `{file: PATH}` is the text of that file
    (`read_secret_file`; PATH relative to the job file's folder), and a YAML number
    the text it was written as (as in `env`). Raises JobFileError naming the job file,
    the variable and the secret's file."""
    path = Path(path)
    return parse_job_text(_with_secrets_read(read_job_text(path), path), str(path))


_STR = "tag:yaml.org,2002:str"
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _with_secrets_read(text: str, path: Path) -> str:
    """`text` with each `secret_env` value that is a file reference (or a number) made a
    string; `text` itself if there is none, or if it is not a YAML mapping (then
    `parse_job_text` says what is wrong)."""
    if len(text.encode(errors="replace")) > MAX_JOB_FILE_BYTES:
        return text
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return text
    if not isinstance(document, yaml.MappingNode):
        return text
    secrets = next((value for key, value in document.value if key.value == "secret_env"), None)
    if not isinstance(secrets, yaml.MappingNode):
        return text
    changed = False
    for index, (key, value) in enumerate(secrets.value):
        if isinstance(value, yaml.ScalarNode) and value.tag in _NUMBERS:
            string = yaml.ScalarNode(_STR, value.value, style='"')
        elif isinstance(value, yaml.MappingNode):
            string = yaml.ScalarNode(_STR, _secret_file(value, key.value, path), style='"')
        else:
            continue
        secrets.value[index] = (key, string)
        changed = True
    if not changed:
        return text
    return yaml.serialize(document, Dumper=yaml.SafeDumper, allow_unicode=True)


def _secret_file(reference: yaml.MappingNode, key: str, path: Path) -> str:
    fields = {item.value: value for item, value in reference.value}
    target = fields.get("file")
    if set(fields) != {"file"} or not isinstance(target, yaml.ScalarNode) or not target.value:
        raise JobFileError(
            f"{path}: secret_env.{key}: expected a string, or {{file: PATH}} to read the "
            "value from a file on this machine"
        )
    try:
        return read_secret_file(path.parent / Path(target.value).expanduser())
    except ValueError as exc:
        raise JobFileError(f"{path}: secret_env.{key}: {exc}") from None
