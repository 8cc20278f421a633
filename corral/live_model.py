"""The live model of the cluster: listings in, status events applied, snapshots out.

Pure: no I/O and no clock of its own (`now` is passed in), so a test feeds it
listings and events and reads `view()`. `corral.live.LiveCluster` runs it on a
thread against a real cluster.

Snapshots are cheap: each table is a copy-on-write `live_view.Table`, so
`view()` copies nothing.

Events come from whoever may publish on corral.status, so nothing in one can
grow the model without bound: a task is only added for a slot its (known) job
has, and everything else unknown becomes a reload of a bounded set of jobs, or
a relisting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime

from corral.job import ROLLOUT_ACTIVE
from corral.live_view import Table, View
from corral.streams import Event
from schemas.api import JobInfo, MasterInfo, NodeInfo, TaskInfo
from schemas.messages import (
    TERMINAL_JOB_STATES,
    JobEvent,
    LeaderAnnounced,
    NodeEvent,
    TaskStatus,
)

# How far a task has come: a report never moves a task back (a late `running` after
# the master marked it lost, or one read before the listing that already had it).
_RANK = {"pending": 0, "assigned": 1, "running": 2}
_TERMINAL_RANK = 3
# Jobs waiting to be read again at most; beyond that, everything is listed again.
MAX_STALE_JOBS = 1000
# Tasks taken from events for slots beyond their job's replicas (as known here), at most.
MAX_EXTRA_TASKS = 10000
# Seconds a job waits before it is read again, so that a burst of its events costs one read.
RELOAD_DELAY = 1.0


def slot_and_attempt(task_id: str, job_id: str) -> tuple[int, int] | None:
    """(slot, attempt) from a task id `<job>-<submission>-<slot>-<attempt>`, or None."""
    if not task_id.startswith(job_id + "-"):
        return None
    words = task_id[len(job_id) + 1 :].split("-")
    if len(words) < 2 or not (words[-2].isdigit() and words[-1].isdigit()):
        return None
    return int(words[-2]), int(words[-1])


def _rank(state: str) -> int:
    return _RANK.get(state, _TERMINAL_RANK)


def _listed(job: JobInfo) -> JobInfo:
    """The job as a listing shows it: without tasks, versions and events."""
    if not (job.tasks or job.versions or job.events):
        return job
    return job.model_copy(update={"tasks": [], "tasks_omitted": 0, "versions": [], "events": []})


class Model:
    """The cluster as listed, then changed by status events. Not thread-safe.

    What it would like read again is in `stale_jobs` (job id -> not before),
    `relist_nodes` and `relist_all`; whoever does the I/O reads those and calls
    `set_job`, `set_nodes`, `load`.
    """

    def __init__(self, keep_events: int = 500) -> None:
        self.masters: tuple[MasterInfo, ...] = ()
        self.nodes: Table[NodeInfo] = Table(lambda node: node.state)
        self.jobs: Table[JobInfo] = Table(lambda job: job.state)
        self.tasks: Table[TaskInfo] = Table(lambda task: task.state)
        self.events: deque[Event] = deque(maxlen=max(1, keep_events))
        self.version = 0
        self.changed_at = 0.0
        self.stale_jobs: dict[str, float] = {}
        self.relist_nodes = False
        self.relist_all = False
        self._slots: dict[str, dict[int, str]] = {}  # job id -> slot -> current task id
        self._healthy: dict[str, int] = {}  # job id -> its current tasks that are healthy
        self._maturing: dict[str, float] = {}  # task id -> when it counts as healthy
        self._extra: set[str] = set()  # tasks of slots beyond their job's replicas (events)
        self._leader: tuple[str, int] | None = None
        self._events_added = 0
        self._events_seen: tuple[int, tuple[Event, ...]] = (0, ())  # the ring, as of a count

    # -- listings --

    def load(
        self,
        masters: Iterable[MasterInfo],
        nodes: Iterable[NodeInfo],
        jobs: Iterable[JobInfo],
        tasks: Iterable[TaskInfo],
        now: float,
    ) -> None:
        """Everything as listed: replaces what the model held."""
        self.set_masters(masters, now)
        self.set_nodes(nodes, now)
        self.jobs.replace({job.job_id: _listed(job) for job in jobs})
        self._set_tasks(tasks, now)
        self.relist_all = False
        self.stale_jobs = {job: due for job, due in self.stale_jobs.items() if job not in self.jobs}

    def set_masters(self, masters: Iterable[MasterInfo], now: float) -> None:
        masters = tuple(masters)
        if masters != self.masters:
            self.masters = masters
            self.touch(now)

    def set_nodes(self, nodes: Iterable[NodeInfo], now: float) -> None:
        self.relist_nodes = False
        if self.nodes.replace({node.node_id: node for node in nodes}):
            self.touch(now)

    def set_jobs(self, jobs: Iterable[JobInfo], now: float) -> None:
        """The job listing (not their tasks): new jobs are read again, gone ones dropped."""
        listed = {job.job_id: _listed(job) for job in jobs}
        for job_id in [job.job_id for job in self.jobs.values() if job.job_id not in listed]:
            self.drop_job(job_id, now)
        for job_id, job in listed.items():
            if job_id not in self._slots:
                self.want_job(job_id, now, delay=0.0)
            if self.jobs.get(job_id) != job:
                self.jobs.put(job_id, job)
                self._recount(job_id)
                self.touch(now)

    def set_job(self, job: JobInfo, tasks: Iterable[TaskInfo], now: float) -> None:
        """One job read again, with the current attempt of each of its slots."""
        self.stale_jobs.pop(job.job_id, None)
        for task_id in list(self._slots.get(job.job_id, {}).values()):
            self._forget_task(task_id)
        self._slots[job.job_id] = {}
        self.jobs.put(job.job_id, _listed(job))
        for task in tasks:
            if task.job_id == job.job_id:
                self._add_task(task, now)
        self._recount(job.job_id)
        self.touch(now)

    def drop_job(self, job_id: str, now: float) -> None:
        """A job the master no longer knows (purged), with its tasks."""
        self.stale_jobs.pop(job_id, None)
        for task_id in list(self._slots.pop(job_id, {}).values()):
            self._forget_task(task_id)
        self._healthy.pop(job_id, None)
        if self.jobs.pop(job_id) is not None:
            self.touch(now)

    def want_job(self, job_id: str, now: float, delay: float = RELOAD_DELAY) -> None:
        """Ask for `job_id` to be read again, once, after `delay` s (bounded)."""
        if job_id in self.stale_jobs:
            return
        if len(self.stale_jobs) >= MAX_STALE_JOBS:
            self.relist_all = True
            return
        self.stale_jobs[job_id] = now + delay

    def take_due_jobs(self, now: float, limit: int) -> list[str]:
        """Up to `limit` jobs whose time to be read again has come, no longer waiting (an
        event about one meanwhile makes it wait again)."""
        due = [job for job, when in self.stale_jobs.items() if when <= now][:limit]
        for job_id in due:
            del self.stale_jobs[job_id]
        return due

    def _set_tasks(self, tasks: Iterable[TaskInfo], now: float) -> None:
        newest: dict[tuple[str, int], TaskInfo] = {}
        for task in tasks:
            if task.job_id not in self.jobs:
                self.want_job(task.job_id, now, delay=0.0)  # listed after the jobs were
                continue
            held = newest.get((task.job_id, task.slot))
            if held is None or task.attempt >= held.attempt:
                newest[(task.job_id, task.slot)] = task
        self.tasks.replace({task.task_id: task for task in newest.values()})
        self._slots = {job.job_id: {} for job in self.jobs.values()}
        self._healthy = {}
        self._extra = set()  # every task is as the master listed it
        self._maturing = {key: due for key, due in self._maturing.items() if key in self.tasks}
        for task in self.tasks.values():
            self._slots[task.job_id][task.slot] = task.task_id
            self._mature_later(task, now)
        for job_id in self._slots:
            self._recount(job_id)
        self.touch(now)

    # -- events --

    def apply(self, event: Event, now: float, *, keep: bool = True) -> None:
        """Change the model as a status event says, and keep the event (unless `keep` is
        False: an event applied again over a listing read while it came)."""
        payload = event.payload
        if isinstance(payload, TaskStatus):
            self._task_status(payload, event.sent_at, now)
        elif isinstance(payload, JobEvent):
            self._job_event(payload, event.sent_at, now)
        elif isinstance(payload, NodeEvent):
            self._node_event(payload, now)
        elif isinstance(payload, LeaderAnnounced):
            leader = (payload.master, payload.epoch)
            if leader == self._leader:
                return  # said again every 5 s: not news
            if self._leader is not None:
                self.relist_all = True  # a new leader does not repeat what the old one said
            self._leader = leader
        if keep:
            self.events.append(event)
            self._events_added += 1
        self.touch(now)

    def _task_status(self, status: TaskStatus, sent_at: datetime, now: float) -> None:
        task = self.tasks.get(status.task_id) or self._provisional(status, sent_at, now)
        if task is None:
            return
        if _rank(status.state) < _rank(task.state):
            return
        running = status.state == "running"
        updated = task.model_copy(
            update={
                "state": status.state,
                "node_id": status.node_id,
                "exit_code": status.exit_code,
                "reason": status.reason,
                "container_id": status.container_id or task.container_id,
                "health": status.health if running else "",
                "healthy": task.healthy and running and status.health != "unhealthy",
                "address": status.address if running else "",
                "updated_at": sent_at,
                "started_at": task.started_at or (sent_at if running else None),
            }
        )
        self._replace_task(task, updated, now)
        job = self.jobs.get(task.job_id)
        rollout = job.rollout if job is not None else None
        rolling = rollout is not None and rollout.state in ROLLOUT_ACTIVE
        if rolling or status.state == "stopped":
            # Not in events: a rollout's progress; the replicas of a job scaled down.
            self.want_job(task.job_id, now)

    def _provisional(self, status: TaskStatus, sent_at: datetime, now: float) -> TaskInfo | None:
        """A task first heard of in an event (a new attempt, a new replica), built from the
        event; its job is read again for the rest. A slot beyond the job's replicas as
        known here (it was scaled up since) is taken too, up to MAX_EXTRA_TASKS such
        tasks in all until their jobs are read again."""
        self.want_job(status.job_id, now)
        job = self.jobs.get(status.job_id)
        where = slot_and_attempt(status.task_id, status.job_id)
        if job is None or where is None:
            return None
        slot, attempt = where
        extra = slot >= job.spec.replicas
        if extra and len(self._extra) >= MAX_EXTRA_TASKS:
            return None
        current = self.tasks.get(self._slots.get(job.job_id, {}).get(slot, ""))
        if current is not None and current.attempt > attempt:
            return None  # an older attempt's report: not the slot's current one
        if extra:
            self._extra.add(status.task_id)
        return TaskInfo(
            task_id=status.task_id,
            job_id=job.job_id,
            slot=slot,
            attempt=attempt,
            state="assigned",
            node_id=status.node_id,
            updated_at=sent_at,
            version=job.version,
        )

    def _job_event(self, event: JobEvent, sent_at: datetime, now: float) -> None:
        # A new job; or one whose tasks changed in ways that have no event (the master
        # marked them lost, or pending for want of room): read it again.
        self.want_job(event.job_id, now)
        job = self.jobs.get(event.job_id)
        if job is None:
            return
        update: dict[str, object] = {"state": event.state, "reason": event.reason}
        if event.state in TERMINAL_JOB_STATES and job.ended_at is None:
            update["ended_at"] = sent_at
        self.jobs.put(job.job_id, job.model_copy(update=update))

    def _node_event(self, event: NodeEvent, now: float) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            self.relist_nodes = True
            return
        update = {"state": event.state, "reason": event.reason}
        self.nodes.put(node.node_id, node.model_copy(update=update))

    # -- tasks and their jobs' counts --

    def _add_task(self, task: TaskInfo, now: float) -> TaskInfo | None:
        """Keep `task` if it is its slot's newest attempt (listings give them in order);
        the attempt it replaces, or `task` itself if it is not kept."""
        slots = self._slots.setdefault(task.job_id, {})
        current = self.tasks.get(slots.get(task.slot, ""))
        if current is not None:
            if current.attempt > task.attempt:
                return task
            self._forget_task(current.task_id)
        slots[task.slot] = task.task_id
        self.tasks.put(task.task_id, task)
        self._healthy[task.job_id] = self._healthy.get(task.job_id, 0) + task.healthy
        self._mature_later(task, now)
        return current

    def _replace_task(self, old: TaskInfo, new: TaskInfo, now: float) -> None:
        """`new` in place of `old` (the same task, or one first heard of in an event),
        with its job's counts changed to match."""
        if self.tasks.get(old.task_id) is not old:
            replaced = self._add_task(new, now)
            if replaced is not new:
                self._count_change(new.job_id, replaced, new)
            return
        self.tasks.put(new.task_id, new)
        self._healthy[new.job_id] = self._healthy.get(new.job_id, 0) + new.healthy - old.healthy
        self._mature_later(new, now)
        if old.state != new.state or old.healthy != new.healthy:
            self._count_change(new.job_id, old, new)

    def _forget_task(self, task_id: str) -> None:
        task = self.tasks.pop(task_id)
        self._maturing.pop(task_id, None)
        self._extra.discard(task_id)
        if task is not None:
            self._healthy[task.job_id] = self._healthy.get(task.job_id, 0) - task.healthy

    def _mature_later(self, task: TaskInfo, now: float) -> None:
        """A running, passing task counts as healthy after its job's min_healthy (the
        master decides this on its own clock and publishes nothing)."""
        job = self.jobs.get(task.job_id)
        passing = task.state == "running" and task.health in ("", "healthy")
        if job is None or task.healthy or not passing:
            self._maturing.pop(task.task_id, None)
        elif task.task_id not in self._maturing:
            self._maturing[task.task_id] = now + job.spec.min_healthy

    def mature(self, now: float) -> None:
        """Tasks whose min_healthy has passed become healthy."""
        for task_id in [task for task, due in self._maturing.items() if due <= now]:
            task = self.tasks.get(task_id)
            self._maturing.pop(task_id)
            if task is not None and task.state == "running":
                self._replace_task(task, task.model_copy(update={"healthy": True}), now)
                self.touch(now)

    def next_maturing(self) -> float | None:
        return min(self._maturing.values(), default=None)

    def _count_change(self, job_id: str, old: TaskInfo | None, new: TaskInfo) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        counts = dict(job.task_counts)
        if old is not None:
            counts[old.state] = counts.get(old.state, 0) - 1
        counts[new.state] = counts.get(new.state, 0) + 1
        self._put_counts(job, counts)

    def _recount(self, job_id: str) -> None:
        """A job's counts from its tasks here: after a listing or a reload."""
        job = self.jobs.get(job_id)
        if job is None:
            return
        counts: dict[str, int] = {}
        healthy = 0
        for task_id in self._slots.get(job_id, {}).values():
            task = self.tasks.get(task_id)
            if task is not None:
                counts[task.state] = counts.get(task.state, 0) + 1
                healthy += task.healthy
        self._healthy[job_id] = healthy
        self._put_counts(job, counts)

    def _put_counts(self, job: JobInfo, counts: dict[str, int]) -> None:
        counts = {state: count for state, count in sorted(counts.items()) if count > 0}
        healthy = min(job.spec.replicas, max(0, self._healthy.get(job.job_id, 0)))
        if counts != job.task_counts or healthy != job.healthy:
            update = {"task_counts": counts, "healthy": healthy}
            self.jobs.put(job.job_id, job.model_copy(update=update))

    # -- snapshots --

    def touch(self, now: float) -> None:
        """Count a change (also one made outside the tables: the connection's state)."""
        self.version += 1
        self.changed_at = now

    def view(self, *, connected: bool, problem: str) -> View:
        """The model now, for any thread to read; cheap (nothing is copied here)."""
        nodes, node_counts = self.nodes.share()
        jobs, job_counts = self.jobs.share()
        tasks, task_counts = self.tasks.share()
        if self._events_seen[0] != self._events_added:
            self._events_seen = (self._events_added, tuple(self.events))
        return View(
            version=self.version,
            changed_at=self.changed_at,
            masters=self.masters,
            nodes=nodes,
            jobs=jobs,
            tasks=tasks,
            events=self._events_seen[1],
            connected=connected,
            problem=problem,
            node_counts=node_counts,
            job_counts=job_counts,
            task_counts=task_counts,
        )
