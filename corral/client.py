"""The Python SDK: submit and inspect jobs, follow status events and logs.

::

    with Client() as corral:                        # CORRAL_AMQP_URL or the local broker
        job = corral.submit({"name": "hello", "image": "local/busybox",
                             "command": ["echo", "hi"]})
        info = job.wait(timeout=60)                 # batch: until complete/failed/cancelled
        print(info.state, info.exit_codes)
        for line in corral.logs("hello"):           # a task id, or a prefix naming one slot
            print(line, end="")
        for page in corral.iter_tasks(current=True):  # a big cluster: one page at a time
            ...

A `Client` owns one AMQP connection, opened on first use. Like the connection
under it, a client belongs to one thread; give each thread its own. Requests
go to the `corral.api` queue and block up to `timeout` seconds for the active
master's reply; errors are the `corral.errors` classes, never pika's. A
request to a vhost where no master consumes `corral.api` fails at once (see
`corral.session`). Listings follow the master's pages until the last one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from bus import topology
from bus.subscription import Subscription
from bus.tls import Tls
from corral.errors import CorralError, InvalidSpec, NoCluster
from corral.job import Job
from corral.lookup import attempt_before, current_attempts, find_task
from corral.session import Session, least_role
from corral.streams import Event, event_stream, log_stream, retried_as_admin
from corral.urls import join_urls
from schemas.api import (
    CancelJob,
    ClusterStatus,
    GetJob,
    GetLogs,
    GetMasters,
    GetStatus,
    GetTask,
    JobInfo,
    ListJobs,
    ListNodes,
    ListTasks,
    MastersInfo,
    NodeInfo,
    Page,
    PurgeJob,
    RollbackJob,
    ScaleJob,
    SetNodeSchedule,
    SubmitJob,
    SubmitJobs,
    SubmitOutcome,
    SubmitResults,
    TaskInfo,
    UpdateJob,
)
from schemas.envelope import Message, describe_errors
from schemas.job import JobSpec
from schemas.limits import (
    DEFAULT_PAGE_SIZE,
    MAX_BATCH_JOBS,
    MAX_BATCH_REPLICAS,
    MAX_MESSAGE_BYTES,
    MAX_PAGE_SIZE,
)
from schemas.messages import Payload

__all__ = ["DEFAULT_URL", "URL_ENV", "Client", "Event"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
URL_ENV = "CORRAL_AMQP_URL"
ROLE_ENV = "CORRAL_ROLE"
# The CA file, client certificate and key for amqps:// URLs (see bus.tls.Tls).
TLS_ENV = ("CORRAL_TLS_CA", "CORRAL_TLS_CERT", "CORRAL_TLS_KEY")

M = TypeVar("M", bound=BaseModel)

# An api.submit_many request's specs stay under this many bytes of JSON (the envelope
# and its other fields fit in the rest of MAX_MESSAGE_BYTES).
BATCH_BYTES = MAX_MESSAGE_BYTES - 64 * 1024


class Client:
    """A connection to a Corral cluster. See the module docstring.

    `url` defaults to $CORRAL_AMQP_URL, then amqp://guest:guest@127.0.0.1:5672/;
    a malformed one raises InvalidUrl here, before anything connects. For the nodes
    of a broker cluster give several: a list, or one string with the URLs separated by
    commas (`self.url` is that string); each connection tries them in turn.
    Connecting makes 3 attempts with backoff, then raises BrokerUnreachable.
    `page_size` is how many items each listing request asks for. `role` is the role
    requests are sent as (viewer, submitter, admin; default $CORRAL_ROLE, else each
    request goes as the least role that may send it: see `corral.session.Session`).
    `tls`: the CA, certificate and key for amqps:// URLs (default: $CORRAL_TLS_CA,
    $CORRAL_TLS_CERT, $CORRAL_TLS_KEY).
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        timeout: float = 10.0,
        name: str = "client",
        page_size: int = DEFAULT_PAGE_SIZE,
        role: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        if url is not None and not isinstance(url, str):
            url = join_urls(url)
        self.url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        self.timeout = timeout
        self.name = name
        self.page_size = _limit(page_size)
        role = role or os.environ.get(ROLE_ENV) or None
        if role is not None and role not in topology.ROLES:
            raise CorralError(
                f"role {role!r} is not one of {', '.join(topology.ROLES)} (set by {ROLE_ENV})"
            )
        if tls is None:
            tls = Tls(*(os.environ.get(var) or None for var in TLS_ENV))
        self._session = Session(
            self.url, timeout=timeout, name=name, role=role, tls=tls if tls.given else None
        )

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
        self._session.close()

    def check_master(self) -> None:
        """Return if a master takes requests on this vhost, at once, without asking it.

        Raises NoCluster if `corral.api` does not exist (no cluster was ever
        started here: a wrong vhost?), NoMaster if nothing consumes it.
        """
        self._session.check_master()

    # -- requests --

    def submit(self, spec: JobSpec | Mapping[str, Any]) -> Job:
        """Submit a job; returns once the active master has accepted it.

        Raises InvalidSpec for a mapping that does not validate, ApiFailure
        (code "conflict") if a job of that name is still active.
        """
        info = self._call(SubmitJob(spec=_spec(spec)), JobInfo)
        return Job(self, info.job_id, info)

    def submit_many(
        self,
        specs: Sequence[JobSpec | Mapping[str, Any]],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[SubmitOutcome]:
        """Submit many jobs with few requests (api.submit_many: up to MAX_BATCH_JOBS jobs
        and about 4 MiB each); one outcome per spec, in order.

        Every spec is validated first: InvalidSpec, naming the spec's index, before
        anything is sent. A job the master refuses (a `conflict`, say) gets `ok` False
        and the error in its outcome; the others are submitted. `progress(done, total)`
        is called after each request. The master places each request's jobs in one
        scheduling pass: 20,000 one-replica jobs take 20 requests, not 20,000.
        """
        checked: list[JobSpec] = []
        for index, spec in enumerate(specs):
            try:
                checked.append(_spec(spec))
            except InvalidSpec as exc:
                raise InvalidSpec(f"specs[{index}]: {exc}") from None
        outcomes: list[SubmitOutcome] = []
        for batch in _batches(checked):
            outcomes += self._call(SubmitJobs(specs=batch), SubmitResults).results
            if progress is not None:
                progress(len(outcomes), len(checked))
        return outcomes

    def update(self, job_id: str, spec: JobSpec | Mapping[str, Any]) -> JobInfo:
        """Roll the running service `job_id` out to `spec` (whose name must be `job_id`),
        a few slots at a time as `spec.update` says; returns once the master has begun.

        The reply's `version` is the new version and `rollout` tracks it: wait for the
        end with `Job(client, job_id).wait(until=rollout_ended)`. A new task that fails
        or turns unhealthy makes the master roll the job back by itself (the rollout
        ends "rolled-back"). Raises InvalidSpec for a mapping that does not validate,
        ApiFailure "not_found" if there is no such job, and another ApiFailure if the
        master refuses (a batch job, or one that has ended).
        """
        return self._ask(UpdateJob, JobInfo, job_id=job_id, spec=_spec(spec))

    def rollback(self, job_id: str) -> JobInfo:
        """Roll a service back to the version before its current one, as a new version
        with that spec; the reply's `rollout` tracks it (see `update`). ApiFailure if
        there is no such job or nothing to roll back to."""
        return self._ask(RollbackJob, JobInfo, job_id=job_id)

    def purge(self, job_id: str) -> JobInfo:
        """Forget an ended job now (rather than after the master's --ended-job-ttl) and
        remove its containers; returns its last JobInfo. ApiFailure if there is no such
        job, or it has not ended (cancel it first)."""
        return self._ask(PurgeJob, JobInfo, job_id=job_id)

    def job(self, job_id: str) -> JobInfo:
        """One job with its tasks; ApiFailure "not_found" if there is no such job.

        A job with very many tasks comes with only some (`tasks_omitted` says
        how many are left out; `iter_tasks(job_id)` lists them all).
        """
        return self._ask(GetJob, JobInfo, job_id=job_id)

    def jobs(self) -> list[JobInfo]:
        """Every job the master knows, finished ones included, in id order.

        Without their tasks: `task_counts` says how many are in each state.
        """
        return [job for page in self.iter_jobs() for job in page]

    def tasks(self, job_id: str | None = None, *, current: bool = False) -> list[TaskInfo]:
        """The tasks of one job, or of every job: every attempt, or with `current` only
        the newest attempt of each slot."""
        return [task for page in self.iter_tasks(job_id, current=current) for task in page]

    def nodes(self) -> list[NodeInfo]:
        """Every worker node the master knows, in id order."""
        return [node for page in self.iter_nodes() for node in page]

    def iter_jobs(self, *, page_size: int | None = None) -> Iterator[list[JobInfo]]:
        """`jobs()` one page at a time: the next page is requested only when needed."""
        limit = _limit(page_size or self.page_size)
        return self._pages(lambda cursor: ListJobs(limit=limit, cursor=cursor), JobInfo)

    def iter_tasks(
        self,
        job_id: str | None = None,
        *,
        page_size: int | None = None,
        current: bool = False,
    ) -> Iterator[list[TaskInfo]]:
        """`tasks(job_id)` one page at a time, in job, slot and attempt order.

        The master lists every attempt; with `current` the pages keep only each
        slot's newest (filtered here, so pages may be shorter than `page_size`).
        ApiFailure "not_found" (on the first page) if there is no such job.
        """
        limit = _limit(page_size or self.page_size)
        pages = self._pages(
            lambda cursor: ListTasks(job_id=job_id, limit=limit, cursor=cursor), TaskInfo
        )
        return current_attempts(pages) if current else pages

    def iter_nodes(self, *, page_size: int | None = None) -> Iterator[list[NodeInfo]]:
        """`nodes()` one page at a time."""
        limit = _limit(page_size or self.page_size)
        return self._pages(lambda cursor: ListNodes(limit=limit, cursor=cursor), NodeInfo)

    def masters(self) -> MastersInfo:
        """The masters of the group as the active master last heard them, active first.

        A master from before master groups answers ApiFailure "invalid_message".
        """
        return self._call(GetMasters(), MastersInfo)

    def status(self) -> ClusterStatus:
        """The cluster in one small answer: masters, workers and their room, jobs by
        state, pending tasks with their most common reasons, dead letters."""
        return self._call(GetStatus(), ClusterStatus)

    def cancel(self, job_id: str) -> JobInfo:
        """Stop every task of a job; the job ends `cancelled`."""
        return self._ask(CancelJob, JobInfo, job_id=job_id)

    def scale(self, job_id: str, replicas: int) -> JobInfo:
        """Set how many slots a job has; the master starts or stops tasks to match."""
        return self._ask(ScaleJob, JobInfo, job_id=job_id, replicas=replicas)

    def task(self, task_id: str) -> JobInfo:
        """One task by its exact id, as a JobInfo of its job holding only that task,
        the job's events about it, and (in `versions`) the version it runs.
        ApiFailure "not_found" if the master knows no such task (see `find_task`
        for prefixes)."""
        return self._ask(GetTask, JobInfo, task_id=task_id)

    def cordon(self, node_id: str) -> NodeInfo:
        """Give a node no new tasks; those it runs stay. ApiFailure "not_found" if the
        master knows no such node."""
        return self._set_schedule(node_id, "cordon")

    def uncordon(self, node_id: str) -> NodeInfo:
        """Let a cordoned or drained node take new tasks again."""
        return self._set_schedule(node_id, "uncordon")

    def drain(self, node_id: str) -> NodeInfo:
        """Cordon a node and move its service tasks to other nodes, each replacement
        started (and healthy) before the old task stops. Returns at once: the node is
        drained when its NodeInfo.tasks is 0 (`nodes()` shows it)."""
        return self._set_schedule(node_id, "drain")

    def _set_schedule(
        self, node_id: str, action: Literal["cordon", "uncordon", "drain"]
    ) -> NodeInfo:
        return self._ask(SetNodeSchedule, NodeInfo, node_id=node_id, action=action)

    def find_task(self, task_id: str) -> TaskInfo:
        """The task with this id, else the newest attempt of the only slot whose task
        ids start with it (`hello` for the one-slot job `hello`, however often retried).

        ApiFailure "not_found" if none, CorralError if tasks of several slots match.
        Lists only the jobs the id may belong to, never every task of the cluster.
        """
        return find_task(self, task_id)

    def attempt_before(self, task: TaskInfo) -> TaskInfo:
        """The attempt of `task`'s slot just before it; CorralError if there is none
        (its first attempt, or the older ones are forgotten)."""
        return attempt_before(self, task)

    # -- streams --

    def events(self, pattern: str = "#", *, timeout: float | None = None) -> Iterator[Event]:
        """Live status events whose routing key matches `pattern` (AMQP topic syntax).

        The private queue is bound before this returns, so no event published
        afterwards is missed. Iteration ends after `timeout` s without an
        event if `timeout` is given, else only when the caller stops. Keep
        iterating: the connection's heartbeats are served only while waiting
        here, so a caller that stalls for more than ~20 s loses the connection
        (BrokerUnreachable on the next step). Messages that are not valid
        Corral messages are skipped. This does not check for a master: see
        `check_master`.
        """
        subscription = self._subscribe(topology.status_queue((pattern,)))
        return event_stream(self._session, subscription, timeout)

    def logs(
        self,
        task_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        previous: bool = False,
    ) -> Iterator[str]:
        """A task's container output, chunk by chunk, from the worker running it.

        `task_id` is found with `find_task` (a prefix means a slot's newest
        attempt); `previous` reads the attempt before that one instead. The rest
        is `task_logs`.
        """
        task = self.find_task(task_id)
        if previous:
            task = self.attempt_before(task)
        return self.task_logs(task, follow=follow, tail=tail)

    def task_logs(
        self, task: TaskInfo, *, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        """The container output of `task` (as listed), chunk by chunk, from its worker.

        `tail` limits to the last N lines; `follow` keeps streaming until the
        container ends. Raises CorralError if the task has no node, its worker
        is not connected or does not answer within `timeout` s, or refuses
        (with the worker's reason, e.g. its container was removed).
        """
        if task.node_id is None:
            why = f": {task.reason}" if task.reason else ""
            raise CorralError(
                f"task {task.task_id} is {task.state} and was never placed on a node{why};"
                " it has no logs"
            )
        request = GetLogs(task_id=task.task_id, follow=follow, tail=tail)
        if self._session.role is not None:
            return self._logs_as(self._session.role, request, task.node_id, follow)
        # As other requests: the least role first, then as admin if the task is not ours.
        stream = self._logs_as(least_role(request.TYPE), request, task.node_id, follow)
        return retried_as_admin(
            stream, lambda: self._logs_as("admin", request, task.node_id or "", follow)
        )

    def _logs_as(self, role: str, request: GetLogs, node: str, follow: bool) -> Iterator[str]:
        # The master checks that the caller may read them and asks the worker, which
        # streams them to this private queue (through corral.replies).
        subscription = self._subscribe(topology.reply_queue())
        try:
            routed = self._session.send_routed(
                topology.API_EXCHANGE,
                topology.api_key(role, request.TYPE),
                request,
                reply_to=subscription.name,
            )
        except CorralError:
            subscription.close()
            raise
        if not routed:
            subscription.close()
            raise NoCluster(self._session.url)
        return log_stream(self._session, subscription, node, follow)

    # -- internals (Job uses the subscription pair) --

    def _subscribe(self, queue: topology.Queue) -> Subscription:
        return self._session.subscribe(queue)

    def _receive(self, subscription: Subscription, timeout: float) -> tuple[str, Message] | None:
        """The next (routing key, Message) or None after `timeout` s; BrokerUnreachable."""
        return self._session.receive(subscription, timeout)

    def _call(self, payload: Payload, model: type[M]) -> M:
        return _parse(model, self._session.request(payload), payload.TYPE)

    def _ask(self, request: type[Payload], model: type[M], **fields: Any) -> M:
        """`_call` with a request built from `fields`; CorralError, naming the field, if
        they do not make a valid one (a job name with capitals, say), before sending."""
        try:
            payload = request(**fields)
        except ValidationError as exc:
            raise CorralError(f"invalid {request.TYPE} request: {describe_errors(exc)}") from None
        return self._call(payload, model)

    def _pages(self, request: Callable[[str | None], Payload], model: type[M]) -> Iterator[list[M]]:
        """Follow a listing's `next_cursor` from the first page to the last."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            payload = request(cursor)
            page = _page(self._session.request(payload), payload.TYPE)
            yield [_parse(model, item, payload.TYPE) for item in page.items]
            cursor = page.next_cursor
            if cursor is None:
                return
            if cursor in seen:
                raise CorralError(
                    f"the master's answers to {payload.TYPE} go round in circles"
                    f" (cursor {cursor[:40]!r} came back); stopped listing"
                )
            seen.add(cursor)


def _spec(spec: JobSpec | Mapping[str, Any]) -> JobSpec:
    if isinstance(spec, JobSpec):
        return spec
    try:
        return JobSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise InvalidSpec(f"invalid job spec: {describe_errors(exc)}") from None


def _batches(specs: list[JobSpec]) -> Iterator[list[JobSpec]]:
    """`specs` in runs of at most MAX_BATCH_JOBS specs, MAX_BATCH_REPLICAS replicas and
    BATCH_BYTES of JSON."""
    batch: list[JobSpec] = []
    size = replicas = 0
    for spec in specs:
        spec_size = len(spec.model_dump_json()) + 1
        full = (
            len(batch) == MAX_BATCH_JOBS
            or size + spec_size > BATCH_BYTES
            or replicas + spec.replicas > MAX_BATCH_REPLICAS
        )
        if batch and full:
            yield batch
            batch, size, replicas = [], 0, 0
        batch.append(spec)
        size += spec_size
        replicas += spec.replicas
    if batch:
        yield batch


def _limit(page_size: int) -> int:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}, got {page_size}")
    return page_size


def _page(result: Any, request_type: str) -> Page:
    if isinstance(result, list):
        # A master from before pagination answers with every item at once.
        return Page(items=result)
    return _parse(Page, result, request_type)


def _parse(model: type[M], data: Any, request_type: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CorralError(
            f"the master's answer to {request_type} is not a valid {model.__name__}:"
            f" {describe_errors(exc)}"
        ) from None
