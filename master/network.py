"""The cluster network as the master keeps it (docs/networking.md).

Two things, both pure (no I/O, no clock of their own):

- `allocate`: the subnet a node's containers get, one `/node_prefix` out of the
  cluster CIDR per node. The controller journals it (`SubnetAllocated`), so it
  survives a failover; a node keeps it until it is forgotten.
- `NetView`: what the workers are told. Each worker routes the other nodes'
  subnets and serves DNS names for every job, so it needs the node map (node,
  subnet, advertised address) and each job's names (`<job>` and `<slot>.<job>`).
  The active master sends the changes to every worker on corral.control, each
  numbered in its view (a random token per term): `changes` builds them from the
  jobs an event touched since it last looked (`ClusterState.net_touched`), so the
  work follows what changed, not how much the master holds. A worker whose
  heartbeat shows another view, or one it is behind in for longer than
  CATCH_UP, gets a snapshot (`snapshot`), in parts of bounded size.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import OrderedDict

from master.model import Job
from master.state import ClusterState
from schemas.limits import MAX_NET_JOBS
from schemas.messages import JobNames, NetNode, NetUpdate, NodeNetwork, SlotAddress

DEFAULT_CIDR = "10.210.0.0/16"
DEFAULT_NODE_PREFIX = 24

# A worker behind its view this long after the update it lacks was sent missed it.
CATCH_UP = 2.0
# A node is sent a snapshot at most this often, and all nodes together at most
# SNAPSHOTS_PER_SECOND a second (after a failover every worker needs one).
SNAPSHOT_EVERY = 2.0
SNAPSHOTS_PER_SECOND = 50
# A message carries about this many bytes of names at most (the bus takes 4 MiB).
PART_BYTES = 512 * 1024
SENT_KEPT = 1000  # send times of the newest updates, for CATCH_UP


def check_cidr(cidr: str, node_prefix: int) -> ipaddress.IPv4Network:
    """The cluster CIDR, checked against the node prefix; ValueError naming the fix."""
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError as exc:
        raise ValueError(f"--cluster-cidr {cidr!r} is not an IPv4 network: {exc}") from None
    if not network.prefixlen <= node_prefix <= 30:
        raise ValueError(
            f"--node-prefix {node_prefix} must be between the cluster CIDR's own "
            f"/{network.prefixlen} and /30"
        )
    return network


def allocate(cidr: str, node_prefix: int, taken: set[str], wanted: str | None = None) -> str | None:
    """A free `/node_prefix` subnet of `cidr` (None: all are taken). `wanted` (the subnet
    the node says it uses already) if it is one of them and free, so that its containers
    keep their addresses when the master forgot it. The search starts past the count
    taken, so that allocating to a growing fleet is one probe each, not a scan."""
    network = check_cidr(cidr, node_prefix)
    # Subnets given under another prefix (the masters' --node-prefix changed): a candidate
    # must not overlap them either. Usually none, so the common check stays a set lookup.
    others = [
        ipaddress.IPv4Network(subnet) for subnet in taken if not subnet.endswith(f"/{node_prefix}")
    ]

    def free(subnet: str) -> bool:
        if subnet in taken:
            return False
        return not others or not any(ipaddress.IPv4Network(subnet).overlaps(o) for o in others)

    if wanted is not None:
        try:
            candidate = ipaddress.IPv4Network(wanted)
        except ValueError:
            candidate = None
        if (
            candidate is not None
            and candidate.prefixlen == node_prefix
            and candidate.subnet_of(network)
            and free(str(candidate))
        ):
            return str(candidate)
    size = 2 ** (32 - node_prefix)
    count = network.num_addresses // size
    base = int(network.network_address)
    for step in range(count):
        index = (len(taken) + step) % count
        subnet = f"{ipaddress.IPv4Address(base + index * size)}/{node_prefix}"
        if free(subnet):
            return subnet
    return None


def job_names(state: ClusterState, job: Job) -> JobNames | None:
    """What the job's names resolve to now; None if nothing (no replica with an address).

    `<slot>.<job>`: the slot's newest running attempt (an attempt being replaced
    start-first keeps the name until its successor runs). `<job>`: every running
    replica, or only the healthy ones if any is."""
    slots: list[SlotAddress] = []
    running: list[str] = []
    healthy: list[str] = []
    for slot, attempts in sorted(job.slots.items()):
        named = False
        for task_id in reversed(attempts):
            task = state.tasks.get(task_id)
            if task is None or task.state != "running" or not task.address:
                continue
            running.append(task.address)
            if task.healthy:
                healthy.append(task.address)
            if not named:
                slots.append(SlotAddress(slot=slot, address=task.address))
                named = True
    if not running:
        return None
    return JobNames(job_id=job.job_id, serving=healthy or running, slots=slots)


def node_map(state: ClusterState) -> list[NetNode]:
    """Every node with a subnet and a known address, by node id."""
    found = []
    for node_id, subnet in sorted(state.subnets.items()):
        node = state.nodes.get(node_id)
        if node is not None and node.network is not None:
            found.append(NetNode(node_id=node_id, subnet=subnet, addr=node.network.addr))
    return found


def _size(names: JobNames) -> int:
    return 64 + 18 * len(names.serving) + 40 * len(names.slots)


class NetView:
    """The network view of one active term: what was sent, and under which numbers."""

    def __init__(self, state: ClusterState, cidr: str, hold_until: float = 0.0) -> None:
        """Starts from the state as it is (a new term: every worker gets a snapshot).

        A master that has not yet heard every node the journal gave a subnet (it
        started cold) sends no snapshot before `hold_until` (its takeover grace) while
        any is missing: a worker replacing its view would drop its routes to those
        nodes' subnets until they are heard again."""
        self.hold_until = hold_until
        self._subnets = len(state.subnets)
        self.token = uuid.uuid4().hex[:12]
        self.cidr = cidr
        self.seq = 0
        self._jobs: dict[str, JobNames] = {}
        for job in state.jobs.values():
            names = job_names(state, job)
            if names is not None:
                self._jobs[job.job_id] = names
        state.net_touched.clear()
        self._nodes = node_map(state)
        self._nodes_version = state.net_nodes_version
        self._sent_at: OrderedDict[int, float] = OrderedDict()
        self._snapshot_at: dict[str, float] = {}
        self._budget_second = 0
        self._budget_used = 0

    def changes(self, state: ClusterState, now: float) -> list[NetUpdate]:
        """The updates that bring workers from what was sent to the state (usually one;
        none if nothing changed)."""
        changed: list[JobNames] = []
        touched, state.net_touched = state.net_touched, set()
        for job_id in sorted(touched):
            job = state.jobs.get(job_id)
            names = job_names(state, job) if job is not None else None
            old = self._jobs.get(job_id)
            if names is None:
                if old is not None:
                    del self._jobs[job_id]
                    changed.append(JobNames(job_id=job_id))
            elif names != old:
                self._jobs[job_id] = names
                changed.append(names)
        nodes: list[NetNode] | None = None
        self._subnets = len(state.subnets)
        if state.net_nodes_version != self._nodes_version:
            self._nodes_version = state.net_nodes_version
            fresh = node_map(state)
            if fresh != self._nodes:
                self._nodes = nodes = fresh
        if not changed and nodes is None:
            return []
        updates = []
        for index, part in enumerate(_parts(changed) or [[]]):
            self.seq += 1
            self._sent_at[self.seq] = now
            updates.append(
                NetUpdate(
                    view=self.token,
                    seq=self.seq,
                    cidr=self.cidr,
                    nodes=nodes if index == 0 else None,
                    jobs=part,
                )
            )
        while len(self._sent_at) > SENT_KEPT:
            self._sent_at.popitem(last=False)
        return updates

    def wants_snapshot(self, node_id: str, network: NodeNetwork, now: float) -> bool:
        """Whether a worker whose heartbeat says `network` should be sent a snapshot now."""
        if network.view == self.token:
            if network.seq == self.seq:
                return False
            if network.seq < self.seq:
                sent = self._sent_at.get(network.seq + 1)
                if sent is not None and now - sent < CATCH_UP:
                    return False  # the update it lacks is most likely on its way
        if now < self.hold_until and len(self._nodes) < self._subnets:
            return False  # a node the journal knows is still unheard (see __init__)
        if now - self._snapshot_at.get(node_id, -SNAPSHOT_EVERY) < SNAPSHOT_EVERY:
            return False
        second = int(now)
        if second != self._budget_second:
            self._budget_second, self._budget_used = second, 0
        if self._budget_used >= SNAPSHOTS_PER_SECOND:
            return False  # the next heartbeat asks again
        self._budget_used += 1
        if len(self._snapshot_at) > 4 * max(len(self._nodes), 1024):
            self._snapshot_at = {n: t for n, t in self._snapshot_at.items() if now - t < 60}
        self._snapshot_at[node_id] = now
        return True

    def snapshot(self) -> list[NetUpdate]:
        """The whole view as sent so far (through `seq`), in parts."""
        parts = _parts(list(self._jobs.values())) or [[]]
        return [
            NetUpdate(
                view=self.token,
                seq=self.seq,
                full=True,
                part=index,
                parts=len(parts),
                cidr=self.cidr,
                nodes=self._nodes if index == 0 else None,
                jobs=part,
            )
            for index, part in enumerate(parts)
        ]


def _parts(names: list[JobNames]) -> list[list[JobNames]]:
    """`names` cut into lists of about PART_BYTES each (and at most MAX_NET_JOBS)."""
    parts: list[list[JobNames]] = []
    current: list[JobNames] = []
    size = 0
    for entry in names:
        entry_size = _size(entry)
        if current and (size + entry_size > PART_BYTES or len(current) >= MAX_NET_JOBS):
            parts.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry_size
    if current:
        parts.append(current)
    return parts
