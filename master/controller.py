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

from master import events as ev
from master import network, reconciler, reports, rollout, views
from master.effects import Command, StandbyCommand, StartCommand, StopCommand
from master.errors import ApiProblem
from master.model import Job, Outcome
from master.moves import Moves
from master.state import (
    FENCE_RESEND_SECONDS,
)
from schemas.api import JobInfo, NodeInfo
from schemas.job import JobSpec
from schemas.messages import Heartbeat, NodeEvent, TaskStatus

__all__ = [
    "FENCE_RESEND_SECONDS",
    "ApiProblem",
    "Command",
    "Controller",
    "StandbyCommand",
    "StartCommand",
    "StopCommand",
]

log = logging.getLogger("corral.master")

# A node category in "why pending" reasons: "2 nodes have no assignment queue (...)".
UNROUTABLE_REASON = "has no assignment queue (is `corral worker` consuming there?)"


class Controller(Moves):
    """The inputs of the active master (and of a standby: `replay`, `observe`, `promote`)."""

    # -- inputs --

    def submit(
        self, spec: JobSpec, now: float, submission: str = "", *, owner: str = ""
    ) -> JobInfo:
        """Accept a job. `submission` (the daemon passes a random token) makes its task ids
        unique; without one, a reused name gets `v<n>` (n: the job's `generation`), unique
        while the previous job of that name is remembered. `owner` is the submitting user
        ("": none; who may submit what is master/access.py's business, checked before)."""
        return self._answer(self.admit(spec, now, submission, owner=owner), now)

    def admit(self, spec: JobSpec, now: float, submission: str = "", *, owner: str = "") -> Job:
        """`submit` without the answer and without the scheduling pass, for many jobs at
        once (api.submit_many): call `settle` after the last one."""
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
        event = ev.JobSubmitted(
            at=now, job_id=spec.name, spec=spec, submission=submission, owner=owner
        )
        self._commit(event, now)
        job = self.state.jobs[spec.name]
        self._commit_all(reconciler.fill_slots(self.state, job, now), now)
        return job

    def settle(self, now: float) -> None:
        """One scheduling pass and what follows it, after `admit`."""
        self._settle(now)

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
        if beat.network is not None and beat.node_id not in self.state.subnets:
            self._allocate_subnet(beat.node_id, beat.network.subnet, now)
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
        if node.leaving and not beat.leaving and previous_state == "down":
            log.info("node %s, which had left the cluster, joins again", beat.node_id)
            self._commit(ev.NodeScheduling(at=now, node_id=beat.node_id, cordoned=False), now)
        elif beat.leaving and not node.leaving:
            log.info("node %s is leaving the cluster: moving its tasks", beat.node_id)
            self._commit(
                ev.NodeScheduling(
                    at=now, node_id=beat.node_id, cordoned=True, draining=True, leaving=True
                ),
                now,
            )
            self._drain(beat.node_id, now)
        self._settle(now)

    def _allocate_subnet(self, node_id: str, wanted: str | None, now: float) -> None:
        settings = self.settings
        taken = set(self.state.subnets.values())
        subnet = network.allocate(settings.cluster_cidr, settings.node_prefix, taken, wanted)
        if subnet is None:
            if not self._pool_warned:
                log.warning(
                    "no subnet left in the cluster CIDR %s for node %s (%d nodes have one): "
                    "its containers get no cluster address; give the masters a larger "
                    "--cluster-cidr that contains the current one (e.g. a /15 for a /16)",
                    settings.cluster_cidr,
                    node_id,
                    len(taken),
                )
                self._pool_warned = True
            return
        log.info("node %s gets the subnet %s", node_id, subnet)
        self._commit(ev.SubnetAllocated(at=now, node_id=node_id, subnet=subnet), now)

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
            or now - node.last_seen >= self.liveness.suspect_after(node)
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
        return views.node_info(node, self.state.subnets.get(node_id, ""))

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

    def promote(self, epoch: int, now: float, *, grace: float | None = None) -> None:
        """This master leads from now on, with `epoch`; its state holds the journal up to
        its own claim.

        Nodes get `grace` (default `takeover_grace`; the term gives more after a broker
        outage) to be heard before liveness judges them (nodes the journal names but
        that were never heard from included). Every task still
        `assigned` is sent its StartCommand again: the old leader's may never have
        arrived, or been refused as stale, and a worker that has the container
        already finds it by its label. Then one settling: a scheduling pass (the
        pending tasks), and a job event for any job whose state differs from the
        one last announced (none, unless the journal lost the end of an input).
        """
        self.epoch = epoch
        self.liveness.grant_grace(now, self.settings.takeover_grace if grace is None else grace)
        for task in self.state.tasks.values():
            if task.state == "assigned" and task.node_id is not None:
                self.commands.append(StartCommand(task.task_id, task.node_id))
        self._planned_version, self._next_due = -1, 0.0
        self._touched.update(dict.fromkeys(self.state.jobs))
        self._settle(now)
