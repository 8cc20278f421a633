"""The job spec: what a user asks Corral to run.

A job has `replicas` slots; each slot runs one task (a container) at a time.
Specs arrive from job files (YAML or JSON), from the CLI and from any AMQP
client, so every field is validated here, strictly (see schemas.base), and
unknown fields are rejected at every level. Each field is bounded, and so is the
whole: at most MAX_SPEC_BYTES as compact JSON. Two friendly forms remain:
`memory` takes a size string ("256m") and a port a docker-style string ("8080:80").
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from schemas.base import NAME_PATTERN as NAME_PATTERN
from schemas.base import Closed, Labels, show
from schemas.base import Strict as Strict  # the base of master.events
from schemas.limits import (
    CPU_STEP,
    MAX_AGENT_GRACE,
    MAX_ARG_LENGTH,
    MAX_BACKOFF,
    MAX_CHECK_SECONDS,
    MAX_COMMAND_ARGS,
    MAX_CONSTRAINTS,
    MAX_CPU,
    MAX_ENV_KEY_LENGTH,
    MAX_ENV_VALUE_LENGTH,
    MAX_ENV_VARS,
    MAX_GRACE,
    MAX_IMAGE_LENGTH,
    MAX_IMAGE_NAME_LENGTH,
    MAX_LABEL_KEY_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_MEMORY,
    MAX_PORTS,
    MAX_REPLICAS,
    MAX_RETRIES,
    MAX_SPEC_BYTES,
    MIN_BACKOFF,
    MIN_CPU,
    KiB,
)

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
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([bB]|[kKmMgGtT]([iI]?[bB]?))?\s*$"

# Docker's image reference grammar (distribution/reference): [domain/]path[:tag][@digest].
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
IMAGE_PATTERN = (
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,})?$"
)
_IMAGE_RE = re.compile(IMAGE_PATTERN, re.ASCII)
ENV_KEY_PATTERN = rf"^[A-Za-z_][A-Za-z0-9_.-]{{0,{MAX_ENV_KEY_LENGTH - 1}}}$"
_ENV_KEY_RE = re.compile(ENV_KEY_PATTERN, re.ASCII)
CONSTRAINT_PATTERN = (
    rf"^[A-Za-z0-9_.\-/]{{1,{MAX_LABEL_KEY_LENGTH}}}(=|!=)[^=\x00]{{0,{MAX_LABEL_VALUE_LENGTH}}}$"
)


def _image_name(reference: str) -> str:
    """The registry/repository part of an image reference (no tag, no digest)."""
    name = reference.partition("@")[0]
    tag_at = name.rfind(":")
    return name[:tag_at] if tag_at > name.rfind("/") else name


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


Seconds = Annotated[float, Field(ge=MIN_BACKOFF, le=MAX_BACKOFF)]


class RestartPolicy(Closed):
    """When a task that ended is replaced by a new attempt.

    `condition` defaults by job kind: a service restarts `always`, a batch job
    `on-failure`. Delays grow from `backoff_initial` doubling up to `backoff_max`
    (both at least MIN_BACKOFF, and backoff_max >= backoff_initial). `max_retries`
    bounds how many times a batch slot is retried (services restart without bound).
    """

    condition: Literal["always", "on-failure", "never"] | None = None
    max_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] = 3
    backoff_initial: Seconds = 1.0
    backoff_max: Seconds = 30.0

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> RestartPolicy:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max:g} s) is less than backoff_initial "
                f"({self.backoff_initial:g} s): raise backoff_max or lower backoff_initial"
            )
        return self


PORT_PATTERN = r"^([^:/]+:)?[0-9]{1,5}:[0-9]{1,5}(/(tcp|udp))?$"


class PortMapping(Closed):
    """Publish a container port on the node. Bound to 127.0.0.1 unless `host_ip` says otherwise.

    Also accepts the docker-style short form "HOST:CONTAINER[/udp]" or
    "IP:HOST:CONTAINER", turned into this object (with integer ports).
    """

    container: Annotated[int, Field(ge=1, le=65535)]
    host: Annotated[int, Field(ge=1, le=65535)]
    host_ip: Annotated[str, Field(min_length=1, max_length=64)] = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        body, _, protocol = value.partition("/")
        parts = [part.strip() for part in body.split(":")]
        if len(parts) not in (2, 3) or not all(parts) or len(value) > 80:
            raise ValueError(
                f"expected HOST:CONTAINER or IP:HOST:CONTAINER (e.g. 8080:80), got {show(value)}"
            )
        host, container = parts[-2], parts[-1]
        if not (re.fullmatch(r"[0-9]{1,5}", host) and re.fullmatch(r"[0-9]{1,5}", container)):
            raise ValueError(f"ports must be numbers 1-65535 (e.g. 8080:80), got {show(value)}")
        result: dict[str, Any] = {"host": int(host), "container": int(container)}
        if len(parts) == 3:
            result["host_ip"] = parts[0]
        if protocol:
            result["protocol"] = protocol.strip()
        return result

    @field_validator("host_ip")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(
                f"{show(value)} is not an IP address: give one of the node's addresses, "
                "e.g. 127.0.0.1, 0.0.0.0 (every interface) or ::1"
            ) from None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        # Document the short string form beside the object.
        schema = handler(core_schema)
        short = {"type": "string", "pattern": PORT_PATTERN, "examples": ["8080:80"]}
        return {"anyOf": [schema, short]}


def _without_nul(command: list[str] | None) -> list[str] | None:
    """The command, if none of its arguments holds a NUL (exec refuses those)."""
    for index, arg in enumerate(command or ()):
        if "\x00" in arg:
            raise ValueError(f"argument {index} contains a NUL character, which exec refuses")
    return command


HTTP_PATH_PATTERN = r"^/[!-~]{0,1023}$"  # printable ASCII, no spaces


class HttpCheck(Closed):
    """An HTTP GET of `path` on the container's own `port`: healthy on a 2xx or 3xx answer."""

    port: Annotated[int, Field(ge=1, le=65535)]
    path: Annotated[str, Field(pattern=HTTP_PATH_PATTERN)] = "/"


class HealthCheck(Closed):
    """How Docker checks a task's container (its own healthcheck, run inside the container).

    Exactly one of `command` (exit 0: healthy), `tcp` (a port that must accept a
    connection) or `http`. `tcp` and `http` run `sh` and `nc` inside the container
    (busybox has both); with other images use `command`. The container is unhealthy
    after `retries` failed checks in a row; failures during `start_period` do not
    count. Times in seconds.
    """

    command: Annotated[list[Arg], Field(min_length=1, max_length=MAX_COMMAND_ARGS)] | None = None
    tcp: Annotated[int, Field(ge=1, le=65535)] | None = None
    http: HttpCheck | None = None
    interval: Annotated[float, Field(ge=0.1, le=MAX_CHECK_SECONDS)] = 1.0
    timeout: Annotated[float, Field(ge=0.1, le=MAX_CHECK_SECONDS)] = 1.0
    retries: Annotated[int, Field(ge=1, le=100)] = 3
    start_period: Annotated[float, Field(ge=0, le=MAX_CHECK_SECONDS)] = 0.0

    @field_validator("command", mode="before")
    @classmethod
    def _command_is_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("expected a list of strings, e.g. [sh, -c, 'test -f /ready']")
        return value

    @field_validator("command")
    @classmethod
    def _command_has_no_nul(cls, value: list[str] | None) -> list[str] | None:
        return _without_nul(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> HealthCheck:
        given = [name for name in ("command", "tcp", "http") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of command, tcp or http (e.g. tcp: 8080), "
                f"not {' and '.join(given) or 'none'}"
            )
        return self


class UpdatePolicy(Closed):
    """How `corral update` rolls a new version out: `parallelism` slots at a time, each
    stopping its old task first (`stop-first`) or starting the new one first
    (`start-first`, which needs room for both). A slot is done once its new task is
    healthy; a new task that fails or turns unhealthy first rolls the job back."""

    parallelism: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    order: Literal["stop-first", "start-first"] = "stop-first"


Constraint = Annotated[str, Field(pattern=CONSTRAINT_PATTERN)]
Arg = Annotated[str, Field(max_length=MAX_ARG_LENGTH)]
EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE_LENGTH)]
EnvVars = Annotated[
    dict[str, EnvValue],
    Field(
        max_length=MAX_ENV_VARS,
        json_schema_extra={"propertyNames": {"pattern": ENV_KEY_PATTERN}},
    ),
]
Memory = Annotated[
    int,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": MIN_MEMORY, "maximum": MAX_MEMORY},
                {"type": "string", "pattern": SIZE_PATTERN, "examples": ["256m", "1.5g"]},
            ]
        }
    ),
]


class JobSpec(Closed):
    """Everything needed to run a job. See docs/job-spec.md for every field and limit."""

    name: Annotated[str, Field(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": 63})]
    image: Annotated[
        str,
        Field(
            min_length=1, max_length=MAX_IMAGE_LENGTH, json_schema_extra={"pattern": IMAGE_PATTERN}
        ),
    ]
    command: Annotated[list[Arg], Field(max_length=MAX_COMMAND_ARGS)] | None = None
    env: EnvVars = Field(default_factory=dict)
    # Variables whose values are secret: the container gets them as it gets `env`, but
    # the master shows each value as "***" (replies, listings, its log); see
    # docs/job-spec.md. A name may not be in both.
    secret_env: EnvVars = Field(default_factory=dict)
    cpu: Annotated[
        float, Field(ge=MIN_CPU, le=MAX_CPU, json_schema_extra={"multipleOf": CPU_STEP})
    ] = 0.1
    memory: Memory = 64 * 1024 * 1024
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    kind: Literal["service", "batch"] = "batch"
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    constraints: Annotated[list[Constraint], Field(max_length=MAX_CONSTRAINTS)] = Field(
        default_factory=list
    )
    labels: Labels = Field(default_factory=dict)
    ports: Annotated[list[PortMapping], Field(max_length=MAX_PORTS)] = Field(default_factory=list)
    # "cluster": an address on the cluster network and DNS names (docs/networking.md);
    # "none": no cluster address (host ports still work).
    network: Literal["cluster", "none"] = "cluster"
    placement: Literal["spread", "binpack"] = "spread"
    pull: bool = False
    stop_grace: Annotated[float, Field(ge=0, le=MAX_GRACE)] = 10.0
    health: HealthCheck | None = None
    # A task is healthy once it has run (and passed its check, if any) this long.
    min_healthy: Annotated[float, Field(ge=0, le=MAX_CHECK_SECONDS)] = 1.0
    # How long the tasks of a node whose agent disconnected are kept before being
    # replaced elsewhere (None: the master's --agent-grace, 30 s by default).
    agent_grace: Annotated[float, Field(ge=0, le=MAX_AGENT_GRACE)] | None = None
    update: UpdatePolicy = Field(default_factory=UpdatePolicy)

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(
                f"{show(value)} is not a valid job name: use 1-63 lowercase letters, digits "
                "and '-', starting and ending with a letter or digit (e.g. web-api)"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        if _IMAGE_RE.fullmatch(value) is None or len(_image_name(value)) > MAX_IMAGE_NAME_LENGTH:
            raise ValueError(
                f"{show(value)} is not a valid image reference: expected "
                "[REGISTRY/]REPOSITORY[:TAG][@DIGEST] with a lowercase repository and no "
                "spaces or control characters, at most 255 characters before the tag "
                "(e.g. local/busybox:latest)"
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

    @field_validator("command")
    @classmethod
    def _command_has_no_nul(cls, value: list[str] | None) -> list[str] | None:
        return _without_nul(value)

    @field_validator("env", "secret_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not _ENV_KEY_RE.fullmatch(key):
                raise ValueError(
                    f"{show(key)} is not a valid variable name: use letters, digits, '_', '.' "
                    f"and '-', not starting with a digit, at most {MAX_ENV_KEY_LENGTH} "
                    "characters (e.g. LOG_LEVEL)"
                )
            if "\x00" in text:
                raise ValueError(f"{key}: the value contains a NUL character, which env refuses")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu_step(cls, value: float) -> float:
        millis = value / CPU_STEP
        if abs(millis - round(millis)) > 1e-6:
            raise ValueError(f"must be a multiple of 0.001 CPU (1m), got {value!r}")
        return round(value, 3)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_size(cls, value: Any) -> int:
        size = parse_size(value)
        if size < MIN_MEMORY:
            raise ValueError(f"must be at least 6m (Docker's minimum), got {value!r}")
        if size > MAX_MEMORY:
            raise ValueError(f"must be at most 1Pi, got {value!r}")
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

    @model_validator(mode="after")
    def _env_or_secret(self) -> JobSpec:
        both = sorted(self.env.keys() & self.secret_env.keys())
        if both:
            names = ", ".join(show(key) for key in both[:5])
            raise ValueError(
                f"secret_env: {names} also in env: give each variable once, in env or "
                "(if its value is secret) in secret_env"
            )
        return self

    @model_validator(mode="after")
    def _size(self) -> JobSpec:
        size = len(self.model_dump_json().encode())
        if size > MAX_SPEC_BYTES:
            raise ValueError(
                f"the spec is {size / KiB:.0f} KiB as JSON, more than the "
                f"{MAX_SPEC_BYTES // KiB} KiB a job spec may have: make env, secret_env, "
                "command or labels smaller (large data belongs in the image or a mounted file)"
            )
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
