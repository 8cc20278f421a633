"""The master's settings, built once at the edge (the CLI) and passed down."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bus.tls import Tls
from schemas.base import NODE_ID_PATTERN
from schemas.limits import MAX_STANDBY_HOLD


class MasterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amqp_url: str  # one AMQP URL, or several (broker cluster nodes) separated by commas
    tls: Tls | None = None  # CA, client certificate and key for amqps:// URLs
    name: Annotated[str, Field(pattern=NODE_ID_PATTERN)] = "master"
    heartbeat_interval: Annotated[float, Field(gt=0)] = 1.0
    suspect_after: Annotated[float, Field(gt=0)] = 2.0
    # A large fleet is asked to heartbeat less often than heartbeat_interval, so that all
    # nodes together send at most this many a second (master/liveness.py); 0: never.
    max_heartbeats: Annotated[float, Field(ge=0)] = 500.0
    dead_after: Annotated[float, Field(gt=0)] = 3.0
    # A node whose agent's broker connection closed (the agent crashed or was stopped;
    # the host is most likely alive) keeps its tasks this long before they are replaced
    # (a job's own agent_grace overrides it for its tasks).
    agent_grace: Annotated[float, Field(ge=0)] = 30.0
    tick: Annotated[float, Field(gt=0)] = 0.25
    # If more than this share of ready nodes go silent at once, hold: it is the
    # broker or our own link failing, not the fleet.
    partition_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    # When a node turns suspect, its services' replacements start paused elsewhere and
    # wait up to this long for it to go down (master/standby.py); 0: no warm standbys.
    standby_hold: Annotated[float, Field(ge=0, le=MAX_STANDBY_HOLD)] = 10.0
    # History the master keeps, so its memory follows what it is told to keep and
    # not how long it has run: ended jobs (oldest forgotten first) and, per slot,
    # ended attempts besides the current one (oldest forgotten first).
    keep_ended_jobs: Annotated[int, Field(ge=0)] = 1000
    keep_attempts: Annotated[int, Field(ge=0)] = 5
    # Ended jobs are forgotten (and their containers removed) this long after they end.
    ended_job_ttl: Annotated[float, Field(gt=0)] = 86400.0
    # Containers of ended attempts kept per slot besides the current one, for their logs
    # (`corral logs --previous`); older ones are removed when a slot starts a new attempt.
    keep_containers: Annotated[int, Field(ge=0, le=100)] = 2
    # Mutating requests (submit, cancel, scale) remembered by message id, so a
    # redelivered one gets the same outcome instead of being carried out again.
    remember_requests: Annotated[int, Field(ge=0)] = 10_000
    # A node whose assignment came back unroutable (no queue: its agent is not
    # consuming) takes no new tasks for this many seconds.
    unroutable_hold: Annotated[float, Field(gt=0)] = 30.0
    # A node down this long with nothing booked on it is forgotten (it joins again with
    # its next heartbeat), so invented or retired node ids do not pile up.
    forget_down_nodes_after: Annotated[float, Field(gt=0)] = 600.0
    # The cluster network: each node's containers get a /node_prefix out of cluster_cidr
    # (docs/networking.md).
    cluster_cidr: str = "10.210.0.0/16"
    node_prefix: Annotated[int, Field(ge=8, le=30)] = 24

    @model_validator(mode="after")
    def _network_fits(self) -> MasterSettings:
        try:
            network = ipaddress.IPv4Network(self.cluster_cidr)
        except ValueError as exc:
            raise ValueError(f"cluster_cidr: not an IPv4 network ({exc})") from None
        if network.prefixlen > self.node_prefix:
            raise ValueError(
                f"node_prefix: /{self.node_prefix} is larger than the cluster CIDR "
                f"{self.cluster_cidr} itself; give a longer prefix or a larger CIDR"
            )
        return self

    # -- the master group (election, journal, snapshots) --
    # AMQP heartbeat: a master frozen this long (times about two) loses its broker
    # connection, and with it its leadership.
    amqp_heartbeat: Annotated[int, Field(ge=1, le=60)] = 2
    # How often each master pings corral.leader (the active one receives the pings).
    ping_interval: Annotated[float, Field(gt=0, le=5)] = 0.2
    # A new leader gives nodes this long to be heard before judging them down.
    takeover_grace: Annotated[float, Field(ge=0, le=60)] = 3.0
    # The active master writes a snapshot after this many journal records, or after
    # snapshot_max_age seconds with records since the last one, whichever comes first.
    snapshot_every: Annotated[int, Field(ge=1)] = 1000
    snapshot_max_age: Annotated[float, Field(gt=0)] = 3600.0
