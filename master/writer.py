"""The leader's side of the journal: group commit, and nothing acted on before it is durable.

The controller applies an input's events to the state at once (the next input
must see them), but nothing that follows from them leaves the master — no
command to a worker, no status event, no reply, no ack of the input — until
the journal holds them. `JournalWriter` collects the events of every input
into the current batch and keeps the actions that depend on them in order:

- while no batch is in flight, the current one is sent at the end of the input;
- while one is in flight, inputs keep coming and their events pile into the
  next batch, sent as soon as the one in flight is committed. Under load the
  batches grow, so the journal does not cap throughput: one round trip per
  batch, not per input;
- a batch is committed when the master reads its final part back from the
  journal (`committed(seq)`): then it is durable, and no newer claim came
  before it. Its held actions run then, in the order they were made.

An action that depends on nothing unwritten (a read whose answer the journal
already holds) runs at once. If the master loses its connection or is deposed,
the writer is simply dropped with whatever it held: the inputs were not acked,
so the broker gives them to the next leader.

No I/O: `send` is given the encoded messages of a batch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from master import events as ev
from master import journal

Action = Callable[[], None]


class JournalWriter:
    def __init__(
        self,
        master: str,
        epoch: int,
        send: Callable[[list[bytes]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.master = master
        self.epoch = epoch
        self._send = send
        self._clock = clock
        self.sent = 0  # seq of the last batch sent
        self.committed = 0  # seq of the last batch read back
        self.sent_bytes = 0
        self._batch: list[ev.Event] = []
        self._held: deque[tuple[int, Action]] = deque()
        self._in_flight_since: float | None = None
        self.on_sent: Callable[[int], None] | None = None  # called with a batch's seq

    @property
    def waiting(self) -> int:
        """Actions held until their events are committed."""
        return len(self._held)

    def add(self, event: ev.Event) -> None:
        """The controller's journal hook: one more event of the current batch."""
        self._batch.append(event)

    def then(self, action: Action) -> None:
        """Run `action` once every event added so far is committed (at once if it is)."""
        needed = self.sent + 1 if self._batch else self.sent
        if needed <= self.committed:
            action()
        else:
            self._held.append((needed, action))

    def flush(self) -> None:
        """Send the current batch, unless one is in flight (it goes when that commits)."""
        if self._in_flight_since is not None or not self._batch:
            return
        batch, self._batch = self._batch, []
        self.sent += 1
        bodies = journal.encode_batch(self.master, self.epoch, self.sent, batch)
        self.sent_bytes += sum(len(body) for body in bodies)
        self._in_flight_since = self._clock()
        if self.on_sent is not None:
            self.on_sent(self.sent)  # the state is now exactly what batches 1..sent say
        self._send(bodies)

    def committed_through(self, seq: int) -> None:
        """Our batch `seq` was read back from the journal: release what waited for it."""
        if seq <= self.committed:
            return
        self.committed = seq
        if seq >= self.sent:
            self._in_flight_since = None
        while self._held and self._held[0][0] <= seq:
            _, action = self._held.popleft()
            action()
        self.flush()

    def stuck_for(self) -> float:
        """How long the batch in flight has waited to be read back (0 if none)."""
        if self._in_flight_since is None:
            return 0.0
        return self._clock() - self._in_flight_since
