"""The journal's rules (master/journal.py) and the leader's group commit (master/writer.py)."""

from __future__ import annotations

import functools

from master import events as ev
from master import journal
from master.journal import Batch, Claim, ClaimSeen, Follower, Position
from master.writer import JournalWriter


def cancelled(job: str) -> ev.JobCancelled:
    return ev.JobCancelled(at=1.0, job_id=job)


def batch(epoch: int, seq: int, *jobs: str, part: int = 0, final: bool = True) -> Batch:
    return Batch(
        master="m",
        epoch=epoch,
        seq=seq,
        part=part,
        final=final,
        events=[cancelled(j) for j in jobs],
    )


def claim(master: str = "m", nonce: str = "n") -> Claim:
    return Claim(master=master, nonce=nonce, at=1.0)


def test_a_claim_sets_the_epoch_to_its_offset_and_batches_of_that_epoch_count() -> None:
    follower = Follower()
    assert follower.feed(0, claim()) == ClaimSeen(0, "m", "n")
    assert follower.feed(1, batch(0, 1, "a")) == [cancelled("a")]
    assert follower.feed(2, batch(0, 2, "b", "c")) == [cancelled("b"), cancelled("c")]
    assert follower.position == Position(epoch=0, seq=2, offset=2, leader="m")


def test_a_deposed_leaders_batches_after_a_newer_claim_are_ignored() -> None:
    follower = Follower()
    follower.feed(0, claim("old", "1"))
    follower.feed(1, batch(0, 1, "a"))
    assert isinstance(follower.feed(2, claim("new", "2")), ClaimSeen)
    assert follower.feed(3, batch(0, 2, "late")) == []  # the old leader woke up
    assert follower.feed(4, Batch(master="new", epoch=2, seq=1, events=[cancelled("b")])) == [
        cancelled("b")
    ]
    assert follower.epoch == 2


def test_parts_count_only_when_the_final_one_arrives() -> None:
    follower = Follower()
    follower.feed(0, claim())
    assert follower.feed(1, batch(0, 1, "a", final=False)) == []
    assert follower.feed(2, batch(0, 1, "b", part=1)) == [cancelled("a"), cancelled("b")]


def test_a_batch_cut_short_by_a_new_claim_is_dropped_whole() -> None:
    follower = Follower()
    follower.feed(0, claim("old", "1"))
    follower.feed(1, batch(0, 1, "a", final=False))
    follower.feed(2, claim("new", "2"))
    assert follower.feed(3, batch(0, 1, "b", part=1)) == []


def test_records_read_again_and_records_in_the_snapshot_are_skipped() -> None:
    follower = Follower(Position(epoch=5, seq=3, offset=9, leader="m"))
    assert follower.feed(9, batch(5, 4, "again")) == []  # at or before where we stand
    assert follower.feed(10, batch(5, 3, "in-the-snapshot")) == []
    assert follower.feed(11, batch(5, 4, "new")) == [cancelled("new")]


def test_a_record_that_does_not_parse_is_skipped() -> None:
    follower = Follower()
    follower.feed(0, claim())
    assert journal.decode(b'{"kind": "batch", "nonsense": 1}') is None
    assert follower.feed(1, None) == []
    assert follower.offset == 1
    assert follower.feed(2, batch(0, 1, "a")) == [cancelled("a")]


def test_a_large_batch_is_cut_into_parts_that_decode_back() -> None:
    events: list[ev.Event] = [cancelled(f"job{i}") for i in range(3000)]
    bodies = journal.encode_batch("m", 7, 1, events, part_bytes=20_000)
    assert len(bodies) > 3
    assert all(len(body) < 25_000 for body in bodies)
    follower = Follower(Position(epoch=7, offset=0))
    applied: list[ev.Event] = []
    for offset, body in enumerate(bodies, start=1):
        outcome = follower.feed(offset, journal.decode(body))
        assert isinstance(outcome, list)
        applied.extend(outcome)
    assert applied == events


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_actions_wait_for_their_batch_and_run_in_order() -> None:
    sent: list[list[bytes]] = []
    done: list[str] = []
    writer = JournalWriter("m", 0, sent.append, clock=Clock())
    writer.then(lambda: done.append("read"))  # nothing unwritten: at once
    writer.add(cancelled("a"))
    writer.then(lambda: done.append("a"))
    writer.flush()
    writer.add(cancelled("b"))  # while batch 1 is in flight: piles into batch 2
    writer.then(lambda: done.append("b"))
    writer.then(lambda: done.append("read after b"))
    writer.flush()
    assert len(sent) == 1 and done == ["read"]
    writer.committed_through(1)
    assert done == ["read", "a"] and len(sent) == 2  # batch 2 went out at once
    writer.committed_through(2)
    assert done == ["read", "a", "b", "read after b"]


def test_under_load_batches_grow_instead_of_round_trips() -> None:
    sent: list[list[bytes]] = []
    writer = JournalWriter("m", 0, sent.append, clock=Clock())
    writer.add(cancelled("first"))
    writer.flush()
    for index in range(500):
        writer.add(cancelled(f"j{index}"))
        writer.then(lambda: None)
        writer.flush()
    writer.committed_through(1)
    assert len(sent) == 2  # 500 inputs, one more batch
    assert writer.waiting == 500


def test_a_batch_not_read_back_shows_as_stuck() -> None:
    clock = Clock()
    writer = JournalWriter("m", 0, lambda _bodies: None, clock=clock)
    writer.add(cancelled("a"))
    writer.flush()
    clock.now = 20.0
    assert writer.stuck_for() == 20.0
    writer.committed_through(1)
    assert writer.stuck_for() == 0.0


class FakeBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, object]]] = []

    def publish_raw(
        self, exchange: str, routing_key: str, body: bytes, *, headers: dict[str, object]
    ) -> None:
        self.published.append((routing_key, body, headers))


def test_a_snapshot_is_taken_when_due_and_published_once_its_batch_is_committed() -> None:
    from master.settings import MasterSettings
    from master.snapshots import Schedule

    clock = Clock()
    schedule = Schedule(MasterSettings(amqp_url="x", snapshot_every=3), clock=clock)
    bus = FakeBus()
    dumps: list[int] = []

    def dump(seq: int) -> bytes:
        dumps.append(seq)
        return f"state after {seq}".encode()

    for seq in (1, 2, 3):
        schedule.batch_sent(
            seq, 100 * seq, Position(0, seq, seq, "m"), functools.partial(dump, seq)
        )
    assert dumps == [3]  # taken as batch 3 left: the state is exactly batches 1..3
    schedule.committed(bus, 2)  # type: ignore[arg-type]
    assert bus.published == []  # not before its batch is in the journal
    schedule.committed(bus, 3)  # type: ignore[arg-type]
    assert [body for _, body, _ in bus.published] == [b"state after 3"]
    clock.now = 3600.0  # an hour later, one batch more: due by age
    schedule.batch_sent(4, 500, Position(0, 4, 4, "m"), functools.partial(dump, 4))
    assert dumps == [3, 4]


def test_the_streams_have_retention_and_snapshots_come_far_more_often() -> None:
    from bus import topology
    from master.settings import MasterSettings
    from master.snapshots import SHARE_OF_RETENTION, Schedule

    for stream in (topology.JOURNAL_STREAM_DECL, topology.SNAPSHOT_STREAM_DECL):
        assert stream.arguments["x-queue-type"] == "stream"
        assert stream.arguments["x-max-age"] == "7D"
        assert stream.arguments["x-max-length-bytes"] > 0
    settings = MasterSettings(amqp_url="x")
    assert settings.snapshot_max_age < 7 * 24 * 3600  # newer than the oldest record kept
    schedule = Schedule(settings, clock=Clock())
    taken: list[int] = []

    def dump() -> bytes:
        taken.append(1)
        return b""

    big = topology.JOURNAL_MAX_BYTES // SHARE_OF_RETENTION  # few batches, many bytes
    schedule.batch_sent(1, big, Position(0, 1, 1, "m"), dump)
    assert taken == [1]
