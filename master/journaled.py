"""What a master term publishes, once the events it follows from are journaled (a mixin
of `master.term.Term`): the controller's commands and notifications, the journal's
own batches, and a lost assignment's follow-up.

Nothing leaves before the events it follows from are durable: a command sent and
then forgotten by a crash would be redone differently by the next leader.
"""

from __future__ import annotations

from collections.abc import Callable

from bus import Bus, topology
from master import outputs
from master.controller import Command, Controller
from master.writer import JournalWriter
from schemas.messages import Payload


class Outputs:
    """The outputs of a term; `Term` provides what is declared here."""

    role: str
    controller: Controller
    bus: Bus
    writer: JournalWriter | None
    clock: Callable[[], float]

    def _after(self, *actions: Callable[[], None]) -> None:
        """Publish what the controller produced, then `actions`, once its events are durable."""
        assert self.writer is not None
        commands, notifications = self.controller.drain()

        def act() -> None:
            for command in commands:
                self._send(command)
            for note in notifications:
                self._notify(note)
            for action in actions:
                action()

        self.writer.then(act)
        self.writer.flush()

    def _send_batch(self, bodies: list[bytes]) -> None:
        for body in bodies:
            self.bus.publish_raw(topology.DEFAULT_EXCHANGE, topology.JOURNAL_STREAM, body)

    def _notify(self, note: Payload) -> None:
        outputs.notify(self.bus, note, self.controller.epoch)

    def _send(self, command: Command) -> None:
        outputs.send(
            self.bus, self.controller.state, command, self.controller.epoch, self._unroutable
        )

    def _unroutable(self, task_id: str) -> Callable[[], None]:
        def lost() -> None:
            if self.role == "active":
                self.controller.assignment_unroutable(task_id, self.clock())
                self._after()

        return lost
