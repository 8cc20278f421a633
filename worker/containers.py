"""What the worker knows about its containers, without Docker: labels, states, errors.

`worker.runtime` talks to the engine and turns its answers into these types
with `container_info` and `runtime_event`; the agent only ever sees these.
Each container Corral runs is named `corral-<task_id>` and labelled
`corral.managed`, `corral.node`, `corral.task`, `corral.job`, `corral.slot`,
`corral.epoch`, `corral.cpu` and `corral.memory`; labels are the only state the
runtime keeps, so a restarted agent finds its containers again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LABEL_PREFIX = "corral."
MANAGED = f"{LABEL_PREFIX}managed"
NODE = f"{LABEL_PREFIX}node"
TASK = f"{LABEL_PREFIX}task"
JOB = f"{LABEL_PREFIX}job"
SLOT = f"{LABEL_PREFIX}slot"
EPOCH = f"{LABEL_PREFIX}epoch"
CPU = f"{LABEL_PREFIX}cpu"
MEMORY = f"{LABEL_PREFIX}memory"

# Docker's container states, folded into the three Corral reports.
_STATES: dict[str, Literal["created", "running", "exited"]] = {
    **dict.fromkeys(("running", "restarting", "paused"), "running"),
    **dict.fromkeys(("exited", "dead", "removing"), "exited"),
    "created": "created",
}

# What asking a container to stop did (`DockerRuntime.terminate`):
# "signalled": it was running and got SIGTERM; it may still be running.
# "removed": it was not running (or no grace was asked for), so it is removed already.
# "gone": there was no such container.
StopOutcome = Literal["signalled", "removed", "gone"]


@dataclass(frozen=True)
class ContainerInfo:
    """One Corral container as the engine reports it. `exit_code` is set only when exited."""

    task_id: str
    job_id: str
    container_id: str
    state: Literal["created", "running", "exited"]
    exit_code: int | None
    cpu: float
    memory: int
    epoch: int


@dataclass(frozen=True)
class RuntimeEvent:
    """A container of this node started ("running") or ended ("exited", with its exit code)."""

    task_id: str
    job_id: str
    container_id: str
    kind: Literal["running", "exited"]
    exit_code: int | None


class RuntimeUnavailable(Exception):
    """The Docker engine does not answer."""


class StartError(Exception):
    """Starting failed. `reason` is one human-readable line; `retryable` is False when
    retrying cannot help (missing image, invalid spec)."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def container_info(attrs: dict[str, Any], container_id: str) -> ContainerInfo:
    """A container's state from its engine attributes: a full inspect, or a sparse list
    entry (whose `State` is a plain string and which carries no exit code)."""
    labels: dict[str, str] = (attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {}
    state = attrs.get("State")
    details: dict[str, Any] = state if isinstance(state, dict) else {"Status": state}
    status = _STATES.get(str(details.get("Status")), "exited")
    try:
        cpu = float(labels.get(CPU, "0"))
    except ValueError:
        cpu = 0.0
    return ContainerInfo(
        task_id=labels.get(TASK, ""),
        job_id=labels.get(JOB, ""),
        container_id=container_id,
        state=status,
        exit_code=details.get("ExitCode") if status == "exited" else None,
        cpu=cpu,
        memory=_int(labels.get(MEMORY)),
        epoch=_int(labels.get(EPOCH)),
    )


def runtime_event(raw: dict[str, Any], seen: set[tuple[int, str, str]]) -> RuntimeEvent | None:
    """The Corral event in one decoded engine event, or None if it is not a start or die
    of a task container, or if its (time, container, action) key is in `seen` (it is
    added otherwise)."""
    action = raw.get("Action", raw.get("status", ""))
    actor = raw.get("Actor") or {}
    attributes: dict[str, str] = actor.get("Attributes") or {}
    key = (int(raw.get("timeNano", 0)), str(actor.get("ID", "")), str(action))
    if key in seen or action not in ("start", "die") or TASK not in attributes:
        return None
    seen.add(key)
    return RuntimeEvent(
        task_id=attributes[TASK],
        job_id=attributes.get(JOB, ""),
        container_id=key[1],
        kind="running" if action == "start" else "exited",
        exit_code=_int(attributes.get("exitCode"), -1) if action == "die" else None,
    )
