"""The nodes' part of the master's state (a mixin of `master.state.ClusterState`): what
heartbeats, the journal's node events and subnets do to `nodes`, `unseen`, `holds` and
`subnets`. Soft state (what heartbeats alone set) is listed in SOFT_NODE_FIELDS.
"""

from __future__ import annotations

from collections.abc import Callable

from master import events as ev
from master.applying import handles as _handles
from master.model import Node, Task, Unseen

# Node fields that heartbeats alone set (soft state, see `ClusterState.differences`).
SOFT_NODE_FIELDS = (
    "capacity",
    "labels",
    "boot_id",
    "last_seen",
    "reported",
    "network",
    "interval",
)


class NodeRecords:
    """The node handlers of the state; `ClusterState` provides what is declared here."""

    nodes: dict[str, Node]
    unseen: dict[str, Unseen]
    tasks: dict[str, Task]
    holds: dict[str, float]
    subnets: dict[str, str]
    placeable_version: int
    net_nodes_version: int

    # Defined by ClusterState (the per-node indexes): book a task on its node.
    _bind: Callable[[Task], None]

    @_handles(ev.NodeObserved)
    def _node_observed(self, event: ev.NodeObserved) -> None:
        node = self.nodes.get(event.node_id)
        if node is None:
            self._node_joined(event)
            return
        if node.capacity != event.capacity or node.labels != event.labels:
            self.placeable_version += 1
        if node.boot_id != event.boot_id and node.held_until:
            # A new agent there: whatever made us hold the node may be fixed.
            node.held_until, node.held_reason = 0.0, ""
            self.holds.pop(node.node_id, None)
            self.placeable_version += 1
        node.capacity = event.capacity
        node.labels = event.labels
        node.boot_id = event.boot_id
        node.last_seen = event.at
        node.reported = list(event.tasks)
        if (node.network and node.network.addr) != (event.network and event.network.addr):
            self.net_nodes_version += 1
        node.network = event.network
        node.interval = event.interval

    def _node_joined(self, event: ev.NodeObserved) -> None:
        """A node's first heartbeat: ready, unless the journal said otherwise (`unseen`)."""
        record = self.unseen.pop(event.node_id, None)
        node = Node(
            event.node_id,
            record.state if record is not None else "ready",
            event.capacity,
            event.labels,
            event.boot_id,
            event.at,
            list(event.tasks),
            network=event.network,
            interval=event.interval,
            # Since a state change the journal holds (0: none, it has been ready since it joined).
            state_since=record.state_since if record is not None else 0.0,
        )
        if record is not None:
            node.state_reason = record.state_reason
            node.cordoned, node.draining = record.cordoned, record.draining
            node.leaving = record.leaving
        self.nodes[event.node_id] = node
        self.placeable_version += 1
        self.net_nodes_version += 1
        if record is None:
            return
        if record.held_boot in ("", event.boot_id):  # else held for an agent gone since
            node.held_until, node.held_reason = record.held_until, record.held_reason
            if node.held_until:
                self.holds[node.node_id] = node.held_until
        for task_id in sorted(record.task_ids):
            self._bind(self.tasks[task_id])

    @_handles(ev.NodeForgotten)
    def _node_forgotten(self, event: ev.NodeForgotten) -> None:
        node = self.nodes.get(event.node_id)
        if node is not None and node.state == "down" and not node.task_ids:
            del self.nodes[event.node_id]
            self.holds.pop(event.node_id, None)
            self._release_subnet(event.node_id)
        record = self.unseen.get(event.node_id)
        if record is not None and record.state == "down" and not record.task_ids:
            del self.unseen[event.node_id]
            self._release_subnet(event.node_id)

    def _release_subnet(self, node_id: str) -> None:
        if self.subnets.pop(node_id, None) is not None:
            self.net_nodes_version += 1

    @_handles(ev.SubnetAllocated)
    def _subnet_allocated(self, event: ev.SubnetAllocated) -> None:
        self.subnets[event.node_id] = event.subnet
        self.net_nodes_version += 1

    @_handles(ev.NodeStateChanged)
    def _node_state_changed(self, event: ev.NodeStateChanged) -> None:
        node: Node | Unseen | None = self.nodes.get(event.node_id)
        if node is None:
            node = self._unseen(event.node_id, event.at)
        elif node.state != event.state and event.state == "ready":
            self.placeable_version += 1
        if node.state != event.state:
            node.state_since = event.at
        node.state = event.state
        node.state_reason = event.reason

    @_handles(ev.NodeScheduling)
    def _node_scheduling(self, event: ev.NodeScheduling) -> None:
        node: Node | Unseen | None = self.nodes.get(event.node_id)
        if node is None:
            node = self._unseen(event.node_id, event.at)
        if node.cordoned and not event.cordoned:
            self.placeable_version += 1
        node.cordoned, node.draining, node.leaving = event.cordoned, event.draining, event.leaving

    def _unseen(self, node_id: str, at: float) -> Unseen:
        """The record of a node no heartbeat has shown, made (first named at `at`) if need be."""
        record = self.unseen.get(node_id)
        if record is None:
            record = self.unseen[node_id] = Unseen(node_id, at)
        return record
