"""Who asks, what they may do, and what they may see. Pure functions: no I/O, no clock.

The caller of an API request comes from the broker: it checks the AMQP `user_id`
of every message against the connection's own user, and lets each client user
publish on `corral.requests` only under the roles it was given (topic
permissions on the routing key `<role>.<type>`, see `bus.access`). So the master
reads the caller from the delivery and trusts it.

**What each role may do** (`check`):

- a *viewer* reads: api.status, api.masters, api.jobs, api.tasks, api.nodes,
  api.job and api.task (env values shown as "***", see below); nothing else;
- a *submitter* also submits jobs, and cancels, scales, updates, rolls back,
  purges and reads the logs of the jobs it owns (`Job.owner` is its user). A
  submit of a name whose job (running or ended) belongs to someone else is
  refused too: in this code base it would replace that job (an ended one) or,
  from the CLI, update it (a running service);
- an *admin* does everything, cordoning, uncordoning and draining nodes
  (api.node) included. The master's own trusted user is an admin.

A job with no owner (`""`: submitted before jobs had owners, read from an older
journal or snapshot) belongs to no submitter: only admins may change it.

**What each caller may see** (`redacted`, `hide_env`): every spec the master
shows (in replies, listings, versions) has each `secret_env` value replaced by
REDACTED, for everyone, admins and the owner included; the keys stay visible.
`env` values are shown to the job's owner and to admins only (`may_see_env`);
other callers see REDACTED for them too. The journal keeps the real values
(the worker needs them): only the master's user may read it.

**Updates and redacted values** (`keep_secrets`): a client that read a job's
spec sees its secrets as "***" and may send that spec back in an api.update
(`corral update` does). So a `secret_env` value of exactly "***" in an update
means "keep the current value of this variable"; naming a variable the job has
no secret of with "***" is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from master.errors import ApiProblem
from master.model import Job
from schemas.api import (
    CancelJob,
    GetLogs,
    PurgeJob,
    RollbackJob,
    ScaleJob,
    SetNodeSchedule,
    SubmitJob,
    UpdateJob,
)
from schemas.envelope import describe_errors
from schemas.job import JobSpec
from schemas.messages import Payload

Role = Literal["viewer", "submitter", "admin"]

# What the master shows instead of a value its reader may not see.
REDACTED = "***"

# The requests a submitter may make about its own jobs only, and what each does.
_JOB_VERBS: dict[type[Payload], str] = {
    SubmitJob: "submit",
    CancelJob: "cancel",
    ScaleJob: "scale",
    UpdateJob: "update",
    RollbackJob: "roll back",
    PurgeJob: "purge",
    GetLogs: "read the logs of",
}


@dataclass(frozen=True)
class Caller:
    user: str
    role: Role

    def __str__(self) -> str:
        return f"{self.role} {self.user}"


def owns(caller: Caller, job: Job) -> bool:
    """Whether `caller` is a submitter that owns `job` (an ownerless job has no owner)."""
    return caller.role == "submitter" and job.owner != "" and job.owner == caller.user


def check(caller: Caller, request: Payload, job: Job | None, *, name: str = "") -> None:
    """Raise ApiProblem "forbidden" if `caller` may not make `request`.

    `job` is the job the request is about as the state holds it now (None: no such
    job, or a request about no job); `name` is that job's name, for the message, when
    the state has none. A request about a job that does not exist is allowed here:
    what it comes to (not_found, or a new job for a submit) is the controller's answer.
    """
    if caller.role == "admin":
        return
    if isinstance(request, SetNodeSchedule):
        raise ApiProblem(
            "forbidden",
            f"{caller} may not {request.action} node {request.node_id}: only admins cordon, "
            "uncordon and drain nodes; ask an admin",
            "action",
        )
    verb = _JOB_VERBS.get(type(request))
    if verb is None:
        return  # a read: every role may read
    job_name = job.job_id if job is not None else name
    field = _field_of(request)
    if caller.role != "submitter":
        raise ApiProblem(
            "forbidden",
            f"{caller} may not {verb} job {job_name}: a viewer only reads the cluster's "
            "status; ask an admin for the submitter role",
            field,
        )
    if job is None or owns(caller, job):
        return
    owner = job.owner or "no one (it was submitted before jobs had owners)"
    hint = " or submit yours under another name" if isinstance(request, SubmitJob) else ""
    raise ApiProblem(
        "forbidden",
        f"{caller} may not {verb} job {job_name}: it belongs to {owner}; "
        f"ask its owner or an admin{hint}",
        field,
    )


def _field_of(request: Payload) -> str | None:
    if isinstance(request, SubmitJob):
        return "spec.name"
    if isinstance(request, GetLogs):
        return "task_id"
    return "job_id"


def may_see_env(caller: Caller, owner: str) -> bool:
    """Whether `caller` may see the `env` values of a job owned by `owner` ("": none)."""
    return caller.role == "admin" or (
        caller.role == "submitter" and owner != "" and owner == caller.user
    )


def redacted(spec: JobSpec, *, env: bool = False) -> JobSpec:
    """`spec` as the master shows it: every `secret_env` value REDACTED, and with `env`,
    every `env` value too. The keys stay. The spec itself is returned when nothing
    needs hiding."""
    update: dict[str, Any] = {}
    if spec.secret_env:
        update["secret_env"] = dict.fromkeys(spec.secret_env, REDACTED)
    if env and spec.env:
        update["env"] = dict.fromkeys(spec.env, REDACTED)
    return spec.model_copy(update=update) if update else spec


def hide_env(info: dict[str, Any]) -> dict[str, Any]:
    """A JobInfo as JSON (a reply's result, or an item of an api.jobs page) with the
    `env` values of its spec and of its versions' specs REDACTED, in place."""
    specs = [info.get("spec"), *(v.get("spec") for v in info.get("versions") or ())]
    for spec in specs:
        if isinstance(spec, dict) and spec.get("env"):
            spec["env"] = dict.fromkeys(spec["env"], REDACTED)
    return info


def keep_secrets(current: JobSpec, given: JobSpec) -> JobSpec:
    """`given` (an update's spec) with each `secret_env` value of exactly REDACTED
    replaced by the current spec's value of that variable: a client that read the
    redacted spec sends it back unchanged. Raises ApiProblem "invalid" (naming
    `spec.secret_env`) for REDACTED given to a variable with no current secret, or if
    the spec with the real values is no longer valid (too large)."""
    kept = [key for key, value in given.secret_env.items() if value == REDACTED]
    if not kept:
        return given
    missing = [key for key in kept if key not in current.secret_env]
    if missing:
        raise ApiProblem(
            "invalid",
            f"secret_env: {missing[0]!r} is {REDACTED!r}, which keeps a secret's current "
            f"value, but job {current.name} has no secret {missing[0]!r}: give its value",
            "spec.secret_env",
        )
    merged = {**given.secret_env, **{key: current.secret_env[key] for key in kept}}
    data = given.model_dump(mode="json")
    data["secret_env"] = merged
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:  # without the input: it holds the secrets
        raise ApiProblem("invalid", describe_errors(exc, "spec"), "spec.secret_env") from None
