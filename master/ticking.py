"""The active master's clock (a mixin of `master.term.Term`): the tick that judges
liveness and the rest (`Controller.tick`), a tick at a silent node's own deadline, a
stall of the master's own loop forgiven, and the guards on the journal: a term whose
batch is not confirmed or read back in time reattaches its reader or steps down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bus import Bus
from bus.consuming import Consumer
from bus.timers import Timer
from master.controller import Controller
from master.intake import HeartbeatIntake
from master.liveness import STALL_FORGIVEN
from master.settings import MasterSettings
from master.writer import JournalWriter

log = logging.getLogger("corral.master")

# A batch not read back from the journal within this long: the journal is stuck for us;
# step down rather than hold every output forever.
JOURNAL_STUCK = 15.0
REATTACH_AFTER = 3.0
# A tick at a node's liveness deadline runs this much after it (clocks and timers differ
# by a little): the node is then surely past it.
DUE_TICK_SLACK = 0.002


class Ticking:
    """The ticks of a term; `Term` provides what is declared here."""

    role: str
    settings: MasterSettings
    controller: Controller
    bus: Bus
    writer: JournalWriter | None
    clock: Callable[[], float]
    _claimed_at: float
    _journal_read_at: float
    _attached_at: float
    _journal_consumer: Consumer | None
    _due_tick: Timer | None
    _intake: HeartbeatIntake | None
    _ticked_at: float
    _free_since: float  # when this loop was last stalled (_own_stall), monotonic
    # Methods it calls that the term (or another of its mixins) defines.
    _step_down: Callable[[str], None]
    _after: Callable[..., None]
    _tail_journal: Callable[[], None]

    def _on_tick(self) -> None:
        # A claimant replaying a long journal is slow, not stuck: only silence counts.
        quiet = time.monotonic() - max(self._claimed_at, self._journal_read_at)
        if self.role == "claiming":
            if quiet > JOURNAL_STUCK:
                self._step_down(f"the journal gave nothing for {JOURNAL_STUCK:g} s after its claim")
                return
            self._reattach_if_stalled(quiet)
        if self.role != "active" or self.writer is None:
            return
        stalled = self._own_stall()
        waited = self._excused(self.writer.stuck_for())
        if waited > JOURNAL_STUCK:
            self._step_down(f"the journal did not take a batch in {JOURNAL_STUCK:g} s")
            return
        self._reattach_if_stalled(waited)
        self._forgive_own_stall(stalled)
        if self._intake is not None and not self._intake.listening:
            # Deaf: no heartbeat can come in, so no silence counts (until dead_after after).
            self.controller.liveness.grant_grace(self.clock())
        self.controller.tick(self.clock())
        self._after()
        self._tick_when_due()

    def _own_stall(self) -> float:
        """How long this loop was busy beyond a tick since the last one: ticks come every
        `tick` s unless the loop was busy with one long input. A stall that liveness
        forgives (over STALL_FORGIVEN) makes this moment the start of `_excused` waiting."""
        ticked_at, self._ticked_at = self._ticked_at, time.monotonic()
        stalled = self._ticked_at - ticked_at - self.settings.tick
        if stalled > STALL_FORGIVEN:
            self._free_since = self._ticked_at
        return stalled

    def _excused(self, waited: float) -> float:
        """Of `waited` s spent waiting for the broker, the part since this loop was last
        stalled: while it was busy it could read no confirm and no journal record, so
        that time is not the broker's (a large submit on a large fleet: seen to stall
        the loop 4-8 s, and the broker was then blamed and the leader stepped down)."""
        return min(waited, time.monotonic() - self._free_since)

    def _forgive_own_stall(self, stalled: float) -> None:
        """The heartbeats that came while the loop was busy are still unread
        (liveness.forgive_stall)."""
        if self.controller.liveness.forgive_stall(self.clock(), stalled):
            level = logging.WARNING if stalled > 2.0 else logging.DEBUG
            log.log(
                level,
                "master %s was busy for %.1f s: no node is judged late for that",
                self.settings.name,
                stalled,
            )

    def _tick_when_due(self) -> None:
        """Tick again the moment a silent node crosses suspect_after or dead_after, if that
        comes before the next regular tick: a lost host is then judged on time, not up to
        a tick late. Only silent nodes have such a moment; a healthy fleet adds no tick."""
        wait = self.controller.liveness.next_due - self.clock()
        if not 0 < wait < self.settings.tick:
            return
        if self._due_tick is not None:
            self._due_tick.cancel()
        self._due_tick = self.bus.call_later(wait + DUE_TICK_SLACK, self._on_tick)

    def _reattach_if_stalled(self, waiting: float) -> None:
        """Waiting `waiting` s for our own record to come back. After the broker node that
        led the journal stream is lost, a channel that had published to it has been seen
        to stall for 15-20 s while new channels publish at once; and a stream reader can
        stall while writes go on. So: not yet confirmed after REATTACH_AFTER s while the
        broker has confirmed nothing at all for REATTACH_AFTER s, step down (the next
        term has a new connection); a broker that confirms slowly but steadily (busy: a
        large submit, a large fleet) is waited for, up to JOURNAL_STUCK. Confirmed but not
        read back: attach the reader afresh (at most every REATTACH_AFTER s)."""
        if waiting <= REATTACH_AFTER or not self.bus.connected:
            return
        if self.bus.unconfirmed:
            stalled = self._excused(self.bus.confirms_stalled_for())
            if stalled > REATTACH_AFTER:
                self._step_down(f"the broker has confirmed nothing for {stalled:.1f} s")
            return
        if time.monotonic() - self._attached_at > REATTACH_AFTER:
            log.warning(
                "master %s: nothing back from the journal for %.1f s; attaching again",
                self.settings.name,
                waiting,
            )
            if self._journal_consumer is not None:
                self._journal_consumer.cancel()
            self._tail_journal()
