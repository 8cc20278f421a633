"""What the worker knows about its containers, without Docker: labels, states, errors.

`worker.runtime` talks to the engine and turns its answers into these types
with `container_info` and `EventDecoder`; the agent only ever sees these.
Each container Corral runs is named `corral-<task_id>` and labelled
`corral.managed`, `corral.node`, `corral.task`, `corral.job`, `corral.slot`,
`corral.epoch`, `corral.cpu` and `corral.memory` (and `corral.network`, the cluster
network it is attached to, if any); labels are the only state the
runtime keeps, so a restarted agent finds its containers again. Health checks are
Docker's own (`worker.health`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.job import format_size
from schemas.messages import Health
from worker.health import HEALTH_EVENT, container_health, health_event

LABEL_PREFIX = "corral."
MANAGED = f"{LABEL_PREFIX}managed"
NODE = f"{LABEL_PREFIX}node"
TASK = f"{LABEL_PREFIX}task"
JOB = f"{LABEL_PREFIX}job"
SLOT = f"{LABEL_PREFIX}slot"
EPOCH = f"{LABEL_PREFIX}epoch"
CPU = f"{LABEL_PREFIX}cpu"
MEMORY = f"{LABEL_PREFIX}memory"
NETWORK = f"{LABEL_PREFIX}network"

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
    """One Corral container as the engine reports it. `exit_code` is set only when exited;
    `reason` says why it exited when the exit code does not (see `exit_reason`);
    `health` is Docker's verdict on a running container's check ("" if it has none,
    and always once it has ended)."""

    task_id: str
    job_id: str
    container_id: str
    state: Literal["created", "running", "exited"]
    exit_code: int | None
    cpu: float
    memory: int
    epoch: int
    reason: str = ""
    health: Health = ""
    address: str = ""  # on the cluster network ("": not attached, or not running)
    paused: bool = False  # a warm standby (worker.standbys); its state says "running"


@dataclass(frozen=True)
class Attachment:
    """Where a container joins the cluster network: the node's bridge, and the DNS server
    (the worker's, on the bridge's gateway) its resolver forwards to."""

    network: str
    dns: str
    search: str = "corral"  # the containers' DNS search domain (the names' suffix)


def cluster_address(attrs: dict[str, Any], labels: dict[str, str]) -> str:
    """The container's address on the cluster network its NETWORK label names ("": none).
    Both an inspect and a list entry carry `NetworkSettings.Networks`."""
    name = labels.get(NETWORK)
    if not name:
        return ""
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    address = (networks.get(name) or {}).get("IPAddress") or ""
    return address if isinstance(address, str) else ""


@dataclass(frozen=True)
class RuntimeEvent:
    """A container of this node started ("running"), ended ("exited", with its exit code
    and, when the engine tells more, a `reason`: see `exit_reason`), or was judged by its
    health check ("health", with the verdict in `health`)."""

    task_id: str
    job_id: str
    container_id: str
    kind: Literal["running", "exited", "health"]
    exit_code: int | None
    reason: str = ""
    health: Health = ""


# The engine's event actions the runtime asks for (an `event` filter).
EVENT_ACTIONS = ("start", "die", "oom", HEALTH_EVENT)


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


def exit_reason(exit_code: int | None, *, oom_killed: bool, memory: int) -> str:
    """Why a container ended, beyond its exit code: `out of memory (limit 64Mi)` when the
    kernel killed a process of it at its memory limit (`memory`, bytes; 0 if unknown) and it
    then failed, else "". A container that lost a child to the OOM killer yet exited 0 has
    nothing to explain."""
    if not oom_killed or exit_code == 0:
        return ""
    return f"out of memory (limit {format_size(memory)})" if memory > 0 else "out of memory"


def container_info(attrs: dict[str, Any], container_id: str) -> ContainerInfo:
    """A container's state from its engine attributes: a full inspect, or a sparse list
    entry (whose `State` is a plain string, which carries no exit code and whose health
    is read from its `Status` text)."""
    labels: dict[str, str] = (attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {}
    state = attrs.get("State")
    details: dict[str, Any] = state if isinstance(state, dict) else {"Status": state}
    status = _STATES.get(str(details.get("Status")), "exited")
    try:
        cpu = float(labels.get(CPU, "0"))
    except ValueError:
        cpu = 0.0
    memory = _int(labels.get(MEMORY))
    exit_code = details.get("ExitCode") if status == "exited" else None
    oom_killed = status == "exited" and bool(details.get("OOMKilled"))
    return ContainerInfo(
        task_id=labels.get(TASK, ""),
        job_id=labels.get(JOB, ""),
        container_id=container_id,
        state=status,
        exit_code=exit_code,
        cpu=cpu,
        memory=memory,
        epoch=_int(labels.get(EPOCH)),
        reason=exit_reason(exit_code, oom_killed=oom_killed, memory=memory),
        health=container_health(attrs) if status == "running" else "",
        address=cluster_address(attrs, labels) if status == "running" else "",
        paused=details.get("Status") == "paused",
    )


@dataclass
class EventDecoder:
    """Turns decoded engine events into `RuntimeEvent`s, across the overlapping windows in
    which the runtime reads them.

    An event already decoded (same time, container and action) is skipped. The engine
    reports an OOM kill as an `oom` event before the container's `die` (whose own
    attributes do not say), so the containers that had one are remembered until they die.
    A change of health is the action `health_status: <verdict>`; the engine sends one
    per change.
    """

    seen: set[tuple[int, str, str]] = field(default_factory=set)
    oom_killed: set[str] = field(default_factory=set)

    def decode(self, raw: dict[str, Any]) -> RuntimeEvent | None:
        """The Corral event in one engine event, or None if it is not a start, die or
        health verdict of a task container (an `oom` is only noted), or if it was
        decoded before."""
        action = str(raw.get("Action", raw.get("status", "")))
        actor = raw.get("Actor") or {}
        attributes: dict[str, str] = actor.get("Attributes") or {}
        key = (int(raw.get("timeNano", 0)), str(actor.get("ID", "")), action)
        health = health_event(action)
        wanted = action in ("start", "die", "oom") or health is not None
        if key in self.seen or not wanted or TASK not in attributes:
            return None
        self.seen.add(key)
        container_id = key[1]
        if action == "oom":
            self.oom_killed.add(container_id)
            return None
        task_id, job_id = attributes[TASK], attributes.get(JOB, "")
        if health is not None:
            return RuntimeEvent(task_id, job_id, container_id, "health", None, health=health)
        if action == "start":
            return RuntimeEvent(task_id, job_id, container_id, "running", exit_code=None)
        exit_code = _int(attributes.get("exitCode"), -1)
        oom_killed = container_id in self.oom_killed
        self.oom_killed.discard(container_id)
        memory = _int(attributes.get(MEMORY))  # labels come with every event's attributes
        reason = exit_reason(exit_code, oom_killed=oom_killed, memory=memory)
        return RuntimeEvent(task_id, job_id, container_id, "exited", exit_code, reason)

    def forget_before(self, since: int) -> None:
        """Forget the events before `since` (epoch seconds): no window replays them."""
        self.seen = {key for key in self.seen if key[0] >= since * 1_000_000_000}
