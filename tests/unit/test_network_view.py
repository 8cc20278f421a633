"""The cluster network: subnets, job names, the master's view updates, and how a worker
sequences them.

Pure and fast: the master's side is driven through `ClusterState.apply` and a
`Controller`; the worker's through `ClusterNetwork.on_update`, with its host work
(bridge, routes, firewall) recorded instead of run, so no Docker, `ip` or
`iptables` is touched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import pytest

from master import events as ev
from master import network, snapshot
from master.controller import Controller
from master.network import (
    CATCH_UP,
    SNAPSHOT_EVERY,
    SNAPSHOTS_PER_SECOND,
    NetView,
    allocate,
    job_names,
    node_map,
)
from master.settings import MasterSettings
from schemas.messages import (
    Heartbeat,
    JobNames,
    NetNode,
    NetUpdate,
    NodeNetwork,
    Resources,
    SlotAddress,
)
from tests.unit.factories import Cluster, GiB, heartbeat, job_spec
from worker import network as worker_network
from worker.network import ClusterNetwork
from worker.runtime import DockerRuntime
from worker.settings import WorkerSettings

CIDR = "10.210.0.0/16"
# Four /30 subnets: small enough to run out of.
SMALL = MasterSettings(
    amqp_url="amqp://x", cluster_cidr="10.210.0.0/28", node_prefix=30, forget_down_nodes_after=5
)
QUARTERS = ["10.210.0.0/30", "10.210.0.4/30", "10.210.0.8/30", "10.210.0.12/30"]


def overlapping(subnet: str, taken: set[str]) -> set[str]:
    candidate = ipaddress.IPv4Network(subnet)
    return {other for other in taken if candidate.overlaps(ipaddress.IPv4Network(other))}


# -- allocate --


def test_subnets_are_handed_out_in_order() -> None:
    taken: set[str] = set()
    for expected in ("10.210.0.0/24", "10.210.1.0/24", "10.210.2.0/24"):
        subnet = allocate(CIDR, 24, taken)
        assert subnet == expected
        taken.add(subnet)


def test_a_free_subnet_the_node_already_uses_is_kept() -> None:
    assert allocate(CIDR, 24, {"10.210.0.0/24"}, wanted="10.210.7.0/24") == "10.210.7.0/24"


@pytest.mark.parametrize(
    "wanted",
    [
        "10.99.0.0/24",  # outside the cluster CIDR
        "10.210.7.0/25",  # another prefix
        "10.210.6.0/23",
        "10.210.0.0/24",  # taken
        "10.210.7.1/24",  # host bits set
        "not a subnet",
    ],
)
def test_a_wanted_subnet_that_does_not_fit_is_ignored(wanted: str) -> None:
    assert allocate(CIDR, 24, {"10.210.0.0/24"}, wanted=wanted) == "10.210.1.0/24"


def test_none_when_every_subnet_is_taken() -> None:
    assert allocate(SMALL.cluster_cidr, 30, set(QUARTERS)) is None
    assert allocate(SMALL.cluster_cidr, 30, set(QUARTERS), wanted=QUARTERS[1]) is None


def test_a_freed_subnet_is_handed_out_again_once_the_pool_wraps() -> None:
    assert allocate(SMALL.cluster_cidr, 30, {QUARTERS[0], QUARTERS[2], QUARTERS[3]}) == QUARTERS[1]


@pytest.mark.parametrize(("cidr", "prefix"), [("10.210.0.0/16", 12), ("nonsense", 24)])
def test_a_cidr_that_cannot_hold_the_node_prefix_is_refused(cidr: str, prefix: int) -> None:
    with pytest.raises(ValueError, match=r"--cluster-cidr|--node-prefix"):
        allocate(cidr, prefix, set())


@pytest.mark.parametrize("wanted", [None, "10.210.0.0/25"])
def test_a_subnet_inside_one_taken_under_another_prefix_is_not_handed_out(
    wanted: str | None,
) -> None:
    taken = {"10.210.0.0/24"}
    subnet = allocate(CIDR, 25, taken, wanted)
    assert subnet is not None
    assert overlapping(subnet, taken) == set()


# -- the controller --


def networked(node_id: str, addr: str, subnet: str | None = None) -> Heartbeat:
    return heartbeat(node_id).model_copy(update={"network": NodeNetwork(addr=addr, subnet=subnet)})


def allocated(journal: list[ev.Event]) -> list[tuple[str, str]]:
    return [(e.node_id, e.subnet) for e in journal if isinstance(e, ev.SubnetAllocated)]


def journaled_controller(settings: MasterSettings = SMALL) -> tuple[Controller, list[ev.Event]]:
    controller = Controller(settings, epoch=1)
    journal: list[ev.Event] = []
    controller.journal = journal.append
    return controller, journal


def test_the_controller_allocates_once_per_node() -> None:
    master, journal = journaled_controller()
    for now in (0.0, 1.0, 2.0):
        master.heartbeat(networked("a", "192.168.1.1"), now)
        master.heartbeat(networked("b", "192.168.1.2"), now)
    master.heartbeat(heartbeat("plain"), 2.0)  # takes no part in the cluster network
    assert allocated(journal) == [("a", QUARTERS[0]), ("b", QUARTERS[1])]
    assert master.state.subnets == {"a": QUARTERS[0], "b": QUARTERS[1]}
    assert node_map(master.state) == [
        NetNode(node_id="a", subnet=QUARTERS[0], addr="192.168.1.1"),
        NetNode(node_id="b", subnet=QUARTERS[1], addr="192.168.1.2"),
    ]


def test_a_node_keeps_the_free_subnet_it_reports() -> None:
    master, journal = journaled_controller()
    master.heartbeat(networked("a", "192.168.1.1", subnet=QUARTERS[2]), 0.0)
    assert allocated(journal) == [("a", QUARTERS[2])]


def beat_and_tick(master: Controller, beats: list[Heartbeat], until: float) -> float:
    """Every half second up to `until`: `beats`, then a tick. Returns the last `now`."""
    now = 0.0
    while now < until:
        now += 0.5
        for beat in beats:
            master.heartbeat(beat, now)
        master.tick(now)
    return now


def test_a_forgotten_nodes_subnet_goes_to_a_node_the_exhausted_pool_left_out() -> None:
    master, journal = journaled_controller()
    beats = [networked(node_id, f"192.168.1.{i}") for i, node_id in enumerate("abcde", 1)]
    for beat in beats:
        master.heartbeat(beat, 0.0)
    assert master.state.subnets == dict(zip("abcd", QUARTERS, strict=True))
    assert "e" not in {node.node_id for node in node_map(master.state)}
    # d falls silent: down, then forgotten, and e's next heartbeat gets its subnet.
    beat_and_tick(master, [beat for beat in beats if beat.node_id != "d"], until=10.0)
    assert "d" not in master.state.nodes
    assert master.state.subnets["e"] == QUARTERS[3]
    assert allocated(journal)[-1] == ("e", QUARTERS[3])


def test_a_forgotten_node_that_comes_back_keeps_its_subnet_if_still_free() -> None:
    master, journal = journaled_controller()
    beats = [networked(node_id, f"192.168.1.{i}") for i, node_id in enumerate("abc", 1)]
    for beat in beats:
        master.heartbeat(beat, 0.0)
    now = beat_and_tick(master, [beats[0], beats[2]], until=10.0)
    assert master.state.subnets == {"a": QUARTERS[0], "c": QUARTERS[2]}  # b forgotten
    assert allocate(SMALL.cluster_cidr, 30, set(master.state.subnets.values())) == QUARTERS[3]
    master.heartbeat(networked("b", "192.168.1.2", subnet=QUARTERS[1]), now)
    assert master.state.subnets["b"] == QUARTERS[1]
    assert allocated(journal)[-1] == ("b", QUARTERS[1])


def test_subnets_survive_a_snapshot_and_a_journal_replay() -> None:
    leader, journal = journaled_controller()
    leader.heartbeat(networked("a", "192.168.1.1"), 0.0)
    leader.heartbeat(networked("b", "192.168.1.2"), 0.0)
    data, mark = snapshot.dump(leader.state), len(journal)
    leader.heartbeat(networked("c", "192.168.1.3"), 1.0)

    loaded = snapshot.load(data, remember_requests=SMALL.remember_requests)
    assert loaded.subnets == {"a": QUARTERS[0], "b": QUARTERS[1]}
    assert loaded.nodes["a"].network == NodeNetwork(addr="192.168.1.1")
    assert node_map(loaded) == node_map(leader.state)[:2]
    from_snapshot = Controller(SMALL, epoch=0, state=loaded)
    from_journal = Controller(SMALL, epoch=0)
    for event in journal[mark:]:
        from_snapshot.replay(event)
    for event in journal:
        from_journal.replay(event)
    assert from_snapshot.state.subnets == from_journal.state.subnets == leader.state.subnets

    # Promoted, it allocates nothing again: the nodes have their subnets.
    echoed: list[ev.Event] = []
    from_snapshot.journal = echoed.append
    from_snapshot.promote(2, 2.0)
    for i, node_id in enumerate("abc", 1):
        from_snapshot.heartbeat(networked(node_id, f"192.168.1.{i}"), 2.0)
    assert allocated(echoed) == []
    assert from_snapshot.state.subnets == leader.state.subnets


def test_a_master_with_a_new_node_prefix_does_not_overlap_the_old_subnets() -> None:
    old = MasterSettings(amqp_url="amqp://x", cluster_cidr=CIDR, node_prefix=24)
    leader, journal = journaled_controller(old)
    leader.heartbeat(networked("a", "192.168.1.1"), 0.0)
    successor = Controller(old.model_copy(update={"node_prefix": 25}), epoch=0)
    for event in journal:
        successor.replay(event)
    successor.promote(2, 1.0)
    successor.heartbeat(networked("a", "192.168.1.1"), 1.0)
    successor.heartbeat(networked("b", "192.168.1.2"), 1.0)
    assert overlapping(successor.state.subnets["b"], {successor.state.subnets["a"]}) == set()


# -- job names --


def cluster_with_nodes() -> Cluster:
    """Nodes a and b, each with an address and a subnet."""
    cluster = Cluster()
    for i, node_id in enumerate("ab"):
        cluster.apply(
            ev.NodeObserved(
                at=0.0,
                node_id=node_id,
                boot_id=f"boot-{node_id}",
                capacity=Resources(cpus=64, memory=64 * GiB),
                network=NodeNetwork(addr=f"192.168.1.{i + 1}"),
            ),
            ev.SubnetAllocated(at=0.0, node_id=node_id, subnet=f"10.210.{i}.0/24"),
        )
    return cluster


def run(cluster: Cluster, task_id: str, address: str, node_id: str = "a") -> None:
    cluster.assign(task_id, node_id)
    cluster.apply(ev.TaskUpdated(at=cluster.now, task_id=task_id, state="running", address=address))


def names_of(cluster: Cluster, job_id: str = "web") -> JobNames | None:
    return job_names(cluster.state, cluster.state.jobs[job_id])


def test_a_job_with_nothing_running_at_an_address_has_no_names() -> None:
    cluster = cluster_with_nodes()
    cluster.job(job_spec(replicas=2))
    assert names_of(cluster) is None  # pending
    cluster.assign("web-0-0", "a")
    cluster.apply(ev.TaskUpdated(at=0.0, task_id="web-0-0", state="running"))
    assert names_of(cluster) is None  # running, but without a cluster address


def test_each_slot_is_named_after_its_newest_running_attempt() -> None:
    cluster = cluster_with_nodes()
    cluster.job(job_spec(replicas=2))
    run(cluster, "web-0-0", "10.210.0.2")
    run(cluster, "web-1-0", "10.210.1.2", node_id="b")
    cluster.attempt("web", 0, 1)  # its successor, started first
    assert names_of(cluster) == JobNames(
        job_id="web",
        serving=["10.210.0.2", "10.210.1.2"],
        slots=[
            SlotAddress(slot=0, address="10.210.0.2"),
            SlotAddress(slot=1, address="10.210.1.2"),
        ],
    )
    run(cluster, "web-0-1", "10.210.0.3")
    names = names_of(cluster)
    assert names is not None
    assert names.slots[0] == SlotAddress(slot=0, address="10.210.0.3")
    assert sorted(names.serving) == ["10.210.0.2", "10.210.0.3", "10.210.1.2"]


def test_the_job_name_serves_its_healthy_replicas_if_any_is() -> None:
    cluster = cluster_with_nodes()
    cluster.job(job_spec(replicas=2))
    run(cluster, "web-0-0", "10.210.0.2")
    run(cluster, "web-1-0", "10.210.0.3")
    names = names_of(cluster)
    assert names is not None and names.serving == ["10.210.0.2", "10.210.0.3"]
    cluster.apply(ev.TaskHealthy(at=1.0, task_id="web-1-0"))
    names = names_of(cluster)
    assert names is not None
    assert names.serving == ["10.210.0.3"]
    assert [entry.address for entry in names.slots] == ["10.210.0.2", "10.210.0.3"]


def test_a_replica_that_ends_loses_its_names() -> None:
    cluster = cluster_with_nodes()
    cluster.job(job_spec(replicas=2))
    run(cluster, "web-0-0", "10.210.0.2")
    run(cluster, "web-1-0", "10.210.0.3")
    cluster.update("web-1-0", "exited", 1)
    assert names_of(cluster) == JobNames(
        job_id="web", serving=["10.210.0.2"], slots=[SlotAddress(slot=0, address="10.210.0.2")]
    )
    cluster.update("web-0-0", "exited", 1)
    assert names_of(cluster) is None


# -- the master's view: changes --


def view_of(cluster: Cluster) -> NetView:
    return NetView(cluster.state, CIDR)


def test_nothing_changed_sends_nothing() -> None:
    cluster = cluster_with_nodes()
    view = view_of(cluster)
    assert view.changes(cluster.state, 1.0) == []
    cluster.job(job_spec(replicas=1))  # touched, but no name yet
    cluster.apply(  # a heartbeat with the same address
        ev.NodeObserved(
            at=1.0,
            node_id="a",
            boot_id="boot-a",
            capacity=Resources(cpus=64, memory=64 * GiB),
            network=NodeNetwork(addr="192.168.1.1", view=view.token, seq=0),
        )
    )
    assert view.changes(cluster.state, 1.0) == []
    assert view.seq == 0


def test_each_change_is_one_update_numbered_next() -> None:
    cluster = cluster_with_nodes()
    cluster.job(job_spec(replicas=2))
    view = view_of(cluster)
    run(cluster, "web-0-0", "10.210.0.2")
    [first] = view.changes(cluster.state, 1.0)
    web = names_of(cluster)
    assert web is not None
    assert first == NetUpdate(view=view.token, seq=1, cidr=CIDR, nodes=None, jobs=[web])
    run(cluster, "web-1-0", "10.210.1.2", node_id="b")
    cluster.job(job_spec("db", replicas=1))
    run(cluster, "db-0-0", "10.210.1.3", node_id="b")
    [second] = view.changes(cluster.state, 2.0)
    assert second.seq == 2 and view.seq == 2
    assert second.jobs == [names_of(cluster, "db"), names_of(cluster, "web")]
    assert view.changes(cluster.state, 3.0) == []


def test_a_job_that_stops_running_is_sent_as_a_removal() -> None:
    cluster = cluster_with_nodes()
    cluster.job(job_spec(replicas=1))
    run(cluster, "web-0-0", "10.210.0.2")
    view = view_of(cluster)
    cluster.update("web-0-0", "exited", 0)
    [update] = view.changes(cluster.state, 1.0)
    assert update.jobs == [JobNames(job_id="web")]
    assert update.jobs[0].serving == [] and update.jobs[0].slots == []
    cluster.apply(ev.JobCancelled(at=2.0, job_id="web"))  # touched again: already removed
    assert view.changes(cluster.state, 2.0) == []


def test_the_node_map_is_sent_only_when_it_changed() -> None:
    cluster = cluster_with_nodes()
    view = view_of(cluster)
    observed = ev.NodeObserved(
        at=1.0,
        node_id="c",
        boot_id="boot-c",
        capacity=Resources(cpus=1, memory=GiB),
        network=NodeNetwork(addr="192.168.1.3"),
    )
    cluster.apply(observed)  # joins, without a subnet yet: the map is the same
    assert view.changes(cluster.state, 1.0) == []
    cluster.apply(ev.SubnetAllocated(at=1.0, node_id="c", subnet="10.210.2.0/24"))
    [update] = view.changes(cluster.state, 1.0)
    assert update.nodes == node_map(cluster.state)
    assert [node.node_id for node in update.nodes] == ["a", "b", "c"]
    assert update.jobs == []
    cluster.apply(observed.model_copy(update={"at": 2.0}))  # the same address again
    assert view.changes(cluster.state, 2.0) == []
    moved = NodeNetwork(addr="192.168.1.33")
    cluster.apply(observed.model_copy(update={"at": 3.0, "network": moved}))
    [update] = view.changes(cluster.state, 3.0)
    assert update.seq == 2
    assert update.nodes is not None and update.nodes[-1].addr == "192.168.1.33"


def add_jobs(cluster: Cluster, count: int) -> Cluster:
    """`count` jobs of one replica each (job0, job1, ...), running on node a."""
    for index in range(count):
        cluster.job(job_spec(f"job{index}", replicas=1))
        run(cluster, f"job{index}-0-0", f"10.210.0.{index + 2}")
    return cluster


def every_job(cluster: Cluster) -> list[JobNames]:
    found = [job_names(cluster.state, job) for job in cluster.state.jobs.values()]
    return sorted((names for names in found if names is not None), key=lambda n: n.job_id)


@pytest.fixture
def one_job_per_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "PART_BYTES", 1)  # a part always takes one job


def test_large_changes_are_split_into_numbered_updates(one_job_per_part: None) -> None:
    cluster = cluster_with_nodes()
    view = view_of(cluster)
    add_jobs(cluster, 3)
    cluster.apply(ev.SubnetAllocated(at=1.0, node_id="a", subnet="10.210.9.0/24"))
    updates = view.changes(cluster.state, 1.0)
    assert [update.seq for update in updates] == [1, 2, 3]
    assert updates[0].nodes == node_map(cluster.state)
    assert [update.nodes for update in updates[1:]] == [None, None]
    assert [names for update in updates for names in update.jobs] == every_job(cluster)


def test_a_change_is_split_at_the_message_job_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "MAX_NET_JOBS", 2)
    cluster = cluster_with_nodes()
    view = view_of(cluster)
    add_jobs(cluster, 5)
    updates = view.changes(cluster.state, 1.0)
    assert [len(update.jobs) for update in updates] == [2, 2, 1]
    assert [update.seq for update in updates] == [1, 2, 3]


# -- the master's view: who gets a snapshot --


def view_with_updates(*times: float) -> NetView:
    """A view that sent one update at each of `times` (seq 1, 2, ...)."""
    cluster = cluster_with_nodes()
    cluster.job(job_spec(replicas=len(times)))
    view = view_of(cluster)
    for slot, now in enumerate(times):
        run(cluster, f"web-{slot}-0", f"10.210.0.{slot + 2}")
        assert len(view.changes(cluster.state, now)) == 1
    return view


def holding(view: NetView | str, seq: int) -> NodeNetwork:
    token = view.token if isinstance(view, NetView) else view
    return NodeNetwork(addr="192.168.1.9", subnet="10.210.5.0/24", view=token, seq=seq)


def test_an_up_to_date_worker_needs_no_snapshot() -> None:
    view = view_with_updates(10.0, 11.0)
    assert not view.wants_snapshot("n1", holding(view, 2), 100.0)


def test_a_lagging_worker_waits_for_its_missing_update_for_catch_up() -> None:
    view = view_with_updates(10.0, 11.0)
    assert not view.wants_snapshot("n1", holding(view, 1), 11.0 + CATCH_UP - 0.01)
    assert view.wants_snapshot("n1", holding(view, 1), 11.0 + CATCH_UP)
    # It lacks 1 as well, sent a second earlier: a snapshot is due already.
    assert view.wants_snapshot("n2", holding(view, 0), 11.0 + CATCH_UP - 0.5)


def test_a_worker_behind_the_remembered_updates_gets_a_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(network, "SENT_KEPT", 1)
    view = view_with_updates(10.0, 10.0, 10.0)
    assert view.wants_snapshot("n1", holding(view, 0), 10.0)


@pytest.mark.parametrize("token", ["", "another"])
def test_a_worker_holding_another_view_gets_a_snapshot(token: str) -> None:
    view = view_with_updates(10.0)
    assert view.wants_snapshot("n1", holding(token, 1), 10.0)


def test_a_node_gets_a_snapshot_at_most_every_snapshot_every() -> None:
    view = view_with_updates()
    assert view.wants_snapshot("n1", holding("", 0), 100.0)
    assert not view.wants_snapshot("n1", holding("", 0), 100.0 + SNAPSHOT_EVERY - 0.01)
    assert view.wants_snapshot("n2", holding("", 0), 100.5)  # another node
    assert view.wants_snapshot("n1", holding("", 0), 100.0 + SNAPSHOT_EVERY)


def test_all_nodes_together_get_at_most_snapshots_per_second() -> None:
    view = view_with_updates()
    nodes = [f"n{index}" for index in range(SNAPSHOTS_PER_SECOND + 1)]
    granted = [view.wants_snapshot(node_id, holding("", 0), 100.2) for node_id in nodes]
    assert granted == [True] * SNAPSHOTS_PER_SECOND + [False]
    assert not view.wants_snapshot(nodes[-1], holding("", 0), 100.9)
    assert view.wants_snapshot(nodes[-1], holding("", 0), 101.0)  # the next second's budget


# -- the master's view: snapshots --


def test_a_snapshot_holds_every_job_in_parts_of_one_seq(one_job_per_part: None) -> None:
    cluster = add_jobs(cluster_with_nodes(), 3)
    view = view_of(cluster)
    cluster.update("job1-0-0", "exited", 0)
    cluster.job(job_spec("late", replicas=1))
    run(cluster, "late-0-0", "10.210.1.9", node_id="b")
    assert len(view.changes(cluster.state, 1.0)) == 2
    parts = view.snapshot()
    assert [(p.part, p.parts, p.seq, p.full) for p in parts] == [
        (index, 3, 2, True) for index in range(3)
    ]
    assert {p.view for p in parts} == {view.token} and {p.cidr for p in parts} == {CIDR}
    assert parts[0].nodes == node_map(cluster.state)
    assert [p.nodes for p in parts[1:]] == [None, None]
    found = sorted((n for p in parts for n in p.jobs), key=lambda n: n.job_id)
    assert found == every_job(cluster)
    assert [n.job_id for n in found] == ["job0", "job2", "late"]


def test_an_empty_view_is_one_part_with_the_node_map() -> None:
    cluster = cluster_with_nodes()
    [only] = view_of(cluster).snapshot()
    assert (only.part, only.parts, only.seq, only.jobs) == (0, 1, 0, [])
    assert only.nodes == node_map(cluster.state)


# -- the worker --


class HostWork:
    """Stands in for the worker's host thread: records what is submitted, runs nothing."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, tuple[object, ...]]] = []

    def submit(self, guarded: Callable[..., None], *args: object) -> None:
        self.submitted.append(("_reconcile", args))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


class NoBridges:
    def __init__(self, runtime: object, labels: object = None) -> None:
        pass

    def subnet_of(self, name: str) -> str | None:
        return None


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ClusterNetwork, HostWork]]:
    monkeypatch.setattr(worker_network, "Bridges", NoBridges)
    settings = WorkerSettings(
        amqp_url="amqp://127.0.0.1/",
        node_id="n1",
        advertise_addr="192.168.1.10",
        dns_upstreams=[("127.0.0.1", 9)],
        network=True,
    )
    net = ClusterNetwork("n1", settings, cast(DockerRuntime, None))
    net._host.shutdown(wait=True)  # unused: no thread was started
    host = HostWork()
    net._host = cast(ThreadPoolExecutor, host)
    yield net, host
    net.close()  # without `cleanup`: touches nothing


def names(job_id: str, *addresses: str) -> JobNames:
    """`job_id` served by `addresses`, slot i by the i-th."""
    slots = [SlotAddress(slot=slot, address=address) for slot, address in enumerate(addresses)]
    return JobNames(job_id=job_id, serving=list(addresses), slots=slots)


def delta(view: str, seq: int, *jobs: JobNames, nodes: list[NetNode] | None = None) -> NetUpdate:
    return NetUpdate(view=view, seq=seq, cidr=CIDR, nodes=nodes, jobs=list(jobs))


def full(
    view: str,
    seq: int,
    *jobs: JobNames,
    part: int = 0,
    parts: int = 1,
    nodes: list[NetNode] | None = None,
) -> NetUpdate:
    return NetUpdate(
        view=view,
        seq=seq,
        full=True,
        part=part,
        parts=parts,
        cidr=CIDR,
        nodes=nodes if nodes is not None else [],
        jobs=list(jobs),
    )


def resolve(net: ClusterNetwork, name: str) -> list[str]:
    return sorted(net.names.lookup(f"{name}.corral") or [])


def held(net: ClusterNetwork) -> tuple[str, int]:
    beat = net.heartbeat()
    assert (beat.addr, beat.subnet) == ("192.168.1.10", None)
    return beat.view, beat.seq


NODES = [
    NetNode(node_id="n1", subnet="10.210.0.0/24", addr="192.168.1.10"),
    NetNode(node_id="n2", subnet="10.210.1.0/24", addr="192.168.1.11"),
]


def test_a_new_worker_holds_no_view(worker: tuple[ClusterNetwork, HostWork]) -> None:
    net, host = worker
    assert held(net) == ("", 0)
    assert resolve(net, "web") == [] and host.submitted == []


def test_a_snapshot_in_parts_replaces_the_table_once_complete(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, _ = worker
    net.on_update(full("old", 7, names("gone", "10.210.0.9")))
    assert held(net) == ("old", 7) and resolve(net, "gone") == ["10.210.0.9"]
    net.on_update(full("v", 3, names("db", "10.210.1.2"), part=1, parts=2))
    assert held(net) == ("old", 7) and resolve(net, "db") == []  # half a snapshot: nothing yet
    net.on_update(full("v", 3, names("web", "10.210.0.2", "10.210.1.3"), part=0, parts=2))
    assert held(net) == ("v", 3)
    assert resolve(net, "web") == ["10.210.0.2", "10.210.1.3"]
    assert resolve(net, "1.web") == ["10.210.1.3"]
    assert resolve(net, "db") == ["10.210.1.2"]
    assert resolve(net, "gone") == []


def test_a_newer_snapshot_replaces_one_not_yet_complete(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, _ = worker
    net.on_update(full("v", 3, names("stale", "10.210.0.5"), part=0, parts=2))
    net.on_update(full("v", 5, names("web", "10.210.0.2"), part=0, parts=2))
    net.on_update(full("v", 5, names("db", "10.210.0.3"), part=1, parts=2))
    assert held(net) == ("v", 5)
    assert resolve(net, "stale") == [] and resolve(net, "web") == ["10.210.0.2"]


def test_a_change_applies_only_on_top_of_the_one_before(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, _ = worker
    net.on_update(full("v", 3, names("web", "10.210.0.2")))
    net.on_update(delta("v", 5, names("db", "10.210.0.4")))  # 4 is missing: kept for later
    assert held(net) == ("v", 3) and resolve(net, "db") == []
    net.on_update(delta("v", 3, names("web", "10.210.0.99")))  # already held
    assert held(net) == ("v", 3) and resolve(net, "web") == ["10.210.0.2"]
    net.on_update(delta("v", 4, names("web", "10.210.0.3"), JobNames(job_id="gone")))
    assert held(net) == ("v", 5)
    assert resolve(net, "web") == ["10.210.0.3"] and resolve(net, "db") == ["10.210.0.4"]
    net.on_update(delta("v", 6, JobNames(job_id="web")))  # a removal
    assert held(net) == ("v", 6)
    assert resolve(net, "web") == [] and resolve(net, "0.web") == []


def test_changes_ahead_of_a_snapshot_are_applied_after_it(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, _ = worker
    net.on_update(delta("v", 5, names("db", "10.210.0.4")))
    net.on_update(delta("v", 3, names("web", "10.210.0.9")))  # older than the snapshot
    net.on_update(delta("v", 4, names("web", "10.210.0.3")))
    assert held(net) == ("", 0) and resolve(net, "web") == []
    net.on_update(full("v", 3, names("web", "10.210.0.2")))
    assert held(net) == ("v", 5)
    assert resolve(net, "web") == ["10.210.0.3"] and resolve(net, "db") == ["10.210.0.4"]


def test_changes_of_another_view_wait_for_its_snapshot(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, _ = worker
    net.on_update(full("old", 2, names("web", "10.210.0.2")))
    net.on_update(delta("new", 2, names("web", "10.210.0.7")))
    net.on_update(delta("new", 1, names("db", "10.210.0.4")))  # older than the snapshot
    assert held(net) == ("old", 2) and resolve(net, "web") == ["10.210.0.2"]
    net.on_update(full("new", 1, names("web", "10.210.0.6")))
    assert held(net) == ("new", 2)
    assert resolve(net, "web") == ["10.210.0.7"] and resolve(net, "db") == []


def test_changes_of_another_view_outlast_changes_of_the_view_held(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, _ = worker
    net.on_update(full("old", 2, names("web", "10.210.0.2")))
    net.on_update(delta("new", 2, names("web", "10.210.0.7")))  # a new term's, early
    net.on_update(delta("old", 3, names("db", "10.210.0.4")))  # the old term's, late
    assert held(net) == ("old", 3)
    net.on_update(full("new", 1, names("web", "10.210.0.6")))
    assert held(net) == ("new", 2)
    assert resolve(net, "web") == ["10.210.0.7"]


def test_the_host_is_reconciled_only_when_the_node_map_changes(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, host = worker
    net.on_update(full("v", 1, names("web", "10.210.0.2"), nodes=NODES))
    own_and_peers = ("10.210.0.0/24", {"10.210.1.0/24": "192.168.1.11"}, CIDR)
    assert host.submitted == [("_reconcile", own_and_peers)]
    net.on_update(delta("v", 2, names("web", "10.210.0.3")))  # names only
    net.on_update(delta("v", 3, nodes=NODES))  # the same map
    assert len(host.submitted) == 1
    third = NetNode(node_id="n3", subnet="10.210.2.0/24", addr="192.168.1.12")
    net.on_update(delta("v", 4, nodes=[*NODES, third]))
    assert held(net) == ("v", 4)
    assert host.submitted[1] == (
        "_reconcile",
        ("10.210.0.0/24", {"10.210.1.0/24": "192.168.1.11", "10.210.2.0/24": "192.168.1.12"}, CIDR),
    )


def test_a_worker_fed_the_masters_updates_resolves_what_the_master_sees(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, _ = worker
    cluster = add_jobs(cluster_with_nodes(), 2)
    view = view_of(cluster)
    for part in reversed(view.snapshot()):
        net.on_update(part)
    cluster.update("job0-0-0", "exited", 0)
    cluster.job(job_spec("db", replicas=2))
    run(cluster, "db-0-0", "10.210.1.2", node_id="b")
    run(cluster, "db-1-0", "10.210.1.3", node_id="b")
    for update in view.changes(cluster.state, 1.0):
        net.on_update(update)
    assert held(net) == (view.token, view.seq) and not view.wants_snapshot(
        "n1", net.heartbeat(), 1.0
    )
    assert resolve(net, "job0") == []
    assert resolve(net, "job1") == ["10.210.0.3"]
    assert resolve(net, "db") == ["10.210.1.2", "10.210.1.3"]
    assert resolve(net, "1.db") == ["10.210.1.3"]


def test_a_snapshot_older_than_what_the_worker_holds_is_ignored(
    worker: tuple[ClusterNetwork, HostWork],
) -> None:
    net, _ = worker
    net.on_update(full("v", 2, names("web", "10.210.0.2")))
    # The master sent a snapshot at 4 while 3 was late; 3, 4 and 5 arrive before it.
    net.on_update(delta("v", 3, names("web", "10.210.0.3")))
    net.on_update(delta("v", 4, names("web", "10.210.0.4")))
    net.on_update(delta("v", 5, names("web", "10.210.0.5")))
    net.on_update(full("v", 4, names("web", "10.210.0.4")))
    assert held(net) == ("v", 5)
    assert resolve(net, "web") == ["10.210.0.5"]


def test_a_cold_master_holds_snapshots_until_it_has_heard_every_node_or_its_grace_ends() -> None:
    cluster = cluster_with_nodes()
    # The journal gave node c a subnet, but this master has not heard c yet.
    cluster.apply(ev.SubnetAllocated(at=0.0, node_id="c", subnet="10.210.2.0/24"))
    view = NetView(cluster.state, CIDR, hold_until=13.0)
    assert not view.wants_snapshot("a", holding("", 0), 10.0)
    assert view.wants_snapshot("a", holding("", 0), 13.0)  # the grace is over

    heard = NetView(cluster.state, CIDR, hold_until=13.0)
    cluster.apply(
        ev.NodeObserved(
            at=10.0,
            node_id="c",
            boot_id="boot-c",
            capacity=Resources(cpus=64, memory=64 * GiB),
            network=NodeNetwork(addr="192.168.1.3"),
        )
    )
    heard.changes(cluster.state, 10.0)
    assert heard.wants_snapshot("a", holding("", 0), 10.0)  # every node is heard


def test_a_warm_master_sends_snapshots_at_once() -> None:
    cluster = cluster_with_nodes()
    view = NetView(cluster.state, CIDR, hold_until=13.0)
    assert view.wants_snapshot("a", holding("", 0), 10.0)
