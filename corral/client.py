"""The Python SDK: submit and inspect jobs, follow status events and logs.

::

    with Client() as corral:                        # CORRAL_AMQP_URL or the local broker
        job = corral.submit({"name": "hello", "image": "local/busybox",
                             "command": ["echo", "hi"]})
        info = job.wait(timeout=60)                 # batch: until complete/failed/cancelled
        print(info.state, info.exit_codes)
        for line in corral.logs(info.tasks[0].task_id):
            print(line, end="")

A `Client` owns one AMQP connection, opened on first use. Like the connection
under it, a client belongs to one thread; give each thread its own. Requests
go to the `corral.api` queue and block up to `timeout` seconds for the active
master's reply; errors are the `corral.errors` classes, never pika's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bus import topology
from bus.connection import Bus, Subscription
from bus.errors import ConnectionLost, RequestTimeout, TopologyError
from corral.errors import ApiFailure, BrokerUnreachable, CorralError, InvalidSpec, NoMaster
from corral.job import Job
from schemas.api import (
    CancelJob,
    GetJob,
    JobInfo,
    ListJobs,
    ListNodes,
    ListTasks,
    NodeInfo,
    Reply,
    ScaleJob,
    SubmitJob,
    TaskInfo,
)
from schemas.envelope import InvalidMessage, describe_errors
from schemas.job import JobSpec
from schemas.messages import LogChunk, LogsRequest, Payload

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
URL_ENV = "CORRAL_AMQP_URL"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Event:
    """One status event: `payload` is a TaskStatus, JobEvent or NodeEvent."""

    routing_key: str
    payload: Payload
    sent_at: datetime


class Client:
    """A connection to a Corral cluster. See the module docstring.

    `url` defaults to $CORRAL_AMQP_URL, then amqp://guest:guest@127.0.0.1:5672/.
    Connecting makes 3 attempts with backoff, then raises BrokerUnreachable.
    """

    def __init__(self, url: str | None = None, *, timeout: float = 10.0, name: str = "client"):
        self.url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        self.timeout = timeout
        self.name = name
        self._bus: Bus | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.close()

    # -- requests --

    def submit(self, spec: JobSpec | Mapping[str, Any]) -> Job:
        """Submit a job; returns once the active master has accepted it.

        Raises InvalidSpec for a mapping that does not validate, ApiFailure
        (code "conflict") if a job of that name is still active.
        """
        if not isinstance(spec, JobSpec):
            try:
                spec = JobSpec.model_validate(dict(spec))
            except ValidationError as exc:
                raise InvalidSpec(f"invalid job spec: {describe_errors(exc)}") from None
        info = self._call(SubmitJob(spec=spec), JobInfo)
        return Job(self, info.job_id, info)

    def job(self, job_id: str) -> JobInfo:
        """One job with its tasks; ApiFailure "not_found" if there is no such job."""
        return self._call(GetJob(job_id=job_id), JobInfo)

    def jobs(self) -> list[JobInfo]:
        """Every job the master knows, finished ones included, with their tasks."""
        return self._call_list(ListJobs(), JobInfo)

    def tasks(self, job_id: str | None = None) -> list[TaskInfo]:
        """The tasks of one job, or of every job."""
        return self._call_list(ListTasks(job_id=job_id), TaskInfo)

    def nodes(self) -> list[NodeInfo]:
        return self._call_list(ListNodes(), NodeInfo)

    def cancel(self, job_id: str) -> JobInfo:
        """Stop every task of a job; the job ends `cancelled`."""
        return self._call(CancelJob(job_id=job_id), JobInfo)

    def scale(self, job_id: str, replicas: int) -> JobInfo:
        return self._call(ScaleJob(job_id=job_id, replicas=replicas), JobInfo)

    # -- streams --

    def events(self, pattern: str = "#", *, timeout: float | None = None) -> Iterator[Event]:
        """Live status events whose routing key matches `pattern` (AMQP topic syntax).

        The private queue is bound before this returns, so no event published
        afterwards is missed. Iteration ends after `timeout` s without an
        event if `timeout` is given, else only when the caller stops. Keep
        iterating: the connection's heartbeats are served only while waiting
        here, so a caller that stalls for more than ~20 s loses the connection
        (BrokerUnreachable on the next step).
        """
        subscription = self._subscribe(topology.status_queue((pattern,)))
        return self._event_stream(subscription, timeout)

    def logs(self, task_id: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """A task's container output, chunk by chunk, from the worker running it.

        `tail` limits to the last N lines; `follow` keeps streaming until the
        container ends. Raises CorralError if the task has no node, or its
        worker does not answer within `timeout` s.
        """
        task = self._find_task(task_id)
        if task.node_id is None:
            why = f": {task.reason}" if task.reason else ""
            raise CorralError(
                f"task {task.task_id} is {task.state} and was never placed on a node{why};"
                " it has no logs"
            )
        node = task.node_id
        bus = self._connected()
        subscription = self._subscribe(topology.reply_queue())
        unroutable: list[bool] = []
        request = LogsRequest(task_id=task.task_id, follow=follow, tail=tail)
        try:
            bus.publish(
                topology.RPC_EXCHANGE,
                node,
                request,
                reply_to=subscription.name,
                mandatory=True,
                transient=True,
                on_returned=lambda: unroutable.append(True),
            )
            confirmed = bus.flush(self.timeout)
        except ConnectionLost as exc:
            subscription.close()
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None
        if unroutable or not confirmed:
            subscription.close()
            raise CorralError(
                f"worker {node} (where task {task.task_id} runs) is not connected: nothing"
                " takes its log requests; is `corral worker` running there?"
            )
        return self._log_stream(subscription, node, follow)

    # -- internals --

    def _connected(self) -> Bus:
        if self._bus is None:
            self._bus = Bus(self.url, name=self.name)
        if not self._bus.connected:
            try:
                self._bus.connect(attempts=3)
            except ConnectionLost as exc:
                refused = "AccessDenied" in str(exc)  # e.g. the vhost does not exist
                raise BrokerUnreachable(self.url, str(exc), refused=refused) from None
            except TopologyError as exc:
                raise BrokerUnreachable(self.url, str(exc), refused=True) from None
        return self._bus

    def _request(self, payload: Payload) -> Any:
        bus = self._connected()
        try:
            message = bus.request(payload, timeout=self.timeout)
        except RequestTimeout:
            raise NoMaster(self.url, self.timeout) from None
        except ConnectionLost as exc:
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None
        try:
            reply = message.expect(Reply)
        except InvalidMessage as exc:
            raise CorralError(f"the master sent an unexpected answer: {exc}") from None
        if not reply.ok:
            error = reply.error
            if error is None:
                raise ApiFailure("internal", "the master refused the request without a reason")
            raise ApiFailure(error.code, error.message, error.field)
        return reply.result

    def _call(self, payload: Payload, model: type[M]) -> M:
        return _parse(model, self._request(payload), payload.TYPE)

    def _call_list(self, payload: Payload, model: type[M]) -> list[M]:
        result = self._request(payload)
        if not isinstance(result, list):
            raise CorralError(f"the master answered {payload.TYPE} with {result!r}, not a list")
        return [_parse(model, item, payload.TYPE) for item in result]

    def _subscribe(self, queue: topology.Queue) -> Subscription:
        bus = self._connected()
        try:
            return bus.subscribe(queue)
        except ConnectionLost as exc:
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None

    def _receive(self, subscription: Subscription, timeout: float) -> tuple[str, Any] | None:
        """The next (routing key, Message) or None after `timeout` s; BrokerUnreachable."""
        try:
            return subscription.get(timeout)
        except ConnectionLost as exc:
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None

    def _event_stream(self, subscription: Subscription, timeout: float | None) -> Iterator[Event]:
        try:
            while True:
                got = self._receive(subscription, 1.0 if timeout is None else timeout)
                if got is None:
                    if timeout is not None:
                        return
                    continue
                key, message = got
                yield Event(key, message.payload, message.envelope.sent_at)
        finally:
            subscription.close()

    def _log_stream(self, subscription: Subscription, node: str, follow: bool) -> Iterator[str]:
        # The first chunk must come within `timeout`; while following, a quiet
        # container may then say nothing for as long as it likes.
        first = True
        try:
            while True:
                got = self._receive(subscription, self.timeout)
                if got is None:
                    if first or not follow:
                        raise CorralError(
                            f"worker {node} did not send logs within {self.timeout:g} s"
                        )
                    continue
                first = False
                try:
                    chunk = got[1].expect(LogChunk)
                except InvalidMessage as exc:
                    raise CorralError(f"worker {node} sent an unexpected answer: {exc}") from None
                if chunk.error:
                    raise CorralError(f"worker {node}: {chunk.error}")
                if chunk.data:
                    yield chunk.data
                if chunk.end:
                    return
        finally:
            subscription.close()

    def _find_task(self, task_id: str) -> TaskInfo:
        """The task with this id, or the only one whose id starts with it."""
        tasks = self.tasks()
        exact = [task for task in tasks if task.task_id == task_id]
        matches = exact or [task for task in tasks if task.task_id.startswith(task_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ApiFailure("not_found", f"no task {task_id!r}; `corral ps` lists the tasks")
        names = ", ".join(sorted(task.task_id for task in matches)[:5])
        raise CorralError(f"{task_id!r} matches several tasks ({names}); give more of the id")


def _parse(model: type[M], data: Any, request_type: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CorralError(
            f"the master's answer to {request_type} is not a valid {model.__name__}:"
            f" {describe_errors(exc)}"
        ) from None
