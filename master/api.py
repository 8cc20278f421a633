"""Answering api.* requests: a request in, a `Reply` out. No I/O, no clock.

The daemon hands over each decoded request with its envelope's `message_id`,
the time and a fresh submission token; this module calls the controller (for
changes) or reads the state (for listings, one page at a time, see
master/pages.py) and returns the reply to publish.

**A repeated request gets the first answer's outcome.** The broker redelivers
a request the master took but had not acknowledged when its connection dropped
or it restarted; the client may never have seen the first reply. So the ids of
the last `remember_requests` mutating requests (submit, cancel, scale, update,
rollback, purge) are kept with their outcome, least recently used forgotten first. A request whose
`message_id` and job are both remembered is not carried out again: it gets the
same error, or success with the job as it is now (not `conflict` for its own
submit). Reads are answered afresh. A client that retries on its own must
therefore resend the same envelope (same `message_id`) to be safe; a new
`message_id` is a new request.

The outcomes are part of the cluster state (`ClusterState.requests`), recorded
by a journaled `RequestDone` (`Controller.remember_request`), so a request
redelivered to the next leader after a failover is recognised there too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from master import overview, pages
from master.controller import Controller
from master.errors import ApiProblem
from master.model import Outcome, RequestMemory
from master.overview import SeenMaster
from schemas.api import (
    ApiError,
    CancelJob,
    GetJob,
    GetMasters,
    GetStatus,
    GetTask,
    ListJobs,
    ListNodes,
    ListTasks,
    MastersInfo,
    PurgeJob,
    Reply,
    RollbackJob,
    ScaleJob,
    SetNodeSchedule,
    SubmitJob,
    UpdateJob,
)
from schemas.messages import Payload

__all__ = ["Api", "Outcome", "RequestMemory"]


def _job_of(request: Payload) -> str | None:
    """The job a mutating request changes; None for reads."""
    match request:
        case SubmitJob(spec=spec):
            return spec.name
        case (
            CancelJob(job_id=job_id)
            | ScaleJob(job_id=job_id)
            | UpdateJob(job_id=job_id)
            | RollbackJob(job_id=job_id)
            | PurgeJob(job_id=job_id)
        ):
            return job_id
    return None


def _failure(problem: ApiProblem) -> Reply:
    error = ApiError(code=problem.code, message=str(problem), field=problem.field)
    return Reply(ok=False, error=error)


class Api:
    """The master's answers. Call `answer` on the thread that owns the controller."""

    def __init__(
        self,
        controller: Controller,
        *,
        masters: Callable[[], Iterable[SeenMaster]] = tuple,
        applied: Callable[[], int] = lambda: -1,
        dead_letters: Callable[[], int | None] = lambda: None,
    ) -> None:
        """`masters`: the last beat of each master (this one's included); `applied`: the
        journal offset this master's state includes; `dead_letters`: the dead-letter
        queue's depth as last measured (None: unknown). All three are read on the
        controller's thread when api.masters / api.status are answered, so they must
        not block: the daemon keeps the values and refreshes them on its own."""
        self.controller = controller
        self._masters = masters
        self._applied = applied
        self._dead_letters = dead_letters

    @property
    def memory(self) -> RequestMemory:
        """The outcomes remembered (the controller's state holds them)."""
        return self.controller.state.requests

    def answer(self, request: Payload, *, message_id: str, now: float, token: str) -> Reply:
        """The reply to `request`. ApiProblems become error replies; other exceptions
        propagate (a bug: the daemon answers `internal`).

        `token` is the submission token an `api.submit` gets if it is carried out.
        """
        job_id = _job_of(request)
        if job_id is None:
            try:
                return Reply(ok=True, result=self._read(request, now))
            except ApiProblem as problem:
                return _failure(problem)
        outcome = self.memory.recall(message_id, request.TYPE, job_id)
        if outcome is not None:  # a redelivery: the same outcome, not a second change
            self.controller.remember_request(message_id, outcome, now)  # recently used
            if outcome.error is not None:
                return Reply(ok=False, error=outcome.error)
            return self._current(job_id)
        try:
            result = self._change(request, now, token)
        except ApiProblem as problem:
            reply = _failure(problem)
            outcome = Outcome(request.TYPE, job_id, reply.error)
            self.controller.remember_request(message_id, outcome, now)
            return reply
        self.controller.remember_request(message_id, Outcome(request.TYPE, job_id), now)
        return Reply(ok=True, result=result)

    def _current(self, job_id: str) -> Reply:
        try:
            return Reply(ok=True, result=self.controller.job_info(job_id).model_dump(mode="json"))
        except ApiProblem as problem:  # remembered, but forgotten by the state since
            return _failure(problem)

    def _change(self, request: Payload, now: float, token: str) -> Any:
        controller = self.controller
        match request:
            case SubmitJob(spec=spec):
                info = controller.submit(spec, now, submission=token)
            case CancelJob(job_id=job_id):
                info = controller.cancel(job_id, now)
            case ScaleJob(job_id=job_id, replicas=replicas):
                info = controller.scale(job_id, replicas, now)
            case UpdateJob(job_id=job_id, spec=spec):
                info = controller.update(job_id, spec, now)
            case RollbackJob(job_id=job_id):
                info = controller.rollback(job_id, now)
            case PurgeJob(job_id=job_id):
                info = controller.purge(job_id, now)
            case _:
                raise ApiProblem("invalid", f"{request.TYPE!r} changes nothing", "type")
        return info.model_dump(mode="json")

    def _read(self, request: Payload, now: float) -> Any:
        state = self.controller.state
        match request:
            case GetMasters():
                return self._masters_info(now).model_dump(mode="json")
            case GetStatus():
                status = overview.cluster_status(
                    state, self._masters_info(now), self._dead_letters()
                )
                return status.model_dump(mode="json")
            case GetJob(job_id=job_id):
                return self.controller.job_info(job_id).model_dump(mode="json")
            case GetTask(task_id=task_id):
                return self.controller.task_detail(task_id).model_dump(mode="json")
            case SetNodeSchedule(node_id=node_id, action=action):  # idempotent: not remembered
                return self.controller.set_schedule(node_id, action, now).model_dump(mode="json")
            case ListJobs():
                return pages.jobs_page(state, request).model_dump(mode="json")
            case ListTasks(job_id=job_id):
                if job_id is not None and job_id not in state.jobs:
                    raise ApiProblem("not_found", f"no job named {job_id!r}", "job_id")
                return pages.tasks_page(state, request).model_dump(mode="json")
            case ListNodes():
                return pages.nodes_page(state, request).model_dump(mode="json")
        raise ApiProblem("invalid", f"{request.TYPE!r} is not an API request", "type")

    def _masters_info(self, now: float) -> MastersInfo:
        return overview.masters_info(self._masters(), now, self._applied())
