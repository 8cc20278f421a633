"""The job spec: what a user asks Corral to run.

A job has `replicas` slots; each slot runs one task (a container) at a time.
Specs arrive from job files (YAML or JSON), from the CLI and from any AMQP
client, so every field is validated here and unknown fields are rejected.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
RESERVED_LABEL_PREFIX = "corral."
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses a smaller memory limit.

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Parse a byte size: an int, or a string such as "256m", "1.5g", "512Mi"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 256m or 1g")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ValueError(f"expected a size such as 256m or 1g, got {value!r}")


def format_size(size: int) -> str:
    """The shortest exact rendering of a byte size: 268435456 -> "256Mi"."""
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


class Strict(BaseModel):
    """Base of every Corral model: unknown fields are an error, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RestartPolicy(Strict):
    """When a task that ended is replaced by a new attempt.

    `condition` defaults by job kind: a service restarts `always`, a batch job
    `on-failure`. Delays grow from `backoff_initial` doubling up to `backoff_max`.
    `max_retries` bounds how many times a batch slot is retried (services
    restart without bound).
    """

    condition: Literal["always", "on-failure", "never"] | None = None
    max_retries: Annotated[int, Field(ge=0, le=1000)] = 3
    backoff_initial: Annotated[float, Field(gt=0, le=3600)] = 1.0
    backoff_max: Annotated[float, Field(gt=0, le=3600)] = 30.0


class PortMapping(Strict):
    """Publish a container port on the node. Bound to 127.0.0.1 unless `host_ip` says otherwise."""

    container: Annotated[int, Field(ge=1, le=65535)]
    host: Annotated[int, Field(ge=1, le=65535)]
    host_ip: str = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        """Accept the docker-style short form "HOST:CONTAINER[/udp]" or "IP:HOST:CONTAINER"."""
        if not isinstance(value, str):
            return value
        body, _, protocol = value.partition("/")
        parts = body.split(":")
        if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
            raise ValueError(
                f"expected HOST:CONTAINER or IP:HOST:CONTAINER (e.g. 8080:80), got {value!r}"
            )
        result: dict[str, Any] = {"host": parts[-2], "container": parts[-1]}
        if len(parts) == 3:
            result["host_ip"] = parts[0]
        if protocol:
            result["protocol"] = protocol
        return result


Constraint = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-/]+(=|!=)[^=]*$")]


class JobSpec(Strict):
    """Everything needed to run a job. See docs/protocol.md for the JSON form."""

    name: str
    image: Annotated[str, Field(min_length=1, max_length=512)]
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cpu: Annotated[float, Field(gt=0, le=1024)] = 0.1
    memory: int = 64 * 1024 * 1024
    replicas: Annotated[int, Field(ge=0, le=10_000)] = 1
    kind: Literal["service", "batch"] = "batch"
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    constraints: list[Constraint] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    ports: list[PortMapping] = Field(default_factory=list)
    placement: Literal["spread", "binpack"] = "spread"
    pull: bool = False
    stop_grace: Annotated[float, Field(ge=0, le=3600)] = 10.0

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a valid job name: use 1-63 lowercase letters, digits "
                "and '-', starting and ending with a letter or digit (e.g. web-api)"
            )
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command_is_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "expected a list of strings, e.g. [sh, -c, 'echo hello'], got a single string"
            )
        return value

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_size(cls, value: Any) -> int:
        size = parse_size(value)
        if size < MIN_MEMORY:
            raise ValueError(f"must be at least 6m (Docker's minimum), got {value!r}")
        return size

    @field_validator("labels")
    @classmethod
    def _labels_not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(f"label {key!r}: the prefix 'corral.' is reserved for Corral")
        return value

    @model_validator(mode="after")
    def _ports_unique(self) -> JobSpec:
        seen: set[tuple[str, int, str]] = set()
        for port in self.ports:
            key = (port.host_ip, port.host, port.protocol)
            if key in seen:
                raise ValueError(f"ports: host port {port.host}/{port.protocol} is listed twice")
            seen.add(key)
        return self

    @property
    def restart_condition(self) -> Literal["always", "on-failure", "never"]:
        """The restart condition, with the kind's default filled in."""
        if self.restart.condition is not None:
            return self.restart.condition
        return "always" if self.kind == "service" else "on-failure"

    def constraint_pairs(self) -> list[tuple[str, str, bool]]:
        """Constraints as (label, value, must_equal) triples."""
        pairs = []
        for constraint in self.constraints:
            if "!=" in constraint:
                key, _, value = constraint.partition("!=")
                pairs.append((key, value, False))
            else:
                key, _, value = constraint.partition("=")
                pairs.append((key, value, True))
        return pairs
