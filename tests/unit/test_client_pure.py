"""The SDK without a broker: error texts, URLs, settling rules, and the client's listings,
task lookup, master checks and log stream against fakes of the master and the bus."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from bus.errors import NoRoute, RequestTimeout
from corral import output
from corral.client import Client
from corral.errors import (
    ApiFailure,
    BrokerUnreachable,
    CorralError,
    InvalidUrl,
    NoCluster,
    NoMaster,
    WaitTimeout,
    redact_url,
    scrub,
)
from corral.job import is_settled
from corral.lookup import owner_candidates
from corral.session import Session
from corral.streams import log_stream
from corral.urls import url_problem
from schemas.api import ApiError, JobInfo, ListJobs, ListNodes, ListTasks, Reply, TaskInfo
from schemas.envelope import InvalidMessage, Message, decode, encode
from schemas.job import JobSpec
from schemas.limits import DEFAULT_PAGE_SIZE
from schemas.messages import JobEvent, JobState, LogChunk, Payload, TaskState

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def task(slot: int, attempt: int, state: TaskState, code: int | None = None) -> TaskInfo:
    return TaskInfo(
        task_id=f"j-{slot}-{attempt}", job_id="j", slot=slot, attempt=attempt,
        state=state, exit_code=code, updated_at=NOW,
    )  # fmt: skip


def job(state: JobState, kind: str = "batch", tasks: list[TaskInfo] | None = None) -> JobInfo:
    spec = JobSpec.model_validate({"name": "j", "image": "img", "kind": kind, "replicas": 2})
    return JobInfo(job_id="j", state=state, spec=spec, submitted_at=NOW, tasks=tasks or [])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("amqp://u:p%40ss@h/vh", "amqp://u:***@h/vh"),
        ("amqp://h:5672/", "amqp://h:5672/"),
        ("amqp://user@h/", "amqp://user@h/"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_hides_the_password_anywhere_in_a_text() -> None:
    url = "amqp://admin:hunter22@broker/"
    text = scrub(f"refused credentials in {url!r}; password hunter22", url)
    assert "hunter22" not in text
    assert "amqp://admin:***@broker/" in text


def test_error_sentences_never_show_the_password() -> None:
    url = "amqp://admin:hunter22@broker:5672/"
    no_master = str(NoMaster(url, 10))
    assert no_master == (
        "no master answered on corral.api within 10 s — is `corral master` running"
        " against amqp://admin:***@broker:5672/?"
    )
    unreachable = str(BrokerUnreachable(url, f"ConnectionRefusedError: in {url}"))
    assert "hunter22" not in unreachable
    assert "start it, or pass --amqp / set CORRAL_AMQP_URL" in unreachable


def test_api_failure_keeps_code_and_field_and_reads_as_a_sentence() -> None:
    error = ApiFailure("invalid", "Input should be greater than 0", "spec.cpu")
    assert (error.code, error.field) == ("invalid", "spec.cpu")
    assert str(error) == "spec.cpu: Input should be greater than 0"
    assert str(ApiFailure("not_found", "no job named 'x'", "job_id")) == "no job named 'x'"


def test_wait_timeout_is_a_timeout_error_naming_job_state_and_reason() -> None:
    error = WaitTimeout("web", 5, "pending", "no node has 8 free CPUs")
    assert isinstance(error, TimeoutError)
    assert str(error) == "job web is still pending after 5 s (no node has 8 free CPUs)"


@pytest.mark.parametrize(
    ("state", "kind", "settled"),
    [
        ("pending", "batch", False),
        ("running", "batch", False),
        ("complete", "batch", True),
        ("failed", "batch", True),
        ("cancelled", "batch", True),
        ("pending", "service", False),
        ("running", "service", True),
        ("failed", "service", True),
    ],
)
def test_is_settled(state: JobState, kind: str, settled: bool) -> None:
    assert is_settled(job(state, kind)) is settled


def test_exit_codes_use_the_newest_attempt_of_each_slot() -> None:
    info = job(
        "failed", tasks=[task(0, 0, "exited", 3), task(0, 1, "exited", 0), task(1, 0, "lost")]
    )
    assert output.exit_codes(info) == "slot 0: 0, slot 1: -"


# -- the client's listings, task lookup, master checks and log stream, against fakes --


def spec_of(name: str) -> JobSpec:
    return JobSpec(name=name, image="img")


def job_named(name: str) -> JobInfo:
    return JobInfo(job_id=name, state="running", spec=spec_of(name), submitted_at=NOW)


def task_of(job_id: str, slot: int, attempt: int = 0) -> TaskInfo:
    return TaskInfo(
        task_id=f"{job_id}-1a2b3c-{slot}-{attempt}", job_id=job_id, slot=slot,
        attempt=attempt, state="running", node_id="n1", updated_at=NOW,
    )  # fmt: skip


class FakeMaster:
    """Answers listings from lists, `limit` items a page (cursor: the next index)."""

    def __init__(self, jobs: list[JobInfo], tasks: list[TaskInfo]) -> None:
        self.jobs = sorted(jobs, key=lambda job: job.job_id)
        self.tasks = sorted(tasks, key=lambda task: (task.job_id, task.slot, task.attempt))
        self.requests: list[Payload] = []

    def request(self, payload: Payload) -> Any:
        self.requests.append(payload)
        if isinstance(payload, ListJobs):
            return self._page(self.jobs, payload.limit, payload.cursor)
        assert isinstance(payload, ListTasks)
        if payload.job_id is not None and payload.job_id not in {j.job_id for j in self.jobs}:
            raise ApiFailure("not_found", f"no job named {payload.job_id!r}", "job_id")
        tasks = [t for t in self.tasks if payload.job_id in (None, t.job_id)]
        return self._page(tasks, payload.limit, payload.cursor)

    @staticmethod
    def _page(items: Sequence[BaseModel], limit: int, cursor: str | None) -> dict[str, Any]:
        start = int(cursor or 0)
        end = start + limit
        return {
            "items": [item.model_dump(mode="json") for item in items[start:end]],
            "next_cursor": str(end) if end < len(items) else None,
        }

    def task_requests(self) -> list[tuple[str | None, int]]:
        return [(r.job_id, r.limit) for r in self.requests if isinstance(r, ListTasks)]


def client_with(
    monkeypatch: pytest.MonkeyPatch, session: object, page_size: int = DEFAULT_PAGE_SIZE
) -> Client:
    client = Client("amqp://guest:guest@127.0.0.1:5672/", page_size=page_size)
    monkeypatch.setattr(client, "_session", session)
    return client


def test_listings_follow_every_page_and_iterators_fetch_lazily(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master = FakeMaster([job_named("web")], [task_of("web", slot) for slot in range(7)])
    client = client_with(monkeypatch, master, page_size=3)
    assert [t.slot for t in client.tasks()] == list(range(7))
    assert [r.cursor for r in master.requests if isinstance(r, ListTasks)] == [None, "3", "6"]
    master.requests.clear()
    pages = client.iter_tasks("web")
    assert master.requests == []
    assert len(next(pages)) == 3
    assert len(master.requests) == 1


def test_a_bare_list_is_one_page_and_a_repeated_cursor_stops_the_listing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Answers:
        def __init__(self, result: Any) -> None:
            self.result = result

        def request(self, payload: Payload) -> Any:
            return self.result

    old_master = Answers([job_named("a").model_dump(mode="json")])
    assert [j.job_id for j in client_with(monkeypatch, old_master).jobs()] == ["a"]
    looping = Answers({"items": [], "next_cursor": "again"})
    with pytest.raises(CorralError, match="go round in circles"):
        client_with(monkeypatch, looping).jobs()
    with pytest.raises(CorralError, match="not a valid Page"):
        client_with(monkeypatch, Answers({"items": "nope"})).jobs()


def test_owner_candidates_are_the_job_names_before_each_dash() -> None:
    assert owner_candidates("web-api-1a2b3c-0-0") == ["web", "web-api", "web-api-1a2b3c",
                                                      "web-api-1a2b3c-0"]  # fmt: skip
    assert owner_candidates("web") == []
    assert owner_candidates("-x-Y-z") == []  # not valid job names


def test_find_task_by_id_lists_only_the_jobs_it_may_belong_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks = [task_of("web", slot) for slot in range(50)] + [task_of("db", 0)]
    master = FakeMaster([job_named("web"), job_named("db")], tasks)
    client = client_with(monkeypatch, master, page_size=20)
    assert client.find_task("web-1a2b3c-7-0").slot == 7
    assert all(job_id is not None for job_id, _ in master.task_requests())
    assert not any(isinstance(r, ListJobs) for r in master.requests)


def test_find_task_by_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [job_named(name) for name in ("api", "web", "web2", "worker")]
    tasks = [task_of("api", 0), task_of("web", 0), task_of("web2", 0), task_of("web2", 1)]
    master = FakeMaster(jobs, [*tasks, task_of("worker", 0)])
    client = client_with(monkeypatch, master, page_size=2)
    assert client.find_task("ap").task_id == "api-1a2b3c-0-0"
    # Two tasks per job at most; the job listing stops after the ids starting with "ap".
    assert master.task_requests() == [("api", 2)]
    assert sum(isinstance(r, ListJobs) for r in master.requests) == 1
    assert client.find_task("web-").task_id == "web-1a2b3c-0-0"
    with pytest.raises(CorralError, match=r"'web' matches several tasks \(web-1a2b3c-0-0, web2"):
        client.find_task("web")
    with pytest.raises(ApiFailure, match="no task 'nope'") as missing:
        client.find_task("nope")
    assert missing.value.code == "not_found"


class FakeBus:
    """What a Session uses of the bus: a consumer count, and requests with set outcomes."""

    connected = True

    def __init__(self, consumers: list[int | None], outcome: Exception | Message) -> None:
        self.consumers = consumers
        self.outcome = outcome
        self.requests = 0
        self.keys: list[str] = []  # the routing keys requests were sent under

    def consumer_count(self, queue: str) -> int | None:
        assert queue == "corral.api"
        return self.consumers.pop(0)

    def request(
        self, payload: Payload, *, exchange: str, routing_key: str, timeout: float
    ) -> Message:
        self.requests += 1
        self.keys.append(routing_key)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def session_with(bus: FakeBus) -> Session:
    session = Session("amqp://guest:secret@h:5672/", timeout=10, name="t")
    session._bus = bus  # type: ignore[assignment]
    return session


def reply(**fields: Any) -> Message:
    return decode(encode(Reply(**fields)))


@pytest.mark.parametrize(
    ("consumers", "outcome", "error", "text"),
    [
        ([None], None, NoCluster, "no Corral cluster runs on amqp://guest:***@h:5672/"),
        ([0], None, NoMaster, "no master is running: nothing takes requests from corral.api"),
        ([1], NoRoute("gone"), NoCluster, "the queue corral.api does not exist"),
        ([1, 0], RequestTimeout("late"), NoMaster, "no master is running"),
        ([1, None], RequestTimeout("late"), NoCluster, "no Corral cluster"),
        ([1, 1], RequestTimeout("late"), NoMaster, "no master answered on corral.api within 10"),
        ([1], InvalidMessage("too deep"), CorralError, "unreadable answer: too deep"),
    ],
)
def test_requests_fail_at_once_without_a_master(
    consumers: list[int | None], outcome: Exception | None, error: type[Exception], text: str
) -> None:
    bus = FakeBus(consumers, outcome or reply(ok=True, result=1))
    with pytest.raises(error, match=re.escape(text)) as raised:
        session_with(bus).request(ListNodes())
    assert bus.requests == (0 if outcome is None else 1)
    assert "secret" not in str(raised.value)


def test_the_master_is_checked_once_then_again_after_a_timeout() -> None:
    bus = FakeBus([1], reply(ok=True, result=[]))
    session = session_with(bus)
    assert session.request(ListNodes()) == []
    assert session.request(ListNodes()) == []
    assert bus.consumers == [] and bus.requests == 2
    bus.outcome = reply(ok=False, error=ApiError(code="not_found", message="no job named 'x'"))
    with pytest.raises(ApiFailure, match="no job named 'x'"):
        session.request(ListNodes())


class Replies:
    """A session's receive, fed from a list: what a worker sent to the reply queue."""

    timeout = 1.0

    def __init__(self, *payloads: Payload) -> None:
        self.messages = [decode(encode(payload, sender="w1")) for payload in payloads]
        self.closed = False

    def receive(self, subscription: object, timeout: float) -> tuple[str, Message] | None:
        return ("q", self.messages.pop(0)) if self.messages else None

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (
            Reply(ok=False, error=ApiError(code="invalid_message", message="payload.tail: bad")),
            "logs of a task on w1: payload.tail: bad",
        ),
        (LogChunk(task_id="t", error="no container on this node"), "worker w1: no container"),
        (JobEvent(job_id="j", state="failed"), "unexpected answer: a 'job.status' message"),
    ],
)
def test_a_workers_refusal_is_a_corral_error_in_its_words(payload: Payload, text: str) -> None:
    replies = Replies(LogChunk(task_id="t", data="first\n"), payload)
    stream = log_stream(replies, replies, "w1", follow=False)  # type: ignore[arg-type]
    assert next(stream) == "first\n"
    with pytest.raises(CorralError, match=re.escape(text)):
        next(stream)
    assert replies.closed


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("localhost:5672", "it does not start with amqp:// or amqps://"),
        ("127.0.0.1", "it does not start with amqp://"),
        ("amqp://h:notaport/", "the port 'notaport' is not a number"),
        ("amqp://u:pw@h:70000/", "the port 70000 is not between 1 and 65535"),
        ("amqp://", "it names no host"),
        ("amqp://h/a/b", "the vhost holds a '/': write it as %2F"),
        ("amqp://h/\n", "control character"),
        ("amqp://h/?nosuchoption=1", "its ?options are not valid"),
        ("amqp://guest:guest@127.0.0.1:5672/", None),
        ("amqps://u:p@[::1]:5671/%2F", None),
        ("amqp://h/?heartbeat=30", None),
    ],
)
def test_url_problem(url: str, problem: str | None) -> None:
    found = url_problem(url)
    assert found == problem if problem is None else problem in (found or "")


def test_a_malformed_url_is_refused_by_the_client_without_its_password() -> None:
    with pytest.raises(InvalidUrl) as raised:
        Client("amqp://admin:hunter22@broker:port/")
    text = str(raised.value)
    assert "hunter22" not in text
    assert text == (
        "invalid AMQP URL 'amqp://admin:***@broker:port/' (the port 'port' is not a number):"
        " expected amqp://USER:PASSWORD@HOST:PORT/VHOST"
    )
    assert redact_url("admin:hunter22@broker") == "admin:***@broker"
    assert redact_url("amqp://u:pa/ss@h/") == "amqp://u:***@h/"
