"""The master's picture of the cluster, changed only by `ClusterState.apply(event)`.

Applying never reads a clock, never does I/O and never fails on an event that
refers to something gone (it is ignored): the same events in the same order
always give the same state. Controllers read this state and return events.

Everything a master needs after a failover is here, so that a standby that
applies the leader's journaled events (and sees the same heartbeats) holds the
leader's state, and a snapshot plus the events after it gives it too
(master/snapshot.py). Besides jobs, tasks and nodes, that is:

- `unseen`: nodes the journal names but no heartbeat has shown yet (see
  `model.Unseen`): their state, hold and booked tasks wait there for the node's
  first heartbeat;
- `fenced`: strays sent a stop lately, by task id, oldest first (bounded by age
  and count), so that a stop is resent at most every FENCE_RESEND_SECONDS;
- `requests`: the outcomes of the last `remember_requests` mutating requests;
- per job, its `generation` and the state last `announced`.

`apply` also keeps indexes so that no input costs time in proportion to all
the master holds (`rebuild_indexes` recomputes them from the records):

- `pending`: the pending tasks (the scheduler's work list);
- `ended`: the jobs that have ended, oldest first (the first to be forgotten);
- per job, its slots' current attempts counted by state (its state derives from them);
- per node, its tasks counted by job and the host ports they hold;
- `placeable_version`: bumped by every change that may let a pending task be
  placed (a new pending task, a booking released, a node that joins, comes
  back, changes its capacity or labels, or is no longer held). Not part of
  what two states must share: it only tells one master when to plan again.

`differences` compares two states field by field.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from master import events as ev
from master.applying import HANDLERS as _HANDLERS
from master.applying import add as _add
from master.applying import handles as _handles
from master.model import (
    ACTIVE_TASK_STATES,
    Job,
    Node,
    Outcome,
    RequestMemory,
    Rollout,
    Task,
    Unseen,
    Version,
    crash_looping,
    millicpus,
    slot_done,
    task_id_for,
)
from master.nodestate import SOFT_NODE_FIELDS, NodeRecords
from schemas.api import ApiError
from schemas.limits import MAX_VERSIONS_KEPT
from schemas.messages import JobState

__all__ = [
    "ACTIVE_TASK_STATES",
    "FENCE_RESEND_SECONDS",
    "ClusterState",
    "Job",
    "Node",
    "Task",
    "Unseen",
    "task_id_for",
]


FORGOTTEN_JOBS_KEPT = 10_000
# Spec fields that make no difference to a running container: a new version that changes
# only these needs no task replaced (a rollout of it is done at once).
NOT_IN_CONTAINER = {"replicas", "update", "min_healthy", "stop_grace", "agent_grace", "restart"}
# A stray container is sent a stop at most this often; at most FENCED_KEPT are remembered.
FENCE_RESEND_SECONDS = 5.0
FENCED_KEPT = 10_000
REMEMBER_REQUESTS = 10_000  # MasterSettings.remember_requests's default


class ClusterState(NodeRecords):
    def __init__(self, *, remember_requests: int = REMEMBER_REQUESTS) -> None:
        """`remember_requests` bounds `requests` (settings.remember_requests); states
        that must stay equal must be built with the same bound."""
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, Task] = {}
        self.nodes: dict[str, Node] = {}
        self.unseen: dict[str, Unseen] = {}
        self.pending: dict[str, Task] = {}
        # Running tasks passing their check (or without one) but not yet healthy: the
        # controller makes each healthy once it has passed for its job's min_healthy.
        self.maturing: dict[str, Task] = {}
        self.ended: dict[str, None] = {}  # job ids, in the order the jobs ended
        # Ids of jobs forgotten lately (bounded): a container of one that turns up
        # running is still the master's to stop.
        self.forgotten: dict[str, None] = {}
        self.fenced: dict[str, float] = {}  # task id -> when a stop was sent, oldest first
        self.requests = RequestMemory(remember_requests)
        self.placeable_version = 0
        # Node id -> held_until, for the nodes ever held (an index of `nodes`, so that
        # `scheduler.next_due` need not walk every node on every pass).
        self.holds: dict[str, float] = {}
        # Node id -> the subnet of the cluster network its containers use (journaled).
        self.subnets: dict[str, str] = {}
        # What the network view (master/network.py) reads: the jobs an event touched
        # since it last looked, and a count that changes when the node map may have.
        self.net_touched: set[str] = set()
        self.net_nodes_version = 0

    # -- the only mutation --

    def apply(self, event: ev.Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"unknown event {type(event).__name__}")
        job_id: str | None = getattr(event, "job_id", None)
        if job_id is None and (task_id := getattr(event, "task_id", None)) is not None:
            task = self.tasks.get(task_id)  # before the handler: it may forget the task
            job_id = task.job_id if task is not None else None
        handler(self, event)
        if job_id is not None:
            self.net_touched.add(job_id)

    @_handles(ev.JobSubmitted)
    def _job_submitted(self, event: ev.JobSubmitted) -> None:
        old = self.jobs.get(event.job_id)
        generation = 1
        if old is not None:  # a finished job's name is reused: forget the old one
            generation = old.generation + 1
            self._drop_job(old)
        job = Job(
            event.job_id,
            event.spec,
            event.at,
            submission=event.submission,
            generation=generation,
            owner=event.owner,
        )
        job.versions[1] = Version(1, event.spec, event.at, "submitted")
        job.note(event.at, "", f"submitted: {event.spec.replicas} x {event.spec.image}")
        self.jobs[event.job_id] = job
        self.forgotten.pop(event.job_id, None)
        self._check_ended(job, event.at)  # a batch job of 0 replicas has nothing to do

    @_handles(ev.JobScaled)
    def _job_scaled(self, event: ev.JobScaled) -> None:
        if job := self.jobs.get(event.job_id):
            job.spec = job.spec.model_copy(update={"replicas": event.replicas})
            if current := job.versions.get(job.version):
                current.spec = job.spec
            job.note(event.at, "", f"scaled to {event.replicas}")
            self._recount(job)
            self._check_ended(job, event.at)

    @_handles(ev.JobCancelled)
    def _job_cancelled(self, event: ev.JobCancelled) -> None:
        if job := self.jobs.get(event.job_id):
            job.cancelled = True
            job.note(event.at, "", "cancelled")
            self._check_ended(job, event.at)

    @_handles(ev.JobFailed)
    def _job_failed(self, event: ev.JobFailed) -> None:
        if job := self.jobs.get(event.job_id):
            job.failed_reason = event.reason
            job.note(event.at, "", f"failed: {event.reason}")
            self._check_ended(job, event.at)

    @_handles(ev.JobForgotten)
    def _job_forgotten(self, event: ev.JobForgotten) -> None:
        if job := self.jobs.get(event.job_id):
            self._drop_job(job)
            self.forgotten[event.job_id] = None
            while len(self.forgotten) > FORGOTTEN_JOBS_KEPT:
                del self.forgotten[next(iter(self.forgotten))]

    @_handles(ev.JobStateChanged)
    def _job_state_changed(self, event: ev.JobStateChanged) -> None:
        if job := self.jobs.get(event.job_id):
            job.announced = event.state
            job.note(
                event.at, "", f"job {event.state}" + (f": {event.reason}" if event.reason else "")
            )

    @_handles(ev.JobUpdated)
    def _job_updated(self, event: ev.JobUpdated) -> None:
        job = self.jobs.get(event.job_id)
        if job is None or event.version <= job.version:
            return
        rollout = Rollout(
            "rolling-back" if event.rollback else "updating",
            job.version,
            event.version,
            event.reason,
            automatic=event.automatic,
        )
        job.versions[event.version] = Version(event.version, event.spec, event.at, event.reason)
        wanted = event.spec.model_dump(exclude=NOT_IN_CONTAINER)
        rollout.equivalent = [
            number
            for number, kept in job.versions.items()
            if number == event.version or kept.spec.model_dump(exclude=NOT_IN_CONTAINER) == wanted
        ]
        job.spec, job.version, job.rollout = event.spec, event.version, rollout
        self._trim_versions(job)
        verb = "rolling back" if event.rollback else "updating"
        job.note(event.at, "", f"{verb} to version {event.version}: {event.reason}".rstrip(": "))
        self._recount(job)
        self._check_ended(job, event.at)

    def _trim_versions(self, job: Job) -> None:
        """Keep MAX_VERSIONS_KEPT versions, and any version one of its tasks still runs."""
        if len(job.versions) <= MAX_VERSIONS_KEPT:
            return
        in_use = {self.tasks[t].version for attempts in job.slots.values() for t in attempts}
        for version in list(job.versions):
            if len(job.versions) <= MAX_VERSIONS_KEPT:
                break
            if version != job.version and version not in in_use:
                del job.versions[version]

    @_handles(ev.RolloutEnded)
    def _rollout_ended(self, event: ev.RolloutEnded) -> None:
        job = self.jobs.get(event.job_id)
        if job is None or job.rollout is None:
            return
        job.rollout.state, job.rollout.reason = event.state, event.reason
        job.note(
            event.at, "", f"rollout {event.state}" + (f": {event.reason}" if event.reason else "")
        )

    @_handles(ev.TaskCreated)
    def _task_created(self, event: ev.TaskCreated) -> None:
        job = self.jobs.get(event.job_id)
        if job is None or event.task_id in self.tasks:
            return
        attempts = job.slots.setdefault(event.slot, [])
        previous = self.tasks[attempts[-1]] if attempts else None
        if previous is not None:  # no longer the slot's current attempt
            self._tally(job, previous, -1)
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
            version=event.version,
        )
        job.note(
            event.at,
            task.task_id,
            f"created (slot {event.slot}, version {event.version})"
            + (f": {event.reason}" if event.reason else ""),
        )
        self.tasks[task.task_id] = task
        attempts.append(task.task_id)
        if previous is not None and event.retire and previous.state in ACTIVE_TASK_STATES:
            previous.retiring = True  # it serves the slot until this attempt is healthy
            self._tally_task(previous, +1)
        self.pending[task.task_id] = task
        self._tally(job, task, +1)
        self.placeable_version += 1
        self._check_ended(job, event.at)

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
            job.note(event.at, task.task_id, f"assigned to node {event.node_id}")
        del self.pending[task.task_id]
        self._bind(task)

    @_handles(ev.TaskUpdated)
    def _task_updated(self, event: ev.TaskUpdated) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.terminal:
            return
        job = self._tally_task(task, -1)
        task.state = event.state
        task.exit_code = event.exit_code
        task.reason = event.reason
        task.retryable = event.retryable
        task.container_id = event.container_id or task.container_id
        task.address = "" if task.terminal else event.address or task.address
        task.updated_at = event.at
        owner = self.jobs.get(task.job_id)
        if event.state == "running" and task.started_at is None:
            task.started_at = event.at
            checked = owner is not None and owner.spec_of(task).health is not None
            if not checked or task.health == "healthy":
                self._passing(task, event.at)
        if task.terminal:
            task.passing_since = None
            self.maturing.pop(task.task_id, None)
            task.retiring = False
        if owner is not None:
            owner.note(event.at, task.task_id, _task_text(event))
        self._tally_task(task, +1)
        if job is not None:
            self._check_ended(job, event.at)
        self.pending.pop(task.task_id, None)
        if task.terminal:
            self._unbind(task)

    @_handles(ev.TaskHealth)
    def _task_health(self, event: ev.TaskHealth) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.terminal or task.health == event.health:
            return
        self._tally_task(task, -1)
        task.health = event.health
        if event.health == "healthy":
            if task.state == "running":
                self._passing(task, event.at)
        else:
            self._not_passing(task)
        self._tally_task(task, +1)
        if owner := self.jobs.get(task.job_id):
            detail = f" ({event.reason})" if event.reason else ""
            owner.note(event.at, task.task_id, f"health check: {event.health}{detail}")

    @_handles(ev.TaskHealthy)
    def _task_healthy(self, event: ev.TaskHealthy) -> None:
        task = self.maturing.pop(event.task_id, None)
        if task is None:
            return
        self._tally_task(task, -1)
        task.healthy = task.was_healthy = True
        self._tally_task(task, +1)
        if owner := self.jobs.get(task.job_id):
            owner.note(event.at, task.task_id, "healthy")

    def _passing(self, task: Task, at: float) -> None:
        if task.passing_since is None:
            task.passing_since = at
            self.maturing[task.task_id] = task

    def _not_passing(self, task: Task) -> None:
        """(The caller untallies and retallies the task around this.)"""
        task.passing_since = None
        task.healthy = False
        self.maturing.pop(task.task_id, None)

    @_handles(ev.TaskUndelivered)
    def _task_undelivered(self, event: ev.TaskUndelivered) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            record = self._unseen(event.node_id, event.at)
            record.held_until = max(record.held_until, event.hold_until)
            record.held_reason = event.reason
            record.held_boot = event.boot_id
        elif not event.boot_id or event.boot_id == node.boot_id:
            node.held_until = max(node.held_until, event.hold_until)
            node.held_reason = event.reason
            self.holds[node.node_id] = node.held_until
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
            job.note(event.at, task.task_id, f"lost: {task.reason}")
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
        self.fenced.pop(task.task_id, None)
        self.maturing.pop(task.task_id, None)

    @_handles(ev.TaskFenced)
    def _task_fenced(self, event: ev.TaskFenced) -> None:
        self.fenced.pop(event.task_id, None)
        self.fenced[event.task_id] = event.at
        for task_id, at in list(self.fenced.items()):
            if len(self.fenced) <= FENCED_KEPT and event.at - at < FENCE_RESEND_SECONDS:
                break
            del self.fenced[task_id]

    @_handles(ev.RequestDone)
    def _request_done(self, event: ev.RequestDone) -> None:
        error = None
        if event.error_code:  # built unchecked: it was checked when first answered
            error = ApiError.model_construct(
                code=event.error_code, message=event.error_message, field=event.error_field
            )
        self.requests.remember(event.message_id, Outcome(event.request_type, event.job_id, error))

    # -- indexes --

    def _current_job(self, task: Task) -> Job | None:
        """The task's job if the task is its slot's current attempt, else None."""
        job = self.jobs.get(task.job_id)
        if job is None or job.slots.get(task.slot, [""])[-1] != task.task_id:
            return None
        return job

    def _tally_task(self, task: Task, sign: int) -> Job | None:
        """Count (+1) or uncount (-1) a task in its job's counters: its slot's current
        attempt in all of them, a retiring one in `retiring_healthy`. Returns the job if
        the task is its slot's current attempt."""
        job = self.jobs.get(task.job_id)
        if job is None:
            return None
        if job.slots.get(task.slot, [""])[-1] == task.task_id:
            self._tally(job, task, sign)
            return job
        if task.retiring and task.healthy and task.state == "running" and task.slot < job.replicas:
            job.retiring_healthy += sign
        return None

    @staticmethod
    def _tally(job: Job, task: Task, sign: int) -> None:
        _add(job.task_counts, task.state, sign)
        if task.slot < job.replicas:
            _add(job.wanted, task.state, sign)
            if slot_done(job.spec, task):
                job.wanted_done += sign
            if task.healthy and task.state == "running":
                job.wanted_healthy += sign
            if crash_looping(task):
                job.wanted_looping += sign

    def _recount(self, job: Job) -> None:
        job.task_counts.clear()
        job.wanted.clear()
        job.wanted_done = job.wanted_healthy = job.wanted_looping = job.retiring_healthy = 0
        for attempts in job.slots.values():
            self._tally(job, self.tasks[attempts[-1]], +1)
            for task_id in attempts[:-1]:
                self._tally_task(self.tasks[task_id], +1)

    def _check_ended(self, job: Job, at: float) -> None:
        if self.job_done(job):
            if job.job_id not in self.ended:
                self.ended[job.job_id] = None
                job.ended_at = at
        else:
            self.ended.pop(job.job_id, None)
            job.ended_at = None

    def _drop_job(self, job: Job) -> None:
        for attempts in job.slots.values():
            for task_id in attempts:
                task = self.tasks.pop(task_id)
                self._unbind(task)
                self.pending.pop(task_id, None)
                self.fenced.pop(task_id, None)
                self.maturing.pop(task_id, None)
        del self.jobs[job.job_id]
        self.ended.pop(job.job_id, None)

    def _bind(self, task: Task) -> None:
        job = self.jobs.get(task.job_id)
        if job is None or task.node_id is None:
            return
        node = self.nodes.get(task.node_id)
        if node is None:  # booked there when the node is first heard from
            self._unseen(task.node_id, task.updated_at).task_ids.add(task.task_id)
            return
        if task.task_id in node.task_ids:
            return
        spec = job.spec_of(task)
        node.task_ids.add(task.task_id)
        node.used_millicpus += millicpus(spec.cpu)
        node.used_memory += spec.memory
        _add(node.job_counts, job.job_id, +1)
        for port in spec.ports:
            _add(node.ports, (port.host, port.protocol), +1)

    def _unbind(self, task: Task) -> None:
        node = self.nodes.get(task.node_id or "")
        job = self.jobs.get(task.job_id)
        if node is None and (record := self.unseen.get(task.node_id or "")):
            record.task_ids.discard(task.task_id)
        if node is None or job is None or task.task_id not in node.task_ids:
            return
        spec = job.spec_of(task)
        node.task_ids.discard(task.task_id)
        node.used_millicpus -= millicpus(spec.cpu)
        node.used_memory -= spec.memory
        _add(node.job_counts, job.job_id, -1)
        for port in spec.ports:
            _add(node.ports, (port.host, port.protocol), -1)
        self.placeable_version += 1

    def rebuild_indexes(self) -> None:
        """Recompute, from the records alone, what `apply` keeps up to date: `pending`,
        each job's counts and each node's (and unseen node's) bookings. For a state
        restored from a snapshot; `ended`, `forgotten`, `fenced` and `requests` are
        records (their order is history), not indexes."""
        self.pending = {t.task_id: t for t in self.tasks.values() if t.state == "pending"}
        self.maturing = {
            t.task_id: t
            for t in self.tasks.values()
            if t.state == "running" and t.passing_since is not None and not t.healthy
        }
        for job in self.jobs.values():
            self._recount(job)
        for node in self.nodes.values():
            node.task_ids.clear()
            node.used_millicpus, node.used_memory = 0, 0
            node.job_counts.clear()
            node.ports.clear()
        for record in self.unseen.values():
            record.task_ids.clear()
        for task in self.tasks.values():
            if task.state in ACTIVE_TASK_STATES:
                self._bind(task)
        self.placeable_version += 1

    # -- comparing --

    def differences(self, other: ClusterState, *, soft: bool = True) -> list[str]:
        """What differs between this state and `other`, field by field ([]: equal).

        Compares every record and index, and the order of those whose order is
        history (jobs, tasks, pending, ended, forgotten, fenced, requests). With
        `soft=False`, what only heartbeats set (SOFT_NODE_FIELDS, the order of nodes)
        is left out. `placeable_version` is never compared.
        """
        found: list[str] = []
        for name in ("jobs", "tasks", "pending", "ended", "forgotten", "fenced", "unseen"):
            found += _compare(name, getattr(self, name), getattr(other, name), ordered=True)
        found += _compare("maturing", self.maturing, other.maturing, ordered=False)
        found += _compare("subnets", self.subnets, other.subnets, ordered=False)
        if soft:
            found += _compare("nodes", self.nodes, other.nodes, ordered=True)
            found += _compare("holds", self.holds, other.holds, ordered=False)
        else:
            found += _compare("nodes", _hard(self.nodes), _hard(other.nodes), ordered=False)
        if self.requests != other.requests:
            found.append(f"requests: {self.requests.items()!r} != {other.requests.items()!r}")
        return found

    # -- reading --

    def current_tasks(self, job: Job) -> list[Task]:
        """The newest attempt of each slot."""
        return [self.tasks[attempts[-1]] for _, attempts in sorted(job.slots.items())]

    def live_tasks(self, job: Job) -> list[Task]:
        """The job's tasks that have not ended: each slot's current attempt, and those it
        replaces start-first (retiring) until it is healthy."""
        return [
            task
            for _, attempts in sorted(job.slots.items())
            for task_id in attempts
            if not (task := self.tasks[task_id]).terminal
        ]

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
        if job.spec.kind == "batch":
            if job.wanted["running"]:
                return "running", ""
            return "pending", self._crash_loop(job) or self._pending_reason(job)
        if self.serving(job) + job.wanted_done >= job.replicas:
            return "running", ""
        if job.wanted["running"]:
            healthy = f"{self.serving(job)}/{job.replicas} healthy"
            looping = self._crash_loop(job)
            return "degraded", f"{healthy}; {looping}" if looping else healthy
        return "pending", self._crash_loop(job) or self._pending_reason(job)

    @staticmethod
    def serving(job: Job) -> int:
        """The wanted slots served by a healthy task: the slot's current attempt, or one it
        replaces start-first (retiring) until the new one is healthy."""
        return min(job.replicas, job.wanted_healthy + job.retiring_healthy)

    def _crash_loop(self, job: Job) -> str:
        """Why the job's first crash-looping slot loops, or "" if none does."""
        if not job.wanted_looping:
            return ""
        for slot in range(job.replicas):
            attempts = job.slots.get(slot)
            task = self.tasks[attempts[-1]] if attempts else None
            if task is None or not crash_looping(task):
                continue
            last = self.tasks[attempts[-2]] if attempts and len(attempts) > 1 else None
            what = f"; last {_ended_text(last)}" if last is not None and last.terminal else ""
            return f"crash loop: slot {slot} failed {task.failures} times in a row{what}"
        return ""

    def _pending_reason(self, job: Job) -> str:
        if not job.wanted["pending"]:
            return ""
        for slot in range(job.replicas):
            attempts = job.slots.get(slot)
            task = self.tasks[attempts[-1]] if attempts else None
            if task is not None and task.state == "pending" and task.reason:
                return task.reason
        return ""


def _ended_text(task: Task) -> str:
    if task.state == "failed":
        return f"failed: {task.reason}" if task.reason else "failed"
    detail = f" ({task.reason})" if task.reason else ""
    return f"exited with code {task.exit_code}{detail}"


def _task_text(event: ev.TaskUpdated) -> str:
    text: str = event.state
    if event.exit_code is not None:
        text += f" with code {event.exit_code}"
    return f"{text}: {event.reason}" if event.reason else text


def _compare(
    name: str, mine: dict[str, Any], theirs: dict[str, Any], *, ordered: bool
) -> list[str]:
    found = [
        f"{name}[{key!r}]: {mine.get(key)!r} != {theirs.get(key)!r}"
        for key in sorted(mine.keys() | theirs.keys())
        if key not in mine or key not in theirs or mine[key] != theirs[key]
    ]
    if ordered and not found and list(mine) != list(theirs):
        found.append(f"{name}: the same entries in another order")
    return found


def _hard(nodes: dict[str, Node]) -> dict[str, Any]:
    """The nodes without what only heartbeats set."""
    names = [f.name for f in fields(Node) if f.name not in SOFT_NODE_FIELDS]
    return {
        node_id: {name: getattr(node, name) for name in names} for node_id, node in nodes.items()
    }
