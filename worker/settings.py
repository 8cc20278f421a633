"""The worker's settings, built once at the edge (the CLI) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from bus.tls import Tls
from schemas.base import IPV4_PATTERN, Labels

DEFAULT_STATE_DIR = Path("/var/lib/corral/worker")


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amqp_url: str
    tls: Tls | None = None  # CA, client certificate and key for amqps:// URLs
    node_id: str | None = None  # None: the id kept in state_dir, or a new one saved there
    cpus: Annotated[float, Field(gt=0, le=1_000_000)] | None = None  # None: the machine's CPU count
    memory: Annotated[int, Field(gt=0)] | None = None  # bytes; None: the machine's memory
    # Checked as heartbeats check them, so a bad --label fails at start, not every beat.
    labels: Labels = Field(default_factory=dict)
    state_dir: Path = DEFAULT_STATE_DIR
    heartbeat_interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    # Threads for each kind of Docker call, so that none can starve another.
    start_threads: Annotated[int, Field(ge=1, le=64)] = 8  # create and start
    stop_threads: Annotated[int, Field(ge=1, le=64)] = 4  # signal and remove; never wait
    log_streams: Annotated[int, Field(ge=1, le=256)] = 4  # log streams open at once
    # Seconds between the empty chunks that tell whether a log client is still there.
    log_keepalive: Annotated[float, Field(gt=0)] = 2.0
    # Added to every container this worker creates (tests use it to tag a run).
    container_labels: Labels = Field(default_factory=dict)
    # SIGTERM/SIGINT makes the node leave the cluster (for machines being retired): the
    # master moves its tasks away, then the agent exits. Without it a signal stops only
    # the agent, and its containers keep running.
    leave_on_terminate: bool = False
    # Seconds a leave waits for the master before the agent stops its containers itself.
    leave_timeout: Annotated[float, Field(gt=0, le=86_400)] = 120.0
    # The master's broker user: the only sender (with this worker's own user) whose
    # commands, announcements and log requests the worker carries out.
    master_user: str = "corral-master"
    # -- the cluster network (docs/networking.md) --
    network: bool = True  # take part: bridge, routes, firewall rules, DNS
    # The address other nodes route this node's subnet through (None: the address of
    # the interface holding the default route).
    advertise_addr: Annotated[str, Field(pattern=IPV4_PATTERN)] | None = None
    # Where the containers' DNS forwards other names ([]: /etc/resolv.conf's).
    dns_upstreams: list[tuple[str, int]] = Field(default_factory=list)
    # On exit, remove the routes, firewall rules and (if empty) the bridge.
    cleanup: bool = False
