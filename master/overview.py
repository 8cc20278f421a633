"""What `corral masters` and `corral status` show: the group of masters and the cluster
on one screen. Pure functions: no I/O, no clock (the caller passes `now`).

The active master keeps the last `MasterBeat` of each master with the time it
arrived (`SeenMaster`, its own beat included) and answers api.masters with
`masters_info` and api.status with `cluster_status`.

Cost: `cluster_status` visits every job (`ClusterState.job_state`, constant time
but for a pending job's reason), every node, and every *pending* task (to count
their reasons), never the other tasks. With 100,000 pending tasks that is some
tens of milliseconds on the master's loop; an operator's command, not a hot path.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from master.state import ClusterState
from schemas.api import (
    MAX_MASTERS,
    MAX_PENDING_REASONS,
    ClusterStatus,
    MasterInfo,
    MastersInfo,
    PendingStatus,
    ReasonCount,
    Totals,
    WorkersStatus,
)
from schemas.limits import MAX_INT
from schemas.messages import MasterBeat

# The active master first, then one that is taking over, then the standbys.
ROLE_ORDER = {"active": 0, "claiming": 1, "standby": 2}


@dataclass(frozen=True)
class SeenMaster:
    """A master's last beat and when it arrived (the receiver's clock, seconds since the
    epoch)."""

    beat: MasterBeat
    seen_at: float


def masters_info(beats: Iterable[SeenMaster], now: float, leader_applied: int) -> MastersInfo:
    """The masters as MasterInfo, the active one first, then by role, name and instance.

    `leader_applied` is the active master's journal offset (-1: none); a master's
    lag is that minus its own `applied`, None when either is -1. At most
    MAX_MASTERS are listed; `omitted` counts the rest.
    """
    seen = sorted(beats, key=_master_order)
    shown = [_master_info(entry, now, leader_applied) for entry in seen[:MAX_MASTERS]]
    return MastersInfo(masters=shown, omitted=max(len(seen) - MAX_MASTERS, 0))


def _master_order(entry: SeenMaster) -> tuple[int, int, str, str]:
    """By role; among masters of one role the newest epoch first (a dead leader's last
    beat says `active` until it is forgotten: the live leader's epoch is higher)."""
    beat = entry.beat
    epoch = beat.epoch if beat.epoch is not None else -1
    return ROLE_ORDER.get(beat.role, len(ROLE_ORDER)), -epoch, beat.master, beat.instance


def _master_info(entry: SeenMaster, now: float, leader_applied: int) -> MasterInfo:
    beat = entry.beat
    lag = None
    if beat.applied >= 0 and leader_applied >= 0:
        # A standby's beat may be newer than the leader's offset it is compared with.
        lag = max(leader_applied - beat.applied, 0)
    return MasterInfo(
        name=beat.master,
        instance=beat.instance,
        role=beat.role,
        epoch=beat.epoch,
        applied=beat.applied,
        lag=lag,
        last_seen_ago=round(max(now - entry.seen_at, 0.0), 3),
        started_at=datetime.fromtimestamp(beat.started_at, UTC) if beat.started_at > 0 else None,
        broker=beat.broker,
    )


def cluster_status(
    state: ClusterState, masters: MastersInfo, dead_letters: int | None
) -> ClusterStatus:
    """The cluster on one screen. `epoch` is the first active master's in `masters`;
    `dead_letters` is passed through (None: unknown). See the module docstring for
    the cost."""
    active = [m for m in masters.masters if m.role == "active"]
    return ClusterStatus(
        masters=masters.masters,
        epoch=active[0].epoch if active else None,
        workers=workers_status(state),
        jobs=job_counts(state),
        pending=pending_status(state),
        dead_letters=dead_letters,
    )


def workers_status(state: ClusterState) -> WorkersStatus:
    """Nodes by state; capacity and free room summed over the ready nodes."""
    states: Counter[str] = Counter()
    cpus = free_cpus = 0.0
    memory = free_memory = 0
    for node in state.nodes.values():
        states[node.state] += 1
        if node.state != "ready":
            continue
        cpus += node.capacity.cpus
        memory += node.capacity.memory
        # Booked can pass capacity for a while (a node that shrank); free is never below 0.
        free_cpus += max(node.free_cpu, 0.0)
        free_memory += max(node.free_memory, 0)
    return WorkersStatus(
        states=dict(sorted(states.items())),
        capacity=Totals(cpus=round(cpus, 3), memory=min(memory, MAX_INT)),
        free=Totals(cpus=round(free_cpus, 3), memory=min(free_memory, MAX_INT)),
    )


def job_counts(state: ClusterState) -> dict[str, int]:
    """How many jobs are in each state (one `job_state` per job, no task is visited)."""
    counts = Counter(state.job_state(job)[0] for job in state.jobs.values())
    return dict(sorted(counts.items()))


def pending_status(state: ClusterState) -> PendingStatus:
    """How many tasks are pending, and the most common reasons, most common first
    (ties by reason, so the answer does not depend on the order tasks came in)."""
    reasons = Counter(task.reason for task in state.pending.values())
    top = heapq.nsmallest(MAX_PENDING_REASONS, reasons.items(), key=lambda r: (-r[1], r[0]))
    return PendingStatus(
        count=len(state.pending),
        reasons=[ReasonCount(reason=reason, count=count) for reason, count in top],
    )
