"""What a worker's reports mean: its task statuses, and the containers its heartbeat lists.

Each function compares a report with what the master wants and returns the
verdict: an event to commit, a `Fence` (stop a container the master no longer
wants there), or None (nothing to do). Reports about jobs the master never
saw are not its to judge and are left alone; a running container of a job it
forgot lately (`ClusterState.forgotten`) is stopped.

Pure: reads the state, returns verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from master import events as ev
from master.model import ACTIVE_TASK_STATES, Task
from master.state import ClusterState
from schemas.messages import Heartbeat, RunningTask, TaskStatus


@dataclass(frozen=True)
class Fence:
    """Stop this container: it runs where the master does not want it."""

    task_id: str
    job_id: str
    node_id: str


Verdict = ev.TaskUpdated | Fence | None


def judge_status(state: ClusterState, status: TaskStatus, now: float) -> Verdict:
    task = state.tasks.get(status.task_id)
    if task is None and not _ours(state, status.job_id):
        return None
    if task is None or task.node_id != status.node_id or task.terminal:
        # Unknown, or on another node, or ended here but alive there.
        if status.state == "running":
            return Fence(status.task_id, status.job_id, status.node_id)
        return None
    if status.state == "running" and task.state == "running":
        return None  # a duplicate
    return ev.TaskUpdated(
        at=now,
        task_id=task.task_id,
        state=status.state,
        exit_code=status.exit_code,
        reason=status.reason,
        container_id=status.container_id,
        retryable=status.retryable,
        address=status.address,
    )


def judge_reported(state: ClusterState, node_id: str, reported: RunningTask, now: float) -> Verdict:
    """A container a heartbeat lists, against what the master wants there."""
    task = state.tasks.get(reported.task_id)
    if task is None and not _ours(state, reported.job_id):
        return None
    if task is None or task.node_id != node_id or task.state in ("lost", "stopped"):
        return Fence(reported.task_id, reported.job_id, node_id)
    running = ev.TaskUpdated(
        at=now,
        task_id=task.task_id,
        state="running",
        container_id=reported.container_id,
        address=reported.address,
    )
    if task.state == "assigned" and reported.state == "running":  # its status is late or lost
        return running
    if task.state == "running" and reported.address and not task.address:
        return running  # its address never reached this master (from an older worker)
    return None


def _ours(state: ClusterState, job_id: str) -> bool:
    return job_id in state.jobs or job_id in state.forgotten


def tasks_on(state: ClusterState, node_id: str, states: frozenset[str]) -> list[Task]:
    """The tasks booked on a node (in a stable order) whose state is in `states`; also on a
    node the journal names but no heartbeat has shown yet (`state.unseen`)."""
    node = state.nodes.get(node_id) or state.unseen.get(node_id)
    if node is None:
        return []
    tasks = (state.tasks[task_id] for task_id in sorted(node.task_ids))
    return [task for task in tasks if task.state in states]


def lost_with_node(state: ClusterState, node_id: str, why: str, now: float) -> list[ev.Event]:
    """A node is down: its assigned and running tasks are lost."""
    reason = f"node {node_id} is down ({why})"
    return [
        ev.TaskUpdated(at=now, task_id=task.task_id, state="lost", reason=reason)
        for task in tasks_on(state, node_id, ACTIVE_TASK_STATES)
    ]


def lost_on_restart(state: ClusterState, beat: Heartbeat, now: float) -> list[ev.Event]:
    """The node's agent restarted: a task it ran and no longer lists is lost.

    Only running tasks: an assigned one may still be in its queue.
    """
    listed = {t.task_id for t in beat.tasks}
    reason = f"node {beat.node_id} restarted without it"
    return [
        ev.TaskUpdated(at=now, task_id=task.task_id, state="lost", reason=reason)
        for task in tasks_on(state, beat.node_id, frozenset({"running"}))
        if task.task_id not in listed
    ]
