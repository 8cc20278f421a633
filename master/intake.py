"""Heartbeats read on a thread of their own, so that a busy master never takes a live
node for a silent one.

The master's loop is one thread. While it carries out a large submit (seen: 2-8 s
with a fleet of 1,000 nodes), every heartbeat waits in its queue, and liveness used
to judge each node by when the loop *read* its last beat: 178 of 200 simulated nodes
went `suspect` during a batch of one-replica jobs. So a master reads heartbeats here,
on a connection and a thread of their own:

- each heartbeat from the node's own worker user (or the master's: see
  `master.senders`) stamps `heard[node_id]` with the time it arrived, on the
  master's clock. Liveness counts a node as heard then (`Liveness.heard`), whatever
  the loop is doing; a lost host sends nothing, so it is judged as before;
- the newest heartbeat of each node waits for the loop, which takes all that came
  since its last turn at once (`post` -> `_deliver`, asked at most every POST_DELAY
  s): a loop that fell behind handles one beat per node, not every beat each node
  sent meanwhile;
- beats are acked in batches, one frame for many (`_ack`).

The intake's connection is the master's ears: while it is not listening (before its
first connect) the master judges no node (`listening`, `Ticking._on_tick`), and if it
loses its connection the term ends (`on_lost`), as it does when its own connection is
lost: otherwise the whole fleet would look silent and be taken for lost.

Every heartbeat is untrusted: one that does not decode is dead-lettered with the
reason (by the bus); one about another node than its sender's is ignored, with a
warning the first time (the last WARNED_KEPT senders remembered). At most
HEARD_MAX nodes are tracked: beats about more are dropped (only the master's own
user can name any node; a fleet is far smaller).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from bus import Bus, BusError, Delivery, topology
from bus.background import BusThread
from bus.tls import Tls
from master.senders import node_sender_refusal
from schemas.envelope import Message
from schemas.messages import Heartbeat

log = logging.getLogger("corral.master")

PREFETCH = 1000
# Beats are acked in batches, one frame for many (a frame each was a fifth of the
# intake's busy time at 500 beats a second): every ACK_EVERY beats, and ACK_DELAY s after
# the first unacked one, well before PREFETCH of them hold up the broker.
ACK_EVERY = PREFETCH // 4
ACK_DELAY = 0.05
# The owner is asked to take the beats at most this often (a wake-up of its loop per
# beat was a sixth of the intake's busy time at 500 beats a second). Arrival times are
# noted at once: liveness does not wait for this.
POST_DELAY = 0.05
HEARD_MAX = 100_000  # nodes tracked at most
WARNED_KEPT = 1000  # senders warned about, remembered (the oldest forgotten first)

Post = Callable[[Callable[[], None]], None]


class HeartbeatIntake(BusThread):
    """Reads every node's heartbeats from `start()` until `stop()`, on its own thread.

    `heard` (node id -> when its last heartbeat arrived, by `clock`) is written here and
    read by the owner at any time, as is `listening` (its consumer is running).
    `on_beats(beats)` gets the newest heartbeat of each node heard since the last call,
    and `on_lost()` is called once the intake lost its connection (it reconnects), both
    on the owner's thread: `post(fn)` must run `fn` there (`Bus.call_threadsafe`).
    Neither is called after `stop()` returned, if `stop()` runs on that thread.
    """

    def __init__(
        self,
        url: str,
        trusted: str,
        on_beats: Callable[[list[Heartbeat]], None],
        on_lost: Callable[[], None],
        post: Post,
        *,
        clock: Callable[[], float] = time.time,
        name: str = "corral",
        heartbeat: int = 10,
        tls: Tls | None = None,
    ) -> None:
        self.heard: dict[str, float] = {}
        self.listening = False
        self._trusted = trusted
        self._on_beats = on_beats
        self._on_lost = on_lost
        self._post = post
        self._clock = clock
        self._latest: dict[str, Heartbeat] = {}  # guarded by _lock, like _posted
        self._posted = False  # a _deliver is on its way to the owner's thread
        self._lock = threading.Lock()
        self._warned = OrderedDict[str, None]()
        self._unacked: Delivery | None = None  # the newest delivery not acked yet
        self._unacked_count = 0
        super().__init__(Bus(url, name=f"{name} (heartbeats)", heartbeat=heartbeat, tls=tls))

    # -- the intake's thread --

    def _serve(self) -> None:
        bus = self._bus
        bus.on_connected(self._connected)
        bus.on_lost(self._lost)
        bus.consume_messages(topology.heartbeat_queue(), self._on_heartbeat, prefetch=PREFETCH)
        bus.every(ACK_DELAY, self._ack)
        with contextlib.suppress(BusError):  # unreachable for now: run() goes on trying
            bus.connect(self._stopping, attempts=1)
        bus.run(self._stopping)

    def _connected(self, _reconnected: bool) -> None:
        self.listening = True

    def _lost(self) -> None:
        self.listening = False
        self._unacked, self._unacked_count = None, 0  # the broker took them back
        self._post(self._deliver_lost)

    def _on_heartbeat(self, message: Message, delivery: Delivery) -> None:
        beat = message.expect(Heartbeat)
        # Soft state, acked in batches (`_ack`): the next beat says it again.
        self._unacked = delivery
        self._unacked_count += 1
        if self._unacked_count >= ACK_EVERY:
            self._ack()
        if self.take(beat, delivery.user_id):
            self._bus.call_later(POST_DELAY, self._post_deliver)

    def _post_deliver(self) -> None:
        self._post(self._deliver)

    def _ack(self) -> None:
        """Ack every beat read so far, in one frame."""
        if self._unacked is not None:
            self._unacked.ack_through()
        self._unacked, self._unacked_count = None, 0

    def take(self, beat: Heartbeat, user_id: str | None) -> bool:
        """Note `beat`, sent by broker user `user_id`. True if the owner must be asked to
        take the beats (none is on its way)."""
        refusal = node_sender_refusal(user_id, beat.node_id, self._trusted)
        if refusal is not None:
            self._warn_once(f"{user_id} {beat.node_id}", "ignoring a heartbeat: %s", refusal)
            return False
        now = self._clock()
        with self._lock:
            if beat.node_id not in self.heard and len(self.heard) >= HEARD_MAX:
                self._warn_once("", "more than %d nodes heard: ignoring new ones", HEARD_MAX)
                return False
            self.heard[beat.node_id] = now
            self._latest[beat.node_id] = beat
            if self._posted:
                return False
            self._posted = True
            return True

    def _warn_once(self, key: str, text: str, *args: object) -> None:
        if key in self._warned:
            log.debug(text, *args)
            return
        self._warned[key] = None
        if len(self._warned) > WARNED_KEPT:
            self._warned.popitem(last=False)
        log.warning(text, *args)

    # -- the owner's thread --

    def _deliver(self) -> None:
        with self._lock:
            beats, self._latest = self._latest, {}
            self._posted = False
        if beats and not self._stopped:
            self._on_beats(list(beats.values()))

    def _deliver_lost(self) -> None:
        if not self._stopped:
            self._on_lost()
