"""The names a worker's DNS server answers (`worker.dns`): every job's endpoints.

- `<job>` and `<job>.corral`: the job's serving addresses (its healthy replicas, or its
  running ones when none is healthy), rotated by one on every lookup;
- `<slot>.<job>` and `<slot>.<job>.corral`: that one slot's address;
- any other name under `.corral` does not exist; any other bare name is not ours.

Case-insensitive, with or without a trailing dot. The table is written by the worker's
bus thread (`worker.network`, from the master's view) and read by the server's threads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

SUFFIX = "corral"


@dataclass(frozen=True)
class Endpoints:
    """What one job's names resolve to."""

    serving: tuple[str, ...]  # IPv4 addresses `<job>` resolves to
    slots: Mapping[int, str]  # slot -> the IPv4 address `<slot>.<job>` resolves to


@dataclass(frozen=True)
class Resolved:
    exists: bool  # False: a name under `.corral` that is not in the table
    addresses: list[str]


class NameTable:
    """Every job's endpoints: written by the worker's bus thread, read by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Endpoints] = {}
        self._turns: dict[str, int] = {}  # job -> where its next rotation starts

    def replace(self, table: Mapping[str, Endpoints]) -> None:
        """Makes `table` the whole table."""
        with self._lock:
            self._jobs = dict(table)
            self._turns = {job: turn for job, turn in self._turns.items() if job in self._jobs}

    def apply(self, changes: Mapping[str, Endpoints | None]) -> None:
        """Sets each job's endpoints, or removes the job where they are None."""
        with self._lock:
            for job, endpoints in changes.items():
                if endpoints is None:
                    self._jobs.pop(job, None)
                    self._turns.pop(job, None)
                else:
                    self._jobs[job] = endpoints

    def lookup(self, qname: str) -> list[str] | None:
        """The addresses of a cluster name, or None if `qname` is not one (to be forwarded).

        `<job>` names rotate their list on every call. A name under `.corral` that is not in
        the table gives [].
        """
        resolved = self.resolve(qname, rotate=True)
        return None if resolved is None else resolved.addresses

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def resolve(self, qname: str, *, rotate: bool) -> Resolved | None:
        """What `qname` is: a cluster name and its addresses (`<job>` rotated if `rotate`),
        a name under `.corral` that does not exist, or None (not ours: to be forwarded)."""
        labels, ours = _split(qname)
        with self._lock:
            endpoints = self._jobs.get(labels[-1]) if labels else None
            if endpoints is not None and len(labels) == 1:
                serving = endpoints.serving
                return Resolved(True, self._rotated(labels[0]) if rotate else list(serving))
            slot = _slot(labels[0]) if len(labels) == 2 else None
            if endpoints is not None and slot is not None and slot in endpoints.slots:
                return Resolved(True, [endpoints.slots[slot]])
        # The suffix alone exists: names exist under it.
        return Resolved(not labels, []) if ours else None

    def _rotated(self, job: str) -> list[str]:
        serving = self._jobs[job].serving
        if not serving:
            return []
        start = self._turns.get(job, 0) % len(serving)
        self._turns[job] = start + 1
        return [*serving[start:], *serving[:start]]


def _split(qname: str) -> tuple[tuple[str, ...], bool]:
    """The labels of `qname` before the `.corral` suffix, and whether it had the suffix."""
    name = qname.lower().removesuffix(".")
    labels = tuple(name.split(".")) if name else ()
    if labels and labels[-1] == SUFFIX:
        return labels[:-1], True
    return labels, False


def _slot(label: str) -> int | None:
    # Only the canonical spelling: `01.web` is not slot 1.
    if label.isascii() and label.isdigit() and label == str(int(label)):
        return int(label)
    return None
