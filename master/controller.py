"""The active master's brain: messages in, events and commands out. No I/O, no clock.

Every public method takes `now`, turns its input into events, and commits
them one at a time: `ClusterState.apply`, then whatever follows from that
event (a start or stop command, a new attempt, forgetting a slot's oldest
attempts). Then the input is settled, once:

1. one scheduling pass, if anything happened that may let a pending task be
   placed (or a backoff or a node's hold ran out);
2. one `JobEvent` for each job the input touched whose state changed;
3. the oldest ended jobs beyond `keep_ended_jobs` are forgotten.

So the work of an input follows what it changed, not what the master holds: a
submit of 10,000 replicas is one pass and one job event. The daemon drains
the commands and notifications and does the I/O. Tests drive this class
directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from master import events as ev
from master import reconciler, reports, scheduler, views
from master.errors import ApiProblem
from master.liveness import Liveness
from master.settings import MasterSettings
from master.state import ClusterState, Job, Task
from schemas.api import JobInfo
from schemas.job import JobSpec
from schemas.messages import Heartbeat, JobEvent, NodeEvent, Payload, TaskStatus

__all__ = ["ApiProblem", "Command", "Controller", "StartCommand", "StopCommand"]

log = logging.getLogger("corral.master")

FENCE_RESEND_SECONDS = 5.0
# A node category in "why pending" reasons: "2 nodes have no assignment queue (...)".
UNROUTABLE_REASON = "has no assignment queue (is `corral worker` consuming there?)"


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


Command = StartCommand | StopCommand


class Controller:
    def __init__(self, settings: MasterSettings, epoch: int, state: ClusterState | None = None):
        self.settings = settings
        self.epoch = epoch
        self.state = state or ClusterState()
        self.liveness = Liveness(settings)
        self.commands: list[Command] = []
        self.notifications: list[Payload] = []
        # The HA journal hooks in here: it is handed every journaled event, in order.
        self.journal: Callable[[ev.Event], None] | None = None
        self._fenced: dict[str, float] = {}
        self._job_states: dict[str, str] = {}
        self._reuses: dict[str, int] = {}
        self._touched: dict[str, None] = {}  # jobs the current input changed, in order
        # The state's placeable_version after the last pass, and when time alone
        # (a backoff, a node's hold) next changes what a pass could do.
        self._planned_version = -1
        self._next_due = 0.0

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
            "pending": len(self.state.pending),
            "ended_jobs": len(self.state.ended),
            "job_states": len(self._job_states),
            "fenced": len(self._fenced),
            "reuses": len(self._reuses),
        }

    # -- inputs --

    def submit(self, spec: JobSpec, now: float, submission: str = "") -> JobInfo:
        """Accept a job. `submission` (the daemon passes a random token) makes its task ids
        unique; without one, a reused name gets `v<n>`, unique within this master's life."""
        existing = self.state.jobs.get(spec.name)
        if existing is not None and not self.state.job_done(existing):
            raise ApiProblem(
                "conflict",
                f"job {spec.name!r} is still {self.state.job_state(existing)[0]}; "
                "cancel it first, scale it, or pick another name",
                field="name",
            )
        if existing is not None:  # its containers go; the name is reused
            self._stop_leftovers(existing, "job resubmitted")
            self._reuses[spec.name] = self._reuses.get(spec.name, 1) + 1
            submission = submission or f"v{self._reuses[spec.name]}"
        event = ev.JobSubmitted(at=now, job_id=spec.name, spec=spec, submission=submission)
        self._commit(event, now)
        job = self.state.jobs[spec.name]
        self._commit_all(reconciler.fill_slots(self.state, job, now), now)
        return self._answer(job, now)

    def cancel(self, job_id: str, now: float) -> JobInfo:
        job = self._job(job_id)
        if not self.state.job_done(job):  # a finished job keeps its outcome
            self._commit(ev.JobCancelled(at=now, job_id=job_id), now)
            self._stop_tasks(self.state.live_tasks(job), "job cancelled", now)
        return self._answer(job, now)

    def scale(self, job_id: str, replicas: int, now: float) -> JobInfo:
        job = self._job(job_id)
        if self.state.job_done(job):
            raise ApiProblem("conflict", f"job {job_id!r} has ended; submit it again instead")
        self._commit(ev.JobScaled(at=now, job_id=job_id, replicas=replicas), now)
        surplus = [t for t in self.state.live_tasks(job) if t.slot >= replicas]
        self._stop_tasks(surplus, f"scaled down to {replicas}", now)
        self._commit_all(reconciler.fill_slots(self.state, job, now), now)
        return self._answer(job, now)

    def job_info(self, job_id: str) -> JobInfo:
        return views.job_detail(self.state, self._job(job_id))

    def task_status(self, status: TaskStatus, now: float) -> None:
        self._carry_out(reports.judge_status(self.state, status, now), now)
        self._settle(now)

    def heartbeat(self, beat: Heartbeat, now: float) -> None:
        known = self.state.nodes.get(beat.node_id)  # read before apply mutates it
        previous_boot = known.boot_id if known is not None else beat.boot_id
        previous_state = known.state if known is not None else None
        self._commit(
            ev.NodeObserved(
                at=now,
                node_id=beat.node_id,
                boot_id=beat.boot_id,
                capacity=beat.capacity,
                labels=beat.labels,
                tasks=beat.tasks,
            ),
            now,
        )
        if previous_boot != beat.boot_id:
            self._commit_all(reports.lost_on_restart(self.state, beat, now), now)
        if previous_state is None:
            self.notifications.append(NodeEvent(node_id=beat.node_id, state="ready"))
        elif previous_state != "ready":
            self._commit(ev.NodeStateChanged(at=now, node_id=beat.node_id, state="ready"), now)
        for reported in beat.tasks:
            self._carry_out(reports.judge_reported(self.state, beat.node_id, reported, now), now)
        self._settle(now)

    def tick(self, now: float) -> None:
        """Periodic: judge liveness, place tasks whose backoff has passed."""
        self._fenced = {k: t for k, t in self._fenced.items() if now - t < FENCE_RESEND_SECONDS}
        self._commit_all(self.liveness.check(self.state, now), now)
        self._forget_down_nodes(now)
        self._settle(now)

    def reconnected(self, now: float) -> None:
        self.liveness.grant_grace(now)

    def assignment_unroutable(self, task_id: str, now: float) -> None:
        """The broker had no queue for an assignment's node.

        The task is lost, and the node takes no new tasks for `unroutable_hold`
        seconds: it heartbeats, but nothing consumes its queue, so whatever is
        placed there would come back too. The replacement backs off (reconciler).
        """
        task = self.state.tasks.get(task_id)
        if task is None or task.state != "assigned" or task.node_id is None:
            return
        node = self.state.nodes.get(task.node_id)
        if node is not None and node.held_until <= now:
            log.warning(
                "node %s has no assignment queue: no new tasks there for %g s",
                task.node_id,
                self.settings.unroutable_hold,
            )
        hold_until = now + self.settings.unroutable_hold
        self._commit(
            ev.TaskUndelivered(
                at=now,
                task_id=task_id,
                node_id=task.node_id,
                hold_until=hold_until,
                reason=UNROUTABLE_REASON,
            ),
            now,
        )
        self._settle(now)

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
        job_id = getattr(event, "job_id", None) or (task.job_id if task else None)
        if isinstance(job_id, str):
            self._touched[job_id] = None

    def _follow(self, event: ev.Event, task: Task | None, now: float) -> None:
        if isinstance(event, ev.TaskAssigned) and task is not None and task.node_id:
            self.commands.append(StartCommand(task.task_id, task.node_id))
        elif isinstance(event, ev.TaskUpdated | ev.TaskUndelivered) and task and task.terminal:
            self._commit_all(reconciler.after_task_ended(self.state, task, now), now)
        elif isinstance(event, ev.TaskCreated) and event.attempt > 0:
            self._collect_previous(event)
            self._forget_old_attempts(event, now)
        elif isinstance(event, ev.NodeStateChanged):
            self.notifications.append(
                NodeEvent(node_id=event.node_id, state=event.state, reason=event.reason)
            )
            if event.state == "down":
                lost = reports.lost_with_node(self.state, event.node_id, event.reason, now)
                self._commit_all(lost, now)
        elif isinstance(event, ev.JobFailed):
            job = self.state.jobs[event.job_id]
            self._stop_tasks(self.state.live_tasks(job), "job failed", now)

    # -- settling an input --

    def _answer(self, job: Job, now: float) -> JobInfo:
        """The job as the reply shows it: after placement, before old jobs are forgotten."""
        self._schedule(now)
        info = views.job_detail(self.state, job)
        self._settle(now)
        return info

    def _settle(self, now: float) -> None:
        self._schedule(now)
        touched, self._touched = self._touched, {}
        for job_id in touched:
            self._notify_job(job_id)
        self._forget_ended_jobs(now)

    def _schedule(self, now: float) -> None:
        """One pass, unless nothing that could let a task be placed has happened."""
        if self.state.placeable_version == self._planned_version and now < self._next_due:
            return
        for event in scheduler.plan(self.state, epoch=self.epoch, now=now):
            self._commit(event, now)
        self._planned_version = self.state.placeable_version
        self._next_due = scheduler.next_due(self.state, now)

    def _notify_job(self, job_id: str) -> None:
        job = self.state.jobs.get(job_id)
        if job is None:
            return
        state, reason = self.state.job_state(job)
        if self._job_states.get(job_id) != state:
            self._job_states[job_id] = state
            self.notifications.append(JobEvent(job_id=job_id, state=state, reason=reason))

    def _forget_ended_jobs(self, now: float) -> None:
        """Forget the oldest ended jobs beyond `keep_ended_jobs`, and what we kept about them."""
        surplus = len(self.state.ended) - self.settings.keep_ended_jobs
        for job_id in list(islice(self.state.ended, max(surplus, 0))):
            job = self.state.jobs[job_id]
            for attempts in job.slots.values():
                for task_id in attempts:
                    self._fenced.pop(task_id, None)
            self._stop_leftovers(job, "job forgotten")
            self._commit(ev.JobForgotten(at=now, job_id=job_id), now)
            self._job_states.pop(job_id, None)
            self._reuses.pop(job_id, None)
            self._touched.pop(job_id, None)

    def _forget_down_nodes(self, now: float) -> None:
        horizon = now - self.settings.forget_down_nodes_after
        for node in list(self.state.nodes.values()):
            if node.state == "down" and node.last_seen <= horizon and not node.task_ids:
                self._commit(ev.NodeForgotten(at=now, node_id=node.node_id), now)

    def _forget_old_attempts(self, created: ev.TaskCreated, now: float) -> None:
        """Keep `keep_attempts` ended attempts per slot besides the current one."""
        attempts = self.state.jobs[created.job_id].slots.get(created.slot, [])
        surplus = len(attempts) - 1 - self.settings.keep_attempts
        for task_id in attempts[: max(surplus, 0)]:
            self._fenced.pop(task_id, None)
            self._commit(ev.TaskForgotten(at=now, task_id=task_id), now)

    # -- internals --

    def _job(self, job_id: str) -> Job:
        job = self.state.jobs.get(job_id)
        if job is None:
            raise ApiProblem("not_found", f"no job named {job_id!r} (see `corral jobs`)", "job_id")
        return job

    def _stop_leftovers(self, job: Job, reason: str) -> None:
        """Stop the containers an ended job may still have: each slot's newest attempt if
        it ended there (kept for its logs; older ones were removed when replaced), and any
        lost attempt (its node may come back). Stopped attempts were stopped already."""
        for attempts in job.slots.values():
            for index, task_id in enumerate(attempts):
                task = self.state.tasks[task_id]
                newest = index == len(attempts) - 1
                ended_here = newest and task.state in ("exited", "failed")
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
        """Remove the container of the attempt this one replaces (its logs go with it)."""
        job = self.state.jobs[event.job_id]
        attempts = job.slots.get(event.slot, [])
        if len(attempts) < 2:
            return
        previous = self.state.tasks[attempts[-2]]
        if previous.node_id and previous.state in ("exited", "failed"):
            self._send_stop(previous.task_id, previous.job_id, previous.node_id, "replaced")

    def _carry_out(self, verdict: reports.Verdict, now: float) -> None:
        if isinstance(verdict, reports.Fence):
            self._fence(verdict.task_id, verdict.job_id, verdict.node_id, now)
        elif verdict is not None:
            self._commit(verdict, now)

    def _fence(self, task_id: str, job_id: str, node_id: str, now: float) -> None:
        """Stop a container the master no longer wants there (at most every few seconds)."""
        if now - self._fenced.get(task_id, -FENCE_RESEND_SECONDS) < FENCE_RESEND_SECONDS:
            return
        self._fenced[task_id] = now
        log.info("fencing %s on %s: it is not meant to run there", task_id, node_id)
        self._send_stop(task_id, job_id, node_id, "fenced")

    def _send_stop(self, task_id: str, job_id: str, node_id: str, reason: str) -> None:
        job = self.state.jobs.get(job_id)
        grace = job.spec.stop_grace if job is not None else 10.0
        self.commands.append(StopCommand(task_id, job_id, node_id, reason, grace))
