"""`corral master`: one process of the master group, serving term after term.

Any number of masters may run against one cluster; the broker makes exactly
one of them active (see master/term.py for a term's life, and
docs/architecture.md for the whole picture). A term that stepped down (its
connection was lost while it led, or a newer leader claimed) is over; the
daemon starts a fresh one, which begins as a standby from the journal. So a
master only regains the lead through a fresh claim, with a higher epoch. What
the old term had published but the broker had not confirmed goes out on the new
term's connection (see `_journal`).

The daemon keeps what outlives a term: its instance id, its start time and
the table of the masters it has heard from (`corral masters`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable

from bus import topology
from bus.publisher import Outgoing
from master.overview import SeenMaster
from master.settings import MasterSettings
from master.term import MASTERS_FORGOTTEN_AFTER, Term
from schemas.messages import MasterBeat

log = logging.getLogger("corral.master")

PAUSE_BETWEEN_TERMS = 0.2
MASTERS_KEPT = 256  # beats remembered at most (corral masters lists 64)


class MasterDaemon:
    def __init__(self, settings: MasterSettings, *, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self.instance = uuid.uuid4().hex[:12]
        self.started_at = clock()
        self.masters: dict[str, SeenMaster] = {}
        self.term: Term | None = None

    def run(self, stop: threading.Event) -> None:
        log.info("master %s (%s) starting", self.settings.name, self.instance)
        leftovers: list[Outgoing] = []
        outage = False
        while not stop.is_set():
            self.term = Term(
                self.settings,
                self.instance,
                self.started_at,
                self.clock,
                self._seen,
                self.seen,
                after_outage=outage,
            )
            self.term.bus.requeue(leftovers)
            self.term.run(stop)
            leftovers = [out for out in self.term.bus.leftovers() if not _journal(out)]
            outage = self.term.lost_connection
            if not stop.is_set():
                stop.wait(PAUSE_BETWEEN_TERMS)
        log.info("master %s stopped", self.settings.name)

    def _seen(self, beat: MasterBeat, at: float) -> None:
        """Remember a master's beat. The table is kept in the order beats arrived, so the
        stalest entry is first: forged beats (any instance id) cannot grow it past
        MASTERS_KEPT, nor can entries outlive MASTERS_FORGOTTEN_AFTER by much."""
        self.masters.pop(beat.instance, None)
        self.masters[beat.instance] = SeenMaster(beat, at)
        self._forget_stale(at)
        while len(self.masters) > MASTERS_KEPT:
            del self.masters[next(iter(self.masters))]

    def _forget_stale(self, now: float) -> None:
        while self.masters:
            instance, entry = next(iter(self.masters.items()))
            if now - entry.seen_at <= MASTERS_FORGOTTEN_AFTER:
                return
            del self.masters[instance]

    def seen(self) -> list[SeenMaster]:
        """The masters heard from lately (this one included)."""
        self._forget_stale(self.clock())
        return list(self.masters.values())


def _journal(out: Outgoing) -> bool:
    """A record for the journal, snapshots or election: it belongs to the term that made it.

    Everything else a term published and the broker had not yet confirmed (commands
    with that term's epoch, status events, replies) goes out on the next term's
    connection: commands a newer leader has superseded are refused by the workers."""
    return out.exchange == topology.DEFAULT_EXCHANGE and out.routing_key in (
        topology.JOURNAL_STREAM,
        topology.SNAPSHOT_STREAM,
        topology.LEADER_QUEUE,
    )


def serve(settings: MasterSettings, stop: threading.Event | None = None) -> None:
    """Run a master until SIGTERM/SIGINT (or `stop` is set)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    MasterDaemon(settings).run(stop)
