"""`--watch` on jobs, ps and nodes: a listing kept current from the live status events.

Like `Job.wait`, a watch believes only the master: a status event that concerns
the listing (`concerns`) marks it stale, and the listing is read again, at most
once every GAP seconds however many events come, and at least every RESYNC
seconds (the master changes some things without an event: a task placed, a
task turning healthy after min_healthy, a node's allocation). What the new
listing changed (`changes`) is what gets shown. The pure parts (`concerns`,
`changes`, `Pace`) are tested by calling them; `Watch.run` is the loop, fed by
an `EventFeed`: the events, read on a thread of their own with a client of their
own (a client belongs to one thread), so the loop can wait for "an event, or
the next re-list is due", whichever comes first. The feed holds at most BACKLOG
events: while the loop re-reads a long listing, a burst (a rollout, or a hostile
sender) is dropped rather than held, and the loop is told only that the listing
is stale (STALE), which is all a burst would have told it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from corral.errors import CorralError
from corral.streams import Event

M = TypeVar("M", bound=BaseModel)
M_contra = TypeVar("M_contra", bound=BaseModel, contravariant=True)

# Re-read a stale listing at most this often (a burst of events is one re-read) ...
GAP = 0.5
# ... and re-read it at least this often, events or not.
RESYNC = 5.0

# The first word of the routing keys of the events that can change each listing.
# leader.*: after a failover, what the old leader had not announced is read again.
JOB_EVENTS = ("job", "task", "leader")
TASK_EVENTS = ("task", "job", "node", "leader")
NODE_EVENTS = ("node", "task", "leader")
# Fields that change while nothing happens (a node's last heartbeat): not a change.
NODE_VOLATILE = frozenset({"last_seen"})
# Events an EventFeed holds for the loop; past this, they are dropped (and STALE said).
BACKLOG = 1000


def concerns(event: Event, kinds: Collection[str], job: str | None = None) -> bool:
    """Whether `event` may change a listing fed by `kinds` of events (of `job` only, if
    given: its job and task events, and every node and leader event)."""
    kind = event.routing_key.split(".", 1)[0]
    if kind not in kinds:
        return False
    if job is None or kind in ("node", "leader"):
        return True
    return getattr(event.payload, "job_id", None) == job


@dataclass
class Changes(Generic[M]):
    """The outcome of a re-read: `items` (every item, in the listing's order, by key)
    and `changed` (those new or changed since the last read that are to be shown)."""

    items: dict[str, M]
    changed: list[M]


def changes(
    before: Mapping[str, M],
    after: Iterable[M],
    key: Callable[[M], str],
    *,
    keep: Callable[[M], bool] = lambda item: True,
    volatile: Collection[str] = frozenset(),
) -> Changes[M]:
    """Compare a listing read again (`after`) with the last one (`before`, by key).

    An item is changed if it is new or any field but the `volatile` ones differs. A
    changed item is shown if `keep` (the command's filters) takes it now or took its
    previous state: a task leaving `--state running` is shown once, in its new state.
    Items gone from the listing are not in `items` (they are not shown as changes).
    """
    items: dict[str, M] = {}
    changed: list[M] = []
    exclude = set(volatile)
    for item in after:
        name = key(item)
        items[name] = item
        old = before.get(name)
        if old is not None and old.model_dump(exclude=exclude) == item.model_dump(exclude=exclude):
            continue
        if keep(item) or (old is not None and keep(old)):
            changed.append(item)
    return Changes(items, changed)


@dataclass
class Pace:
    """When to read the listing again: GAP after the last read if an event made it
    stale, RESYNC after it otherwise. Times are a monotonic clock's."""

    listed_at: float
    stale: bool = False
    gap: float = GAP
    resync: float = RESYNC

    def wait(self, now: float) -> float:
        """Seconds until the next read is due (0: now)."""
        after = self.gap if self.stale else self.resync
        return max(0.0, self.listed_at + after - now)

    def listed(self, now: float) -> None:
        self.listed_at = now
        self.stale = False


class Display(Protocol[M_contra]):
    """What a watch shows: the first listing, then each re-read that changed something."""

    def first(self, items: Sequence[M_contra]) -> None: ...

    def update(self, changed: Sequence[M_contra], items: Sequence[M_contra]) -> None:
        """`changed`: the items to show as changed; `items`: all those the filters take,
        in the listing's order."""


class Ended:
    """What `EventFeed.next` returns once the events end (a test's finite stream)."""


ENDED = Ended()


class Stale:
    """What `EventFeed.next` returns after it dropped events: the listing is to be read
    again, as if an event that concerns it had come."""


STALE = Stale()


class Feed(Protocol):
    def next(self, timeout: float) -> Event | Stale | Ended | None:
        """The next event, STALE, ENDED, or None after `timeout` s without one."""


@dataclass
class Watch(Generic[M]):
    """A listing on watch: `relist()` reads it, `concern(event)` says which events make
    it stale, `display` shows it. See the module docstring."""

    relist: Callable[[], list[M]]
    key: Callable[[M], str]
    concern: Callable[[Event], bool]
    display: Display[M]
    keep: Callable[[M], bool] = lambda item: True
    volatile: Collection[str] = frozenset()
    clock: Callable[[], float] = time.monotonic
    warn: Callable[[str], None] = lambda message: None
    items: dict[str, M] = field(default_factory=dict)

    def run(self, feed: Feed) -> None:
        """Show the listing, then its changes, until the feed ends (or Ctrl-C: the caller's
        KeyboardInterrupt). A failed re-read is a warning, tried again RESYNC s later; an
        error of the feed itself (the broker lost) is raised."""
        first = self.relist()
        self.items = {self.key(item): item for item in first}
        self.display.first([item for item in first if self.keep(item)])
        pace = Pace(listed_at=self.clock())
        while True:
            got = feed.next(pace.wait(self.clock()))
            if isinstance(got, Ended):
                if pace.stale:
                    self._refresh()
                return
            if isinstance(got, Stale) or (got is not None and self.concern(got)):
                pace.stale = True
            if pace.wait(self.clock()) <= 0:
                self._refresh()
                pace.listed(self.clock())

    def _refresh(self) -> None:
        try:
            listed = self.relist()
        except CorralError as exc:
            self.warn(f"could not read the listing again ({exc}); trying again")
            return
        found = changes(self.items, listed, self.key, keep=self.keep, volatile=self.volatile)
        self.items = found.items
        if found.changed:
            shown = [item for item in found.items.values() if self.keep(item)]
            self.display.update(found.changed, shown)


class EventFeed:
    """Status events matching `pattern`, read on a daemon thread with a client of their
    own (`open_client()`), handed over through a queue of at most `backlog` events.
    `start` returns once the subscription is bound (so the listing read after it misses
    no event), or raises what the thread could not do (BrokerUnreachable, NoCluster, ...).

    When the queue is full the thread drops the event and notes it; the next `next`
    returns STALE (then the events still queued), so a re-read covers what was dropped
    and memory stays bounded however fast events come."""

    def __init__(
        self,
        open_client: Callable[[], AbstractContextManager[Any]],
        pattern: str = "#",
        *,
        backlog: int = BACKLOG,
    ) -> None:
        self._open_client = open_client
        self._pattern = pattern
        self._queue: queue.Queue[Event | Ended | Exception | None] = queue.Queue(backlog)
        self._dropped = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="corral-watch", daemon=True)

    def start(self) -> EventFeed:
        self._thread.start()
        self._check(self._queue.get())  # None: bound
        return self

    def next(self, timeout: float) -> Event | Stale | Ended | None:
        """Blocks up to `timeout` s. STALE first if events were dropped since the last
        call; raises what ended the thread (the broker lost, ...)."""
        if self._dropped.is_set():
            # Cleared before the re-read it causes, so a drop after this is said again.
            self._dropped.clear()
            return STALE
        try:
            got = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        return self._check(got)

    @staticmethod
    def _check(got: Event | Ended | Exception | None) -> Event | Ended | None:
        if isinstance(got, Exception):
            raise got
        return got

    def _pump(self) -> None:
        # Only events are dropped: "bound", the end and an error wait for room (the
        # loop drains the queue), since the loop must see them.
        try:
            with self._open_client() as client:
                events: Iterator[Event] = client.events(self._pattern)
                self._queue.put(None)
                for event in events:
                    try:
                        self._queue.put_nowait(event)
                    except queue.Full:
                        self._dropped.set()
        except Exception as exc:  # handed to the watching thread, which raises it
            self._queue.put(exc)
            return
        self._queue.put(ENDED)
