"""A snapshot of the cluster state: `dump(state)` to bytes, `load(bytes)` back.

With `ClusterState.apply` this is the state machine's whole storage interface
(hashicorp/raft's `FSM`: Apply, Snapshot, Restore); where the bytes go is the
daemon's business. A loaded state is equal to the dumped one in every respect
(`ClusterState.differences` finds nothing), so the events after the snapshot
take both to the same state.

What is written are the records, in their order: jobs (without their counts),
tasks, nodes (their soft state too: capacity, labels, last heartbeat), nodes
known only from the journal, and the ordered memories (ended and forgotten
jobs, fenced strays, request outcomes). The indexes (pending tasks, per-job
counts, per-node bookings) are recomputed by `ClusterState.rebuild_indexes`,
so a snapshot never carries an index out of step with its records.

JSON, with a `format` number; `load` refuses a format it does not know. A field
added to a format later is read with its default when absent (a job's `owner`:
"", no owner), so older snapshots of the same format still load.

A snapshot holds each job's spec as it is, `secret_env` values included (the
worker needs them): like the journal, only the master's user may read it.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from master.model import Job, Node, Outcome, Rollout, Task, Unseen, Version, job_history
from master.state import ClusterState
from schemas.api import ApiError
from schemas.job import JobSpec
from schemas.messages import NodeNetwork, Resources, RunningTask

FORMAT = 2


class SnapshotError(ValueError):
    """The bytes are not a snapshot this master can load."""


def dump(state: ClusterState) -> bytes:
    document = {
        "format": FORMAT,
        "jobs": [_job(job) for job in state.jobs.values()],
        # A Task's fields are plain values: its __dict__ is what asdict gives, 10x faster.
        "tasks": [dict(vars(task)) for task in state.tasks.values()],
        "nodes": [_node(node) for node in state.nodes.values()],
        "unseen": [_unseen(record) for record in state.unseen.values()],
        "ended": list(state.ended),
        "forgotten": list(state.forgotten),
        "fenced": [[task_id, at] for task_id, at in state.fenced.items()],
        "requests": [_outcome(message_id, o) for message_id, o in state.requests.items()],
        "subnets": state.subnets,
    }
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def load(data: bytes, **state_kwargs: Any) -> ClusterState:
    """The state `data` was dumped from; `state_kwargs` go to `ClusterState` (its
    bounds, e.g. remember_requests=settings.remember_requests). Raises SnapshotError."""
    try:
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise SnapshotError(f"not a snapshot of format {FORMAT}")
        return _restore(document, ClusterState(**state_kwargs))
    # json, pydantic too; RecursionError: a forged snapshot nested thousands deep
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"unreadable snapshot: {exc}") from exc


def _restore(document: dict[str, Any], state: ClusterState) -> ClusterState:
    for record in document["jobs"]:
        job = Job(
            record["job_id"],
            JobSpec.model_validate(record["spec"]),
            record["submitted_at"],
            submission=record["submission"],
            generation=record["generation"],
            owner=record.get("owner", ""),  # absent from snapshots before jobs had owners
            announced=record["announced"],
            cancelled=record["cancelled"],
            failed_reason=record["failed_reason"],
            slots={int(slot): list(attempts) for slot, attempts in record["slots"]},
            version=record["version"],
            versions={
                int(v["version"]): Version(
                    int(v["version"]), JobSpec.model_validate(v["spec"]), v["at"], v["reason"]
                )
                for v in record["versions"]
            },
            rollout=Rollout(**record["rollout"]) if record["rollout"] is not None else None,
            ended_at=record["ended_at"],
        )
        job.history = deque(
            (tuple(note) for note in record["history"]), maxlen=job_history().maxlen
        )
        state.jobs[job.job_id] = job
    for record in document["tasks"]:
        state.tasks[record["task_id"]] = Task(**record)
    for record in document["nodes"]:
        state.nodes[record["node_id"]] = Node(
            record["node_id"],
            record["state"],
            Resources.model_validate(record["capacity"]),
            dict(record["labels"]),
            record["boot_id"],
            record["last_seen"],
            [RunningTask.model_validate(task) for task in record["reported"]],
            held_until=record["held_until"],
            held_reason=record["held_reason"],
            network=_network(record.get("network")),
            interval=float(record.get("interval", 1.0)),
            **_schedule(record),
        )
    for record in document["unseen"]:
        state.unseen[record["node_id"]] = Unseen(
            record["node_id"],
            record["last_seen"],
            record["state"],
            record["held_until"],
            record["held_reason"],
            record["held_boot"],
            **_schedule(record),
        )
    state.holds = {n.node_id: n.held_until for n in state.nodes.values() if n.held_until}
    state.ended = dict.fromkeys(document["ended"])
    state.forgotten = dict.fromkeys(document["forgotten"])
    state.fenced = {task_id: at for task_id, at in document["fenced"]}
    state.subnets = {str(node): str(subnet) for node, subnet in document.get("subnets", {}).items()}
    for record in document["requests"]:
        error = record["error"]
        outcome = Outcome(
            record["request_type"],
            record["job_id"],
            ApiError.model_construct(**error) if error is not None else None,
        )
        state.requests.remember(record["message_id"], outcome)
    state.rebuild_indexes()
    return state


def _job(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "spec": job.spec.model_dump(mode="json"),
        "submitted_at": job.submitted_at,
        "submission": job.submission,
        "generation": job.generation,
        "owner": job.owner,
        "announced": job.announced,
        "cancelled": job.cancelled,
        "failed_reason": job.failed_reason,
        "slots": [[slot, attempts] for slot, attempts in job.slots.items()],
        "version": job.version,
        "versions": [
            {
                "version": v.version,
                "spec": v.spec.model_dump(mode="json"),
                "at": v.at,
                "reason": v.reason,
            }
            for v in job.versions.values()
        ],
        "rollout": vars(job.rollout) if job.rollout is not None else None,
        "history": [list(note) for note in job.history],
        "ended_at": job.ended_at,
    }


_SCHEDULE_FIELDS = ("state_since", "state_reason", "cordoned", "draining", "leaving")


def _schedule(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in _SCHEDULE_FIELDS}


def _network(record: dict[str, Any] | None) -> NodeNetwork | None:
    return NodeNetwork.model_validate(record) if record is not None else None


def _node(node: Node) -> dict[str, Any]:
    return {
        "node_id": node.node_id,
        "state": node.state,
        "capacity": node.capacity.model_dump(mode="json"),
        "labels": node.labels,
        "boot_id": node.boot_id,
        "last_seen": node.last_seen,
        "reported": [task.model_dump(mode="json") for task in node.reported],
        "network": node.network.model_dump(mode="json") if node.network else None,
        "interval": node.interval,
        "held_until": node.held_until,
        "held_reason": node.held_reason,
        **{name: getattr(node, name) for name in _SCHEDULE_FIELDS},
    }


def _unseen(record: Unseen) -> dict[str, Any]:
    return {
        "node_id": record.node_id,
        "last_seen": record.last_seen,
        "state": record.state,
        "held_until": record.held_until,
        "held_reason": record.held_reason,
        "held_boot": record.held_boot,
        **{name: getattr(record, name) for name in _SCHEDULE_FIELDS},
    }


def _outcome(message_id: str, outcome: Outcome) -> dict[str, Any]:
    error = outcome.error
    return {
        "message_id": message_id,
        "request_type": outcome.request_type,
        "job_id": outcome.job_id,
        "error": None
        if error is None
        else {"code": error.code, "message": error.message, "field": error.field},
    }
