"""Snapshots in the stream `corral.snapshots`: writing one, finding the newest.

A snapshot is the state (`master.snapshot.dump`) after a given journal batch,
cut into parts of at most PART_BYTES, published back to back. Every part's
headers say which snapshot it belongs to, its index and the part count, and
where the state stands in the journal (`master.journal.Position`).

Only the active master writes snapshots, so a snapshot's parts sit at
consecutive offsets. To find the newest, a master reads the stream's last
chunk and looks at its last message: if that is the final part of a
snapshot, the parts are the offsets just before it; if it is not (the writer
died half-way), the snapshot before ends just before its first part. The
parts found are checked (same id, every index) before they are believed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bus import Bus, streams, topology
from master.journal import Position
from master.settings import MasterSettings

log = logging.getLogger("corral.master")

PART_BYTES = 2 * 1024 * 1024
# A snapshot has at most this many parts (the stream's whole retention, 2 GiB): a part
# claiming more is not believed, so a forged header cannot make a master read on and on.
MAX_PARTS = topology.SNAPSHOTS_MAX_BYTES // PART_BYTES
SHARE_OF_RETENTION = 4  # a snapshot at least every JOURNAL_MAX_BYTES / this many bytes
MAX_STEPS_BACK = 20  # unfinished snapshots skipped, at most, to find a whole one

ID = "x-corral-snapshot"
PART = "x-corral-part"
PARTS = "x-corral-parts"
EPOCH = "x-corral-epoch"
SEQ = "x-corral-seq"
OFFSET = "x-corral-offset"
LEADER = "x-corral-leader"


def publish(bus: Bus, data: bytes, position: Position) -> int:
    """Queue the parts of a snapshot of `data`, taken at `position`. Returns the part count."""
    snapshot_id = uuid.uuid4().hex
    parts = [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
    for index, part in enumerate(parts):
        headers = {
            ID: snapshot_id,
            PART: index,
            PARTS: len(parts),
            EPOCH: position.epoch,
            SEQ: position.seq,
            OFFSET: position.offset,
            LEADER: position.leader,
        }
        bus.publish_raw(topology.DEFAULT_EXCHANGE, topology.SNAPSHOT_STREAM, part, headers=headers)
    return len(parts)


class Schedule:
    """When the active master snapshots, and holding the snapshot until it may go out.

    `batch_sent` is called as each batch leaves (the state is then exactly the journal
    through it). A snapshot is due after `snapshot_every` batches (replayed ones
    count), after a quarter of the journal's retention in bytes, or after
    `snapshot_max_age` seconds with batches since: so the newest snapshot is always
    far newer than the oldest record retention keeps. It is taken at once and
    published by `committed` once its batch is in the journal.
    """

    def __init__(
        self, settings: MasterSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.batches = 0  # since the last snapshot
        self._bytes_at_last = 0
        self._last_at = clock()
        self._pending: tuple[int, bytes, Position] | None = None

    def batch_sent(
        self, seq: int, sent_bytes: int, position: Position, dump: Callable[[], bytes]
    ) -> None:
        self.batches += 1
        due = (
            self.batches >= self.settings.snapshot_every
            or sent_bytes - self._bytes_at_last >= topology.JOURNAL_MAX_BYTES // SHARE_OF_RETENTION
            or self.clock() - self._last_at >= self.settings.snapshot_max_age
        )
        if not due or self._pending is not None:
            return
        self._pending = (seq, dump(), position)
        self.batches = 0
        self._bytes_at_last = sent_bytes
        self._last_at = self.clock()

    def committed(self, bus: Bus, seq: int) -> None:
        """Batch `seq` is in the journal: publish the snapshot taken with it, if any."""
        if self._pending is None or seq < self._pending[0]:
            return
        _, data, position = self._pending
        self._pending = None
        parts = publish(bus, data, position)
        log.info(
            "master %s: snapshot after batch %d (%d bytes, %d part(s))",
            self.settings.name,
            position.seq,
            len(data),
            parts,
        )


@dataclass(frozen=True)
class Found:
    position: Position
    data: bytes
    offset: int  # of the snapshot's last part in corral.snapshots


def _int(headers: dict[str, Any], key: str) -> int | None:
    value = headers.get(key)
    return value if isinstance(value, int) else None


def newest(bus: Bus) -> Found | None:
    """The newest whole snapshot, or None if there is none. Raises ConnectionLost."""
    tail = streams.read(bus, topology.SNAPSHOT_STREAM, "last")
    if not tail:
        return None
    last = max(tail, key=lambda m: m.offset)
    for _ in range(MAX_STEPS_BACK):
        part, parts = _int(last.headers, PART), _int(last.headers, PARTS)
        if part is not None and parts is not None and 0 <= part < parts <= MAX_PARTS:
            if part == parts - 1:
                found = _assemble(bus, last.offset - part, parts)
                if found is not None:
                    return found
            before = last.offset - part - 1  # the snapshot before ends there
        else:
            log.warning("corral.snapshots offset %d is not a snapshot part", last.offset)
            before = last.offset - 1
        if before < 0:
            return None
        previous = streams.read(bus, topology.SNAPSHOT_STREAM, before, count=1)
        if not previous or previous[0].offset != before:
            return None  # retention has removed it
        last = previous[0]
    return None


def _assemble(bus: Bus, first: int, parts: int) -> Found | None:
    messages = streams.read(bus, topology.SNAPSHOT_STREAM, first, count=parts)
    if len(messages) != parts or messages[0].offset != first:
        return None
    head = messages[0].headers
    for index, message in enumerate(messages):
        if message.headers.get(ID) != head.get(ID) or _int(message.headers, PART) != index:
            log.warning("snapshot at offset %d is not whole; looking further back", first)
            return None
    epoch, seq, offset = _int(head, EPOCH), _int(head, SEQ), _int(head, OFFSET)
    leader = head.get(LEADER)
    if epoch is None or seq is None or offset is None:
        return None
    position = Position(epoch, seq, offset, leader if isinstance(leader, str) else "")
    return Found(position, b"".join(m.body for m in messages), messages[-1].offset)
