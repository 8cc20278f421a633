"""What the active master publishes once the journal holds it: commands and status events.

Plain functions over a `Bus`; the term decides when (after its batch is committed).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

from bus import Bus, topology
from master.controller import Command, StartCommand, StopCommand
from master.effects import StandbyCommand
from master.state import ClusterState
from schemas.messages import JobEvent, NodeEvent, Payload, StartTask, StopTask


def notify(bus: Bus, note: Payload, epoch: int) -> None:
    """A job or node status event on corral.status (other notifications are not sent)."""
    if isinstance(note, JobEvent):
        key = topology.job_key(note.job_id, note.state)
    elif isinstance(note, NodeEvent):
        key = topology.node_key(note.node_id, note.state)
    else:
        return
    bus.publish(topology.STATUS_EXCHANGE, key, note, epoch=epoch)


def send(
    bus: Bus,
    state: ClusterState,
    command: Command,
    epoch: int,
    unroutable: Callable[[str], Callable[[], None]],
) -> None:
    """A start or stop command to its node's queue (mandatory, with `epoch`).
    `unroutable(task_id)` is what to call if the broker returns a start unroutable."""
    on_returned = None
    if isinstance(command, StartCommand | StandbyCommand):
        start = _start(state, command)
        if start is None:  # forgotten within the same input: nothing to start
            return
        payload: Payload = start
        if isinstance(command, StartCommand):
            on_returned = unroutable(command.task_id)
    elif isinstance(command, StopCommand):
        payload = StopTask(
            task_id=command.task_id,
            job_id=command.job_id,
            node_id=command.node_id,
            reason=command.reason,
            grace=command.grace,
        )
    bus.publish(
        topology.ASSIGN_EXCHANGE,
        command.node_id,
        payload,
        epoch=epoch,
        mandatory=True,
        on_returned=on_returned,
    )


def _start(state: ClusterState, command: StartCommand | StandbyCommand) -> StartTask | None:
    """The `assign.start` of a command: a task's, or a warm standby's (the replacement of a
    task on a suspect node, not yet in the state: its job's current spec)."""
    if isinstance(command, StandbyCommand):
        job = state.jobs.get(command.job_id)
        if job is None:
            return None
        task_id, slot, spec, standby = command.task_id, command.slot, job.spec, command.hold
    else:
        task = state.tasks.get(command.task_id)
        if task is None:
            return None
        job = state.jobs[task.job_id]
        task_id, slot, spec, standby = task.task_id, task.slot, job.spec_of(task), 0.0
    return StartTask(
        task_id=task_id,
        job_id=job.job_id,
        slot=slot,
        node_id=command.node_id,
        spec=spec,
        standby=standby,
    )


def host_port(url: str | None) -> str:
    """`host:port` of the broker node a URL names ("" if none), for `corral masters`."""
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or 5672}"[:128]
