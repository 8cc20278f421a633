"""Warm standbys: a silent node's replacements, started and paused while it is only suspect.

A node that stops heartbeating is `suspect` after `suspect_after` (2 s) and `down`
after `dead_after` (3 s); only at `down` are its tasks lost and replaced. Most of a
replacement's time is Docker starting the container (0.3-0.5 s on the development
machine; pausing or unpausing one takes 20 to 60 ms). So when a node turns suspect the
active master picks, for each service task running there, the node its replacement
would go to, and asks that node to start it paused (`StartTask.standby`, with the id
the replacement will have). At `down` the scheduler places the replacement on that
node if it still may take it, and the worker unpauses the container instead of
starting one. If the suspect node is heard again (or the replacement goes elsewhere,
or is never made), the master stops the standby; a worker also removes any standby it
has held for `standby_hold` seconds (after a failover no master knows of it).

What a standby may not do, and why:
- only services: a batch task must not run, even for the moment between a start and
  its pause, on a node it may never need;
- not during a wave of silence (more than MAX_SILENT_SHARE of the live nodes suspect
  at once, or more than one of a small fleet): the master or the broker stalling
  makes every node look late, and that is no host loss; and at most MAX_STANDBYS
  wait at a time;
- only on nodes heard lately (within `FRESH` of `suspect_after`): a node about to go
  silent itself would run it late; the worker also ignores a standby that reaches it
  more than `worker.agent.STANDBY_FRESH` after it was sent (it was frozen itself).

Not journaled: a standby is the active master's guess. A new leader knows none.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from master import events as ev
from master import scheduler
from master.effects import Effects, StandbyCommand, StopCommand
from master.model import Job, Node, Task, task_id_for
from master.reports import tasks_on
from master.settings import MasterSettings
from master.state import ClusterState
from schemas.job import JobSpec

log = logging.getLogger("corral.master")

# A node takes a standby only if heard within this share of `suspect_after`.
FRESH = 0.75
# In a large fleet a standby goes to the best of this many nodes that may take it (as
# the scheduler samples its candidates), not the best of all.
SAMPLE = 4 * scheduler.MIN_CANDIDATES
# No standbys when more than this share of the live nodes is suspect at once (`a_wave`).
MAX_SILENT_SHARE = 0.1
# At most this many standbys wait at a time, cluster-wide.
MAX_STANDBYS = 256


@dataclass(frozen=True)
class Standby:
    task_id: str  # the replacement's id, as the reconciler names it at `down`
    job_id: str
    slot: int
    node_id: str  # where it waits, paused
    lost_node: str  # the suspect node whose task it would replace
    until: float  # when the worker removes it, unless it is started
    version: int  # of the job's spec it runs


@dataclass
class _Taken:
    """What the standbys chosen so far hold on one node."""

    cpu: float = 0.0
    memory: int = 0
    jobs: Counter[str] = field(default_factory=Counter)


def replaced(state: ClusterState, task: Task) -> Job | None:
    """The job of `task` if losing it now would start a replacement at once that a
    standby may stand in for (a service's current attempt, running), else None."""
    job = state.jobs.get(task.job_id)
    if job is None or job.spec.kind != "service" or job.cancelled or job.failed_reason:
        return None
    if task.state != "running" or task.slot >= job.replicas or task.undelivered:
        return None
    return job if job.slots[task.slot][-1] == task.task_id else None


def _fits(spec: JobSpec, job_id: str, node: Node, taken: _Taken) -> bool:
    if scheduler.unfit(spec, node) is not None:
        return False
    if spec.ports and taken.jobs[job_id]:
        return False  # two of the job's standbys would want the same host port
    return (
        node.free_cpu - taken.cpu + 1e-9 >= spec.cpu
        and node.free_memory - taken.memory >= spec.memory
    )


def _score(job: Job, node: Node, taken: _Taken) -> scheduler.Score:
    base = scheduler.score(job, node)
    if job.spec.placement == "binpack":
        return base
    return (base[0] + taken.jobs[job.job_id], base[1], base[2])


def choose(
    state: ClusterState,
    lost_nodes: list[str],
    *,
    now: float,
    fresh: Callable[[Node], bool],
    hold: float,
    held: list[Standby],
    limit: int,
) -> list[Standby]:
    """Standbys for the tasks of `lost_nodes`, which just turned suspect: one per
    replaceable task that some other ready, lately heard node can take (on top of the
    standbys `held` already), chosen as the scheduler would place it; `limit` at most."""
    taken: dict[str, _Taken] = {}
    for standby in held:
        job = state.jobs.get(standby.job_id)
        if job is not None:
            _take(taken.setdefault(standby.node_id, _Taken()), job)
    lost = set(lost_nodes)
    nodes = [node for node in state.nodes.values() if node.node_id not in lost and fresh(node)]
    sample = len(nodes) if len(nodes) <= scheduler.FULL_SCAN_NODES else SAMPLE
    chosen: list[Standby] = []
    for lost_node in lost_nodes:
        for task in tasks_on(state, lost_node, frozenset({"running"})):
            job = replaced(state, task)
            if job is None or not nodes:
                continue
            if len(chosen) >= limit:
                return chosen
            best: tuple[scheduler.Score, Node] | None = None
            for node in islice(scheduler.walk(job, nodes, now), sample):
                room = taken.get(node.node_id, _Taken())
                if _fits(job.spec, job.job_id, node, room):
                    candidate = (_score(job, node, room), node)
                    best = candidate if best is None or candidate[0] < best[0] else best
            if best is None:
                continue
            node = best[1]
            _take(taken.setdefault(node.node_id, _Taken()), job)
            task_id = task_id_for(job.job_id, task.slot, task.attempt + 1, job.submission)
            chosen.append(
                Standby(
                    task_id, job.job_id, task.slot, node.node_id, lost_node, now + hold, job.version
                )
            )
    return chosen


def _take(room: _Taken, job: Job) -> None:
    room.cpu += job.spec.cpu
    room.memory += job.spec.memory
    room.jobs[job.job_id] += 1


def a_wave(state: ClusterState) -> bool:
    """Whether more nodes are silent than a handful of lost hosts explains: more than
    MAX_SILENT_SHARE of the live nodes (and more than one). Then the master itself, or
    the broker, is the likelier cause (it stalled, and every node looks late), and
    standbys would only start and remove containers by the hundred."""
    live = silent = 0
    for node in state.nodes.values():
        if node.state not in ("down", "disconnected"):
            live += 1
            silent += node.state == "suspect"
    return silent > max(1.0, MAX_SILENT_SHARE * live)


class WarmStandbys(Effects):
    """The controller's standbys (the active master's; see the module's docstring)."""

    def __init__(
        self, settings: MasterSettings, epoch: int, state: ClusterState | None = None
    ) -> None:
        super().__init__(settings, epoch, state)
        self.standbys: dict[str, Standby] = {}  # by the id of the replacement
        self._standbys_to_settle: set[str] = set()  # nodes that left suspect, this input
        self._new_suspects: list[str] = []  # nodes that turned suspect, this input

    def _standby_follow(self, event: ev.NodeStateChanged) -> None:
        """A node changed state: a new suspect may get standbys, and any other change of
        a node that has some settles them, once the input's scheduling pass is done."""
        if event.state == "suspect":
            self._new_suspects.append(event.node_id)
        elif any(s.lost_node == event.node_id for s in self.standbys.values()):
            self._standbys_to_settle.add(event.node_id)

    def _start_standbys(self, now: float) -> None:
        """Standbys for the nodes that turned suspect in this input (still suspect)."""
        suspects, self._new_suspects = self._new_suspects, []
        suspects = [
            n for n in suspects if getattr(self.state.nodes.get(n), "state", "") == "suspect"
        ]
        hold = self.settings.standby_hold
        if not suspects or hold <= 0 or a_wave(self.state):
            return
        chosen = choose(
            self.state,
            suspects,
            now=now,
            fresh=lambda node: now - node.last_seen <= FRESH * self.liveness.suspect_after(node),
            hold=hold,
            held=list(self.standbys.values()),
            limit=MAX_STANDBYS - len(self.standbys),
        )
        for standby in chosen:
            if standby.task_id in self.standbys:
                continue
            self.standbys[standby.task_id] = standby
            self.commands.append(
                StandbyCommand(standby.task_id, standby.job_id, standby.slot, standby.node_id, hold)
            )
        for node_id, count in Counter(s.lost_node for s in chosen).items():
            log.info(
                "node %s is suspect: %d replacement(s) started paused as warm standbys",
                node_id,
                count,
            )

    def _settle_standbys(self, now: float) -> None:
        """After a scheduling pass: new suspects get standbys; the standbys of nodes that
        left `suspect` were taken up (their replacement went to their node) or are
        stopped; expired ones are dropped (their workers remove them)."""
        self._start_standbys(now)
        if not self.standbys:
            self._standbys_to_settle.clear()
            return
        settle, self._standbys_to_settle = self._standbys_to_settle, set()
        for standby in list(self.standbys.values()):
            if standby.until <= now:
                del self.standbys[standby.task_id]
                continue
            if standby.lost_node not in settle:
                continue
            del self.standbys[standby.task_id]
            task = self.state.tasks.get(standby.task_id)
            if task is not None and task.node_id == standby.node_id:
                continue  # the replacement went to its standby: the worker unpauses it
            self.commands.append(
                StopCommand(
                    standby.task_id, standby.job_id, standby.node_id, "standby not needed", 0.0
                )
            )

    def _preferred_nodes(self) -> dict[str, str]:
        """Where each standby waits, by the id of the replacement it stands in for (not
        one whose job was updated since: it runs the old spec)."""
        jobs = self.state.jobs
        return {
            task_id: standby.node_id
            for task_id, standby in self.standbys.items()
            if standby.job_id in jobs and jobs[standby.job_id].version == standby.version
        }
