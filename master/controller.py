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

Commands and notifications only ever follow from committed events, and
everything the controller must remember between inputs is in the state, changed
by journaled events (the last state announced per job, strays fenced lately,
the outcomes of recent requests). So a standby that `replay`s the leader's
journal and `observe`s the heartbeats holds the leader's state, and once
`promote`d acts as the leader would have. What stays here is per process:
the liveness timers, the commands and notifications not yet drained, and when
the last scheduling pass ran.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from master import events as ev
from master import reconciler, reports, rollout, scheduler, views
from master.errors import ApiProblem
from master.liveness import Liveness
from master.model import Outcome
from master.settings import MasterSettings
from master.state import (
    ACTIVE_TASK_STATES,
    FENCE_RESEND_SECONDS,
    ClusterState,
    Job,
    Node,
    Task,
    Unseen,
)
from schemas.api import JobInfo, NodeInfo
from schemas.job import JobSpec
from schemas.messages import Heartbeat, JobEvent, NodeEvent, Payload, TaskStatus

__all__ = [
    "FENCE_RESEND_SECONDS",
    "ApiProblem",
    "Command",
    "Controller",
    "StartCommand",
    "StopCommand",
]

log = logging.getLogger("corral.master")

# Events that record what the master did; they change no job, so they settle nothing.
_BOOKKEEPING = (ev.JobStateChanged, ev.TaskFenced, ev.RequestDone)
_LIVE = ("ready", "suspect")
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

    # -- inputs --

    def submit(self, spec: JobSpec, now: float, submission: str = "") -> JobInfo:
        """Accept a job. `submission` (the daemon passes a random token) makes its task ids
        unique; without one, a reused name gets `v<n>` (n: the job's `generation`), unique
        while the previous job of that name is remembered."""
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
            submission = submission or f"v{existing.generation + 1}"
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
        if status.state == "running":
            self._judge_health(status.task_id, status.node_id, status.health, status.reason, now)
        self._settle(now)

    def heartbeat(self, beat: Heartbeat, now: float) -> None:
        known = self.state.nodes.get(beat.node_id)  # read before apply mutates it
        unseen = self.state.unseen.get(beat.node_id)  # named by the journal only, so far
        previous_boot = known.boot_id if known is not None else beat.boot_id
        previous_state = known.state if known is not None else None
        if unseen is not None:
            previous_state = unseen.state
        self._commit(self._observed(beat, now), now)
        if previous_boot != beat.boot_id:
            self._commit_all(reports.lost_on_restart(self.state, beat, now), now)
        if previous_state is None:
            self.notifications.append(NodeEvent(node_id=beat.node_id, state="ready"))
        elif previous_state != "ready":
            self._commit(ev.NodeStateChanged(at=now, node_id=beat.node_id, state="ready"), now)
        for reported in beat.tasks:
            self._carry_out(reports.judge_reported(self.state, beat.node_id, reported, now), now)
            if reported.state == "running" and reported.health:
                self._judge_health(reported.task_id, beat.node_id, reported.health, "", now)
        node = self.state.nodes[beat.node_id]
        if beat.leaving and not node.leaving:
            log.info("node %s is leaving the cluster: moving its tasks", beat.node_id)
            self._commit(
                ev.NodeScheduling(
                    at=now, node_id=beat.node_id, cordoned=True, draining=True, leaving=True
                ),
                now,
            )
            self._drain(beat.node_id, now)
        self._settle(now)

    def connection_closed(self, node_id: str, now: float) -> None:
        """The broker says a worker's connection closed: its agent stopped or crashed, and
        its host is most likely alive. A node heard from lately becomes `disconnected` and
        keeps its tasks for the agent grace (`_judge_disconnected`); a node already silent
        is left to liveness (its close is most likely the broker noticing the silence). A
        node that announced it leaves, and has nothing left, is down at once."""
        node = self.state.nodes.get(node_id)
        if (
            node is None
            or node.state != "ready"
            or now - node.last_seen >= self.settings.suspect_after
        ):
            return
        if node.leaving and not node.task_ids:
            change = ev.NodeStateChanged(
                at=now, node_id=node_id, state="down", reason="left the cluster"
            )
        else:
            change = ev.NodeStateChanged(
                at=now,
                node_id=node_id,
                state="disconnected",
                reason="its agent's broker connection closed",
            )
        self._commit(change, now)
        self._settle(now)

    def update(self, job_id: str, spec: JobSpec, now: float) -> JobInfo:
        """Roll a running service out to `spec` (a new version), as its update policy says."""
        job = self._job(job_id)
        if spec.name != job_id:
            raise ApiProblem(
                "invalid", f"the spec's name is {spec.name!r}, not {job_id!r}", "spec.name"
            )
        if self.state.job_done(job):
            raise ApiProblem("conflict", f"job {job_id!r} has ended; submit it again instead")
        if job.spec.kind != "service" or spec.kind != "service":
            raise ApiProblem(
                "conflict",
                f"only services are updated in place; job {job_id!r} is a batch job: cancel "
                "it and submit the new spec",
                "spec.kind",
            )
        if spec == job.spec:
            return self._answer(job, now)
        self._commit(
            ev.JobUpdated(
                at=now, job_id=job_id, spec=spec, version=job.version + 1, reason="update"
            ),
            now,
        )
        self._resize(job, now)
        return self._answer(job, now)

    def rollback(self, job_id: str, now: float) -> JobInfo:
        """Roll a service back to the version before its current one (as a new version)."""
        job = self._job(job_id)
        if self.state.job_done(job):
            raise ApiProblem("conflict", f"job {job_id!r} has ended; submit it again instead")
        previous = rollout.previous_version(job)
        if previous is None:
            raise ApiProblem("conflict", f"job {job_id!r} has no earlier version to roll back to")
        self._roll_back(job, previous, f"rollback to version {previous} on request", now)
        return self._answer(job, now)

    def purge(self, job_id: str, now: float) -> JobInfo:
        """Forget an ended job now, and remove its containers."""
        job = self._job(job_id)
        if not self.state.job_done(job):
            state = self.state.job_state(job)[0]
            raise ApiProblem(
                "conflict",
                f"job {job_id!r} is still {state}: cancel it first (corral cancel {job_id})",
            )
        info = views.job_detail(self.state, job)
        self._forget_job(job, "job purged", now)
        self._settle(now)
        return info

    def set_schedule(self, node_id: str, action: str, now: float) -> NodeInfo:
        """Cordon, uncordon or drain a node."""
        node = self.state.nodes.get(node_id)
        if node is None:
            raise ApiProblem(
                "not_found", f"no node named {node_id!r} (see `corral nodes`)", "node_id"
            )
        cordoned, draining = action != "uncordon", action == "drain"
        if (node.cordoned, node.draining) != (cordoned, draining):
            change = ev.NodeScheduling(
                at=now, node_id=node_id, cordoned=cordoned, draining=draining, leaving=node.leaving
            )
            self._commit(change, now)
        if draining:
            self._drain(node_id, now)
        self._settle(now)
        return views.node_info(node)

    def task_detail(self, task_id: str) -> JobInfo:
        task = self.state.tasks.get(task_id)
        if task is None:
            raise ApiProblem("not_found", f"no task {task_id!r} (see `corral ps -a`)", "task_id")
        return views.task_detail(self.state, self.state.jobs[task.job_id], task)

    def tick(self, now: float) -> None:
        """Periodic: judge liveness (disconnected nodes too), make tasks healthy that have
        passed long enough, go on with drains, place tasks whose backoff has passed,
        forget ended jobs past their time."""
        self._commit_all(self.liveness.check(self.state, now), now)
        self._judge_disconnected(now)
        self._mature(now)
        for node in list(self.state.nodes.values()):
            if node.draining:
                self._drain(node.node_id, now)
        self._forget_down_nodes(now)
        self._forget_expired_jobs(now)
        self._settle(now)

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
                boot_id=node.boot_id if node is not None else "",
            ),
            now,
        )
        self._settle(now)

    def remember_request(self, message_id: str, outcome: Outcome, now: float) -> None:
        """Record what a mutating request came to, by its envelope's message id (a
        journaled `RequestDone`, so a redelivery after a failover gets the same outcome).
        Called again for a recognised redelivery, which makes it the most recently used.
        Nothing is recorded without a message id, or with `remember_requests` = 0."""
        if not message_id or self.state.requests.size == 0:
            return
        error = outcome.error
        event = ev.RequestDone(
            at=now,
            message_id=message_id,
            request_type=outcome.request_type,
            job_id=outcome.job_id,
            error_code=error.code if error is not None else "",
            error_message=error.message if error is not None else "",
            error_field=error.field if error is not None else None,
        )
        self._commit(event, now)

    # -- standby and takeover --

    def replay(self, event: ev.Event) -> None:
        """A standby applies one journaled event of the leader, in journal order.

        Only the state changes: no command, no notification, no journal hook (the
        leader did all that when it committed the event, and the journal holds what
        followed from it as events of their own)."""
        self.state.apply(event)

    def observe(self, beat: Heartbeat, now: float) -> None:
        """A standby hears a heartbeat: the node's soft state only (last seen, capacity,
        labels, reported tasks). What the leader concluded from the same heartbeat
        reaches the standby through the journal."""
        self.state.apply(self._observed(beat, now))

    def promote(self, epoch: int, now: float) -> None:
        """This master leads from now on, with `epoch`; its state holds the journal up to
        its own claim.

        Nodes get `takeover_grace` to be heard before liveness judges them (nodes
        the journal names but that were never heard from included). Every task still
        `assigned` is sent its StartCommand again: the old leader's may never have
        arrived, or been refused as stale, and a worker that has the container
        already finds it by its label. Then one settling: a scheduling pass (the
        pending tasks), and a job event for any job whose state differs from the
        one last announced (none, unless the journal lost the end of an input).
        """
        self.epoch = epoch
        self.liveness.grant_grace(now, self.settings.takeover_grace)
        for task in self.state.tasks.values():
            if task.state == "assigned" and task.node_id is not None:
                self.commands.append(StartCommand(task.task_id, task.node_id))
        self._planned_version, self._next_due = -1, 0.0
        self._touched.update(dict.fromkeys(self.state.jobs))
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
        if isinstance(event, _BOOKKEEPING):
            return
        job_id = getattr(event, "job_id", None) or (task.job_id if task else None)
        if isinstance(job_id, str):
            self._touched[job_id] = None

    def _follow(self, event: ev.Event, task: Task | None, now: float) -> None:
        if task is not None:
            self._follow_task(event, task, now)
        elif isinstance(event, ev.JobStateChanged):
            note = JobEvent(job_id=event.job_id, state=event.state, reason=event.reason)
            self.notifications.append(note)
        elif isinstance(event, ev.TaskFenced):
            log.info("fencing %s on %s: it is not meant to run there", event.task_id, event.node_id)
            self._send_stop(event.task_id, event.job_id, event.node_id, "fenced")
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

    def _follow_task(self, event: ev.Event, task: Task, now: float) -> None:
        """What follows an event about an existing task (`task`, as it is now)."""
        if isinstance(event, ev.TaskFenced):
            log.info("fencing %s on %s: it is not meant to run there", event.task_id, event.node_id)
            self._send_stop(event.task_id, event.job_id, event.node_id, "fenced")
        elif isinstance(event, ev.TaskAssigned) and task.node_id:
            self.commands.append(StartCommand(task.task_id, task.node_id))
        elif isinstance(event, ev.TaskUpdated | ev.TaskUndelivered) and task.terminal:
            job = self.state.jobs.get(task.job_id)
            current = job is not None and job.slots[task.slot][-1] == task.task_id
            if job is not None and current and rollout.failed_before_healthy(job, task):
                self._rollout_failed(job, task, now)
            self._commit_all(reconciler.after_task_ended(self.state, task, now), now)
        elif isinstance(event, ev.TaskUpdated) and event.state == "running":
            self._mature_one(task, now)
        elif isinstance(event, ev.TaskHealth):
            if event.health == "unhealthy" and task.state == "running":
                self._replace_unhealthy(task, event.reason, now)
            else:
                self._mature_one(task, now)
        elif isinstance(event, ev.TaskHealthy):
            self._retire_slot(task, now)

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
        touched, self._touched = self._touched, {}
        for job_id in touched:
            self._notify_job(job_id, now)
        self._forget_ended_jobs(now)

    def _schedule(self, now: float) -> None:
        """One pass, unless nothing that could let a task be placed has happened."""
        if self.state.placeable_version == self._planned_version and now < self._next_due:
            return
        for event in scheduler.plan(self.state, epoch=self.epoch, now=now):
            self._commit(event, now)
        self._planned_version = self.state.placeable_version
        self._next_due = scheduler.next_due(self.state, now)

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

    # -- health, rollouts, drains, disconnected nodes --

    def _judge_health(
        self, task_id: str, node_id: str, health: str, reason: str, now: float
    ) -> None:
        """A health verdict a worker reported for one of its running tasks."""
        task = self.state.tasks.get(task_id)
        if task is None or task.node_id != node_id or task.state != "running":
            return
        if health in ("starting", "healthy", "unhealthy") and health != task.health:
            self._commit(ev.TaskHealth(at=now, task_id=task_id, health=health, reason=reason), now)

    def _mature_one(self, task: Task, now: float) -> None:
        job = self.state.jobs.get(task.job_id)
        if job is None or task.passing_since is None or task.task_id not in self.state.maturing:
            return
        if now - task.passing_since >= job.spec_of(task).min_healthy:
            self._commit(ev.TaskHealthy(at=now, task_id=task.task_id), now)

    def _mature(self, now: float) -> None:
        """Tasks that have passed for their job's min_healthy become healthy."""
        for task in list(self.state.maturing.values()):
            self._mature_one(task, now)

    def _replace_unhealthy(self, task: Task, reason: str, now: float) -> None:
        """An unhealthy task fails (its restart policy then replaces it) and is stopped."""
        why = f"unhealthy: {reason}" if reason else "unhealthy: its health check failed"
        node_id = task.node_id
        self._commit(ev.TaskUpdated(at=now, task_id=task.task_id, state="failed", reason=why), now)
        if node_id is not None:
            self._send_stop(task.task_id, task.job_id, node_id, "unhealthy")

    def _retire_slot(self, task: Task, now: float) -> None:
        """The slot's current attempt is healthy: stop the attempts it replaced start-first."""
        job = self.state.jobs.get(task.job_id)
        attempts = job.slots.get(task.slot, []) if job is not None else []
        if not attempts or attempts[-1] != task.task_id:
            return
        retiring = [self.state.tasks[t] for t in attempts[:-1] if self.state.tasks[t].retiring]
        self._stop_tasks(
            [t for t in retiring if not t.terminal], f"replaced by {task.task_id}", now
        )

    def _replace(self, job: Job, task: Task, *, start_first: bool, reason: str, now: float) -> None:
        """A new attempt for the task's slot on the job's current version: started while the
        task goes on running (start-first), or after it is stopped."""
        if not task.terminal and (task.state == "pending" or not start_first):
            self._stop_tasks([task], reason, now)
        attempt = reconciler.new_attempt(
            job,
            task.slot,
            task.attempt + 1,
            now=now,
            reason=reason,
            retire=start_first and task.state in ("assigned", "running"),
        )
        self._commit(attempt, now)

    def _advance_rollout(self, job_id: str, now: float) -> None:
        job = self.state.jobs.get(job_id)
        if job is None or job.rollout is None or not job.rollout.active:
            return
        decided = rollout.step(self.state, job, now)
        start_first = job.spec.update.order == "start-first"
        verb = "rolling back" if job.rollout.state == "rolling-back" else "updating"
        reason = f"{verb} to version {job.version}"
        for task in decided.replace:
            self._replace(job, task, start_first=start_first, reason=reason, now=now)
        if decided.ended is not None:
            self._commit(decided.ended, now)

    def _rollout_failed(self, job: Job, task: Task, now: float) -> None:
        """A task of the version being rolled out failed before it was healthy."""
        assert job.rollout is not None
        why = f"task {task.task_id} {reconciler.failure_text(task)} before it was healthy"
        if job.rollout.state == "rolling-back":
            self._commit(
                ev.RolloutEnded(at=now, job_id=job.job_id, state="failed", reason=why), now
            )
            return
        self._roll_back(job, job.rollout.from_version, why, now, automatic=True)

    def _roll_back(
        self, job: Job, to: int, why: str, now: float, *, automatic: bool = False
    ) -> None:
        spec = job.versions[to].spec.model_copy(update={"replicas": job.replicas})
        reason = f"rollback to version {to}" + (f": {why}" if automatic else "")
        self._commit(
            ev.JobUpdated(
                at=now,
                job_id=job.job_id,
                spec=spec,
                version=job.version + 1,
                reason=reason if automatic else why,
                rollback=True,
                automatic=automatic,
            ),
            now,
        )
        self._resize(job, now)

    def _resize(self, job: Job, now: float) -> None:
        """After the spec changed: stop slots beyond its replicas, fill missing ones."""
        surplus = [t for t in self.state.live_tasks(job) if t.slot >= job.replicas]
        self._stop_tasks(surplus, f"scaled down to {job.replicas}", now)
        self._commit_all(reconciler.fill_slots(self.state, job, now), now)

    def _drain(self, node_id: str, now: float) -> None:
        node = self.state.nodes.get(node_id)
        reason = f"node {node_id} is {'leaving' if node and node.leaving else 'draining'}"
        for task in rollout.to_drain(self.state, node_id):
            job = self.state.jobs[task.job_id]
            self._replace(job, task, start_first=True, reason=reason, now=now)

    def _judge_disconnected(self, now: float) -> None:
        """Tasks on nodes whose agent disconnected are lost once their grace has passed
        (the job's agent_grace, else the master's); the node is down once the master's
        grace has passed and it holds nothing."""
        for node in list(self.state.nodes.values()):
            if node.state != "disconnected":
                continue
            away = now - node.state_since
            lost = []
            for task in reports.tasks_on(self.state, node.node_id, ACTIVE_TASK_STATES):
                job = self.state.jobs.get(task.job_id)
                grace = job.spec_of(task).agent_grace if job is not None else None
                grace = self.settings.agent_grace if grace is None else grace
                if away >= grace:
                    lost.append(task)
            reason = (
                f"node {node.node_id}'s agent has been disconnected for {away:.0f} s (agent grace)"
            )
            for task in lost:
                self._commit(
                    ev.TaskUpdated(at=now, task_id=task.task_id, state="lost", reason=reason), now
                )
            if away >= self.settings.agent_grace and not node.task_ids:
                why = f"its agent did not come back within {self.settings.agent_grace:g} s"
                self._commit(
                    ev.NodeStateChanged(at=now, node_id=node.node_id, state="down", reason=why), now
                )

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
        )

    def _send_stop(self, task_id: str, job_id: str, node_id: str, reason: str) -> None:
        job = self.state.jobs.get(job_id)
        grace = job.spec.stop_grace if job is not None else 10.0
        self.commands.append(StopCommand(task_id, job_id, node_id, reason, grace))
