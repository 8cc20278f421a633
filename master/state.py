"""The master's picture of the cluster, changed only by `ClusterState.apply(event)`.

Applying never reads a clock, never does I/O and never fails on an event that
refers to something gone (it is ignored): the same events in the same order
always give the same state. Controllers read this state and return events.

Besides jobs, tasks and nodes, `apply` keeps indexes so that no input costs
time in proportion to all the master holds:

- `pending`: the pending tasks (the scheduler's work list);
- `ended`: the jobs that have ended, oldest first (the first to be forgotten);
- per job, its slots' current attempts counted by state (its state derives from them);
- per node, its tasks counted by job and the host ports they hold;
- `placeable_version`: bumped by every change that may let a pending task be
  placed (a new pending task, a booking released, a node that joins, comes
  back, changes its capacity or labels, or is no longer held).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from master import events as ev
from master.model import ACTIVE_TASK_STATES, Job, Node, Task, slot_done, task_id_for
from schemas.messages import JobState

__all__ = ["ACTIVE_TASK_STATES", "ClusterState", "Job", "Node", "Task", "task_id_for"]


E = TypeVar("E", bound=ev.Event)
_Handler = Callable[["ClusterState", Any], None]
_HANDLERS: dict[type[ev.Event], _Handler] = {}


def _handles(kind: type[E]) -> Callable[[Callable[[ClusterState, E], None]], _Handler]:
    """Register a method as `apply`'s handler of one event class."""

    def register(method: Callable[[ClusterState, E], None]) -> _Handler:
        _HANDLERS[kind] = method
        return method

    return register


def _add(counter: Counter[Any], key: Any, amount: int) -> None:
    """Add to a count, dropping keys that reach zero (counters of gone things stay empty)."""
    counter[key] += amount
    if counter[key] == 0:
        del counter[key]


FORGOTTEN_JOBS_KEPT = 10_000


class ClusterState:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, Task] = {}
        self.nodes: dict[str, Node] = {}
        self.pending: dict[str, Task] = {}
        self.ended: dict[str, None] = {}  # job ids, in the order the jobs ended
        # Ids of jobs forgotten lately (bounded): a container of one that turns up
        # running is still the master's to stop.
        self.forgotten: dict[str, None] = {}
        self.placeable_version = 0

    # -- the only mutation --

    def apply(self, event: ev.Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"unknown event {type(event).__name__}")
        handler(self, event)

    @_handles(ev.JobSubmitted)
    def _job_submitted(self, event: ev.JobSubmitted) -> None:
        old = self.jobs.get(event.job_id)
        if old is not None:  # a finished job's name is reused: forget the old one
            self._drop_job(old)
        job = Job(event.job_id, event.spec, event.at, submission=event.submission)
        self.jobs[event.job_id] = job
        self.forgotten.pop(event.job_id, None)
        self._check_ended(job)  # a batch job of 0 replicas has nothing to do

    @_handles(ev.JobScaled)
    def _job_scaled(self, event: ev.JobScaled) -> None:
        if job := self.jobs.get(event.job_id):
            job.spec = job.spec.model_copy(update={"replicas": event.replicas})
            self._recount(job)
            self._check_ended(job)

    @_handles(ev.JobCancelled)
    def _job_cancelled(self, event: ev.JobCancelled) -> None:
        if job := self.jobs.get(event.job_id):
            job.cancelled = True
            self._check_ended(job)

    @_handles(ev.JobFailed)
    def _job_failed(self, event: ev.JobFailed) -> None:
        if job := self.jobs.get(event.job_id):
            job.failed_reason = event.reason
            self._check_ended(job)

    @_handles(ev.JobForgotten)
    def _job_forgotten(self, event: ev.JobForgotten) -> None:
        if job := self.jobs.get(event.job_id):
            self._drop_job(job)
            self.forgotten[event.job_id] = None
            while len(self.forgotten) > FORGOTTEN_JOBS_KEPT:
                del self.forgotten[next(iter(self.forgotten))]

    @_handles(ev.TaskCreated)
    def _task_created(self, event: ev.TaskCreated) -> None:
        job = self.jobs.get(event.job_id)
        if job is None or event.task_id in self.tasks:
            return
        attempts = job.slots.setdefault(event.slot, [])
        if attempts:  # the previous attempt is no longer the slot's current one
            self._tally(job, self.tasks[attempts[-1]], -1)
        task = Task(
            task_id=event.task_id,
            job_id=event.job_id,
            slot=event.slot,
            attempt=event.attempt,
            created_at=event.at,
            not_before=event.not_before,
            reason=event.reason,
            updated_at=event.at,
            failures=event.failures,
            undelivered_before=event.undelivered,
        )
        self.tasks[task.task_id] = task
        attempts.append(task.task_id)
        self.pending[task.task_id] = task
        self._tally(job, task, +1)
        self.placeable_version += 1
        self._check_ended(job)

    @_handles(ev.TaskUnplaced)
    def _task_unplaced(self, event: ev.TaskUnplaced) -> None:
        if (task := self.tasks.get(event.task_id)) and task.state == "pending":
            task.reason = event.reason

    @_handles(ev.TaskAssigned)
    def _task_assigned(self, event: ev.TaskAssigned) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.state != "pending":
            return
        job = self._current_job(task)
        if job is not None:
            self._tally(job, task, -1)
        task.state = "assigned"
        task.node_id = event.node_id
        task.reason = ""
        task.updated_at = event.at
        if job is not None:
            self._tally(job, task, +1)
        del self.pending[task.task_id]
        self._bind(task)

    @_handles(ev.TaskUpdated)
    def _task_updated(self, event: ev.TaskUpdated) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.terminal:
            return
        job = self._current_job(task)
        if job is not None:
            self._tally(job, task, -1)
        task.state = event.state
        task.exit_code = event.exit_code
        task.reason = event.reason
        task.retryable = event.retryable
        task.container_id = event.container_id or task.container_id
        task.updated_at = event.at
        if event.state == "running" and task.started_at is None:
            task.started_at = event.at
        if job is not None:
            self._tally(job, task, +1)
            self._check_ended(job)
        self.pending.pop(task.task_id, None)
        if task.terminal:
            self._unbind(task)

    @_handles(ev.TaskUndelivered)
    def _task_undelivered(self, event: ev.TaskUndelivered) -> None:
        if node := self.nodes.get(event.node_id):
            node.held_until = max(node.held_until, event.hold_until)
            node.held_reason = event.reason
        task = self.tasks.get(event.task_id)
        if task is None or task.state != "assigned" or task.node_id != event.node_id:
            return
        job = self._current_job(task)
        if job is not None:
            self._tally(job, task, -1)
        task.state = "lost"
        task.reason = f"node {event.node_id} {event.reason}"
        task.undelivered = True
        task.updated_at = event.at
        if job is not None:
            self._tally(job, task, +1)
        self._unbind(task)

    @_handles(ev.TaskForgotten)
    def _task_forgotten(self, event: ev.TaskForgotten) -> None:
        task = self.tasks.get(event.task_id)
        job = self.jobs.get(task.job_id) if task is not None else None
        if task is None or job is None or not task.terminal:
            return
        attempts = job.slots.get(task.slot, [])
        if task.task_id not in attempts[:-1]:  # never the slot's current attempt
            return
        attempts.remove(task.task_id)
        del self.tasks[task.task_id]

    @_handles(ev.NodeObserved)
    def _node_observed(self, event: ev.NodeObserved) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            self.nodes[event.node_id] = Node(
                event.node_id,
                "ready",
                event.capacity,
                event.labels,
                event.boot_id,
                event.at,
                list(event.tasks),
            )
            self.placeable_version += 1
            return
        if node.capacity != event.capacity or node.labels != event.labels:
            self.placeable_version += 1
        if node.boot_id != event.boot_id and node.held_until:
            # A new agent there: whatever made us hold the node may be fixed.
            node.held_until, node.held_reason = 0.0, ""
            self.placeable_version += 1
        node.capacity = event.capacity
        node.labels = event.labels
        node.boot_id = event.boot_id
        node.last_seen = event.at
        node.reported = list(event.tasks)

    @_handles(ev.NodeForgotten)
    def _node_forgotten(self, event: ev.NodeForgotten) -> None:
        node = self.nodes.get(event.node_id)
        if node is not None and node.state == "down" and not node.task_ids:
            del self.nodes[event.node_id]

    @_handles(ev.NodeStateChanged)
    def _node_state_changed(self, event: ev.NodeStateChanged) -> None:
        node = self.nodes.get(event.node_id)
        if node is not None and node.state != event.state:
            node.state = event.state
            if event.state == "ready":
                self.placeable_version += 1

    # -- indexes --

    def _current_job(self, task: Task) -> Job | None:
        """The task's job if the task is its slot's current attempt, else None."""
        job = self.jobs.get(task.job_id)
        if job is None or job.slots.get(task.slot, [""])[-1] != task.task_id:
            return None
        return job

    @staticmethod
    def _tally(job: Job, task: Task, sign: int) -> None:
        _add(job.task_counts, task.state, sign)
        if task.slot < job.replicas:
            _add(job.wanted, task.state, sign)
            if slot_done(job.spec, task):
                job.wanted_done += sign

    def _recount(self, job: Job) -> None:
        job.task_counts.clear()
        job.wanted.clear()
        job.wanted_done = 0
        for attempts in job.slots.values():
            self._tally(job, self.tasks[attempts[-1]], +1)

    def _check_ended(self, job: Job) -> None:
        if self.job_done(job):
            self.ended.setdefault(job.job_id)
        else:
            self.ended.pop(job.job_id, None)

    def _drop_job(self, job: Job) -> None:
        for attempts in job.slots.values():
            for task_id in attempts:
                task = self.tasks.pop(task_id)
                self._unbind(task)
                self.pending.pop(task_id, None)
        del self.jobs[job.job_id]
        self.ended.pop(job.job_id, None)

    def _bind(self, task: Task) -> None:
        node = self.nodes.get(task.node_id or "")
        job = self.jobs.get(task.job_id)
        if node is None or job is None or task.task_id in node.task_ids:
            return
        node.task_ids.add(task.task_id)
        node.used_cpu += job.spec.cpu
        node.used_memory += job.spec.memory
        _add(node.job_counts, job.job_id, +1)
        for port in job.spec.ports:
            _add(node.ports, (port.host, port.protocol), +1)

    def _unbind(self, task: Task) -> None:
        node = self.nodes.get(task.node_id or "")
        job = self.jobs.get(task.job_id)
        if node is None or job is None or task.task_id not in node.task_ids:
            return
        node.task_ids.discard(task.task_id)
        node.used_cpu -= job.spec.cpu
        node.used_memory -= job.spec.memory
        _add(node.job_counts, job.job_id, -1)
        for port in job.spec.ports:
            _add(node.ports, (port.host, port.protocol), -1)
        self.placeable_version += 1

    # -- reading --

    def current_tasks(self, job: Job) -> list[Task]:
        """The newest attempt of each slot."""
        return [self.tasks[attempts[-1]] for _, attempts in sorted(job.slots.items())]

    def live_tasks(self, job: Job) -> list[Task]:
        return [task for task in self.current_tasks(job) if not task.terminal]

    def pending_tasks(self) -> list[Task]:
        return list(self.pending.values())

    def job_done(self, job: Job) -> bool:
        """Whether the job has ended: complete, failed or cancelled. O(1)."""
        if job.cancelled or job.failed_reason:
            return True
        if job.replicas == 0 and job.spec.kind == "service":
            return False
        return job.wanted_done == job.replicas

    def job_state(self, job: Job) -> tuple[JobState, str]:
        """A job's state and why, derived from its slots' counts.

        Constant time except for a pending job's reason, found by a walk over its
        slots up to the first pending task that has one.
        """
        if job.cancelled:
            return "cancelled", ""
        if job.failed_reason:
            return "failed", job.failed_reason
        if job.replicas == 0 and job.spec.kind == "service":
            return "running", "scaled to 0 replicas"
        if job.wanted_done == job.replicas:
            return "complete", ""
        waiting = job.wanted["pending"] + job.wanted["assigned"]
        if job.wanted["running"] and (job.spec.kind == "batch" or not waiting):
            return "running", ""
        return "pending", self._pending_reason(job)

    def _pending_reason(self, job: Job) -> str:
        if not job.wanted["pending"]:
            return ""
        for slot in range(job.replicas):
            attempts = job.slots.get(slot)
            task = self.tasks[attempts[-1]] if attempts else None
            if task is not None and task.state == "pending" and task.reason:
                return task.reason
        return ""
