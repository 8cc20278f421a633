"""Payloads of the messages that masters and workers exchange.

Each payload class names its envelope `type` in `TYPE`; `schemas.envelope`
keeps the registry that maps a type back to its class. A payload is closed
(unknown fields are an error) unless it says `model_config = Open.model_config`:
what a Corral peer emits is open, so that a newer sender may add optional fields
(docs/protocol.md, "Compatibility").
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from schemas.base import (
    IPV4_PATTERN,
    Closed,
    Count,
    Int64,
    Ipv4,
    Ipv4Net,
    JobId,
    Labels,
    NodeId,
    Open,
    TaskId,
    Text,
    Token,
)
from schemas.job import JobSpec
from schemas.limits import (
    MAX_CPU,
    MAX_GRACE,
    MAX_INT,
    MAX_LOG_CHUNK_CHARS,
    MAX_NET_JOBS,
    MAX_NET_NODES,
    MAX_NODE_TASKS,
    MAX_REPLICAS,
    MAX_STANDBY_HOLD,
)

TaskState = Literal["pending", "assigned", "running", "exited", "failed", "lost", "stopped"]
TERMINAL_TASK_STATES: frozenset[str] = frozenset({"exited", "failed", "lost", "stopped"})

JobState = Literal["pending", "running", "degraded", "complete", "failed", "cancelled"]
TERMINAL_JOB_STATES: frozenset[str] = frozenset({"complete", "failed", "cancelled"})

# disconnected: its agent's broker connection closed (the host is most likely alive).
NodeState = Literal["ready", "suspect", "disconnected", "down"]
# A container's health check as Docker last judged it ("": the job has no check).
Health = Literal["", "starting", "healthy", "unhealthy"]

Slot = Annotated[int, Field(ge=0, lt=MAX_REPLICAS)]
# A container's address on the cluster network ("": it has none, e.g. `network: none`).
Address = Annotated[str, Field(pattern=f"^$|{IPV4_PATTERN}")]
# Far above any machine; bounds what a node may claim to offer.
Cpus = Annotated[float, Field(ge=0, le=1_000_000)]


class Payload(Closed):
    """A message body. Subclasses set TYPE, the envelope's `type`."""

    TYPE: ClassVar[str] = ""


class Resources(Open):
    cpus: Cpus
    memory: Count


class RunningTask(Open):
    """A task a worker has a container for, as reported in its heartbeat."""

    task_id: TaskId
    job_id: JobId
    container_id: Token
    state: Literal["running", "exited"]
    cpu: Annotated[float, Field(ge=0, le=MAX_CPU)]
    memory: Count
    health: Health = ""
    address: Address = ""


class NodeNetwork(Open):
    """A worker's side of the cluster network, in each heartbeat (docs/networking.md)."""

    addr: Ipv4  # its advertised host address: other nodes route its subnet through it
    subnet: Ipv4Net | None = None  # the subnet its containers use now (None: none yet)
    # The network view it holds: the master's view token and the newest update of it
    # applied ("", 0: none). A master whose view differs sends it a snapshot.
    view: Token = ""
    seq: Count = 0


class Heartbeat(Payload):
    """Published by every worker every `interval` seconds on corral.heartbeats (key: its
    node id)."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "heartbeat"

    node_id: NodeId
    boot_id: Annotated[Token, Field(min_length=1)]
    seq: Count
    interval: Annotated[float, Field(gt=0, le=3600)]
    capacity: Resources
    allocated: Resources
    labels: Labels = Field(default_factory=dict)
    tasks: Annotated[list[RunningTask], Field(max_length=MAX_NODE_TASKS)] = Field(
        default_factory=list
    )
    max_epoch: Count = 0
    # The agent is leaving the cluster (`--leave-on-terminate` and SIGTERM): replace its
    # tasks elsewhere, then stop them here.
    leaving: bool = False
    network: NodeNetwork | None = None  # None: the node takes no part in the cluster network


class StartTask(Payload):
    """Master -> worker: run this task. Idempotent: a redelivery finds the existing container."""

    TYPE: ClassVar[str] = "assign.start"

    task_id: TaskId
    job_id: JobId
    slot: Slot
    node_id: NodeId
    spec: JobSpec
    # > 0: a warm standby. Start the container paused and tell no one; a later
    # assign.start without standby unpauses it, an assign.stop removes it, and the
    # worker removes it itself after this many seconds (master/standby.py).
    standby: Annotated[float, Field(ge=0, le=MAX_STANDBY_HOLD)] = 0.0


class StopTask(Payload):
    """Master -> worker: stop and remove this task's container."""

    TYPE: ClassVar[str] = "assign.stop"

    task_id: TaskId
    job_id: JobId
    node_id: NodeId
    reason: Text = ""
    grace: Annotated[float, Field(ge=0, le=MAX_GRACE)] = 10.0  # between SIGTERM and SIGKILL


class TaskStatus(Payload):
    """Worker -> everyone (corral.status, key task.<job>.<task>.<state>.<node>)."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "task.status"

    task_id: TaskId
    job_id: JobId
    node_id: NodeId
    state: Literal["running", "exited", "failed", "stopped"]
    exit_code: Int64 | None = None
    reason: Text = ""
    container_id: Token = ""
    retryable: bool = True
    # Docker's verdict on a running container's health check; a change is reported with
    # state "running" again ("unhealthy": `reason` quotes the last check's output).
    health: Health = ""
    address: Address = ""  # its address on the cluster network ("": none)


class JobEvent(Payload):
    """Master -> everyone (corral.status, key job.<job>.<state>)."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "job.status"

    job_id: JobId
    state: JobState
    reason: Text = ""


class NodeEvent(Payload):
    """Master -> everyone (corral.status, key node.<id>.<state>)."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "node.status"

    node_id: NodeId
    state: NodeState
    reason: Text = ""


class LeaderAnnounced(Payload):
    """Active master -> workers (corral.control): who leads, with which epoch.

    Sent when a master takes over and every few seconds after. A worker raises the
    newest epoch it has heard of to `epoch`, so a deposed master's late commands are
    refused as stale even before the new leader has sent it anything."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "leader.announce"

    master: NodeId
    epoch: Count
    # How often the leader asks every worker to heartbeat: longer in a large fleet
    # (master/liveness.py). A worker never beats faster than its own setting.
    heartbeat_interval: Annotated[float, Field(gt=0, le=3600)] | None = None


class CommandRefused(Payload):
    """Worker -> everyone (corral.status, key refused.<node>): a command it dropped.

    Most often a deposed master's late command (its epoch is older than the newest
    this node has heard of); the reason says which."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "command.refused"

    node_id: NodeId
    command: Annotated[Token, Field(max_length=64)] = ""
    task_id: Annotated[Token, Field(max_length=256)] = ""
    epoch: Count | None = None
    max_epoch: Count = 0
    reason: Text = ""


MasterRole = Literal["active", "claiming", "standby"]


class MasterBeat(Payload):
    """Every master -> masters (corral.masters fanout), every second: who is there.

    `applied` is the journal offset its state includes (-1: none yet); the active
    master's minus a standby's is that standby's lag."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "master.beat"

    master: NodeId
    instance: Annotated[Token, Field(min_length=1)]
    role: MasterRole
    epoch: Count | None = None
    applied: Annotated[int, Field(ge=-1, le=MAX_INT)] = -1
    started_at: float = 0.0
    interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    broker: Annotated[Token, Field(max_length=256)] = ""  # host:port it is connected to


class NetNode(Open):
    """One node of the cluster network: its subnet, routed through its address."""

    node_id: NodeId
    subnet: Ipv4Net
    addr: Ipv4


class SlotAddress(Open):
    slot: Slot
    address: Ipv4


class JobNames(Open):
    """What a job's DNS names resolve to: `<job>` to `serving` (its healthy replicas, else
    its running ones), `<slot>.<job>` to that slot's replica. Both empty: the job has no
    name any more."""

    job_id: JobId
    serving: Annotated[list[Ipv4], Field(max_length=2 * MAX_REPLICAS)] = Field(default_factory=list)
    slots: Annotated[list[SlotAddress], Field(max_length=MAX_REPLICAS)] = Field(
        default_factory=list
    )


class NetUpdate(Payload):
    """Active master -> workers: the cluster network view, or what changed in it.

    Changes go to every worker on corral.control, each with the next `seq` of the
    master's `view`. A worker whose heartbeat shows another view, or a gap, gets a
    snapshot on corral.node-rpc (its node id): `full`, in `parts` messages sharing one
    `seq`, which together replace what it held."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "net.update"

    view: Annotated[Token, Field(min_length=1)]
    seq: Count
    full: bool = False
    part: Annotated[int, Field(ge=0, lt=1000)] = 0
    parts: Annotated[int, Field(ge=1, le=1000)] = 1
    cidr: Ipv4Net | None = None
    # Every node of the network when the map changed (and in part 0 of a snapshot);
    # None: unchanged.
    nodes: Annotated[list[NetNode], Field(max_length=MAX_NET_NODES)] | None = None
    jobs: Annotated[list[JobNames], Field(max_length=MAX_NET_JOBS)] = Field(default_factory=list)


class LogsRequest(Payload):
    """Client -> worker (corral.rpc, key node id): stream a task's container logs to reply_to."""

    TYPE: ClassVar[str] = "logs.request"

    task_id: TaskId
    follow: bool = False
    tail: Count | None = None


class LogChunk(Payload):
    """Worker -> client: a piece of a container's output. `end` marks the last chunk."""

    model_config = Open.model_config
    TYPE: ClassVar[str] = "logs.chunk"

    task_id: TaskId
    data: Annotated[str, Field(max_length=MAX_LOG_CHUNK_CHARS)] = ""
    end: bool = False
    error: Text = ""
