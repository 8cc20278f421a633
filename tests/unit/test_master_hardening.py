"""Forged input that reaches a master outside the API: snapshots and master beats."""

from __future__ import annotations

import pytest

from master import snapshot
from master.daemon import MASTERS_KEPT, MasterDaemon
from master.settings import MasterSettings
from master.term import MASTERS_FORGOTTEN_AFTER
from schemas.messages import MasterBeat


def test_a_snapshot_nested_thousands_deep_is_refused_not_fatal() -> None:
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load(b"[" * 100_000 + b"]" * 100_000)


def test_forged_master_beats_cannot_grow_the_table() -> None:
    now = [1000.0]
    daemon = MasterDaemon(MasterSettings(amqp_url="amqp://x/"), clock=lambda: now[0])
    for index in range(MASTERS_KEPT * 4):
        beat = MasterBeat(master="m", instance=f"forged{index}", role="standby")
        daemon._seen(beat, now[0])
    assert len(daemon.seen()) == MASTERS_KEPT
    now[0] += MASTERS_FORGOTTEN_AFTER + 1
    real = MasterBeat(master="m1", instance="real", role="active", epoch=3)
    daemon._seen(real, now[0])
    assert [entry.beat.instance for entry in daemon.seen()] == ["real"]
