"""Answering api.* requests: a request in, a `Reply` out. No I/O, no clock.

The daemon hands over each decoded request with its envelope's `message_id`,
the time and a fresh submission token; this module calls the controller (for
changes) or reads the state (for listings, one page at a time, see
master/pages.py) and returns the reply to publish.

**A repeated request gets the first answer's outcome.** The broker redelivers
a request the master took but had not acknowledged when its connection dropped
or it restarted; the client may never have seen the first reply. So the ids of
the last `remember_requests` mutating requests (submit, cancel, scale) are kept
with their outcome, oldest forgotten first. A request whose `message_id` and
job are both remembered is not carried out again: it gets the same error, or
success with the job as it is now (not `conflict` for its own submit). Reads
are answered afresh. A client that retries on its own must therefore resend
the same envelope (same `message_id`) to be safe; a new `message_id` is a new
request.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from master import pages
from master.controller import Controller
from master.errors import ApiProblem
from schemas.api import (
    ApiError,
    CancelJob,
    GetJob,
    ListJobs,
    ListNodes,
    ListTasks,
    Reply,
    ScaleJob,
    SubmitJob,
)
from schemas.messages import Payload


@dataclass(frozen=True)
class Outcome:
    """What a mutating request came to: its job, and the error if it failed."""

    request_type: str
    job_id: str
    error: ApiError | None = None


class RequestMemory:
    """The outcomes of the last `size` mutating requests, by message id (an LRU)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._outcomes)

    def recall(self, message_id: str, request_type: str, job_id: str) -> Outcome | None:
        """The outcome of an earlier request with this id, type and job, if remembered."""
        outcome = self._outcomes.get(message_id)
        if outcome is None or (outcome.request_type, outcome.job_id) != (request_type, job_id):
            return None  # unknown, or an id reused for another request: a new request
        self._outcomes.move_to_end(message_id)
        return outcome

    def remember(self, message_id: str, outcome: Outcome) -> None:
        if not message_id or self.size == 0:
            return
        self._outcomes[message_id] = outcome
        self._outcomes.move_to_end(message_id)
        while len(self._outcomes) > self.size:
            self._outcomes.popitem(last=False)


def _job_of(request: Payload) -> str | None:
    """The job a mutating request changes; None for reads."""
    match request:
        case SubmitJob(spec=spec):
            return spec.name
        case CancelJob(job_id=job_id) | ScaleJob(job_id=job_id):
            return job_id
    return None


def _failure(problem: ApiProblem) -> Reply:
    error = ApiError(code=problem.code, message=str(problem), field=problem.field)
    return Reply(ok=False, error=error)


class Api:
    """The master's answers. Call `answer` on the thread that owns the controller."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.memory = RequestMemory(controller.settings.remember_requests)

    def answer(self, request: Payload, *, message_id: str, now: float, token: str) -> Reply:
        """The reply to `request`. ApiProblems become error replies; other exceptions
        propagate (a bug: the daemon answers `internal`).

        `token` is the submission token an `api.submit` gets if it is carried out.
        """
        job_id = _job_of(request)
        if job_id is None:
            try:
                return Reply(ok=True, result=self._read(request))
            except ApiProblem as problem:
                return _failure(problem)
        outcome = self.memory.recall(message_id, request.TYPE, job_id)
        if outcome is not None:  # a redelivery: the same outcome, not a second change
            if outcome.error is not None:
                return Reply(ok=False, error=outcome.error)
            return self._current(job_id)
        try:
            result = self._change(request, now, token)
        except ApiProblem as problem:
            reply = _failure(problem)
            self.memory.remember(message_id, Outcome(request.TYPE, job_id, reply.error))
            return reply
        self.memory.remember(message_id, Outcome(request.TYPE, job_id))
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
            case _:
                raise ApiProblem("invalid", f"{request.TYPE!r} changes nothing", "type")
        return info.model_dump(mode="json")

    def _read(self, request: Payload) -> Any:
        state = self.controller.state
        match request:
            case GetJob(job_id=job_id):
                return self.controller.job_info(job_id).model_dump(mode="json")
            case ListJobs():
                return pages.jobs_page(state, request).model_dump(mode="json")
            case ListTasks(job_id=job_id):
                if job_id is not None and job_id not in state.jobs:
                    raise ApiProblem("not_found", f"no job named {job_id!r}", "job_id")
                return pages.tasks_page(state, request).model_dump(mode="json")
            case ListNodes():
                return pages.nodes_page(state, request).model_dump(mode="json")
        raise ApiProblem("invalid", f"{request.TYPE!r} is not an API request", "type")
