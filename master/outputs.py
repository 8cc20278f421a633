"""What the active master publishes once the journal holds it: commands and status events.

Plain functions over a `Bus`; the term decides when (after its batch is committed).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

from bus import Bus, topology
from master.controller import Command, StartCommand, StopCommand
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
    if isinstance(command, StartCommand):
        task = state.tasks.get(command.task_id)
        if task is None:  # forgotten within the same input: nothing to start
            return
        payload: Payload = StartTask(
            task_id=task.task_id,
            job_id=task.job_id,
            slot=task.slot,
            node_id=command.node_id,
            spec=state.jobs[task.job_id].spec_of(task),
        )
        on_returned = unroutable(task.task_id)
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


def host_port(url: str | None) -> str:
    """`host:port` of the broker node a URL names ("" if none), for `corral masters`."""
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or 5672}"[:128]
