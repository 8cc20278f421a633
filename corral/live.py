"""A live, thread-safe model of the cluster, shared by `corral top` and `corral dashboard`.

::

    live = LiveCluster(lambda: Client(url))
    live.start()                         # daemon threads follow the cluster
    view = live.view()                   # a consistent snapshot, at any time, from any thread
    view = live.wait(view.version, 1.0)  # the next one, as soon as something changes
    live.stop()

Two threads, each with a Client of its own (a Client belongs to one thread):

- the model's thread subscribes to every status event, then applies each as it
  comes (`corral.live_model`), publishing a View at once for an event after a
  quiet spell, and at most every `BATCH_SECONDS` during a burst. It never
  waits for a listing;
- the reader makes the listings the model asks for (`corral.live_reads`):
  everything first (the subscription is made before, so nothing that happens
  meanwhile is missed), a job first heard of in an event (more than
  `MANY_RELOADS` at once: everything instead), nodes and masters every
  `refresh` seconds (their CPU and memory use; the job listing too while it
  fits in a page), and everything every `resync` seconds, or ten times as
  long as that listing took, to repair drift.

A listing is a picture of the past by the time it arrives: the events
received since it was asked (and `REPLAY_MARGIN` seconds before, which the
master may not have taken in yet) are applied again over it, in order (the
model only ever moves a task forward), so it ends up as current as the
events. At most `REPLAY_EVENTS` are kept for that.

A lost broker or master never ends the threads: the View says `connected`
False with the `problem`, keeps the last picture, and the model connects again
with backoff (1 s doubling to 30 s), then has everything listed again.
`connect` is called on both threads (one at a time).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from bus import topology
from bus.subscription import Subscription
from corral.errors import CorralError
from corral.live_model import Model
from corral.live_reads import (
    SMALL_LISTING,
    Answer,
    Everything,
    OneJob,
    Read,
    Refreshed,
    What,
    perform,
)
from corral.live_view import View
from corral.streams import Event

if TYPE_CHECKING:
    from corral.client import Client

__all__ = ["LiveCluster", "View"]

log = logging.getLogger("corral.live")

# A batch of events ends after this long (or this many), then the View is published.
BATCH_SECONDS = 0.1
BATCH_EVENTS = 2000
# The longest the model's thread waits for an event before it looks at what is due
# (and at the reader's answers).
IDLE_WAIT = 0.25
# More jobs than this waiting to be read again: list everything instead.
MANY_RELOADS = 50
# Everything is listed again at most this often when events ask for it (a flood of
# events naming jobs nobody knows must not keep the master listing), and the nodes.
MIN_RELIST = 5.0
# The periodic listing of everything waits at least this many times as long as it took.
RESYNC_FACTOR = 10.0
# Events kept to be applied again over a listing that arrives after them: at most this
# many, from this long before the listing was asked for (the master may not have
# taken in the newest yet).
REPLAY_EVENTS = 50_000
REPLAY_MARGIN = 2.0
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
CONNECTING = "connecting to the cluster"


class LiveCluster:
    """The cluster, kept current on daemon threads; see the module docstring.

    `connect()` makes a Client (called again after each lost connection).
    `view()` and `wait()` may be called from any thread.
    """

    def __init__(
        self,
        connect: Callable[[], Client],
        *,
        refresh: float = 5.0,
        keep_events: int = 500,
        resync: float = 60.0,
    ) -> None:
        self._connect = connect
        self._connect_lock = threading.Lock()
        self.refresh = refresh
        self.resync = resync
        self._model = Model(keep_events)
        self._changed = threading.Condition()
        self._view = self._model.view(connected=False, problem=CONNECTING)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._connected = False
        self._problem = CONNECTING
        # The model's thread's own (the reader reads only `_generation`).
        self._generation = 0
        self._loaded = False
        self._asked: dict[str, Read] = {}
        self._requests: queue.Queue[Read] = queue.Queue()
        self._answers: queue.Queue[Answer] = queue.Queue()
        self._log: deque[tuple[int, float, Event]] = deque(maxlen=REPLAY_EVENTS)
        self._received = 0
        self._published_at = 0.0
        self._next_refresh = 0.0
        self._next_resync = 0.0
        self._relist_after = 0.0
        self._nodes_after = 0.0  # an event named a node not listed: list them, not before

    # -- for any thread --

    def start(self) -> None:
        """Start following the cluster on daemon threads (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="corral-live", daemon=True)
            self._reader = threading.Thread(
                target=self._read, name="corral-live-reader", daemon=True
            )
            self._thread.start()
            self._reader.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads; returns once they ended (or after `timeout` s each)."""
        self._stop.set()
        for thread in (self._thread, self._reader):
            if thread is not None:
                thread.join(timeout)
        with self._changed:
            self._changed.notify_all()

    def view(self) -> View:
        """The newest snapshot: a pointer read, nothing copied."""
        with self._changed:
            return self._view

    def wait(self, after: int, timeout: float) -> View:
        """The newest snapshot as soon as its version is above `after`, else after
        `timeout` s (or when stopped): the newest anyway."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._view.version > after or self._stop.is_set(), timeout
            )
            return self._view

    # -- the model's thread --

    def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            try:
                client = self._new_client()
                try:
                    self._follow(client)
                finally:
                    client.close()
                return
            except CorralError as exc:
                problem = str(exc)
            except Exception as exc:  # a bug must not end the thread: say so, and go on
                log.exception("the live model failed; starting again")
                problem = f"internal error: {type(exc).__name__}: {exc}"
            if self._connected:
                delay = RETRY_FIRST  # it had worked: the first retry comes soon
            self._publish(connected=False, problem=problem)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX)

    def _new_client(self) -> Client:
        with self._connect_lock:
            return self._connect()

    def _follow(self, client: Client) -> None:
        """Subscribe, have everything listed, then apply events until stopped (or an
        error, the reader's included)."""
        subscription = client._subscribe(topology.status_queue(("#",)))
        try:
            self._generation += 1
            self._loaded = False
            self._asked.clear()
            self._log.clear()
            self._ask("all")
            while not self._stop.is_set():
                self._read_batch(client, subscription)
                self._take_answers()
                if self._loaded:
                    self._catch_up()
                self._publish(connected=self._loaded, problem="" if self._loaded else None)
        finally:
            subscription.close()

    def _read_batch(self, client: Client, subscription: Subscription) -> None:
        """Apply the events that come within BATCH_SECONDS of the first (which is waited
        for until something else is due). The first of a batch is published at once
        (nothing was for BATCH_SECONDS), the rest at most every BATCH_SECONDS."""
        wait = max(0.0, min(IDLE_WAIT, self._next_due() - time.time()))
        got = client._receive(subscription, wait)
        end = time.monotonic() + BATCH_SECONDS
        count = 0
        while got is not None:
            key, message = got
            event = Event(key, message.payload, message.envelope.sent_at)
            self._received += 1
            self._log.append((self._received, time.monotonic(), event))  # for the answers
            if self._loaded:
                self._model.apply(event, time.time())
                if time.monotonic() - self._published_at >= BATCH_SECONDS:
                    self._publish(connected=True, problem="")
            count += 1
            if count >= BATCH_EVENTS or time.monotonic() >= end:
                return
            got = client._receive(subscription, 0)

    def _next_due(self) -> float:
        """When something is next due, of what is not already asked for."""
        if not self._loaded:
            return time.time() + IDLE_WAIT
        model = self._model
        due = [time.time() + IDLE_WAIT]
        maturing = model.next_maturing()
        if maturing is not None:
            due.append(maturing)
        if "all" not in self._asked:
            due.append(self._next_resync)
            if self._wants_all():
                # It comes no sooner than _relist_after, and the stale jobs wait for it
                # (else they would be due at once, again and again).
                due.append(self._relist_after)
            elif self._job_room() > 0:
                due.extend(model.stale_jobs.values())
        if "refresh" not in self._asked:
            due.append(self._next_refresh)
            if model.relist_nodes:
                due.append(self._nodes_after)
        return min(due)

    def _wants_all(self) -> bool:
        now = time.time()
        due = sum(1 for when in self._model.stale_jobs.values() if when <= now)
        return self._model.relist_all or due > MANY_RELOADS

    def _job_room(self) -> int:
        return MANY_RELOADS - sum(1 for read in self._asked.values() if read.what == "job")

    def _catch_up(self) -> None:
        """Ask for what events do not tell, as far as it is due."""
        model = self._model
        now = time.time()
        model.mature(now)
        if "all" in self._asked:
            return  # it covers the rest
        if now >= self._next_resync or (self._wants_all() and now >= self._relist_after):
            self._ask("all")
            return
        if not self._wants_all():
            for job_id in model.take_due_jobs(now, max(0, self._job_room())):
                self._ask("job", job_id=job_id)
        refresh = now >= self._next_refresh or (model.relist_nodes and now >= self._nodes_after)
        if refresh:
            self._ask("refresh", with_jobs=len(model.jobs) <= SMALL_LISTING)

    def _ask(self, what: What, *, job_id: str = "", with_jobs: bool = False) -> None:
        read = Read(what, self._generation, self._replay_from(), job_id, with_jobs)
        if read.key not in self._asked:
            self._asked[read.key] = read
            self._requests.put(read)

    def _replay_from(self) -> int:
        """The count of the last event received more than REPLAY_MARGIN s ago."""
        if not self._loaded:
            return 0  # the first listing: every event since the subscription
        recent = time.monotonic() - REPLAY_MARGIN
        for count, received, _event in self._log:
            if received >= recent:
                return count - 1
        return self._received

    def _take_answers(self) -> None:
        """Apply the reader's answers, each with the events received since it was asked;
        CorralError if a read failed (everything starts again)."""
        while True:
            try:
                answer = self._answers.get_nowait()
            except queue.Empty:
                break
            read = answer.read
            if read.generation != self._generation:
                continue
            del self._asked[read.key]
            if answer.error:
                raise CorralError(answer.error)
            self._apply(read, answer.result)
            now = time.time()
            for count, _received, event in self._log:
                if count > read.since and read.concerns(event):
                    self._model.apply(event, now, keep=not self._loaded)
            self._loaded = True
        self._trim_log()

    def _trim_log(self) -> None:
        """Forget the events no read asked for (or to be asked for) needs."""
        oldest = min((read.since for read in self._asked.values()), default=self._received)
        recent = time.monotonic() - REPLAY_MARGIN
        while self._log and self._log[0][0] <= oldest and self._log[0][1] < recent:
            self._log.popleft()

    def _apply(self, read: Read, result: Everything | Refreshed | OneJob | None) -> None:
        model, now = self._model, time.time()
        if isinstance(result, Everything):
            model.load(result.masters, result.nodes, result.jobs, result.tasks, now)
            self._next_resync = now + max(self.resync, RESYNC_FACTOR * result.took)
            self._next_refresh = now + self.refresh
            self._relist_after = self._nodes_after = now + MIN_RELIST
        elif isinstance(result, OneJob):
            if result.info is not None:
                model.set_job(result.info, result.tasks, now)
            elif result.readable:
                model.drop_job(result.job_id, now)
        elif isinstance(result, Refreshed):
            model.set_masters(result.masters, now)
            model.set_nodes(result.nodes, now)
            if result.jobs is not None:
                model.set_jobs(result.jobs, now)
            self._next_refresh = now + self.refresh
            self._nodes_after = now + MIN_RELIST  # an unknown node: listed again then

    def _publish(self, *, connected: bool, problem: str | None) -> None:
        """Hand out a new View if anything changed since the last (`problem` None: the
        one said last)."""
        problem = self._problem if problem is None else problem
        if (connected, problem) != (self._connected, self._problem):
            self._connected, self._problem = connected, problem
            self._model.touch(time.time())
        if self._model.version == self._view.version:
            return
        self._published_at = time.monotonic()
        view = self._model.view(connected=connected, problem=problem)
        with self._changed:
            self._view = view
            self._changed.notify_all()

    # -- the reader's thread --

    def _read(self) -> None:
        """Answer the model's reads with a client of its own, made afresh for each new
        subscription (and after a failed read)."""
        client: Client | None = None
        generation = -1
        while not self._stop.is_set():
            try:
                read = self._requests.get(timeout=IDLE_WAIT)
            except queue.Empty:
                continue
            if read.generation != self._generation:
                continue  # asked before the model connected again
            if client is not None and generation != read.generation:
                client.close()
                client = None
            try:
                if client is None:
                    client, generation = self._new_client(), read.generation
                answer = Answer(read, perform(client, read))
            except Exception as exc:
                if not isinstance(exc, CorralError):
                    log.exception("the live model's reader failed")
                if client is not None:
                    client.close()
                client = None
                answer = Answer(read, error=str(exc) or type(exc).__name__)
            self._answers.put(answer)
        if client is not None:
            client.close()
