"""Who may do what to which job, and what each caller sees of a job's env and secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from master import events as ev
from master import snapshot
from master.access import REDACTED, Caller, check, keep_secrets, may_see_env
from master.api import Api
from master.controller import Controller, StartCommand
from master.errors import ApiProblem
from master.settings import MasterSettings
from schemas.api import (
    CancelJob,
    GetJob,
    GetLogs,
    GetMasters,
    GetStatus,
    GetTask,
    ListJobs,
    ListNodes,
    ListTasks,
    PurgeJob,
    Reply,
    RollbackJob,
    ScaleJob,
    SetNodeSchedule,
    SubmitJob,
    UpdateJob,
)
from schemas.messages import Payload, TaskStatus
from tests.unit.factories import ADMIN, heartbeat, job_spec

ALICE = Caller("alice", "submitter")
BOB = Caller("bob", "submitter")
VERA = Caller("vera", "viewer")
SECRET = "s3cr3t-value"
ENV = {"LOG_LEVEL": "debug"}


def spec(name: str = "web", **fields: Any) -> Any:
    """A service with an env variable and a secret one (`fields` may change them)."""
    return job_spec(
        name, **{"kind": "service", "env": ENV, "secret_env": {"TOKEN": SECRET}, **fields}
    )


class Master:
    """An Api over a controller with one node, whose replies tests read."""

    def __init__(self) -> None:
        self.controller = Controller(MasterSettings(amqp_url="amqp://x"), epoch=1)
        self.journal: list[ev.Event] = []
        self.controller.journal = self.journal.append
        self.controller.heartbeat(heartbeat("n1"), 0.0)
        self.api = Api(self.controller)
        self.now = 1.0
        self.sent = 0

    def ask(self, request: Payload, caller: Caller, message_id: str = "") -> Reply:
        self.now += 1.0
        self.sent += 1
        return self.api.answer(
            request,
            message_id=message_id or f"m{self.sent}",
            now=self.now,
            token=f"t{self.sent:05d}",
            caller=caller,
        )

    def submit(self, caller: Caller, name: str = "web", **fields: Any) -> Reply:
        reply = self.ask(SubmitJob(spec=spec(name, **fields)), caller)
        assert reply.ok, reply.error
        return reply

    def task_id(self, job_id: str = "web") -> str:
        return self.controller.state.jobs[job_id].slots[0][-1]


@pytest.fixture
def master() -> Master:
    made = Master()
    made.submit(ALICE)
    return made


def forbidden(reply: Reply) -> str:
    assert reply.error is not None and reply.error.code == "forbidden", reply
    return reply.error.message


def not_forbidden(reply: Reply) -> None:
    assert reply.error is None or reply.error.code != "forbidden", reply.error


# -- what each role may do --

CHANGES: list[tuple[str, Callable[[], Payload], str]] = [
    ("cancel", lambda: CancelJob(job_id="web"), "job_id"),
    ("scale", lambda: ScaleJob(job_id="web", replicas=2), "job_id"),
    ("update", lambda: UpdateJob(job_id="web", spec=spec(image="busybox:2")), "job_id"),
    ("roll back", lambda: RollbackJob(job_id="web"), "job_id"),
    ("purge", lambda: PurgeJob(job_id="web"), "job_id"),
    ("submit", lambda: SubmitJob(spec=spec()), "spec.name"),
]


@pytest.mark.parametrize(("verb", "request_of", "field"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_submitter_may_not_change_another_submitters_job(
    master: Master, verb: str, request_of: Callable[[], Payload], field: str
) -> None:
    reply = master.ask(request_of(), BOB)
    hint = " or submit yours under another name" if verb == "submit" else ""
    assert forbidden(reply) == (
        f"submitter bob may not {verb} job web: it belongs to alice; "
        f"ask its owner or an admin{hint}"
    )
    assert reply.error is not None and reply.error.field == field
    job = master.controller.state.jobs["web"]
    assert (job.owner, job.version, job.replicas, job.cancelled) == ("alice", 1, 1, False)


@pytest.mark.parametrize(("verb", "request_of", "field"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_viewer_may_change_no_job(
    master: Master, verb: str, request_of: Callable[[], Payload], field: str
) -> None:
    assert forbidden(master.ask(request_of(), VERA)) == (
        f"viewer vera may not {verb} job web: a viewer only reads the cluster's status; "
        "ask an admin for the submitter role"
    )


@pytest.mark.parametrize("caller", [ALICE, ADMIN], ids=["owner", "admin"])
@pytest.mark.parametrize(("verb", "request_of", "field"), CHANGES, ids=[c[0] for c in CHANGES])
def test_the_owner_and_admins_may_change_a_job(
    master: Master, caller: Caller, verb: str, request_of: Callable[[], Payload], field: str
) -> None:
    not_forbidden(master.ask(request_of(), caller))  # (conflict for some: not access)


def test_the_owner_and_an_admin_carry_changes_out(master: Master) -> None:
    assert master.ask(ScaleJob(job_id="web", replicas=2), ALICE).ok
    assert master.ask(CancelJob(job_id="web"), ADMIN).ok
    assert master.ask(PurgeJob(job_id="web"), ALICE).ok
    assert "web" not in master.controller.state.jobs


def test_a_submit_records_its_caller_as_owner(master: Master) -> None:
    reply = master.submit(BOB, "batch")
    assert reply.result["owner"] == "bob"
    assert master.controller.state.jobs["batch"].owner == "bob"
    submitted = [e for e in master.journal if isinstance(e, ev.JobSubmitted)]
    assert [(e.job_id, e.owner) for e in submitted] == [("web", "alice"), ("batch", "bob")]


def test_a_submitter_may_not_reuse_the_name_of_another_ones_ended_job(master: Master) -> None:
    assert master.ask(CancelJob(job_id="web"), ALICE).ok
    forbidden(master.ask(SubmitJob(spec=spec()), BOB))
    again = master.ask(SubmitJob(spec=spec()), ALICE)
    assert again.ok and again.result["owner"] == "alice"
    by_admin = master.ask(CancelJob(job_id="web"), ADMIN)
    assert by_admin.ok
    assert master.ask(SubmitJob(spec=spec()), ADMIN).result["owner"] == "corral"


def test_a_job_without_an_owner_is_only_an_admins_to_change(master: Master) -> None:
    master.controller.submit(spec("old"), master.now)  # as replayed from an older journal
    assert master.controller.state.jobs["old"].owner == ""
    assert forbidden(master.ask(ScaleJob(job_id="old", replicas=3), ALICE)) == (
        "submitter alice may not scale job old: it belongs to no one (it was submitted "
        "before jobs had owners); ask its owner or an admin"
    )
    assert master.ask(ScaleJob(job_id="old", replicas=3), ADMIN).ok


def test_a_request_about_a_job_that_does_not_exist_is_not_found_not_forbidden(
    master: Master,
) -> None:
    reply = master.ask(CancelJob(job_id="nope"), BOB)
    assert reply.error is not None and reply.error.code == "not_found"


READS: list[Callable[[], Payload]] = [
    GetStatus,
    GetMasters,
    ListJobs,
    lambda: ListTasks(job_id="web"),
    ListNodes,
    lambda: GetJob(job_id="web"),
]


@pytest.mark.parametrize("caller", [VERA, BOB, ALICE, ADMIN], ids=str)
@pytest.mark.parametrize("request_of", READS, ids=lambda r: r().TYPE)
def test_every_role_may_read(
    master: Master, caller: Caller, request_of: Callable[[], Payload]
) -> None:
    assert master.ask(request_of(), caller).ok


@pytest.mark.parametrize("caller", [VERA, BOB, ALICE, ADMIN], ids=str)
def test_every_role_may_read_a_task(master: Master, caller: Caller) -> None:
    assert master.ask(GetTask(task_id=master.task_id()), caller).ok


@pytest.mark.parametrize("action", ["cordon", "uncordon", "drain"])
@pytest.mark.parametrize("caller", [VERA, ALICE], ids=str)
def test_only_admins_set_a_nodes_schedule(master: Master, caller: Caller, action: Any) -> None:
    reply = master.ask(SetNodeSchedule(node_id="n1", action=action), caller)
    assert forbidden(reply) == (
        f"{caller} may not {action} node n1: only admins cordon, uncordon and drain nodes; "
        "ask an admin"
    )
    assert not master.controller.state.nodes["n1"].cordoned
    assert master.ask(SetNodeSchedule(node_id="n1", action=action), ADMIN).ok


def test_a_redelivery_is_checked_again_and_a_refusal_is_not_remembered(master: Master) -> None:
    first = master.ask(SubmitJob(spec=spec("api")), ALICE, message_id="same")
    again = master.ask(SubmitJob(spec=spec("api")), ALICE, message_id="same")
    assert (first.ok, again.ok) == (True, True)
    assert again.result["tasks"] == first.result["tasks"]  # the same outcome, not a conflict
    # Another caller reusing that message id learns nothing and changes nothing...
    forbidden(master.ask(SubmitJob(spec=spec("api")), BOB, message_id="same"))
    # ...not even the outcome remembered for the first caller.
    assert master.ask(SubmitJob(spec=spec("api")), ALICE, message_id="same").ok


def test_check_allows_reads_to_all_and_everything_to_admins() -> None:
    for caller in (VERA, BOB, ADMIN):
        check(caller, GetStatus(), None)
    check(ADMIN, SetNodeSchedule(node_id="n1", action="drain"), None)
    with pytest.raises(ApiProblem) as raised:
        check(BOB, SetNodeSchedule(node_id="n1", action="drain"), None)
    assert raised.value.code == "forbidden" and raised.value.field == "action"


# -- logs --


def test_the_owner_and_admins_may_read_a_tasks_logs(master: Master) -> None:
    task_id = master.task_id()
    request = GetLogs(task_id=task_id, follow=True)
    assert master.api.logs_target(request, ALICE) == ("n1", task_id)
    assert master.api.logs_target(request, ADMIN) == ("n1", task_id)


@pytest.mark.parametrize(
    ("caller", "message"),
    [
        (BOB, "submitter bob may not read the logs of job web: it belongs to alice; "),
        (VERA, "viewer vera may not read the logs of job web: a viewer only reads "),
    ],
    ids=["other submitter", "viewer"],
)
def test_others_may_not_read_a_tasks_logs(master: Master, caller: Caller, message: str) -> None:
    with pytest.raises(ApiProblem) as raised:
        master.api.logs_target(GetLogs(task_id=master.task_id()), caller)
    assert raised.value.code == "forbidden" and str(raised.value).startswith(message)
    assert raised.value.field == "task_id"


def test_logs_of_an_unknown_or_unplaced_task_are_refused(master: Master) -> None:
    with pytest.raises(ApiProblem) as raised:
        master.api.logs_target(GetLogs(task_id="nope-0-0"), ALICE)
    assert (raised.value.code, raised.value.field) == ("not_found", "task_id")
    master.submit(ALICE, "huge", cpu=64.0)  # no node has room: it stays pending
    with pytest.raises(ApiProblem) as raised:
        master.api.logs_target(GetLogs(task_id=master.task_id("huge")), ALICE)
    assert raised.value.code == "conflict"
    assert "was never placed on a node" in str(raised.value)
    assert "it has no container, so no logs" in str(raised.value)


def test_api_logs_gets_no_api_reply(master: Master) -> None:
    reply = master.ask(GetLogs(task_id=master.task_id()), ALICE)
    assert reply.error is not None and reply.error.code == "invalid"


# -- what each caller sees --


def specs_in(info: dict[str, Any]) -> list[dict[str, Any]]:
    return [info["spec"], *(version["spec"] for version in info.get("versions", []))]


@pytest.mark.parametrize(
    ("caller", "env_shown"),
    [(ALICE, True), (ADMIN, True), (BOB, False), (VERA, False)],
    ids=["owner", "admin", "other submitter", "viewer"],
)
def test_env_is_shown_to_the_owner_and_admins_and_secrets_to_no_one(
    master: Master, caller: Caller, env_shown: bool
) -> None:
    env = ENV if env_shown else dict.fromkeys(ENV, REDACTED)
    replies = [
        master.ask(GetJob(job_id="web"), caller).result,
        master.ask(GetTask(task_id=master.task_id()), caller).result,
        *master.ask(ListJobs(), caller).result["items"],
    ]
    for info in replies:
        assert info["owner"] == "alice"
        for shown in specs_in(info):
            assert shown["env"] == env
            assert shown["secret_env"] == {"TOKEN": REDACTED}
        assert SECRET not in json.dumps(info)


def test_replies_to_changes_show_no_secret(master: Master) -> None:
    replies = [
        master.ask(ScaleJob(job_id="web", replicas=2), ALICE),
        master.ask(UpdateJob(job_id="web", spec=spec(image="busybox:2")), ADMIN),
        master.ask(RollbackJob(job_id="web"), ALICE),
        master.ask(CancelJob(job_id="web"), ALICE),
        master.ask(PurgeJob(job_id="web"), ALICE),
    ]
    for reply in replies:
        assert reply.ok, reply.error
        assert reply.result["spec"]["secret_env"] == {"TOKEN": REDACTED}
        assert reply.result["spec"]["env"] == ENV  # the owner's and an admin's replies
        assert SECRET not in json.dumps(reply.result)


def test_may_see_env() -> None:
    assert may_see_env(ALICE, "alice") and may_see_env(ADMIN, "alice") and may_see_env(ADMIN, "")
    assert not may_see_env(BOB, "alice") and not may_see_env(ALICE, "")
    assert not may_see_env(Caller("alice", "viewer"), "alice")  # a viewer reads status only


# -- secrets in updates --


def test_an_update_that_sends_the_redacted_secret_back_keeps_it(master: Master) -> None:
    shown = master.ask(GetJob(job_id="web"), ALICE).result["spec"]
    changed = spec(image="busybox:2", secret_env=shown["secret_env"])
    assert changed.secret_env == {"TOKEN": REDACTED}
    reply = master.ask(UpdateJob(job_id="web", spec=changed), ALICE)
    assert reply.ok and reply.result["version"] == 2
    job = master.controller.state.jobs["web"]
    assert job.spec.secret_env == {"TOKEN": SECRET} and job.spec.image == "busybox:2"
    updated = [e for e in master.journal if isinstance(e, ev.JobUpdated)]
    assert updated[-1].spec.secret_env == {"TOKEN": SECRET}


def test_an_update_of_nothing_but_redacted_secrets_is_no_change(master: Master) -> None:
    same = spec(secret_env={"TOKEN": REDACTED})
    reply = master.ask(UpdateJob(job_id="web", spec=same), ALICE)
    assert reply.ok and reply.result["version"] == 1


def test_an_update_may_set_a_new_secret_value(master: Master) -> None:
    changed = spec(secret_env={"TOKEN": "new-value", "OTHER": "x"})
    assert master.ask(UpdateJob(job_id="web", spec=changed), ALICE).ok
    job = master.controller.state.jobs["web"]
    assert job.spec.secret_env == {"TOKEN": "new-value", "OTHER": "x"}


def test_a_redacted_value_for_a_secret_the_job_lacks_is_refused(master: Master) -> None:
    changed = spec(secret_env={"TOKEN": REDACTED, "NEW": REDACTED})
    reply = master.ask(UpdateJob(job_id="web", spec=changed), ALICE)
    assert reply.error is not None and reply.error.code == "invalid"
    assert reply.error.field == "spec.secret_env"
    assert reply.error.message == (
        "secret_env: 'NEW' is '***', which keeps a secret's current value, but job web "
        "has no secret 'NEW': give its value"
    )


def test_keeping_secrets_still_bounds_the_spec() -> None:
    big = "x" * 60_000
    current = job_spec(secret_env={f"S{i}": big for i in range(4)})
    given = job_spec(secret_env={f"S{i}": REDACTED for i in range(4)}, env={"E": big})
    with pytest.raises(ApiProblem) as raised:
        keep_secrets(current, given)
    assert raised.value.code == "invalid" and "a job spec may have" in str(raised.value)
    assert big not in str(raised.value)


# -- where secrets never go, and where they must --


def test_secrets_never_reach_the_masters_log_or_its_notifications(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    master = Master()
    master.submit(ALICE)
    master.submit(ALICE, "batch", restart={"condition": "never"})
    master.ask(UpdateJob(job_id="web", spec=spec(image="busybox:2")), ALICE)
    batch_task = master.task_id("batch")
    failed = TaskStatus(
        task_id=batch_task, job_id="batch", node_id="n1", state="failed", reason="boom"
    )
    master.controller.task_status(failed, master.now)
    master.ask(CancelJob(job_id="web"), ALICE)
    master.controller.tick(master.now + 100)
    commands, notifications = master.controller.drain()
    assert notifications and all(SECRET not in n.model_dump_json() for n in notifications)
    assert all(SECRET not in repr(command) for command in commands)
    batch = master.controller.state.jobs["batch"]
    assert master.controller.state.job_state(batch)[0] == "failed"
    assert SECRET not in caplog.text
    # The journal keeps the real values: the worker needs them (only the master reads it).
    submitted = [e for e in master.journal if isinstance(e, ev.JobSubmitted)]
    assert all(e.spec.secret_env == {"TOKEN": SECRET} for e in submitted)


def test_the_worker_is_sent_the_real_secret(master: Master) -> None:
    commands, _ = master.controller.drain()
    starts = [c for c in commands if isinstance(c, StartCommand)]
    assert starts
    task = master.controller.state.tasks[starts[0].task_id]
    job = master.controller.state.jobs[task.job_id]
    assert job.spec_of(task).secret_env == {"TOKEN": SECRET}  # what outputs.send puts in


def test_a_snapshot_keeps_the_owner_and_loads_one_from_before_owners(master: Master) -> None:
    data = snapshot.dump(master.controller.state)
    loaded = snapshot.load(data)
    assert loaded.jobs["web"].owner == "alice"
    assert loaded.differences(master.controller.state) == []
    document = json.loads(data)
    for job in document["jobs"]:
        del job["owner"]
    older = snapshot.load(json.dumps(document).encode())
    assert older.jobs["web"].owner == ""
