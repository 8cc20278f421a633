"""`--watch`'s parts, called directly: which events make a listing stale, what a
re-read changed, when the next re-read is due, the loop on a scripted feed and
clock, the event thread, and the two displays (redrawn, or changed rows)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pytest

from corral.clitools import ListFormat
from corral.errors import BrokerUnreachable
from corral.listings import CLEAR, ChangedItems, Redraw, View
from corral.rows import NODE_COLUMNS, TASK_COLUMNS
from corral.streams import Event
from corral.watching import (
    ENDED,
    GAP,
    JOB_EVENTS,
    NODE_EVENTS,
    NODE_VOLATILE,
    RESYNC,
    STALE,
    TASK_EVENTS,
    Ended,
    EventFeed,
    Pace,
    Stale,
    Watch,
    changes,
    concerns,
)
from schemas.api import NodeInfo, TaskInfo
from schemas.messages import JobEvent, LeaderAnnounced, NodeEvent, Resources, TaskState, TaskStatus

NOW = datetime(2030, 1, 1, tzinfo=UTC)
Reported = Literal["running", "exited", "failed", "stopped"]  # a worker's task states


def task(slot: int, state: TaskState = "running", job: str = "web") -> TaskInfo:
    return TaskInfo(task_id=f"{job}-1a2b3c-{slot}-0", job_id=job, slot=slot, attempt=0,
                    state=state, node_id="n1", updated_at=NOW)  # fmt: skip


def node(name: str, seen: datetime = NOW, state: str = "ready") -> NodeInfo:
    room = Resources(cpus=1, memory=1024**3)
    return NodeInfo.model_validate({"node_id": name, "state": state, "capacity": room,
                                    "allocated": room, "last_seen": seen})  # fmt: skip


def task_event(job: str, state: Reported = "exited") -> Event:
    payload = TaskStatus(task_id=f"{job}-1a2b3c-0-0", job_id=job, node_id="n1", state=state)
    return Event(f"task.{job}.{payload.task_id}.{state}.n1", payload, NOW)


JOB_FAILED = Event("job.web.failed", JobEvent(job_id="web", state="failed"), NOW)
NODE_DOWN = Event("node.n1.down", NodeEvent(node_id="n1", state="down"), NOW)
LEADER = Event("leader.m1", LeaderAnnounced(master="m1", epoch=2), NOW)


# -- which events make a listing stale --


@pytest.mark.parametrize(
    ("event", "kinds", "job", "stale"),
    [
        (task_event("web"), TASK_EVENTS, None, True),
        (task_event("web"), TASK_EVENTS, "web", True),
        (task_event("db"), TASK_EVENTS, "web", False),  # `ps web`: another job's task
        (JOB_FAILED, TASK_EVENTS, "web", True),
        (NODE_DOWN, TASK_EVENTS, "web", True),  # its tasks may be lost
        (LEADER, TASK_EVENTS, "web", True),  # a failover: read again
        (NODE_DOWN, JOB_EVENTS, None, False),
        (task_event("web"), JOB_EVENTS, None, True),  # RUNNING counts
        (JOB_FAILED, NODE_EVENTS, None, False),
        (task_event("web"), NODE_EVENTS, None, True),  # TASKS, allocation
    ],
)
def test_concerns(event: Event, kinds: tuple[str, ...], job: str | None, stale: bool) -> None:
    assert concerns(event, kinds, job) is stale


# -- what a re-read changed --


def test_changes_are_new_and_changed_items_in_the_listings_order() -> None:
    before = {t.task_id: t for t in (task(0), task(1), task(2))}
    after = [task(0), task(1, "exited"), task(3, "pending")]  # 2 is gone
    found = changes(before, after, lambda t: t.task_id)
    assert [t.task_id for t in found.changed] == ["web-1a2b3c-1-0", "web-1a2b3c-3-0"]
    assert list(found.items) == ["web-1a2b3c-0-0", "web-1a2b3c-1-0", "web-1a2b3c-3-0"]


def test_volatile_fields_are_not_changes() -> None:
    before = {"n1": node("n1"), "n2": node("n2")}
    later = NOW.replace(minute=1)
    after = [node("n1", seen=later), node("n2", seen=later, state="down")]
    found = changes(before, after, lambda n: n.node_id, volatile=NODE_VOLATILE)
    assert [n.node_id for n in found.changed] == ["n2"]
    assert found.items["n1"].last_seen == later  # the newest is kept all the same


def test_a_filter_shows_items_that_match_now_or_matched_before() -> None:
    def running(t: TaskInfo) -> bool:
        return t.state == "running"

    before = {t.task_id: t for t in (task(0), task(1, "pending"))}
    after = [task(0, "exited"), task(1, "failed"), task(2, "running"), task(3, "pending")]
    found = changes(before, after, lambda t: t.task_id, keep=running)
    assert [(t.slot, t.state) for t in found.changed] == [(0, "exited"), (2, "running")]


# -- when to read again --


def test_pace_reads_a_gap_after_an_event_and_a_resync_without() -> None:
    pace = Pace(listed_at=100.0)
    assert pace.wait(100.0) == RESYNC
    assert pace.wait(100.0 + RESYNC + 1) == 0
    pace.stale = True
    assert pace.wait(100.1) == pytest.approx(GAP - 0.1)
    assert pace.wait(100.0 + GAP) == 0
    pace.listed(200.0)
    assert not pace.stale and pace.wait(200.0) == RESYNC


# -- the loop --


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedFeed:
    """Hands out `script` in order: an Event, None (`timeout` s pass: the clock moves on
    by that much), or ENDED. Records the timeouts it was asked to wait."""

    clock: Clock
    script: list[Event | Stale | Ended | None]
    waits: list[float] = field(default_factory=list)

    def next(self, timeout: float) -> Event | Stale | Ended | None:
        self.waits.append(timeout)
        got = self.script.pop(0) if self.script else ENDED
        if got is None:
            self.clock.now += timeout
        return got


class Display:
    def __init__(self) -> None:
        self.shown: list[tuple[str, list[str], list[str]]] = []

    def first(self, items: Sequence[TaskInfo]) -> None:
        self.shown.append(("first", [f"{t.slot}:{t.state}" for t in items], []))

    def update(self, changed: Sequence[TaskInfo], items: Sequence[TaskInfo]) -> None:
        self.shown.append(
            ("update", [f"{t.slot}:{t.state}" for t in changed], [str(t.slot) for t in items])
        )


def watch_of(
    listings: list[list[TaskInfo]], clock: Clock, **more: Any
) -> tuple[Watch[TaskInfo], Display, list[int]]:
    display = Display()
    reads: list[int] = []

    def relist() -> list[TaskInfo]:
        reads.append(len(reads))
        return listings[min(len(reads) - 1, len(listings) - 1)]

    concern = lambda e: concerns(e, TASK_EVENTS)  # noqa: E731
    watch = Watch(relist=relist, key=lambda t: t.task_id, concern=concern, display=display,
                  clock=clock, **more)  # fmt: skip
    return watch, display, reads


def test_a_burst_of_events_is_one_read_a_gap_later() -> None:
    clock = Clock()
    watch, display, reads = watch_of([[task(0, "pending")], [task(0)], [task(0, "exited")]], clock)
    burst: list[Event | Ended | None] = [task_event("web", "running")] * 5
    feed = ScriptedFeed(clock, [*burst, None, ENDED])
    watch.run(feed)
    assert len(reads) == 2  # the first listing, and one read for the five events
    assert feed.waits[0] == RESYNC and feed.waits[1] == GAP
    assert display.shown == [("first", ["0:pending"], []), ("update", ["0:running"], ["0"])]


def test_without_events_the_listing_is_read_every_resync() -> None:
    clock = Clock()
    watch, display, reads = watch_of([[task(0, "pending")], [task(0, "assigned")]], clock)
    watch.run(ScriptedFeed(clock, [None, None, ENDED]))
    assert len(reads) == 3 and clock.now == 2 * RESYNC
    assert display.shown[1:] == [("update", ["0:assigned"], ["0"])]  # the third read: no change


def test_events_the_listing_does_not_care_about_cause_no_read() -> None:
    clock = Clock()
    watch, _, reads = watch_of([[task(0)]], clock)
    refused = Event("refused.n1", NODE_DOWN.payload, NOW)  # not task, job, node or leader
    watch.run(ScriptedFeed(clock, [refused, ENDED]))
    assert len(reads) == 1


def test_stale_from_the_feed_is_a_read_a_gap_later() -> None:
    clock = Clock()
    watch, display, reads = watch_of([[task(0, "pending")], [task(0)]], clock)
    feed = ScriptedFeed(clock, [STALE, None, ENDED])
    watch.run(feed)
    assert len(reads) == 2 and feed.waits[1] == GAP
    assert display.shown[1:] == [("update", ["0:running"], ["0"])]


def test_the_filter_decides_what_is_shown() -> None:
    clock = Clock()
    listings = [[task(0), task(1, "pending")], [task(0, "exited"), task(1)]]
    watch, display, _ = watch_of(listings, clock, keep=lambda t: t.state == "running")
    watch.run(ScriptedFeed(clock, [task_event("web"), ENDED]))
    assert display.shown == [
        ("first", ["0:running"], []),
        ("update", ["0:exited", "1:running"], ["1"]),
    ]


def test_a_failed_read_warns_and_is_tried_again() -> None:
    clock = Clock()
    warnings: list[str] = []
    lost = BrokerUnreachable("amqp://h/", "gone")
    outcomes: list[list[TaskInfo] | Exception] = [[task(0, "pending")], lost, [task(0)]]

    def relist() -> list[TaskInfo]:
        got = outcomes.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    display = Display()
    watch = Watch(relist=relist, key=lambda t: t.task_id, concern=lambda e: True,
                  display=display, clock=clock, warn=warnings.append)  # fmt: skip
    watch.run(ScriptedFeed(clock, [None, None, ENDED]))
    assert len(warnings) == 1 and "trying again" in warnings[0]
    assert display.shown[-1] == ("update", ["0:running"], ["0"])


# -- the event thread --


class EventsClient:
    def __init__(self, events: list[Event], error: Exception | None = None) -> None:
        self._events = events
        self._error = error

    def __enter__(self) -> EventsClient:
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def events(self, pattern: str = "#") -> Iterator[Event]:
        return iter(self._events)


class Flood(EventsClient):
    """Sends `count` events, then sets `sent` (and the feed's thread waits to end)."""

    def __init__(self, count: int) -> None:
        super().__init__([])
        self.count = count
        self.sent = threading.Event()

    def events(self, pattern: str = "#") -> Iterator[Event]:
        for _ in range(self.count):
            yield task_event("web")
        self.sent.set()


def test_the_feed_hands_over_every_event_then_ends() -> None:
    feed = EventFeed(lambda: EventsClient([JOB_FAILED, NODE_DOWN])).start()
    assert [feed.next(5), feed.next(5), feed.next(5)] == [JOB_FAILED, NODE_DOWN, ENDED]


def test_the_feed_raises_what_the_thread_could_not_do() -> None:
    with pytest.raises(BrokerUnreachable):
        EventFeed(lambda: EventsClient([], BrokerUnreachable("amqp://h/", "refused"))).start()


def test_a_flood_is_dropped_past_the_backlog_and_said_as_stale() -> None:
    flood = Flood(5000)
    feed = EventFeed(lambda: flood, backlog=3).start()
    assert flood.sent.wait(5)  # the loop read nothing meanwhile (a long re-read)
    got = [feed.next(5) for _ in range(5)]
    assert got[0] is STALE and got[1:4] == [task_event("web")] * 3 and got[4] is ENDED
    assert feed.next(0.01) is None  # said once, nothing held beyond the backlog


def test_the_feed_says_none_after_its_timeout() -> None:
    feed = EventFeed(lambda: EventsClient([])).start()
    assert feed.next(5) is ENDED
    assert feed.next(0.01) is None  # nothing more comes


# -- the displays --


def printed(action: Any) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        action()
    return out.getvalue()


def test_changed_rows_keep_the_columns_of_the_rows_before() -> None:
    display = ChangedItems(View(NODE_COLUMNS))
    first = printed(lambda: display.first([node("n1")]))
    later = printed(lambda: display.update([node("a-much-longer-node", state="down")], []))
    assert first.splitlines()[0].startswith("NODE  STATE")
    assert later.startswith("a-much-longer-node  down")  # the column widens, no new header
    empty = ChangedItems(View(NODE_COLUMNS, headers_shown=False))
    assert printed(lambda: empty.first([])) == ""


def test_redraw_clears_the_screen_and_draws_the_whole_table() -> None:
    display = Redraw(View(TASK_COLUMNS, ListFormat.wide), clock=lambda: NOW)
    text = printed(lambda: display.update([task(1)], [task(0), task(1)]))
    assert text.startswith(f"{CLEAR}as of ")
    assert [line.split()[0] for line in text.splitlines()[1:]] == [
        "TASK",
        "web-1a2b3c-0-0",
        "web-1a2b3c-1-0",
    ]
    assert "CONTAINER" in text
