"""Payloads of the messages that masters and workers exchange.

Each payload class names its envelope `type` in `TYPE`; `schemas.envelope`
keeps the registry that maps a type back to its class.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from schemas.job import JobSpec, Strict

TaskState = Literal["pending", "assigned", "running", "exited", "failed", "lost", "stopped"]
TERMINAL_TASK_STATES: frozenset[str] = frozenset({"exited", "failed", "lost", "stopped"})

JobState = Literal["pending", "running", "complete", "failed", "cancelled"]
TERMINAL_JOB_STATES: frozenset[str] = frozenset({"complete", "failed", "cancelled"})

NodeState = Literal["ready", "suspect", "down"]

NodeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]


class Payload(Strict):
    """A message body. Subclasses set TYPE, the envelope's `type`."""

    TYPE: ClassVar[str] = ""


class Resources(Strict):
    cpus: Annotated[float, Field(ge=0)]
    memory: Annotated[int, Field(ge=0)]


class RunningTask(Strict):
    """A task a worker has a container for, as reported in its heartbeat."""

    task_id: str
    job_id: str
    container_id: str
    state: Literal["running", "exited"]
    cpu: float
    memory: int


class Heartbeat(Payload):
    """Published by every worker every `interval` seconds on corral.heartbeat."""

    TYPE: ClassVar[str] = "heartbeat"

    node_id: NodeId
    boot_id: str
    seq: Annotated[int, Field(ge=0)]
    interval: Annotated[float, Field(gt=0)]
    capacity: Resources
    allocated: Resources
    labels: dict[str, str] = Field(default_factory=dict)
    tasks: list[RunningTask] = Field(default_factory=list)
    max_epoch: Annotated[int, Field(ge=0)] = 0


class StartTask(Payload):
    """Master -> worker: run this task. Idempotent: a redelivery finds the existing container."""

    TYPE: ClassVar[str] = "assign.start"

    task_id: str
    job_id: str
    slot: Annotated[int, Field(ge=0)]
    node_id: NodeId
    spec: JobSpec


class StopTask(Payload):
    """Master -> worker: stop and remove this task's container."""

    TYPE: ClassVar[str] = "assign.stop"

    task_id: str
    job_id: str
    node_id: NodeId
    reason: str = ""
    grace: Annotated[float, Field(ge=0, le=3600)] = 10.0  # seconds between SIGTERM and SIGKILL


class TaskStatus(Payload):
    """Worker -> everyone (corral.status, key task.<job>.<task>.<state>)."""

    TYPE: ClassVar[str] = "task.status"

    task_id: str
    job_id: str
    node_id: NodeId
    state: Literal["running", "exited", "failed", "stopped"]
    exit_code: int | None = None
    reason: str = ""
    container_id: str = ""
    retryable: bool = True


class JobEvent(Payload):
    """Master -> everyone (corral.status, key job.<job>.<state>)."""

    TYPE: ClassVar[str] = "job.status"

    job_id: str
    state: JobState
    reason: str = ""


class NodeEvent(Payload):
    """Master -> everyone (corral.status, key node.<id>.<state>)."""

    TYPE: ClassVar[str] = "node.status"

    node_id: NodeId
    state: NodeState
    reason: str = ""


class LogsRequest(Payload):
    """Client -> worker (corral.rpc, key node id): stream a task's container logs to reply_to."""

    TYPE: ClassVar[str] = "logs.request"

    task_id: str
    follow: bool = False
    tail: Annotated[int, Field(ge=0)] | None = None


class LogChunk(Payload):
    """Worker -> client: a piece of a container's output. `end` marks the last chunk."""

    TYPE: ClassVar[str] = "logs.chunk"

    task_id: str
    data: str = ""
    end: bool = False
    error: str = ""
