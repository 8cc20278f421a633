"""The journal: what its records are, and how a master follows it. No I/O.

The journal is the stream `corral.journal`. It holds two kinds of record:

- `Claim`: a master asks to lead. The broker-assigned offset of the record is
  that master's **epoch**, so epochs only grow. The newest claim in the
  journal names the leader; a master that finds its own claim there has
  replayed everything before it and leads from then on.
- `Batch`: the events of one or more inputs of the leader, in order, tagged
  with the leader's epoch and a sequence number. A batch too large for one
  message is split into parts; only the part marked `final` makes it count,
  so a leader that died half-way through a batch left nothing half-applied.

Every master reads the journal through a `Follower`, which applies the same
rule in the same order everywhere: a batch counts only if its epoch is that
of the newest claim before it. A deposed leader that wrote after a newer
claim (it was frozen, or partitioned) is ignored by everyone.

Records are untrusted input like any message: one that does not parse is
skipped with a warning (a stream cannot dead-letter).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError

from master import events as ev
from schemas.base import Strict

log = logging.getLogger("corral.master")

# A batch's events go out in parts of at most this many bytes (well under a message's limit).
PART_BYTES = 1024 * 1024


class Claim(Strict):
    kind: Literal["claim"] = "claim"
    master: str
    nonce: str  # tells this claim from an earlier one of the same master
    at: float


class Batch(Strict):
    kind: Literal["batch"] = "batch"
    master: str
    epoch: int
    seq: int  # 1, 2, 3… within the epoch
    part: int = 0
    final: bool = True
    events: list[ev.AnyEvent] = Field(default_factory=list)


Record = Annotated[Claim | Batch, Field(discriminator="kind")]
_RECORD: TypeAdapter[Claim | Batch] = TypeAdapter(Record)


def decode(body: bytes) -> Claim | Batch | None:
    try:
        return _RECORD.validate_json(body)
    except ValidationError as exc:
        log.warning("skipping a journal record that does not parse: %s", str(exc)[:300])
        return None


def encode_claim(claim: Claim) -> bytes:
    return claim.model_dump_json().encode()


def encode_batch(
    master: str, epoch: int, seq: int, events: list[ev.Event], part_bytes: int = PART_BYTES
) -> list[bytes]:
    """The messages of one batch: its events in parts of about `part_bytes`, the last final."""
    encoded = [event.model_dump_json().encode() for event in events]
    groups: list[list[bytes]] = [[]]
    size = 0
    for item in encoded:
        if groups[-1] and size + len(item) > part_bytes:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += len(item) + 1
    bodies = []
    for index, group in enumerate(groups):
        head = Batch(
            master=master, epoch=epoch, seq=seq, part=index, final=index == len(groups) - 1
        ).model_dump_json(exclude={"events"})
        bodies.append(head[:-1].encode() + b',"events":[' + b",".join(group) + b"]}")
    return bodies


@dataclass(frozen=True)
class Position:
    """Where a state stands in the journal: through batch `seq` of `epoch`, read up to
    `offset` (the next record to read is offset + 1)."""

    epoch: int = -1
    seq: int = 0
    offset: int = -1
    leader: str = ""


@dataclass(frozen=True)
class ClaimSeen:
    offset: int
    master: str
    nonce: str


@dataclass
class Follower:
    """Reads records in offset order and says what counts. Every master has one."""

    position: Position = field(default_factory=Position)
    _parts: list[ev.Event] = field(default_factory=list)
    _parts_of: tuple[int, int] = (-1, 0)  # (epoch, seq) the buffered parts belong to

    @property
    def epoch(self) -> int:
        return self.position.epoch

    @property
    def offset(self) -> int:
        return self.position.offset

    def feed(self, offset: int, record: Claim | Batch | None) -> list[ev.Event] | ClaimSeen:
        """The events to apply for the record at `offset` (often none), or the claim it is."""
        p = self.position
        if offset <= p.offset:
            return []  # read again after a reconnect
        if record is None:
            self.position = Position(p.epoch, p.seq, offset, p.leader)
            return []
        if isinstance(record, Claim):
            self.position = Position(offset, 0, offset, record.master)
            self._parts = []
            return ClaimSeen(offset, record.master, record.nonce)
        self.position = Position(p.epoch, p.seq, offset, p.leader)
        if record.epoch != p.epoch or record.seq <= p.seq:
            return []  # a deposed leader's, or already in our state (a snapshot's)
        if self._parts_of != (record.epoch, record.seq):
            self._parts, self._parts_of = [], (record.epoch, record.seq)
        if record.part != 0 and not self._parts:
            return []  # its first parts were before where we started reading
        self._parts.extend(record.events)
        if not record.final:
            return []
        events, self._parts, self._parts_of = self._parts, [], (-1, 0)
        self.position = Position(p.epoch, record.seq, offset, p.leader)
        return events
