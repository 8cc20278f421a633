"""Which assignments a worker carries out: pure checks, no I/O.

A command is checked whole before anything about it is believed. Only a
well-formed `assign.start` / `assign.stop` addressed to this node, with an
epoch no older than the newest the node has accepted, is carried out, and only
then is its epoch recorded. Otherwise one forged or misrouted message (any
type, any node id, a huge epoch) would make every later command of the real
master look stale.

What these checks cannot catch: a forged command that is valid in every
respect, sent by anyone allowed to publish on `corral.assign` or into the
node's queue. Its epoch is believed like the real master's. Only
authenticating the sender can stop that (a later security issue); until then,
who may publish there is the broker's permissions' business.
"""

from __future__ import annotations

from schemas.envelope import InvalidMessage, Message
from schemas.messages import StartTask, StopTask

Command = StartTask | StopTask


class Refused(Exception):
    """A well-formed assignment this node must not carry out; `reason` is for the dead
    letter's header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def accept(message: Message, node_id: str, max_epoch: int) -> tuple[Command, int]:
    """The command in `message` and its epoch, if node `node_id`, which has accepted
    commands up to epoch `max_epoch`, should carry it out.

    Raises InvalidMessage if it is not an assignment at all (the bus dead-letters it
    and answers a sender that asked), `Refused` if it is one this node must drop: it
    carries no epoch, is addressed to another node, or comes from an older master.
    The caller records the returned epoch; nothing is recorded on a refusal.
    """
    command = message.payload
    if not isinstance(command, StartTask | StopTask):
        raise InvalidMessage(
            f"{message.envelope.type!r} is not an assignment (expected "
            f"{StartTask.TYPE!r} or {StopTask.TYPE!r})"
        )
    if command.node_id != node_id:
        raise Refused(f"addressed to node {command.node_id}, not {node_id}")
    epoch = message.envelope.epoch
    if epoch is None:
        raise Refused("no epoch: assignments come from a master, which always sends its epoch")
    if epoch < max_epoch:
        raise Refused(
            f"stale command: epoch {epoch} is older than {max_epoch}, "
            "the newest master this node has heard from"
        )
    return command, epoch
