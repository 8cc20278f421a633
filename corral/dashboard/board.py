"""What the browsers were last sent, and the change from it to a new view of the cluster.

`Board.advance(view)` turns the live model's newest snapshot into one compact
change message (upserted rows, removed ids, new events); `Board.snapshot()` is the
whole picture for a browser that just connected. No I/O and no clock: the hub
calls these once per coalescing tick, whatever the number of browsers.

Cost: a row is rebuilt only for an object that is not the one seen last time
(the live model keeps the objects of what did not change), so a tick on a
cluster of 20,000 tasks where ten changed builds ten rows, plus one pass over
the ids.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from corral.dashboard import rows
from corral.dashboard.rows import Row
from corral.streams import Event
from schemas.api import JobInfo, MasterInfo, NodeInfo, TaskInfo

T = TypeVar("T")
# The most pending reasons shown, and the jobs named for each.
MAX_PENDING_REASONS = 10
MAX_PENDING_JOBS = 3
NOT_LOOKED_AT = "not looked at by the scheduler yet"

Message = dict[str, Any]


class ClusterView(Protocol):
    """What the dashboard reads of `corral.live.View` (one consistent snapshot)."""

    @property
    def version(self) -> int: ...
    @property
    def changed_at(self) -> float: ...
    @property
    def masters(self) -> tuple[MasterInfo, ...]: ...
    @property
    def nodes(self) -> Mapping[str, NodeInfo]: ...
    @property
    def jobs(self) -> Mapping[str, JobInfo]: ...
    @property
    def tasks(self) -> Mapping[str, TaskInfo]: ...
    @property
    def events(self) -> tuple[Event, ...]: ...
    @property
    def connected(self) -> bool: ...
    @property
    def problem(self) -> str: ...
    @property
    def node_counts(self) -> Mapping[str, int]: ...
    @property
    def job_counts(self) -> Mapping[str, int]: ...
    @property
    def task_counts(self) -> Mapping[str, int]: ...


class Table(Generic[T]):
    """The rows of one kind as last sent, by id, and the objects they were made from."""

    def __init__(self, make_row: Callable[[T], Row]) -> None:
        self.rows: dict[str, Row] = {}
        self._make_row = make_row
        self._sources: dict[str, T] = {}  # the object each row was made from

    def update(self, mapping: Mapping[str, T]) -> tuple[list[Row], list[str]]:
        """Take `mapping` as the new content: (rows added or changed, ids removed)."""
        sources = self._sources
        fresh = [key for key, item in mapping.items() if sources.get(key) is not item]
        upserts = []
        for key in fresh:
            item = sources[key] = mapping[key]
            row = self._make_row(item)
            if self.rows.get(key) != row:
                self.rows[key] = row
                upserts.append(row)
        removed: list[str] = []
        if len(sources) > len(mapping):  # some ids are gone
            removed = list(sources.keys() - mapping.keys())
            for key in removed:
                del sources[key]
                del self.rows[key]
        return upserts, removed


class Board:
    """The picture the browsers have: call `advance` with each new view.

    Thread-safe: the hub advances it in a worker thread while another takes
    snapshots for browsers that connect.
    """

    def __init__(self, keep_events: int = 500) -> None:
        self.version = 0  # the view's
        self.seq = 0  # one more with each change message: orders them and the snapshots
        self._lock = threading.Lock()
        self._keep_events = keep_events
        self._status: dict[str, Any] = {"connected": False, "problem": "starting", "at": 0.0}
        self._masters: list[Row] = []
        self._nodes = Table(rows.node_row)
        self._jobs = Table(rows.job_row)
        self._tasks = Table(rows.task_row)
        self._events: list[Row] = []
        self._last_event: Event | None = None
        self._pending: list[Row] = []
        self._summary: dict[str, dict[str, int]] = {}
        self._snapshot: tuple[int, str] | None = None

    def advance(self, view: ClusterView) -> Message | None:
        """The change from the last view to `view`, as a message for every browser, or None
        if nothing they show changed."""
        with self._lock:
            return self._advance(view)

    def snapshot(self) -> Message:
        """The whole picture, as a message for a browser that has nothing yet."""
        with self._lock:
            return self._whole()

    def encoded_snapshot(self, encode: Callable[[Message], str]) -> tuple[int, str]:
        """(seq, `encode(snapshot())`): the picture up to change message `seq`, encoded once
        however many ask."""
        with self._lock:
            if self._snapshot is None or self._snapshot[0] != self.seq:
                self._snapshot = (self.seq, encode(self._whole()))
            return self._snapshot

    def _whole(self) -> Message:
        return {
            "type": "snapshot",
            "version": self.version,
            **self._status,
            "columns": rows.COLUMNS,
            "masters": self._masters,
            "nodes": list(self._nodes.rows.values()),
            "jobs": list(self._jobs.rows.values()),
            "tasks": list(self._tasks.rows.values()),
            "pending": self._pending,
            "summary": self._summary,
            "events": self._events,
        }

    def _advance(self, view: ClusterView) -> Message | None:
        change: Message = {}
        status = {"connected": view.connected, "problem": view.problem, "at": view.changed_at}
        masters = [rows.master_row(master) for master in view.masters]
        if masters != self._masters:
            self._masters = change["masters"] = masters
        kinds = self._update_tables(view, change)
        if "tasks" in kinds:
            pending = self._pending_reasons() if view.task_counts.get("pending") else []
            if pending != self._pending:
                self._pending = change["pending"] = pending
        summary = {
            "nodes": dict(view.node_counts),
            "jobs": dict(view.job_counts),
            "tasks": dict(view.task_counts),
        }
        if summary != self._summary:
            self._summary = change["summary"] = summary
        events = self._new_events(view.events)
        if events:
            change["events"] = events
        self.version = view.version
        if not change and status == self._status:
            return None
        self._status = status
        self.seq += 1
        return {"type": "change", "version": view.version, **status, **change}

    def _update_tables(self, view: ClusterView, change: Message) -> set[str]:
        """Put the upserted rows and removed ids of each kind into `change`; the kinds
        that changed."""
        upserts: dict[str, list[Row]] = {}
        removed: dict[str, list[str]] = {}
        _update(self._nodes, view.nodes, "nodes", upserts, removed)
        _update(self._jobs, view.jobs, "jobs", upserts, removed)
        _update(self._tasks, view.tasks, "tasks", upserts, removed)
        if upserts:
            change["upsert"] = upserts
        if removed:
            change["remove"] = removed
        return set(upserts) | set(removed)

    def _pending_reasons(self) -> list[Row]:
        """[reason, tasks, a few of their jobs] of the pending tasks, most common first:
        one pass over the task rows."""
        pending: dict[str, Counter[str]] = {}
        for row in self._tasks.rows.values():
            if row[rows.TASK_STATE] == "pending":
                reason = row[rows.TASK_REASON] or NOT_LOOKED_AT
                pending.setdefault(reason, Counter())[row[rows.TASK_JOB]] += 1
        ranked = sorted(pending.items(), key=lambda item: (-item[1].total(), item[0]))
        return [
            [reason, jobs.total(), sorted(job for job, _ in jobs.most_common(MAX_PENDING_JOBS))]
            for reason, jobs in ranked[:MAX_PENDING_REASONS]
        ]

    def _new_events(self, events: tuple[Event, ...]) -> list[Row]:
        """Rows of the events after the last one sent (all of them if it scrolled out)."""
        if not events or events[-1] is self._last_event:
            return []
        start = 0
        for index in range(len(events) - 1, -1, -1):
            if events[index] is self._last_event:
                start = index + 1
                break
        new = [rows.event_row(event) for event in events[start:]]
        self._last_event = events[-1]
        self._events = (self._events + new)[-self._keep_events :]
        return new


def _update(
    table: Table[T],
    mapping: Mapping[str, T],
    kind: str,
    upserts: dict[str, list[Row]],
    removed: dict[str, list[str]],
) -> None:
    changed, gone = table.update(mapping)
    if changed:
        upserts[kind] = changed
    if gone:
        removed[kind] = gone
