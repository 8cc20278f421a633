"""Snapshots in a real stream: the newest whole one is found, in parts, past an unfinished one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from bus import topology
from bus.connection import Bus
from master import snapshots
from master.journal import Position

pytestmark = pytest.mark.integration


@pytest.fixture
def bus(vhost_url: str) -> Iterator[Bus]:
    made = Bus(vhost_url, name=f"test-snapshots-{uuid.uuid4().hex[:8]}", declare_topology=False)
    made.declare(topology.SNAPSHOT_STREAM_DECL)
    made.connect(attempts=3)
    yield made
    made.close()


def test_no_snapshot_at_all(bus: Bus) -> None:
    assert snapshots.newest(bus) is None


def test_the_newest_snapshot_comes_back_whole_from_several_parts(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "PART_BYTES", 1000)
    snapshots.publish(bus, b"old" * 2000, Position(epoch=0, seq=10, offset=11, leader="m1"))
    newer = bytes(range(256)) * 20  # 5,120 bytes: six parts
    assert snapshots.publish(bus, newer, Position(epoch=30, seq=4, offset=35, leader="m2")) == 6
    assert bus.flush(10)
    found = snapshots.newest(bus)
    assert found is not None
    assert found.data == newer
    assert found.position == Position(epoch=30, seq=4, offset=35, leader="m2")


def test_a_snapshot_its_writer_did_not_finish_is_passed_over(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "PART_BYTES", 1000)
    whole = b"w" * 2500
    snapshots.publish(bus, whole, Position(epoch=3, seq=7, offset=9, leader="m1"))
    # A writer that died after two of its three parts:
    for index in range(2):
        headers = {
            snapshots.ID: "unfinished",
            snapshots.PART: index,
            snapshots.PARTS: 3,
            snapshots.EPOCH: 3,
            snapshots.SEQ: 9,
            snapshots.OFFSET: 12,
            snapshots.LEADER: "m1",
        }
        bus.publish_raw(
            topology.DEFAULT_EXCHANGE, topology.SNAPSHOT_STREAM, b"x" * 1000, headers=headers
        )
    assert bus.flush(10)
    found = snapshots.newest(bus)
    assert found is not None
    assert found.data == whole
    assert found.position.seq == 7


def test_junk_in_the_snapshot_stream_is_not_believed(bus: Bus) -> None:
    bus.publish_raw(topology.DEFAULT_EXCHANGE, topology.SNAPSHOT_STREAM, b"junk")
    assert bus.flush(10)
    assert snapshots.newest(bus) is None
    snapshots.publish(bus, b"real", Position(epoch=1, seq=2, offset=3, leader="m1"))
    bus.publish_raw(topology.DEFAULT_EXCHANGE, topology.SNAPSHOT_STREAM, b"more junk")
    assert bus.flush(10)
    found = snapshots.newest(bus)  # junk after a snapshot does not hide it
    assert found is not None and found.data == b"real"
