"""What api.masters and api.status answer (master/overview.py), from beats and a state."""

from __future__ import annotations

from datetime import UTC, datetime

from master import events as ev
from master.overview import SeenMaster, cluster_status, masters_info
from schemas.api import MAX_MASTERS, MAX_PENDING_REASONS, ClusterStatus, MastersInfo
from schemas.messages import MasterBeat, MasterRole
from tests.unit.factories import Cluster, GiB, job_spec

NOW = 1_900_000_000.0


def seen(
    name: str,
    role: MasterRole,
    *,
    applied: int = 10,
    epoch: int | None = 7,
    ago: float = 0.5,
    started_at: float = 0.0,
    broker: str = "",
) -> SeenMaster:
    beat = MasterBeat(
        master=name,
        instance=f"{name}-i1",
        role=role,
        epoch=epoch,
        applied=applied,
        started_at=started_at,
        broker=broker,
    )
    return SeenMaster(beat, NOW - ago)


def test_the_active_master_comes_first_then_by_role_and_name() -> None:
    beats = [
        seen("m3", "standby"),
        seen("m1", "standby"),
        seen("m2", "active"),
        seen("m0", "claiming"),
    ]
    info = masters_info(beats, NOW, leader_applied=10)
    assert [(m.name, m.role) for m in info.masters] == [
        ("m2", "active"),
        ("m0", "claiming"),
        ("m1", "standby"),
        ("m3", "standby"),
    ]
    assert info.omitted == 0


def test_lag_is_the_leaders_offset_minus_each_masters_and_unknown_before_any() -> None:
    beats = [
        seen("lead", "active", applied=100),
        seen("behind", "standby", applied=97),
        seen("new", "standby", applied=-1),
        seen("ahead", "standby", applied=101),  # its beat is newer than the offset we compare
    ]
    lags = {m.name: m.lag for m in masters_info(beats, NOW, leader_applied=100).masters}
    assert lags == {"lead": 0, "behind": 3, "new": None, "ahead": 0}
    unknown = masters_info(beats, NOW, leader_applied=-1).masters
    assert {m.lag for m in unknown} == {None}


def test_seen_ago_started_at_broker_and_epoch_come_from_the_entry() -> None:
    entry = seen("m1", "active", ago=2.25, started_at=NOW - 60, broker="rabbit@b1", epoch=None)
    (master,) = masters_info([entry], NOW, leader_applied=10).masters
    assert master.last_seen_ago == 2.25
    assert master.started_at == datetime.fromtimestamp(NOW - 60, UTC)
    assert (master.broker, master.epoch, master.instance) == ("rabbit@b1", None, "m1-i1")
    (never,) = masters_info([seen("m2", "standby", ago=-1)], NOW, 10).masters
    assert never.started_at is None and never.last_seen_ago == 0  # clocks never go back here


def test_the_list_of_masters_is_bounded() -> None:
    beats = [seen(f"m{i:03}", "standby") for i in range(MAX_MASTERS + 5)]
    info = masters_info([*beats, seen("zz", "active")], NOW, leader_applied=10)
    assert len(info.masters) == MAX_MASTERS and info.omitted == 6
    assert info.masters[0].name == "zz"
    assert MastersInfo.model_validate(info.model_dump(mode="json")) == info


def cluster() -> Cluster:
    c = Cluster(now=NOW)
    c.node("a", cpus=4, memory=8 * GiB)
    c.node("b", cpus=2, memory=4 * GiB)
    c.node("gone", cpus=16, memory=64 * GiB)
    c.node("flaky", cpus=8, memory=8 * GiB)
    c.node_state("gone", "down")
    c.node_state("flaky", "suspect")
    return c


def test_workers_by_state_with_the_room_of_the_ready_ones() -> None:
    c = cluster()
    c.job(job_spec("web", kind="service", cpu=1.5, memory="1g"), tasks=True)
    c.assign("web-0-0", "a")
    status = cluster_status(c.state, MastersInfo(), dead_letters=None)
    assert status.workers.states == {"down": 1, "ready": 2, "suspect": 1}
    assert (status.workers.capacity.cpus, status.workers.capacity.memory) == (6, 12 * GiB)
    assert (status.workers.free.cpus, status.workers.free.memory) == (4.5, 11 * GiB)


def test_jobs_by_state() -> None:
    c = cluster()
    c.job(job_spec("web", kind="service"))
    c.assign("web-0-0", "a")
    c.update("web-0-0", "running")
    c.apply(ev.TaskHealthy(at=NOW, task_id="web-0-0"))
    c.job(job_spec("once"))
    c.assign("once-0-0", "a")
    c.update("once-0-0", "exited", 0)
    c.job(job_spec("later"))
    c.job(job_spec("stopped"))
    c.apply(ev.JobCancelled(at=NOW, job_id="stopped"))
    status = cluster_status(c.state, MastersInfo(), dead_letters=0)
    assert status.jobs == {"cancelled": 1, "complete": 1, "pending": 1, "running": 1}
    assert status.dead_letters == 0


def test_pending_reasons_most_common_first_and_at_most_ten() -> None:
    c = cluster()
    c.job(job_spec("big", replicas=30), tasks=True)
    for slot in range(30):
        if slot < 12:
            reason = "no node has 8 free CPUs"
        elif slot < 20:
            reason = f"odd reason {slot}"
        elif slot < 25:
            reason = "2 nodes are down"
        else:
            reason = ""  # not looked at yet
        if reason:
            c.apply(ev.TaskUnplaced(at=NOW, task_id=f"big-{slot}-0", reason=reason))
    pending = cluster_status(c.state, MastersInfo(), None).pending
    assert pending.count == 30
    assert len(pending.reasons) == MAX_PENDING_REASONS
    assert [(r.reason, r.count) for r in pending.reasons[:3]] == [
        ("no node has 8 free CPUs", 12),
        ("", 5),
        ("2 nodes are down", 5),
    ]
    assert [r.reason for r in pending.reasons[3:]] == [f"odd reason {s}" for s in range(12, 19)]


def test_status_carries_the_masters_and_the_active_masters_epoch() -> None:
    masters = masters_info([seen("m2", "standby", epoch=4), seen("m1", "active", epoch=5)], NOW, 10)
    status = cluster_status(cluster().state, masters, dead_letters=3)
    assert [m.name for m in status.masters] == ["m1", "m2"]
    assert status.epoch == 5
    assert cluster_status(cluster().state, MastersInfo(), None).epoch is None
    assert ClusterStatus.model_validate(status.model_dump(mode="json")) == status


def test_an_empty_cluster() -> None:
    status = cluster_status(Cluster().state, MastersInfo(), None)
    assert status.workers.states == {} and status.jobs == {}
    assert (status.pending.count, status.pending.reasons) == (0, [])
    assert (status.workers.capacity.cpus, status.workers.free.memory) == (0, 0)
