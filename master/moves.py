"""What follows from each committed event, and the moves that change where a slot runs.

`Moves._follow` is the heart of the controller: after an event is applied it
decides what the event implies (a start command, a new attempt, a stop, a
rollback...). The moves themselves: replacing a slot start-first or
stop-first (rolling updates, drains), stopping the attempts a healthy one
replaced, rolling back a failed update, making tasks healthy once they have
passed for long enough, and losing the tasks of a node whose agent stayed
away past its grace. Decisions come from the pure modules (master/rollout.py,
master/reconciler.py, master/reports.py); this class commits them.
"""

from __future__ import annotations

import logging

from master import events as ev
from master import reconciler, reports, rollout
from master.effects import StartCommand
from master.standby import WarmStandbys
from master.state import (
    ACTIVE_TASK_STATES,
    Job,
    Task,
)
from schemas.messages import JobEvent, NodeEvent

log = logging.getLogger("corral.master")


class Moves(WarmStandbys):
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
            self._standby_follow(event)
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
