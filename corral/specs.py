"""Job specs from command-line options: the changes `corral update` makes to a job's
spec, and validation errors that name the option to fix."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import typer
from pydantic import ValidationError

from schemas.envelope import describe_errors
from schemas.job import JobSpec

# The JobSpec field a validation error names -> the option that sets it.
FIELD_OPTIONS = {
    "name": "--name",
    "image": "IMAGE",
    "command": "CMD",
    "env": "--env",
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

    `env` sets variables (an empty value included) and `env_rm` removes them;
    `command` is split as a shell would split it (it is not run by one), and ""
    means the image's own command.
    """

    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    env_rm: Sequence[str] = ()
    cpu: float | None = None
    memory: str | None = None
    command: str | None = None
    parallelism: int | None = None
    order: Literal["stop-first", "start-first"] | None = None

    def empty(self) -> bool:
        fields = (self.image, self.cpu, self.memory, self.command, self.parallelism, self.order)
        return not (self.env or self.env_rm) and all(value is None for value in fields)


def updated_spec(spec: JobSpec, changes: SpecChanges) -> JobSpec:
    """`spec` with `changes` made. Raises typer.BadParameter for a variable to remove that
    the spec does not have or a command that does not split, ValidationError for a
    result that is not a valid spec (`spec_error(exc, UPDATE_OPTIONS)` explains it)."""
    data = spec.model_dump()
    env: dict[str, str] = {**data["env"], **changes.env}
    for key in changes.env_rm:
        if key not in env:
            raise typer.BadParameter(
                f"job {spec.name} has no variable {key!r}", param_hint="--env-rm"
            )
        del env[key]
    data["env"] = env
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
