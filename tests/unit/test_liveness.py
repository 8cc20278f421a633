"""Node liveness: ready -> suspect -> down by silence, the reconnect grace, the partition guard."""

from __future__ import annotations

import pytest

from master import events as ev
from master.liveness import Liveness
from master.settings import MasterSettings
from tests.unit.factories import Cluster

SETTINGS = MasterSettings(amqp_url="amqp://x")


def nodes(*last_seen: float) -> Cluster:
    """Nodes n0, n1, ... last heard from at the given times."""
    cluster = Cluster()
    for index, at in enumerate(last_seen):
        cluster.now = at
        cluster.node(f"n{index}")
    return cluster


def judge(liveness: Liveness, cluster: Cluster, now: float) -> dict[str, str]:
    """One liveness check at `now`, applied; the changes it made."""
    events = liveness.check(cluster.state, now)
    cluster.apply(*events)
    assert all(isinstance(e, ev.NodeStateChanged) and e.at == now for e in events)
    return {e.node_id: e.state for e in events if isinstance(e, ev.NodeStateChanged)}


def states(cluster: Cluster) -> dict[str, str]:
    return {node_id: node.state for node_id, node in cluster.state.nodes.items()}


def test_defaults() -> None:
    assert (SETTINGS.suspect_after, SETTINGS.dead_after) == (2.0, 3.0)


@pytest.mark.parametrize(
    ("now", "state"), [(10.0, "ready"), (11.9, "ready"), (12.0, "suspect"), (13.0, "down")]
)
def test_silence_makes_a_node_suspect_then_down(now: float, state: str) -> None:
    cluster = nodes(10.0)
    judge(Liveness(SETTINGS), cluster, now)
    assert states(cluster) == {"n0": state}


def test_each_change_is_reported_once_with_the_silence() -> None:
    cluster = nodes(10.0)
    liveness = Liveness(SETTINGS)
    events = liveness.check(cluster.state, 12.5)
    assert events == [
        ev.NodeStateChanged(at=12.5, node_id="n0", state="suspect", reason="no heartbeat for 2.5 s")
    ]
    cluster.apply(*events)
    assert judge(liveness, cluster, 12.9) == {}
    assert judge(liveness, cluster, 13.0) == {"n0": "down"}
    assert judge(liveness, cluster, 60.0) == {}


def test_liveness_never_brings_a_node_back() -> None:
    cluster = nodes(10.0)
    cluster.node_state("n0", "suspect")
    assert judge(Liveness(SETTINGS), cluster, 10.5) == {}
    assert states(cluster) == {"n0": "suspect"}


def test_grace_after_a_reconnect_postpones_judgement() -> None:
    cluster = nodes(0.0, 0.0)
    liveness = Liveness(SETTINGS)
    liveness.grant_grace(50.0)
    assert judge(liveness, cluster, 50.0) == {}
    assert judge(liveness, cluster, 51.9) == {}
    cluster.now = 51.0
    cluster.node("n1")  # n1 speaks again after the reconnect; n0 stays silent
    assert judge(liveness, cluster, 52.0) == {"n0": "suspect"}
    cluster.now = 52.5
    cluster.node("n1")
    assert judge(liveness, cluster, 53.0) == {"n0": "down"}
    assert states(cluster) == {"n0": "down", "n1": "ready"}


def test_without_grace_a_long_silence_is_down_at_once() -> None:
    cluster = nodes(0.0, 49.0)
    assert judge(Liveness(SETTINGS), cluster, 50.0) == {"n0": "down"}


def test_grace_does_not_revive_a_down_node() -> None:
    cluster = nodes(0.0)
    cluster.node_state("n0", "down")
    liveness = Liveness(SETTINGS)
    liveness.grant_grace(50.0)
    assert judge(liveness, cluster, 52.5) == {}


# -- the partition guard --


def test_most_nodes_silent_at_once_are_held_as_suspect() -> None:
    cluster = nodes(0.0, 0.0, 0.0, 0.0)
    liveness = Liveness(SETTINGS, hold_max=30.0)
    for now in (1.0, 2.0):
        cluster.now = now
        cluster.node("n3")  # only n3 keeps beating
    assert judge(liveness, cluster, 2.0) == {"n0": "suspect", "n1": "suspect", "n2": "suspect"}
    cluster.node("n3")
    assert judge(liveness, cluster, 3.0) == {}
    for now in (4.0, 10.0, 32.9):
        cluster.now = now
        cluster.node("n3")
        assert judge(liveness, cluster, now) == {}
    assert states(cluster) == {"n0": "suspect", "n1": "suspect", "n2": "suspect", "n3": "ready"}
    cluster.now = 33.0
    cluster.node("n3")
    assert judge(liveness, cluster, 33.0) == {"n0": "down", "n1": "down", "n2": "down"}


def test_the_guard_releases_a_node_that_speaks_again() -> None:
    cluster = nodes(0.0, 0.0, 0.0, 0.0)
    liveness = Liveness(SETTINGS, hold_max=30.0)
    cluster.now = 2.9
    cluster.node("n3")
    judge(liveness, cluster, 3.0)
    assert states(cluster)["n0"] == "suspect"
    cluster.now = 4.0
    cluster.node("n0")
    cluster.node_state("n0", "ready")  # what a heartbeat leads to (the controller)
    cluster.node("n3")
    # Two of four silent is not "most": the guard lets go, and gives the nodes still
    # silent dead_after more (a partition heals node by node), then they are down.
    assert judge(liveness, cluster, 4.0) == {}
    for now in (5.0, 6.9):
        cluster.now = now
        cluster.node("n0")
        cluster.node("n3")
        assert judge(liveness, cluster, now) == {}
    cluster.now = 7.0
    cluster.node("n0")
    cluster.node("n3")
    assert judge(liveness, cluster, 7.0) == {"n1": "down", "n2": "down"}


@pytest.mark.parametrize(
    ("silent", "total", "held"),
    [(1, 2, False), (2, 2, True), (2, 4, False), (3, 4, True), (4, 4, True), (1, 1, False)],
)
def test_which_silences_are_held(silent: int, total: int, held: bool) -> None:
    cluster = nodes(*([0.0] * silent + [2.5] * (total - silent)))
    judge(Liveness(SETTINGS), cluster, 3.0)
    expected = "suspect" if held else "down"
    assert [s for s in states(cluster).values() if s != "ready"] == [expected] * silent


def test_most_nodes_silent_within_one_heartbeat_interval_are_held() -> None:
    cluster = nodes(9.0, 9.25, 9.5, 9.75)
    liveness = Liveness(SETTINGS)
    now = 9.75
    while now < 14.0:
        now += SETTINGS.tick
        cluster.now = now
        cluster.node("n3")
        judge(liveness, cluster, now)
    assert states(cluster) == {"n0": "suspect", "n1": "suspect", "n2": "suspect", "n3": "ready"}


def test_next_due_is_when_the_first_silent_node_crosses_a_threshold() -> None:
    liveness = Liveness(SETTINGS)
    cluster = nodes(10.0, 10.4, 100.0, 100.0, 100.0)  # the last three are heard throughout
    judge(liveness, cluster, 10.5)
    assert liveness.next_due == 12.0  # n0 turns suspect at 10 + suspect_after
    judge(liveness, cluster, 12.1)  # n0 is suspect: it goes down at 13; n1 suspect at 12.4
    assert liveness.next_due == pytest.approx(12.4)
    judge(liveness, cluster, 12.5)
    assert liveness.next_due == 13.0
    judge(liveness, cluster, 13.5)  # n0 down, n1 down at 13.4: both are down now
    assert states(cluster) == {
        "n0": "down", "n1": "down", "n2": "ready", "n3": "ready", "n4": "ready"
    }  # fmt: skip
    assert liveness.next_due == 102.0  # the others, if they fell silent now


def test_next_due_skips_nodes_the_partition_guard_holds() -> None:
    # Every node silent past dead_after: held at suspect, and no tick is due for them
    # (a deadline in the past would make the daemon tick again at once, forever).
    liveness = Liveness(SETTINGS)
    cluster = nodes(10.0, 10.0, 10.0)
    judge(liveness, cluster, 12.5)
    assert judge(liveness, cluster, 13.5) == {}
    assert set(states(cluster).values()) == {"suspect"}
    assert liveness.next_due == float("inf")


# -- adaptive intervals --


@pytest.mark.parametrize(
    ("now", "state"), [(13.9, "ready"), (14.0, "suspect"), (15.9, "suspect"), (16.0, "down")]
)
def test_a_node_that_beats_every_2_s_is_judged_by_twice_the_timeouts(
    now: float, state: str
) -> None:
    cluster = nodes(10.0)
    cluster.state.nodes["n0"].interval = 2.0
    liveness = Liveness(SETTINGS)
    judge(liveness, cluster, now)
    assert states(cluster) == {"n0": state}
    assert liveness.dead_after(cluster.state.nodes["n0"]) == 6.0


def test_a_node_beating_faster_than_asked_is_judged_by_the_defaults() -> None:
    cluster = nodes(10.0)
    cluster.state.nodes["n0"].interval = 0.5
    assert judge(Liveness(SETTINGS), cluster, 12.0) == {"n0": "suspect"}


def test_an_absurd_interval_is_judged_by_the_longest_honoured() -> None:
    cluster = nodes(10.0)
    cluster.state.nodes["n0"].interval = 3600.0
    assert Liveness(SETTINGS).dead_after(cluster.state.nodes["n0"]) == 3.0 * 60


@pytest.mark.parametrize(
    ("live", "interval"), [(1, 1.0), (500, 1.0), (501, 1.5), (1000, 2.0), (5000, 10.0)]
)
def test_a_large_fleet_is_asked_to_beat_less_often(live: int, interval: float) -> None:
    assert Liveness(SETTINGS).fleet_interval(live) == interval


def test_fleet_interval_keeps_the_base_without_a_limit_and_is_capped() -> None:
    unlimited = MasterSettings(amqp_url="amqp://x", max_heartbeats=0)
    assert Liveness(unlimited).fleet_interval(100_000) == 1.0
    assert Liveness(SETTINGS).fleet_interval(10_000_000) == 60.0


def test_a_stall_of_the_masters_own_loop_is_forgiven() -> None:
    """One long input kept the master from reading heartbeats: nobody is judged late
    for that, but a node silent since keeps being judged from the end of the stall."""
    cluster = nodes(10.0)
    liveness = Liveness(SETTINGS)
    assert not liveness.forgive_stall(12.5, 0.4)  # a short one changes nothing
    assert liveness.forgive_stall(12.5, 2.4)
    assert judge(liveness, cluster, 12.6) == {}
    assert judge(liveness, cluster, 14.5) == {"n0": "suspect"}
    assert judge(liveness, cluster, 15.5) == {"n0": "down"}


def test_a_beat_that_arrived_counts_before_the_loop_reads_it() -> None:
    """The heartbeat intake notes when each beat arrived (`heard`): a node whose beats
    wait behind a busy loop is not suspect; one silent for good still goes down."""
    cluster = nodes(10.0, 10.0)
    liveness = Liveness(SETTINGS)
    liveness.heard = {"n0": 12.5}
    assert judge(liveness, cluster, 13.0) == {"n1": "down"}
    assert judge(liveness, cluster, 14.6) == {"n0": "suspect"}
    (change,) = liveness.check(cluster.state, 15.5)
    assert isinstance(change, ev.NodeStateChanged)
    assert change.reason == "no heartbeat for 3.0 s"
