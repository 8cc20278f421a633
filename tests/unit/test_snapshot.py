"""Snapshots: a loaded state is the dumped one, in every respect."""

from __future__ import annotations

import json

import pytest

from master import snapshot
from master.state import ClusterState
from tests.unit.journaled import SETTINGS, Leader, events_of, feed, standby
from tests.unit.test_replay import SCRIPTED


def scripted_state() -> ClusterState:
    leader = Leader()
    leader.run(SCRIPTED)
    return leader.controller.state


def test_a_loaded_state_is_the_dumped_one() -> None:
    state = scripted_state()
    data = snapshot.dump(state)
    loaded = snapshot.load(data, remember_requests=SETTINGS.remember_requests)
    assert loaded.differences(state) == []
    assert snapshot.dump(loaded) == data
    assert loaded.tasks and loaded.requests.items() and loaded.forgotten  # nothing trivial


def test_every_snapshot_of_a_run_loads_back_to_the_same_bytes() -> None:
    leader = Leader()
    leader.run(SCRIPTED)
    for _, data in leader.snapshots:
        loaded = snapshot.load(data, remember_requests=SETTINGS.remember_requests)
        assert snapshot.dump(loaded) == data
    assert any(json.loads(data)["fenced"] for _, data in leader.snapshots)


def test_nodes_known_only_from_the_journal_are_kept_with_their_bookings() -> None:
    leader = Leader()
    leader.run(SCRIPTED)
    cold = standby()
    feed(cold, events_of(leader.timeline))  # no heartbeat yet: every node is unseen
    assert cold.state.unseen and not cold.state.nodes
    loaded = snapshot.load(snapshot.dump(cold.state), remember_requests=SETTINGS.remember_requests)
    assert loaded.differences(cold.state) == []
    assert any(record.task_ids for record in loaded.unseen.values())


def test_indexes_are_rebuilt_not_read() -> None:
    state = scripted_state()
    document = json.loads(snapshot.dump(state))
    assert set(document) == {
        "format",
        "jobs",
        "tasks",
        "nodes",
        "unseen",
        "ended",
        "forgotten",
        "fenced",
        "requests",
        "subnets",
    }
    assert "task_counts" not in document["jobs"][0] and "task_ids" not in document["nodes"][0]


def test_a_smaller_request_memory_keeps_the_most_recent() -> None:
    state = scripted_state()
    loaded = snapshot.load(snapshot.dump(state), remember_requests=2)
    assert loaded.requests.items() == state.requests.items()[-2:]
    assert loaded.differences(state) == [
        f"requests: {loaded.requests.items()!r} != {state.requests.items()!r}"
    ]


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'{"format": 99}', b'{"format": 1}', b'{"format": 1, "jobs": 3}'],
)
def test_what_is_not_a_snapshot_is_refused(data: bytes) -> None:
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load(data)
