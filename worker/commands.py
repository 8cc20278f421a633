"""Which assignments a worker carries out, and which refusals it reports: pure, no I/O.

A command is checked whole before anything about it is believed. Only a
well-formed `assign.start` / `assign.stop` addressed to this node, with an
epoch no older than the newest the node has accepted, is carried out, and only
then is its epoch recorded. Otherwise one forged or misrouted message (any
type, any node id, a huge epoch) would make every later command of the real
master look stale.

The newest epoch also rises when the active master announces itself on
`corral.control` (`LeaderAnnounced`), so that a deposed master's late commands
are refused even before the new leader has sent this node anything.

What these checks cannot catch: a forged command or announcement that is valid
in every respect, sent by anyone allowed to publish on `corral.assign`,
`corral.control` or into the node's queue. Its epoch is believed like the real
master's. Only authenticating the sender can stop that (a later security
issue); until then, who may publish there is the broker's permissions'
business.

A refused command is dead-lettered and reported as a `CommandRefused` status
event; `RefusalGate` bounds how many such events (and warnings) a flood of
refused commands can cause.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from schemas.envelope import InvalidMessage, Message
from schemas.messages import CommandRefused, StartTask, StopTask

Command = StartTask | StopTask
RefusalKind = Literal["misaddressed", "no_epoch", "stale", "sender"]

# At most this many refusal events per second (and a burst of as many) per worker.
REFUSALS_PER_SECOND = 20.0
# Distinct (kind, epoch) pairs remembered so that each is warned about once.
WARNED_EPOCHS = 64


class Refused(Exception):
    """A well-formed assignment this node must not carry out.

    `reason` is for the dead letter's header and the status event; the other
    fields describe the command for the `CommandRefused` event (`epoch` is the
    command's, `max_epoch` the newest this node had accepted).
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: RefusalKind,
        command: str,
        task_id: str,
        epoch: int | None,
        max_epoch: int,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.command = command
        self.task_id = task_id
        self.epoch = epoch
        self.max_epoch = max_epoch

    def event(self, node_id: str) -> CommandRefused:
        """The status event node `node_id` publishes about this refusal."""
        return CommandRefused(
            node_id=node_id,
            command=self.command,
            task_id=self.task_id,
            epoch=self.epoch,
            max_epoch=self.max_epoch,
            reason=self.reason,
        )


def trusted_sender(user_id: str | None, masters: tuple[str, ...]) -> str | None:
    """Why a command sent by broker user `user_id` must be dropped, or None if one of
    `masters` (the master's user, and this worker's own: whoever holds its credentials
    can act as it anyway, which is the single-user setup) sent it. The broker checks
    user_id against the connection's user, so it cannot be forged."""
    if user_id in masters:
        return None
    return (
        f"sent by broker user {user_id!r}, not by the master's ({masters[0]!r}): "
        "commands come from the master only"
    )


def accept(
    message: Message, node_id: str, max_epoch: int, refusal: str | None = None
) -> tuple[Command, int]:
    """The command in `message` and its epoch, if node `node_id`, which has accepted
    commands up to epoch `max_epoch`, should carry it out.

    Raises InvalidMessage if it is not an assignment at all (the bus dead-letters it
    and answers a sender that asked), `Refused` if it is one this node must drop: it
    comes from a broker user other than the master's (`refusal`, from
    `trusted_sender`), is addressed to another node, carries no epoch, or comes from
    an older master. The caller records the returned epoch; nothing is recorded on a
    refusal.
    """
    command = message.payload
    if not isinstance(command, StartTask | StopTask):
        raise InvalidMessage(
            f"{message.envelope.type!r} is not an assignment (expected "
            f"{StartTask.TYPE!r} or {StopTask.TYPE!r})"
        )
    epoch = message.envelope.epoch

    def refused(kind: RefusalKind, reason: str) -> Refused:
        return Refused(
            reason,
            kind=kind,
            command=command.TYPE,
            task_id=command.task_id,
            epoch=epoch,
            max_epoch=max_epoch,
        )

    if refusal is not None:
        raise refused("sender", refusal)
    if command.node_id != node_id:
        raise refused("misaddressed", f"addressed to node {command.node_id}, not {node_id}")
    if epoch is None:
        raise refused(
            "no_epoch", "no epoch: assignments come from a master, which always sends its epoch"
        )
    if epoch < max_epoch:
        raise refused(
            "stale",
            f"stale command: epoch {epoch} is older than {max_epoch}, "
            "the newest master this node has heard from",
        )
    return command, epoch


class RefusalGate:
    """Which refusals become status events, and which deserve a warning in the log.

    Events: a token bucket of `rate` per second with a burst of `rate`, so that a
    flood of forged commands cannot become a flood of events. Warnings: one per
    distinct (kind, epoch) among the `remember` most recently warned about, and
    only for refusals that are reported, so warnings are bounded by the same rate.
    Pure: the caller passes a monotonic clock reading.
    """

    def __init__(self, rate: float = REFUSALS_PER_SECOND, remember: int = WARNED_EPOCHS) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._tokens = self.burst
        self._last: float | None = None
        self._remember = remember
        self._warned: OrderedDict[tuple[RefusalKind, int | None], None] = OrderedDict()

    def report(self, now: float) -> bool:
        """Whether one more refusal may be reported at time `now` (uses up a token)."""
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def warn(self, refusal: Refused) -> bool:
        """True the first time (in recent memory) a refusal of this kind and epoch is seen."""
        key = (refusal.kind, refusal.epoch)
        if key in self._warned:
            self._warned.move_to_end(key)
            return False
        self._warned[key] = None
        if len(self._warned) > self._remember:
            self._warned.popitem(last=False)
        return True
