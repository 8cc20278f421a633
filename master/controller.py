"""The active master's brain: messages in, events and commands out. No I/O, no clock.

Every public method takes `now`, turns its input into events, and commits
them one at a time: `ClusterState.apply`, then whatever follows from that
event (a start or stop command, a new attempt, a scheduling pass, a status
notification). The daemon drains the commands and notifications and does the
I/O. Tests drive this class directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from master import events as ev
from master import reconciler, scheduler
from master.liveness import Liveness
from master.settings import MasterSettings
from master.state import ACTIVE_TASK_STATES, ClusterState, Job, Task
from schemas.api import JobInfo
from schemas.job import JobSpec
from schemas.messages import Heartbeat, JobEvent, NodeEvent, Payload, RunningTask, TaskStatus

log = logging.getLogger("corral.master")

FENCE_RESEND_SECONDS = 5.0


class ApiProblem(Exception):
    """A request the master refuses; `code` is stable, the text is for humans."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


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

    def drain(self) -> tuple[list[Command], list[Payload]]:
        commands, self.commands = self.commands, []
        notifications, self.notifications = self.notifications, []
        return commands, notifications

    # -- inputs --

    def submit(self, spec: JobSpec, now: float, submission: str = "") -> JobInfo:
        """Accept a job. `submission` (the daemon passes a random token) makes its task ids
        unique; without one, a reused name gets `v<n>`, unique within this master's life."""
        existing = self.state.jobs.get(spec.name)
        if existing is not None and not self._job_done(existing):
            raise ApiProblem(
                "conflict",
                f"job {spec.name!r} is still {self.state.job_state(existing)[0]}; "
                "cancel it first, scale it, or pick another name",
                field="name",
            )
        if existing is not None:  # its containers go; the name is reused
            for task in self.state.tasks.values():
                if task.job_id == spec.name and task.node_id is not None:
                    self._send_stop(task.task_id, task.job_id, task.node_id, "job resubmitted")
            self._reuses[spec.name] = self._reuses.get(spec.name, 1) + 1
            submission = submission or f"v{self._reuses[spec.name]}"
        event = ev.JobSubmitted(at=now, job_id=spec.name, spec=spec, submission=submission)
        self._commit(event, now)
        job = self.state.jobs[spec.name]
        self._commit_all(reconciler.fill_slots(self.state, job, now), now)
        self._schedule(now)
        return self.state.job_info(job)

    def cancel(self, job_id: str, now: float) -> JobInfo:
        job = self._job(job_id)
        if not self._job_done(job):  # a finished job keeps its outcome
            self._commit(ev.JobCancelled(at=now, job_id=job_id), now)
            self._stop_tasks(self.state.live_tasks(job), "job cancelled", now)
        return self.state.job_info(job)

    def scale(self, job_id: str, replicas: int, now: float) -> JobInfo:
        job = self._job(job_id)
        if self._job_done(job):
            raise ApiProblem("conflict", f"job {job_id!r} has ended; submit it again instead")
        self._commit(ev.JobScaled(at=now, job_id=job_id, replicas=replicas), now)
        surplus = [t for t in self.state.live_tasks(job) if t.slot >= replicas]
        self._stop_tasks(surplus, f"scaled down to {replicas}", now)
        self._commit_all(reconciler.fill_slots(self.state, job, now), now)
        self._schedule(now)
        return self.state.job_info(job)

    def job_info(self, job_id: str) -> JobInfo:
        return self.state.job_info(self._job(job_id))

    def task_status(self, status: TaskStatus, now: float) -> None:
        task = self.state.tasks.get(status.task_id)
        if task is None and status.job_id not in self.state.jobs:
            return  # not ours to judge: a job this master never saw
        if task is None or task.node_id != status.node_id:
            if status.state == "running":
                self._fence(status.task_id, status.job_id, status.node_id, now)
            return
        if task.terminal:
            if status.state == "running":  # it ended here, but came back to life there
                self._fence(task.task_id, task.job_id, status.node_id, now)
            return
        if status.state == "running" and task.state == "running":
            return
        self._commit(
            ev.TaskUpdated(
                at=now,
                task_id=task.task_id,
                state=status.state,
                exit_code=status.exit_code,
                reason=status.reason,
                container_id=status.container_id,
                retryable=status.retryable,
            ),
            now,
        )
        self._schedule(now)

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
            self._forget_unreported(beat, now)
        if previous_state is None:
            self.notifications.append(NodeEvent(node_id=beat.node_id, state="ready"))
        elif previous_state != "ready":
            self._commit(ev.NodeStateChanged(at=now, node_id=beat.node_id, state="ready"), now)
        for reported in beat.tasks:
            self._reconcile_reported(beat.node_id, reported, now)
        if previous_state != "ready":  # new capacity, or capacity back
            self._schedule(now)

    def tick(self, now: float) -> None:
        """Periodic: judge liveness, place tasks whose backoff has passed."""
        self._fenced = {k: t for k, t in self._fenced.items() if now - t < FENCE_RESEND_SECONDS}
        self._commit_all(self.liveness.check(self.state, now), now)
        self._schedule(now)

    def reconnected(self, now: float) -> None:
        self.liveness.grant_grace(now)

    def assignment_unroutable(self, task_id: str, now: float) -> None:
        """The broker had no queue for an assignment's node: treat the task as lost."""
        task = self.state.tasks.get(task_id)
        if task is not None and task.state == "assigned":
            reason = f"node {task.node_id} has no assignment queue"
            self._commit(ev.TaskUpdated(at=now, task_id=task_id, state="lost", reason=reason), now)
            self._schedule(now)

    # -- internals --

    def _job(self, job_id: str) -> Job:
        job = self.state.jobs.get(job_id)
        if job is None:
            raise ApiProblem("not_found", f"no job named {job_id!r} (see `corral jobs`)", "job_id")
        return job

    def _job_done(self, job: Job) -> bool:
        return self.state.job_state(job)[0] in ("complete", "failed", "cancelled")

    def _commit_all(self, events: list[ev.Event], now: float) -> None:
        for event in events:
            self._commit(event, now)

    def _commit(self, event: ev.Event, now: float) -> None:
        """Apply one event, then everything that follows from it."""
        task = self._task_of(event)
        self.state.apply(event)
        if event.JOURNALED and self.journal is not None:
            self.journal(event)
        self._follow(event, task, now)

    def _task_of(self, event: ev.Event) -> Task | None:
        task_id = getattr(event, "task_id", None)
        return self.state.tasks.get(task_id) if isinstance(task_id, str) else None

    def _follow(self, event: ev.Event, task: Task | None, now: float) -> None:
        if isinstance(event, ev.TaskAssigned) and task is not None and task.node_id:
            self.commands.append(StartCommand(task.task_id, task.node_id))
        elif isinstance(event, ev.TaskUpdated) and task is not None and task.terminal:
            self._commit_all(reconciler.after_task_ended(self.state, task, now), now)
        elif isinstance(event, ev.TaskCreated) and event.attempt > 0:
            self._collect_previous(event)
        elif isinstance(event, ev.NodeStateChanged):
            self.notifications.append(
                NodeEvent(node_id=event.node_id, state=event.state, reason=event.reason)
            )
            if event.state == "down":
                self._lose_tasks_of(event.node_id, event.reason, now)
        elif isinstance(event, ev.JobFailed):
            job = self.state.jobs[event.job_id]
            self._stop_tasks(self.state.live_tasks(job), "job failed", now)
        job_id = getattr(event, "job_id", None) or (task.job_id if task else None)
        if isinstance(job_id, str):
            self._notify_job(job_id)

    def _notify_job(self, job_id: str) -> None:
        job = self.state.jobs.get(job_id)
        if job is None:
            return
        state, reason = self.state.job_state(job)
        if self._job_states.get(job_id) != state:
            self._job_states[job_id] = state
            self.notifications.append(JobEvent(job_id=job_id, state=state, reason=reason))

    def _stop_tasks(self, tasks: list[Task], reason: str, now: float) -> None:
        for task in tasks:
            node_id = task.node_id
            self._commit(
                ev.TaskUpdated(at=now, task_id=task.task_id, state="stopped", reason=reason), now
            )
            if node_id is not None:
                self._send_stop(task.task_id, task.job_id, node_id, reason)

    def _lose_tasks_of(self, node_id: str, why: str, now: float) -> None:
        lost = [
            t
            for t in self.state.tasks.values()
            if t.node_id == node_id and t.state in ACTIVE_TASK_STATES
        ]
        for task in lost:
            reason = f"node {node_id} is down ({why})"
            self._commit(
                ev.TaskUpdated(at=now, task_id=task.task_id, state="lost", reason=reason), now
            )

    def _forget_unreported(self, beat: Heartbeat, now: float) -> None:
        """The node's agent restarted: a task it ran and no longer has is lost.

        Only running tasks: an assigned one may still be in its queue.
        """
        reported = {t.task_id for t in beat.tasks}
        for task in list(self.state.tasks.values()):
            mine = task.node_id == beat.node_id and task.state == "running"
            if mine and task.task_id not in reported:
                reason = f"node {beat.node_id} restarted without it"
                self._commit(
                    ev.TaskUpdated(at=now, task_id=task.task_id, state="lost", reason=reason), now
                )
        self._schedule(now)

    def _collect_previous(self, event: ev.TaskCreated) -> None:
        """Remove the container of the attempt this one replaces (its logs go with it)."""
        job = self.state.jobs[event.job_id]
        attempts = job.slots.get(event.slot, [])
        if len(attempts) < 2:
            return
        previous = self.state.tasks[attempts[-2]]
        if previous.node_id and previous.state in ("exited", "failed"):
            self._send_stop(previous.task_id, previous.job_id, previous.node_id, "replaced")

    def _reconcile_reported(self, node_id: str, reported: RunningTask, now: float) -> None:
        """Compare a container a node reports with what the master wants there."""
        task_id, job_id = reported.task_id, reported.job_id
        task = self.state.tasks.get(task_id)
        if task is None and job_id not in self.state.jobs:
            return  # not ours to judge: a job this master never saw
        if task is None or task.node_id != node_id or task.state in ("lost", "stopped"):
            self._fence(task_id, job_id, node_id, now)
        elif task.state == "assigned" and reported.state == "running":  # its status got lost
            self._commit(ev.TaskUpdated(at=now, task_id=task_id, state="running"), now)

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

    def _schedule(self, now: float) -> None:
        for task in scheduler.ready_to_place(self.state, now):
            event = scheduler.schedule_one(self.state, task, epoch=self.epoch, now=now)
            if event is not None:
                self._commit(event, now)
