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

**Access comes first.** Every request names its caller (`master.access.Caller`,
from the broker). What the caller may do is checked before anything is read,
changed or recalled (`access.check`); a refusal (`forbidden`) is not remembered,
so it never takes the place of another caller's outcome under the same message
id, and a redelivery is checked again like the first delivery (a job made by a
submit belongs to its caller, so the redelivery of that submit is allowed). What
the caller may see is decided last: every spec comes with its `secret_env`
values as "***" (master/views.py), and `env` values too for callers other than
the job's owner and admins (`access.hide_env`). An update whose `secret_env`
holds "***" keeps the current value of that variable (`access.keep_secrets`).

`api.logs` is not answered here: the daemon asks `logs_target` which worker to
forward it to, and the worker streams the logs to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from master import access, overview, pages
from master.access import Caller
from master.controller import Controller
from master.errors import ApiProblem
from master.model import Outcome, RequestMemory
from master.overview import SeenMaster
from schemas.api import (
    ApiError,
    CancelJob,
    GetJob,
    GetLogs,
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
    SubmitJobs,
    SubmitOutcome,
    SubmitResults,
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


_LOGS_ELSEWHERE = ApiProblem(
    "invalid",
    "api.logs is answered with the logs, by the task's worker: the master forwards it "
    "(Api.logs_target), it has no api.reply result",
    "type",
)


def _error(problem: ApiProblem) -> ApiError:
    return ApiError(code=problem.code, message=str(problem), field=problem.field)


def _failure(problem: ApiProblem) -> Reply:
    return Reply(ok=False, error=_error(problem))


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

    def answer(
        self, request: Payload, *, message_id: str, now: float, token: str, caller: Caller
    ) -> Reply:
        """The reply to `request` from `caller`. ApiProblems (a refusal included) become
        error replies; other exceptions propagate (a bug: the daemon answers `internal`).

        `token` is the submission token an `api.submit` gets if it is carried out.
        """
        if isinstance(request, GetLogs):
            return _failure(_LOGS_ELSEWHERE)
        if isinstance(request, SubmitJobs):
            return self._submit_many(request, message_id, now, token, caller)
        job_id = _job_of(request)
        try:
            self._check(request, caller, job_id)
        except ApiProblem as problem:  # not remembered: see the module's docstring
            return _failure(problem)
        if job_id is None:
            try:
                return Reply(ok=True, result=self._read(request, now, caller))
            except ApiProblem as problem:
                return _failure(problem)
        outcome = self.memory.recall(message_id, request.TYPE, job_id)
        if outcome is not None:  # a redelivery: the same outcome, not a second change
            self.controller.remember_request(message_id, outcome, now)  # recently used
            if outcome.error is not None:
                return Reply(ok=False, error=outcome.error)
            return self._current(job_id, caller)
        try:
            result = self._change(request, now, token, caller)
        except ApiProblem as problem:
            reply = _failure(problem)
            outcome = Outcome(request.TYPE, job_id, reply.error)
            self.controller.remember_request(message_id, outcome, now)
            return reply
        self.controller.remember_request(message_id, Outcome(request.TYPE, job_id), now)
        return Reply(ok=True, result=result)

    def _submit_many(
        self, request: SubmitJobs, message_id: str, now: float, token: str, caller: Caller
    ) -> Reply:
        """Each spec as an api.submit whose message id is `<message_id>.<index>` (so a
        redelivered batch gets each job's first outcome), then one scheduling pass."""
        controller = self.controller
        errors: list[ApiError | None] = []
        for index, spec in enumerate(request.specs):
            single = SubmitJob(spec=spec)
            item_id = f"{message_id}.{index}" if message_id else ""
            try:
                self._check(single, caller, spec.name)
            except ApiProblem as problem:  # not remembered, as for one submit
                errors.append(_error(problem))
                continue
            outcome = self.memory.recall(item_id, single.TYPE, spec.name)
            if outcome is None:
                try:
                    controller.admit(spec, now, submission=token, owner=caller.user)
                    outcome = Outcome(single.TYPE, spec.name)
                except ApiProblem as problem:
                    outcome = Outcome(single.TYPE, spec.name, _error(problem))
            controller.remember_request(item_id, outcome, now)
            errors.append(outcome.error)
        controller.settle(now)
        state = controller.state
        results = []
        for spec, error in zip(request.specs, errors, strict=True):
            job = state.jobs.get(spec.name) if error is None else None
            job_state = state.job_state(job)[0] if job is not None else None
            results.append(
                SubmitOutcome(job_id=spec.name, ok=error is None, state=job_state, error=error)
            )
        return Reply(ok=True, result=SubmitResults(results=results).model_dump(mode="json"))

    def logs_target(self, request: GetLogs, caller: Caller) -> tuple[str, str]:
        """(node id, task id): where to ask for the logs `request` wants, if `caller` may
        read them (its own job's, or any job's for an admin). Raises ApiProblem:
        `not_found` (no such task), `forbidden`, or `conflict` (the task was never placed
        on a node, so it has no container and no logs)."""
        state = self.controller.state
        task = state.tasks.get(request.task_id)
        if task is None:
            raise ApiProblem(
                "not_found", f"no task {request.task_id!r} (see `corral ps -a`)", "task_id"
            )
        access.check(caller, request, state.jobs.get(task.job_id), name=task.job_id)
        if task.node_id is None:
            why = f": {task.reason}" if task.reason else ""
            raise ApiProblem(
                "conflict",
                f"task {task.task_id} is {task.state} and was never placed on a node{why}; "
                "it has no container, so no logs",
                "task_id",
            )
        return task.node_id, task.task_id

    def _check(self, request: Payload, caller: Caller, job_id: str | None) -> None:
        job = self.controller.state.jobs.get(job_id) if job_id is not None else None
        access.check(caller, request, job, name=job_id or "")

    def _current(self, job_id: str, caller: Caller) -> Reply:
        try:
            info = self.controller.job_info(job_id).model_dump(mode="json")
        except ApiProblem as problem:  # remembered, but forgotten by the state since
            return _failure(problem)
        return Reply(ok=True, result=_shown(info, caller))

    def _change(self, request: Payload, now: float, token: str, caller: Caller) -> Any:
        controller = self.controller
        match request:
            case SubmitJob(spec=spec):
                info = controller.submit(spec, now, submission=token, owner=caller.user)
            case CancelJob(job_id=job_id):
                info = controller.cancel(job_id, now)
            case ScaleJob(job_id=job_id, replicas=replicas):
                info = controller.scale(job_id, replicas, now)
            case UpdateJob(job_id=job_id, spec=spec):
                current = controller.state.jobs.get(job_id)
                if current is not None:
                    spec = access.keep_secrets(current.spec, spec)
                info = controller.update(job_id, spec, now)
            case RollbackJob(job_id=job_id):
                info = controller.rollback(job_id, now)
            case PurgeJob(job_id=job_id):
                info = controller.purge(job_id, now)
            case _:
                raise ApiProblem("invalid", f"{request.TYPE!r} changes nothing", "type")
        return _shown(info.model_dump(mode="json"), caller)

    def _read(self, request: Payload, now: float, caller: Caller) -> Any:
        state = self.controller.state
        match request:
            case GetMasters():
                return self._masters_info(now).model_dump(mode="json")
            case GetStatus():
                status = overview.cluster_status(
                    state, self._masters_info(now), self._dead_letters()
                )
                return status.model_dump(mode="json")
            case GetJob() | GetTask() | ListJobs():
                return self._jobs_shown(request, caller)
            case SetNodeSchedule(node_id=node_id, action=action):  # idempotent: not remembered
                return self.controller.set_schedule(node_id, action, now).model_dump(mode="json")
            case ListTasks(job_id=job_id):
                if job_id is not None and job_id not in state.jobs:
                    raise ApiProblem("not_found", f"no job named {job_id!r}", "job_id")
                return pages.tasks_page(state, request).model_dump(mode="json")
            case ListNodes():
                return pages.nodes_page(state, request).model_dump(mode="json")
        raise ApiProblem("invalid", f"{request.TYPE!r} is not an API request", "type")

    def _jobs_shown(self, request: GetJob | GetTask | ListJobs, caller: Caller) -> Any:
        """A read of jobs, as `caller` may see them (`_shown`)."""
        if isinstance(request, GetJob):
            return _shown(self.controller.job_info(request.job_id).model_dump(mode="json"), caller)
        if isinstance(request, GetTask):
            info = self.controller.task_detail(request.task_id).model_dump(mode="json")
            return _shown(info, caller)
        page = pages.jobs_page(self.controller.state, request).model_dump(mode="json")
        for item in page["items"]:
            _shown(item, caller)
        return page

    def _masters_info(self, now: float) -> MastersInfo:
        return overview.masters_info(self._masters(), now, self._applied())


def _shown(info: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """A JobInfo as JSON, as `caller` may see it: env values hidden unless it is the
    job's owner or an admin (secret_env values are hidden for everyone already)."""
    if not access.may_see_env(caller, info.get("owner", "")):
        access.hide_env(info)
    return info
