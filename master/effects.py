"""The controller's machinery: commit events one at a time, follow each with what it
implies, and settle an input once (see master/controller.py for the whole story).

`Effects` holds the state, the commands and notifications not yet drained, and
what only this process knows (liveness timers, when the last scheduling pass
ran). `_commit` applies an event, hands it to the journal hook, then `_follow`s
it (defined by `master.moves.Moves`: which commands, new attempts and moves an
event implies). `_settle` runs once per input: rollouts go on, one scheduling
pass, one job event per changed job, old jobs forgotten. No I/O, no clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import islice

from master import events as ev
from master import reports, scheduler, views
from master.errors import ApiProblem
from master.liveness import Liveness
from master.settings import MasterSettings
from master.state import (
    FENCE_RESEND_SECONDS,
    ClusterState,
    Job,
    Node,
    Task,
    Unseen,
)
from schemas.api import JobInfo
from schemas.messages import Heartbeat, Payload

log = logging.getLogger("corral.master")

# Events that record what the master did; they change no job, so they settle nothing.
_BOOKKEEPING = (ev.JobStateChanged, ev.TaskFenced, ev.RequestDone)


@dataclass(frozen=True)
class StartCommand:
    task_id: str
    node_id: str


@dataclass(frozen=True)
class StopCommand:
    task_id: str
    job_id: str
    node_id: str
    reason: str
    grace: float = 10.0


@dataclass(frozen=True)
class StandbyCommand:
    """Start the replacement `task_id` (slot `slot` of `job_id`, its current spec) paused
    on `node_id`, to be removed after `hold` seconds unless started (master/standby.py)."""

    task_id: str
    job_id: str
    slot: int
    node_id: str
    hold: float


Command = StartCommand | StopCommand | StandbyCommand


class Effects:
    def __init__(self, settings: MasterSettings, epoch: int, state: ClusterState | None = None):
        """`state` defaults to an empty one bounded by `settings` (a state given, e.g.
        loaded from a snapshot, must be built with settings.remember_requests too)."""
        self.settings = settings
        self.epoch = epoch
        if state is None:
            state = ClusterState(remember_requests=settings.remember_requests)
        self.state = state
        self.liveness = Liveness(settings)
        self.commands: list[Command] = []
        self.notifications: list[Payload] = []
        # The HA journal hooks in here: it is handed every journaled event, in commit
        # order, right after it is applied (and before what follows from it).
        self.journal: Callable[[ev.Event], None] | None = None
        self._touched: dict[str, None] = {}  # jobs the current input changed, in order
        # The state's placeable_version after the last pass, and when time alone
        # (a backoff, a node's hold) next changes what a pass could do.
        self._planned_version = -1
        self._next_due = 0.0
        self._pool_warned = False  # the cluster CIDR ran out of subnets (warned once)

    def drain(self) -> tuple[list[Command], list[Payload]]:
        commands, self.commands = self.commands, []
        notifications, self.notifications = self.notifications, []
        return commands, notifications

    def footprint(self) -> dict[str, int]:
        """How many records the master holds, by kind (what bounded history bounds)."""
        return {
            "jobs": len(self.state.jobs),
            "tasks": len(self.state.tasks),
            "nodes": len(self.state.nodes),
            "unseen_nodes": len(self.state.unseen),
            "pending": len(self.state.pending),
            "ended_jobs": len(self.state.ended),
            "fenced": len(self.state.fenced),
            "requests": len(self.state.requests),
        }

    # -- committing --

    def _commit_all(self, events: list[ev.Event], now: float) -> None:
        for event in events:
            self._commit(event, now)

    def _commit(self, event: ev.Event, now: float) -> None:
        """Apply one event, then everything that follows from it."""
        task_id = getattr(event, "task_id", None)
        task = self.state.tasks.get(task_id) if isinstance(task_id, str) else None
        self.state.apply(event)
        if event.JOURNALED and self.journal is not None:
            self.journal(event)
        self._follow(event, task, now)
        if isinstance(event, _BOOKKEEPING):
            return
        job_id = getattr(event, "job_id", None) or (task.job_id if task else None)
        if isinstance(job_id, str):
            self._touched[job_id] = None

    def _follow(self, event: ev.Event, task: Task | None, now: float) -> None:
        """What follows a committed event (`task`: the task it names, if it existed)."""
        raise NotImplementedError

    def _advance_rollout(self, job_id: str, now: float) -> None:
        raise NotImplementedError

    # -- settling an input --

    def _answer(self, job: Job, now: float) -> JobInfo:
        """The job as the reply shows it: after placement, before old jobs are forgotten."""
        self._schedule(now)
        info = views.job_detail(self.state, job)
        self._settle(now)
        return info

    def _settle(self, now: float) -> None:
        for job_id in list(self._touched):
            self._advance_rollout(job_id, now)
        self._schedule(now)
        self._settle_standbys(now)
        touched, self._touched = self._touched, {}
        for job_id in touched:
            self._notify_job(job_id, now)
        self._forget_ended_jobs(now)

    def _schedule(self, now: float) -> None:
        """One pass, unless nothing that could let a task be placed has happened."""
        if self.state.placeable_version == self._planned_version and now < self._next_due:
            return
        preferred = self._preferred_nodes()
        for event in scheduler.plan(self.state, epoch=self.epoch, now=now, preferred=preferred):
            self._commit(event, now)
        self._planned_version = self.state.placeable_version
        self._next_due = scheduler.next_due(self.state, now)

    def _preferred_nodes(self) -> Mapping[str, str]:
        """Nodes the scheduling pass tries first, by task id (warm standbys)."""
        return {}

    def _settle_standbys(self, now: float) -> None:
        """After a scheduling pass: what becomes of warm standbys (master/standby.py)."""

    def _notify_job(self, job_id: str, now: float) -> None:
        """Announce the job's state if it is not the one last announced."""
        job = self.state.jobs.get(job_id)
        if job is None:
            return
        state, reason = self.state.job_state(job)
        if job.announced != state:
            self._commit(ev.JobStateChanged(at=now, job_id=job_id, state=state, reason=reason), now)

    def _forget_ended_jobs(self, now: float) -> None:
        """Forget the oldest ended jobs beyond `keep_ended_jobs` (and with them, in the
        state, what was kept about them)."""
        surplus = len(self.state.ended) - self.settings.keep_ended_jobs
        for job_id in list(islice(self.state.ended, max(surplus, 0))):
            self._forget_job(self.state.jobs[job_id], "job forgotten", now)

    def _forget_expired_jobs(self, now: float) -> None:
        """Forget the jobs that ended more than `ended_job_ttl` ago (oldest first)."""
        horizon = now - self.settings.ended_job_ttl
        while self.state.ended:
            job = self.state.jobs[next(iter(self.state.ended))]
            if job.ended_at is None or job.ended_at > horizon:
                break
            self._forget_job(job, "job expired", now)

    def _forget_job(self, job: Job, reason: str, now: float) -> None:
        self._stop_leftovers(job, reason)
        self._commit(ev.JobForgotten(at=now, job_id=job.job_id), now)
        self._touched.pop(job.job_id, None)

    def _forget_down_nodes(self, now: float) -> None:
        horizon = now - self.settings.forget_down_nodes_after
        nodes: list[Node | Unseen] = [*self.state.nodes.values(), *self.state.unseen.values()]
        for node in nodes:
            if node.state == "down" and node.last_seen <= horizon and not node.task_ids:
                self._commit(ev.NodeForgotten(at=now, node_id=node.node_id), now)

    def _forget_old_attempts(self, created: ev.TaskCreated, now: float) -> None:
        """Keep `keep_attempts` ended attempts per slot besides the current one."""
        attempts = self.state.jobs[created.job_id].slots.get(created.slot, [])
        surplus = len(attempts) - 1 - self.settings.keep_attempts
        for task_id in attempts[: max(surplus, 0)]:
            self._commit(ev.TaskForgotten(at=now, task_id=task_id), now)

    # -- internals --

    def _job(self, job_id: str) -> Job:
        job = self.state.jobs.get(job_id)
        if job is None:
            raise ApiProblem("not_found", f"no job named {job_id!r} (see `corral jobs`)", "job_id")
        return job

    def _stop_leftovers(self, job: Job, reason: str) -> None:
        """Stop the containers an ended job may still have: every attempt that ended where
        it ran (kept for its logs, see keep_containers; a stop of one already removed does
        nothing), and any lost attempt (its node may come back). Stopped attempts were
        stopped already."""
        kept = self.settings.keep_containers + 1  # older ones were removed when replaced
        for attempts in job.slots.values():
            for index, task_id in enumerate(attempts):
                task = self.state.tasks[task_id]
                ended_here = index >= len(attempts) - kept and task.state in ("exited", "failed")
                if task.node_id is not None and (ended_here or task.state == "lost"):
                    self._send_stop(task_id, job.job_id, task.node_id, reason)

    def _stop_tasks(self, tasks: list[Task], reason: str, now: float) -> None:
        for task in tasks:
            node_id = task.node_id
            self._commit(
                ev.TaskUpdated(at=now, task_id=task.task_id, state="stopped", reason=reason), now
            )
            if node_id is not None:
                self._send_stop(task.task_id, task.job_id, node_id, reason)

    def _collect_previous(self, event: ev.TaskCreated) -> None:
        """Remove the container of the ended attempt that falls out of the slot's
        `keep_containers` newest (its logs go with it)."""
        job = self.state.jobs[event.job_id]
        attempts = job.slots.get(event.slot, [])
        index = len(attempts) - 2 - self.settings.keep_containers
        if index < 0:
            return
        old = self.state.tasks[attempts[index]]
        if old.node_id and old.state in ("exited", "failed"):
            self._send_stop(old.task_id, old.job_id, old.node_id, "replaced")

    def _carry_out(self, verdict: reports.Verdict, now: float) -> None:
        if isinstance(verdict, reports.Fence):
            self._fence(verdict.task_id, verdict.job_id, verdict.node_id, now)
        elif verdict is not None:
            self._commit(verdict, now)

    def _fence(self, task_id: str, job_id: str, node_id: str, now: float) -> None:
        """Stop a container the master no longer wants there (at most every few seconds)."""
        last = self.state.fenced.get(task_id)
        if last is not None and now - last < FENCE_RESEND_SECONDS:
            return
        self._commit(ev.TaskFenced(at=now, task_id=task_id, job_id=job_id, node_id=node_id), now)

    def _observed(self, beat: Heartbeat, now: float) -> ev.NodeObserved:
        return ev.NodeObserved(
            at=now,
            node_id=beat.node_id,
            boot_id=beat.boot_id,
            capacity=beat.capacity,
            labels=beat.labels,
            tasks=beat.tasks,
            network=beat.network,
            interval=beat.interval,
        )

    def _send_stop(self, task_id: str, job_id: str, node_id: str, reason: str) -> None:
        job = self.state.jobs.get(job_id)
        grace = job.spec.stop_grace if job is not None else 10.0
        self.commands.append(StopCommand(task_id, job_id, node_id, reason, grace))
