"""What the live model hands out, and the tables it keeps: a `View` of the cluster, and
`Table`, a copy-on-write dict that counts its values by state.

An object in a View is the same object in the next View unless it changed, also
across a listing read again, so a consumer can find what changed by identity.
A View's mappings are read-only proxies of tables that are never changed once
shared: the next change to a shared table copies it first (a shallow copy, once
per published batch), so a View never changes under its reader and nothing is
deep-copied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar

from corral.streams import Event
from schemas.api import JobInfo, MasterInfo, NodeInfo, TaskInfo

V = TypeVar("V")

_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class View:
    """A consistent snapshot of the cluster. Its mappings never change once handed out."""

    version: int  # grows with every change applied; 0 before the first load
    changed_at: float  # time.time() of the last change
    masters: tuple[MasterInfo, ...]  # active first
    nodes: Mapping[str, NodeInfo]  # by node id
    jobs: Mapping[str, JobInfo]  # by job id, without tasks (as the job listing returns it)
    tasks: Mapping[str, TaskInfo]  # the current attempt of each slot, by task id
    events: tuple[Event, ...]  # the newest status events, oldest first
    connected: bool  # False while the broker/master cannot be reached
    problem: str  # why not connected ("" when fine)
    # Counts by state, kept as the tables change (no need to walk 20,000 tasks a frame).
    node_counts: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    job_counts: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    task_counts: Mapping[str, int] = field(default_factory=lambda: _EMPTY)


class Table(Generic[V]):
    """A copy-on-write dict by id that also counts its values by state."""

    def __init__(self, state_of: Callable[[V], str]) -> None:
        self._state_of = state_of
        self._data: dict[str, V] = {}
        self._counts: dict[str, int] = {}
        self._shared = False

    def get(self, key: str) -> V | None:
        return self._data.get(key)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def values(self) -> Iterable[V]:
        return self._data.values()

    def put(self, key: str, value: V) -> None:
        self._own()
        old = self._data.get(key)
        self._data[key] = value
        if old is not None:
            self._count(self._state_of(old), -1)
        self._count(self._state_of(value), 1)

    def pop(self, key: str) -> V | None:
        if key not in self._data:
            return None
        self._own()
        old = self._data.pop(key)
        self._count(self._state_of(old), -1)
        return old

    def replace(self, items: dict[str, V]) -> bool:
        """Hold `items` instead; a value equal to the one held keeps the old object (so a
        reader can tell what changed by identity). Whether anything changed."""
        old = self._data
        changed = len(items) != len(old)
        for key, value in items.items():
            kept = old.get(key)
            if kept is not None and (kept is value or kept == value):
                items[key] = kept
            else:
                changed = True
        self._data = items
        self._counts = {}
        self._shared = False
        for value in items.values():
            self._count(self._state_of(value), 1)
        return changed

    def share(self) -> tuple[Mapping[str, V], Mapping[str, int]]:
        """Read-only views of the table and its counts, valid for ever: the next change
        copies first."""
        self._shared = True
        return MappingProxyType(self._data), MappingProxyType(self._counts)

    def _own(self) -> None:
        if self._shared:
            self._data = dict(self._data)
            self._counts = dict(self._counts)
            self._shared = False

    def _count(self, state: str, delta: int) -> None:
        count = self._counts.get(state, 0) + delta
        if count:
            self._counts[state] = count
        else:
            self._counts.pop(state, None)
