"""Node liveness: ready -> suspect -> down, from the time since each node's last heartbeat.

Measured on the master's clock from the last heartbeat it received: when the
heartbeat intake saw it arrive (`heard`, `master.intake`), or when the loop read
it, whichever is later. Two guards keep a hiccup of the broker or of the
master's own link from looking like a dead fleet:

- after the master (re)connects to the broker it grants every node a grace
  period of `dead_after` before judging it (a new leader: `takeover_grace`), and
  so it does after its own loop stalled (`forgive_stall`: one long input left the
  heartbeats that came meanwhile unread);
- partition guard: if more than `partition_threshold` of the live nodes (and at
  least two) would go down in the same tick, hold them at `suspect` for up to
  `hold_max` seconds instead of rescheduling the world; when it lets go (most
  nodes are heard again), the nodes still silent get `dead_after` more.

**Adaptive intervals.** A node is judged by the interval it says it heartbeats at:
`suspect_after` and `dead_after` are for the master's `heartbeat_interval` (1 s), and
scale with a node's own (at most MAX_INTERVAL), so a node beating every 2 s is suspect
after 4 s. A large fleet is asked to beat less often (`fleet_interval`: at most
`max_heartbeats` a second from all nodes together, announced on corral.control), as
Nomad does; a worker that slows down heartbeats at once with its new interval, so it
is never judged by the old one. An agent crash is still seen at once (its connection
closes); only a silent host takes longer to be judged down in a very large fleet.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from master import events as ev
from master.settings import MasterSettings
from master.state import ClusterState, Node, Unseen
from schemas.limits import MAX_HEARTBEAT_INTERVAL
from schemas.messages import NodeState

# The longest heartbeat interval liveness honours (a node claiming more is judged by it).
MAX_INTERVAL = MAX_HEARTBEAT_INTERVAL
# The master's own loop stalled longer than this (one long input): the silence is forgiven.
STALL_FORGIVEN = 0.5

log = logging.getLogger("corral.master")


class Liveness:
    def __init__(self, settings: MasterSettings, *, hold_max: float = 30.0) -> None:
        self.settings = settings
        self.hold_max = hold_max
        self._grace_until = 0.0
        # When each node's last heartbeat arrived, as the master's heartbeat intake noted
        # it (`master.intake`, another thread): not when the loop got to read it.
        self.heard: Mapping[str, float] = {}
        self._holding_since: float | None = None
        # When the next node crosses suspect_after or dead_after, as the last check saw
        # it (inf: no node will without a heartbeat first). The daemon checks again right
        # then rather than at its next tick, so a lost host is judged on time.
        self.next_due = float("inf")

    def grant_grace(self, now: float, duration: float | None = None) -> None:
        """Forgive silence up to now: we could not have heard anyone. No node is then
        judged down before `now + duration` (default `dead_after`); a grace already
        granted for longer stands."""
        grace = self.settings.dead_after if duration is None else duration
        self._grace_until = max(self._grace_until, now + grace)

    def forgive_stall(self, now: float, stalled: float) -> bool:
        """The master's own loop ran nothing for `stalled` seconds more than usual (one
        long input: a large submit or listing). Heartbeats that came meanwhile wait
        unread, so the silence up to `now` is forgiven, as after a reconnect: no node is
        judged late for the master's own stall. True if it was long enough to count."""
        if stalled <= STALL_FORGIVEN:
            return False
        self.grant_grace(now)
        return True

    def fleet_interval(self, live_nodes: int) -> float:
        """The heartbeat interval to ask of every node, for a fleet of `live_nodes`: the
        master's `heartbeat_interval`, or longer (in half seconds) if that many nodes would
        send more than `max_heartbeats` a second (0: never longer)."""
        base = self.settings.heartbeat_interval
        rate = self.settings.max_heartbeats
        if rate <= 0:
            return base
        return min(MAX_INTERVAL, max(base, math.ceil(2 * live_nodes / rate) / 2))

    def scale(self, node: Node | Unseen) -> float:
        """How much longer than the defaults `node` may be silent: its interval over
        the master's (at least 1; a node the journal named but none heard: 1)."""
        interval = node.interval if isinstance(node, Node) else 0.0
        if interval <= self.settings.heartbeat_interval:
            return 1.0
        return min(interval, MAX_INTERVAL) / self.settings.heartbeat_interval

    def suspect_after(self, node: Node | Unseen) -> float:
        return self.settings.suspect_after * self.scale(node)

    def dead_after(self, node: Node | Unseen) -> float:
        return self.settings.dead_after * self.scale(node)

    def _last_beat(self, node: Node | Unseen) -> float:
        return max(node.last_seen, self.heard.get(node.node_id, 0.0))

    def _judge(
        self, state: ClusterState, now: float
    ) -> tuple[int, dict[str, tuple[Node | Unseen, NodeState]], float]:
        """How many nodes are live; the silent ones by id, each with what it should be now
        (suspect after `suspect_after` of silence, down after `dead_after`, both scaled
        by its interval); and the first time after `now` a node crosses a threshold if
        none is heard before. One pass over the nodes: at 10,000 nodes this is most of
        what an idle master does, four times a second. Down nodes wait for a heartbeat;
        disconnected ones are judged by their agent grace (the controller)."""
        settings = self.settings
        floor = self._grace_until - settings.dead_after  # the end of a grace counts as heard
        heard = self.heard
        live = 0
        silent: dict[str, tuple[Node | Unseen, NodeState]] = {}
        due = float("inf")
        for nodes in (state.nodes.values(), state.unseen.values()):
            for node in nodes:
                if node.state == "down" or node.state == "disconnected":
                    continue
                live += 1
                scale = self.scale(node)
                last = max(node.last_seen, heard.get(node.node_id, 0.0), floor)
                suspect_at = last + settings.suspect_after * scale
                dead_at = last + settings.dead_after * scale
                if now >= dead_at:
                    silent[node.node_id] = (node, "down")
                elif now >= suspect_at:
                    silent[node.node_id] = (node, "suspect")
                    due = min(due, dead_at)
                else:
                    silent.pop(node.node_id, None)  # (a node listed twice: the last counts)
                    due = min(due, suspect_at)
        return live, silent, due

    def check(self, state: ClusterState, now: float) -> list[ev.Event]:
        """State changes for nodes that went quiet. Heartbeats bring nodes back elsewhere.

        Nodes the journal names but this master never heard (`state.unseen`) are
        judged too, silent since they were last named (or since the grace)."""
        live, silent, self.next_due = self._judge(state, now)
        changes = {
            node_id: target for node_id, (node, target) in silent.items() if target != node.state
        }
        going_down = [n for n, target in changes.items() if target == "down"]
        # Silent nodes cross dead_after one tick apart (their last beats were spread over
        # an interval), so judge the share of all silent nodes, not just this tick's.
        threshold = self.settings.partition_threshold * live
        if going_down and len(silent) >= 2 and len(silent) > threshold:
            self._holding_since = self._holding_since or now
            if now - self._holding_since < self.hold_max:
                if self._holding_since == now:
                    log.warning(
                        "%d of %d nodes went silent at once: holding them as suspect "
                        "(partition guard)",
                        len(silent),
                        live,
                    )
                for node_id in going_down:
                    changes[node_id] = "suspect"
        elif self._holding_since is not None:
            # The partition heals, node by node: those still silent get a fresh dead_after
            # (a slow one is not taken for lost because the others came back first).
            self._holding_since = None
            self.grant_grace(now)
            for node_id in going_down:
                changes[node_id] = "suspect"
        return [
            ev.NodeStateChanged(
                at=now,
                node_id=node_id,
                state=target,
                reason=f"no heartbeat for {now - self._last_beat(silent[node_id][0]):.1f} s",
            )
            for node_id, target in changes.items()
            if target != silent[node_id][0].state
        ]
