"""A live, thread-safe model of the cluster, shared by `corral top` and `corral dashboard`.

::

    live = LiveCluster(lambda: Client(url))
    live.start()                         # a daemon thread follows the cluster
    view = live.view()                   # a consistent snapshot, at any time, from any thread
    view = live.wait(view.version, 1.0)  # the next one, as soon as something changes
    live.stop()

The thread owns one Client (a Client belongs to one thread). It subscribes to
every status event first, then lists masters, nodes, jobs and the current
attempt of each slot, so nothing that happens meanwhile is missed; then it
applies each event as it comes (`corral.live_model`), in batches of at most
`BATCH_SECONDS`, publishing one View per batch. What events do not carry is
read again: a job first heard of in an event (at most `MANY_RELOADS` at once,
beyond that everything is listed again), nodes and masters every `refresh`
seconds (their CPU and memory use), the job listing too while it fits in a
page, and everything every `resync` seconds to repair drift.

A lost broker or master never ends the thread: the View says `connected`
False with the `problem`, keeps the last picture, and the thread connects
again with backoff (1 s doubling to 30 s), then lists everything again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bus import topology
from bus.subscription import Subscription
from corral.errors import ApiFailure, CorralError
from corral.live_model import Model
from corral.live_view import View
from corral.lookup import slot_attempts
from corral.streams import Event
from schemas.api import MasterInfo, TaskInfo
from schemas.limits import MAX_PAGE_SIZE

if TYPE_CHECKING:
    from corral.client import Client

__all__ = ["LiveCluster", "View"]

log = logging.getLogger("corral.live")

# A batch of events ends after this long (or this many), then the View is published.
BATCH_SECONDS = 0.1
BATCH_EVENTS = 2000
# The longest the thread waits for an event before it looks at what is due.
IDLE_WAIT = 0.5
# More jobs than this waiting to be read again: list everything instead.
MANY_RELOADS = 50
# Everything is listed again at most this often when events ask for it (a flood of
# events naming jobs nobody knows must not keep the master listing).
MIN_RELIST = 5.0
# The job listing is re-read every `refresh` while it has at most this many jobs.
SMALL_LISTING = 500
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
CONNECTING = "connecting to the cluster"


class LiveCluster:
    """The cluster, kept current on a daemon thread; see the module docstring.

    `connect()` makes the thread's Client (called again after each lost
    connection). `view()` and `wait()` may be called from any thread.
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
        self.refresh = refresh
        self.resync = resync
        self._model = Model(keep_events)
        self._changed = threading.Condition()
        self._view = self._model.view(connected=False, problem=CONNECTING)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self._problem = CONNECTING
        self._next_refresh = 0.0
        self._next_resync = 0.0
        self._relist_after = 0.0
        self._nodes_after = 0.0  # an event named a node not listed: list them, not before

    # -- for any thread --

    def start(self) -> None:
        """Start following the cluster on a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="corral-live", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; returns once it ended (or after `timeout` s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
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

    # -- the thread --

    def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            try:
                client = self._connect()
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

    def _follow(self, client: Client) -> None:
        """Subscribe, list everything, then apply events until stopped (or an error)."""
        subscription = client._subscribe(topology.status_queue(("#",)))
        try:
            self._load_all(client)
            self._publish(connected=True, problem="")
            while not self._stop.is_set():
                self._read_batch(client, subscription)
                self._catch_up(client)
                self._publish(connected=True, problem="")
        finally:
            subscription.close()

    def _read_batch(self, client: Client, subscription: Subscription) -> None:
        """Apply the events that come within BATCH_SECONDS of the first (which is waited
        for until something else is due)."""
        now = time.time()
        model = self._model
        due = [self._next_refresh, self._next_resync]
        maturing = model.next_maturing()
        if maturing is not None:
            due.append(maturing)
        if model.relist_all or len(model.due_jobs(now, MANY_RELOADS + 1)) > MANY_RELOADS:
            # A full listing is wanted, and comes no sooner than _relist_after: the stale
            # jobs wait for it (else they would be due at once, again and again).
            due.append(self._relist_after)
        else:
            due.extend(model.stale_jobs.values())
        if model.relist_nodes:
            due.append(self._nodes_after)
        wait = max(0.0, min(IDLE_WAIT, min(due) - now))
        got = client._receive(subscription, wait)
        end = time.monotonic() + BATCH_SECONDS
        count = 0
        while got is not None:
            key, message = got
            self._model.apply(Event(key, message.payload, message.envelope.sent_at), time.time())
            count += 1
            if count >= BATCH_EVENTS or time.monotonic() >= end:
                return
            got = client._receive(subscription, 0)

    def _catch_up(self, client: Client) -> None:
        """Read again what events do not tell, as far as it is due."""
        model = self._model
        now = time.time()
        model.mature(now)
        due = model.due_jobs(now, MANY_RELOADS + 1)
        relist = model.relist_all or len(due) > MANY_RELOADS
        if now >= self._next_resync or (relist and now >= self._relist_after):
            self._load_all(client)
            return
        if not relist:
            for job_id in due:
                self._reload_job(client, job_id)
        if (model.relist_nodes and now >= self._nodes_after) or now >= self._next_refresh:
            self._refresh(client)

    def _load_all(self, client: Client) -> None:
        started = time.time()
        masters = _masters(client)
        nodes = [node for page in client.iter_nodes(page_size=MAX_PAGE_SIZE) for node in page]
        jobs = [job for page in client.iter_jobs(page_size=MAX_PAGE_SIZE) for job in page]
        pages = client.iter_tasks(current=True, page_size=MAX_PAGE_SIZE)
        tasks = [task for page in pages for task in page]
        self._model.load(masters, nodes, jobs, tasks, time.time())
        self._next_refresh = time.time() + self.refresh
        self._next_resync = time.time() + self.resync
        self._relist_after = self._nodes_after = time.time() + MIN_RELIST
        log.debug("listed everything in %.2f s", time.time() - started)

    def _refresh(self, client: Client) -> None:
        """Nodes and masters (their use is not in events); the jobs too if few."""
        self._model.set_masters(_masters(client), time.time())
        nodes = [node for page in client.iter_nodes(page_size=MAX_PAGE_SIZE) for node in page]
        self._model.set_nodes(nodes, time.time())
        self._nodes_after = time.time() + MIN_RELIST  # an unknown node: listed again then
        if len(self._model.jobs) <= SMALL_LISTING:
            jobs = [job for page in client.iter_jobs(page_size=SMALL_LISTING) for job in page]
            self._model.set_jobs(jobs, time.time())
        self._next_refresh = time.time() + self.refresh

    def _reload_job(self, client: Client, job_id: str) -> None:
        try:
            info = client.job(job_id)
            tasks = _current(info.tasks)
            if info.tasks_omitted:
                tasks = client.tasks(job_id, current=True)
        except ApiFailure as exc:
            if exc.code == "not_found":
                self._model.drop_job(job_id, time.time())
            else:  # e.g. an id no job may have: nothing to read
                log.debug("cannot read job %s: %s", job_id, exc)
                self._model.stale_jobs.pop(job_id, None)
            return
        self._model.set_job(info, tasks, time.time())

    def _publish(self, *, connected: bool, problem: str) -> None:
        """Hand out a new View if anything changed since the last."""
        if (connected, problem) != (self._connected, self._problem):
            self._connected, self._problem = connected, problem
            self._model.touch(time.time())
        if self._model.version == self._view.version:
            return
        view = self._model.view(connected=connected, problem=problem)
        with self._changed:
            self._view = view
            self._changed.notify_all()


def _masters(client: Client) -> tuple[MasterInfo, ...]:
    try:
        return tuple(client.masters().masters)
    except ApiFailure:  # a master from before master groups
        return ()


def _current(tasks: list[TaskInfo]) -> list[TaskInfo]:
    return [task for task in slot_attempts(tasks).values() if task is not None]
