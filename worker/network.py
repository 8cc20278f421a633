"""A worker's part in the cluster network (docs/networking.md).

The master gives the node a subnet and sends every worker the network view
(`schemas.messages.NetUpdate`): the node map (each node's subnet and advertised
address) and each job's DNS names. From it this worker keeps:

- its bridge: a Docker network with its subnet (`worker.bridges`), which every
  container of a `network: cluster` job joins;
- routes to the other nodes' subnets through their addresses, and the firewall
  rules that let cluster traffic through unmasqueraded (`worker.hostnet`);
- a DNS server on the bridge's gateway (`worker.dns`), which the containers'
  resolver forwards to: `<job>`, `<slot>.<job>`, and other names upstream.

Updates arrive on the bus thread (`on_update`): the name table changes there at
once; what touches the host (Docker, `ip`, `iptables`) runs on one thread of its
own, in order. The view is numbered: a change applies only on top of the one
before it; otherwise the worker keeps what it has, says so in its heartbeat
(`heartbeat`), and the master sends it a snapshot.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from schemas.messages import JobNames, NetNode, NetUpdate, NodeNetwork
from worker import hostnet
from worker.bridges import Bridges, network_name
from worker.containers import Attachment, RuntimeUnavailable, StartError
from worker.dns import DnsServer, system_upstreams
from worker.names import Endpoints, NameTable
from worker.runtime import DockerRuntime
from worker.settings import WorkerSettings

log = logging.getLogger("corral.worker")

# Updates of a view kept while the worker waits for the snapshot they follow.
AHEAD_KEPT = 64
# The host is checked against the view this often: bridge, DNS server, firewall rules
# (Docker puts its own ahead of them when it makes a network) and routes; every
# RECHECK_EVERY s after a failure, every FIREWALL_EVERY s otherwise.
RECHECK_EVERY = 5.0
FIREWALL_EVERY = 30.0


def _endpoints(names: JobNames) -> Endpoints | None:
    if not names.serving and not names.slots:
        return None
    return Endpoints(
        serving=tuple(names.serving), slots={entry.slot: entry.address for entry in names.slots}
    )


class ClusterNetwork:
    """The node's bridge, routes, firewall rules and DNS server, kept as the view says."""

    def __init__(self, node_id: str, settings: WorkerSettings, runtime: DockerRuntime) -> None:
        """Raises `hostnet.HostNetError` if no advertise address is given or found."""
        self.node_id = node_id
        self.addr = settings.advertise_addr or hostnet.default_advertise_addr()
        self._upstreams = settings.dns_upstreams or system_upstreams()
        self._cleanup = settings.cleanup
        self._bridges = Bridges(runtime, settings.container_labels)
        self.names = NameTable()
        self.view = ""
        self.seq = 0
        # The subnet of the bridge: from an earlier run at first (the master gives it
        # again if it can, so adopted containers keep their addresses), then the view's.
        self.subnet: str | None = self._bridges.subnet_of(network_name(node_id))
        self._cidr: str | None = None
        self._nodes: list[NetNode] | None = None
        self._parts: dict[int, NetUpdate] = {}  # a snapshot being collected
        self._ahead: dict[tuple[str, int], NetUpdate] = {}
        self._attachment: Attachment | None = None
        self._routes = hostnet.Routes()
        self._firewall: hostnet.Firewall | None = None
        self._dns: DnsServer | None = None
        self._decided = threading.Event()  # the view says whether (and where) to attach
        self._host = ThreadPoolExecutor(1, thread_name_prefix="network")
        self._made: str | None = None  # the subnet whose bridge and DNS server are up
        self._failed = False  # the last reconcile failed: retried at the next recheck
        self._checked_at = 0.0

    # -- what the rest of the worker asks --

    def heartbeat(self) -> NodeNetwork:
        return NodeNetwork(addr=self.addr, subnet=self.subnet, view=self.view, seq=self.seq)

    def attachment(self, wait: float) -> Attachment | None:
        """Where a `network: cluster` container joins (blocks up to `wait` s while the
        bridge is being made). None: the master gave this node no subnet (its pool is
        exhausted), so the container runs without a cluster address. Raises a
        retryable `StartError` if the bridge is not there after `wait`."""
        if not self._decided.wait(wait):
            raise StartError(
                f"node {self.node_id} has no cluster network yet (no view from the master, "
                "or its bridge could not be made: see the worker's log)",
                retryable=True,
            )
        return self._attachment

    def close(self) -> None:
        """Stop serving DNS; with `cleanup`, also remove routes, rules and the bridge."""
        self._host.shutdown(wait=True, cancel_futures=True)
        if self._dns is not None:
            self._dns.close()
        if not self._cleanup:
            return
        for step in (self._routes.remove_all, self._remove_firewall, self._remove_bridge):
            try:
                step()
            except (hostnet.HostNetError, RuntimeUnavailable) as exc:
                log.warning("cleanup: %s", exc)

    def recheck(self) -> None:
        """Called every RECHECK_EVERY s: set the host up again as the view says, if the
        last attempt failed or FIREWALL_EVERY s have passed (bus thread)."""
        now = time.monotonic()
        if self._nodes is None or not (self._failed or now - self._checked_at > FIREWALL_EVERY):
            return
        self._checked_at = now
        self._submit_reconcile()

    # -- the view (bus thread) --

    def on_update(self, update: NetUpdate) -> None:
        if update.full:
            self._on_snapshot_part(update)
        elif update.view == self.view and update.seq == self.seq + 1:
            self._apply(update)
            self._apply_ahead()
        elif update.view != self.view or update.seq > self.seq:
            self._ahead[(update.view, update.seq)] = update  # after the snapshot it follows
            while len(self._ahead) > AHEAD_KEPT:
                del self._ahead[min(self._ahead, key=lambda key: key[1])]

    def _on_snapshot_part(self, part: NetUpdate) -> None:
        if part.view == self.view and part.seq < self.seq:
            return  # older than what it holds (snapshots and changes take different queues)
        first = next(iter(self._parts.values()), None)
        if first is not None and (first.view, first.seq, first.parts) != (
            part.view,
            part.seq,
            part.parts,
        ):
            self._parts.clear()  # a newer snapshot replaces one not yet complete
        self._parts[part.part] = part
        if len(self._parts) < part.parts:
            return
        parts = [self._parts[index] for index in sorted(self._parts)]
        self._parts.clear()
        table = {}
        for piece in parts:
            for names in piece.jobs:
                endpoints = _endpoints(names)
                if endpoints is not None:
                    table[names.job_id] = endpoints
        self.names.replace(table)
        self.view, self.seq = part.view, part.seq
        log.info("network view %s at %d: %d job name(s)", self.view, self.seq, len(table))
        self._set_nodes(parts[0].nodes or [], parts[0].cidr)
        self._apply_ahead()

    def _apply_ahead(self) -> None:
        # This view's applied ones go; another view's wait for that view's snapshot.
        for key in [key for key in self._ahead if key[0] == self.view and key[1] <= self.seq]:
            del self._ahead[key]
        while (following := self._ahead.pop((self.view, self.seq + 1), None)) is not None:
            self._apply(following)

    def _apply(self, update: NetUpdate) -> None:
        self.names.apply({names.job_id: _endpoints(names) for names in update.jobs})
        self.seq = update.seq
        if update.nodes is not None:
            self._set_nodes(update.nodes, update.cidr)

    def _set_nodes(self, nodes: list[NetNode], cidr: str | None) -> None:
        if nodes == self._nodes and cidr == self._cidr:
            return
        self._nodes, self._cidr = nodes, cidr
        self._submit_reconcile()

    def _submit_reconcile(self) -> None:
        nodes = self._nodes or []
        own = next((node.subnet for node in nodes if node.node_id == self.node_id), None)
        peers = {node.subnet: node.addr for node in nodes if node.node_id != self.node_id}
        with contextlib.suppress(RuntimeError):  # shut down: the worker is stopping
            self._host.submit(self._guarded, own, peers, self._cidr)

    # -- the host (its own thread) --

    def _guarded(self, own: str | None, peers: dict[str, str], cidr: str | None) -> None:
        try:
            self._reconcile(own, peers, cidr)
            self._failed = False
        except (hostnet.HostNetError, RuntimeUnavailable, StartError, OSError) as exc:
            log.warning("cluster network: %s (tried again in %g s)", exc, RECHECK_EVERY)
            self._failed = True
        except Exception:
            log.exception("cluster network: unexpected failure")
            self._failed = True

    def _reconcile(self, own: str | None, peers: dict[str, str], cidr: str | None) -> None:
        if own is None:
            if not self._decided.is_set():
                log.warning(
                    "the master gave node %s no subnet (is its cluster CIDR exhausted?): "
                    "containers here get no cluster address",
                    self.node_id,
                )
                self._attachment = None
                self._decided.set()
        elif own != self._made:
            self._make_bridge(own)
        if cidr is not None and (self._firewall is None or self._firewall.cidr != cidr):
            if self._firewall is not None:
                self._firewall.remove()
            self._firewall = hostnet.Firewall(cidr)
        if self._firewall is not None:
            self._firewall.ensure()  # also after a new bridge: Docker put its rules first
        for line in self._routes.sync(peers):
            log.info("%s", line)

    def _make_bridge(self, subnet: str) -> None:
        network = ipaddress.IPv4Network(subnet)
        gateway = str(network.network_address + 1)
        name = network_name(self.node_id)
        self._decided.clear()
        if self._dns is not None:
            self._dns.close()
            self._dns = None
        self._bridges.ensure_network(name, subnet, gateway)
        self.subnet = subnet
        dns = DnsServer(self.names, gateway, 53, upstreams=self._upstreams)
        dns.start()  # OSError (e.g. the port is taken): tried again at the next recheck
        self._dns = dns
        self._made = subnet
        self._attachment = Attachment(network=name, dns=gateway)
        self._decided.set()
        log.info("cluster network: bridge %s with %s, DNS on %s:53", name, subnet, gateway)

    def _remove_firewall(self) -> None:
        if self._firewall is not None:
            self._firewall.remove()

    def _remove_bridge(self) -> None:
        if self.subnet is not None:
            self._bridges.remove_network(network_name(self.node_id))
