"""One term of a master: a connection, a state, and a role (standby, claiming, active).

A term starts as a **standby**: it loads the newest snapshot, tails the
journal from there (applying the leader's batches with `Controller.replay`),
watches heartbeats (`Controller.observe`, so node liveness is warm), and
consumes `corral.leader`, the single-active-consumer queue every master pings.

When the broker delivers a ping to it, it is the group's active consumer: it
**claims**, appending a `Claim` to the journal. When it reads its own claim
back, it has applied everything before it, and the claim's offset is its
epoch. It then takes over, in this order: promote the controller (epoch,
grace for node liveness, re-send outstanding starts), announce the epoch on
`corral.control`, and only then consume `corral.api` and
`corral.master.status`. While **active** it journals every input's events
before acting on them (`master.writer`), writes snapshots, and hears from the
broker the moment a worker's connection closes (`bus.brokerevents`: an agent
that stopped or crashed, not a lost host).

A term that has claimed or leads ends the moment its connection is lost, or a
newer claim shows up in the journal: its state may hold events the journal
does not, so the daemon starts a fresh term (as a standby) from the journal.
A standby's term survives reconnects: it resumes the journal where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Literal

from bus import Bus, BusError, Delivery, topology
from bus.brokerevents import ConnectionWatch
from bus.consuming import Consumer
from bus.streams import offset_of
from bus.timers import Timer
from master import journal, outputs, snapshot, snapshots
from master.api import Api
from master.controller import Controller
from master.inputs import Inputs
from master.intake import HeartbeatIntake
from master.journal import Claim, ClaimSeen, Follower, Position
from master.journaled import Outputs
from master.network import NetView
from master.overview import SeenMaster
from master.settings import MasterSettings
from master.ticking import Ticking
from master.writer import JournalWriter
from schemas.envelope import Message
from schemas.messages import (
    LeaderAnnounced,
    MasterBeat,
)

log = logging.getLogger("corral.master")

# Workers retry a lost broker connection at most every ~5.5 s (the bus's max_backoff of
# 5 s, with jitter): after an outage a new leader gives them that much more to be heard.
RECONNECT_GRACE = 6.0

Role = Literal["standby", "claiming", "active"]

ANNOUNCE_EVERY = 5.0  # the leader repeats its epoch on corral.control this often
# The workers get the changes of the network view this often (DNS names follow within it).
NET_CHANGES_EVERY = 0.1
DEAD_LETTERS_EVERY = 5.0  # the leader measures corral.dead this often (`corral status`)
BEAT_EVERY = 1.0
MASTERS_FORGOTTEN_AFTER = 10.0


class Term(Inputs, Outputs, Ticking):
    def __init__(
        self,
        settings: MasterSettings,
        instance: str,
        started_at: float,
        clock: Callable[[], float],
        seen: Callable[[MasterBeat, float], None],
        masters: Callable[[], list[SeenMaster]] | None = None,
        *,
        after_outage: bool = False,
    ) -> None:
        """`after_outage`: the previous term lost its broker connection, so the workers
        most likely lost theirs too and come back at their own pace (see RECONNECT_GRACE)."""
        self.settings = settings
        self.instance = instance
        self.started_at = started_at
        self.clock = clock
        self._seen = seen
        self._masters = masters
        self.role: Role = "standby"
        self.nonce = uuid.uuid4().hex
        self.controller = Controller(settings, 0)
        self.follower = Follower()
        self.dead_letters: int | None = None
        self.api = self._api()
        self.writer: JournalWriter | None = None
        self.over = threading.Event()
        self.after_outage = after_outage
        self.lost_connection = False  # this term ended because its connection was lost
        self.replayed = 0  # batches applied in this term (since the snapshot)
        self.snapshots = snapshots.Schedule(settings)
        self._loaded_in = 0.0
        self._claimed_at = 0.0
        self._journal_read_at = 0.0
        self._journal_consumer: Consumer | None = None
        self._closed_connections: ConnectionWatch | None = None  # while active
        self._attached_at = 0.0
        self._t0 = time.monotonic()
        self._due_tick: Timer | None = None  # see _tick_when_due
        self._intake: HeartbeatIntake | None = None  # the heartbeats' reader, once running
        self._ticked_at = time.monotonic()  # the last tick while active (_own_stall)
        self._free_since = 0.0  # when the loop was last stalled (ticking._excused)
        self.net: NetView | None = None  # the network view sent to workers, while active
        self.bus = Bus(
            settings.amqp_url,
            name=f"master:{settings.name}",
            heartbeat=settings.amqp_heartbeat,
            tls=settings.tls,
        )
        self.bus.declare(
            topology.JOURNAL_STREAM_DECL, topology.SNAPSHOT_STREAM_DECL, topology.LEADER_QUEUE_DECL
        )

    # -- running --

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set or this term is over (stepped down)."""
        try:
            self.bus.connect(stop)
            self._load()
        except BusError as exc:
            log.warning("master %s: could not start a term: %s", self.settings.name, exc)
            self.bus.close()
            return
        bus = self.bus
        bus.on_lost(self._lost)
        self._tail_journal()
        intake = HeartbeatIntake(
            self.settings.amqp_url,
            bus.user,
            self._on_beats,
            self._intake_lost,
            bus.call_threadsafe,
            clock=self.clock,
            name=bus.name,
            heartbeat=self.settings.amqp_heartbeat,
            tls=self.settings.tls,
        )
        self.controller.liveness.heard = intake.heard
        self._intake = intake
        intake.start()
        bus.consume_messages(topology.masters_queue(), self._on_master_beat, prefetch=100)
        bus.consume(topology.LEADER_QUEUE_DECL, self._on_ping, prefetch=10)
        bus.every(self.settings.ping_interval, self._ping)
        bus.every(BEAT_EVERY, self._beat)
        bus.every(self.settings.tick, self._on_tick)
        bus.every(ANNOUNCE_EVERY, self._announce)
        bus.every(DEAD_LETTERS_EVERY, self._count_dead_letters)
        bus.every(0.1, lambda: self._end_if(stop))
        bus.every(NET_CHANGES_EVERY, self._net_changes_due)
        try:
            bus.run(self.over)
        finally:
            intake.stop()
        if self._closed_connections is not None:
            self._closed_connections.stop()

    def _tail_journal(self) -> None:
        """(Re)attach to the journal just after the last record read."""
        self._journal_consumer = self.bus.consume(
            topology.JOURNAL_STREAM_DECL,
            self._on_journal,
            prefetch=2000,
            arguments=lambda: {"x-stream-offset": self.follower.offset + 1},
        )
        self._attached_at = time.monotonic()

    def _end_if(self, stop: threading.Event) -> None:
        if stop.is_set():
            self.over.set()

    def _load(self) -> None:
        """The newest snapshot, if any: the journal is tailed from where it stands."""
        started = time.monotonic()
        found = snapshots.newest(self.bus)
        if found is not None:
            try:
                state = snapshot.load(found.data, **self._state_kwargs())
            except snapshot.SnapshotError as exc:
                log.error(
                    "master %s: the newest snapshot does not load (%s); replaying the whole "
                    "journal instead",
                    self.settings.name,
                    exc,
                )
                return
            self.controller = Controller(self.settings, 0, state=state)
            self.follower = Follower(found.position)
            self.api = self._api()
            self._loaded_in = time.monotonic() - started
            log.info(
                "master %s: loaded the snapshot after journal offset %d (%d bytes) in %.2f s",
                self.settings.name,
                found.position.offset,
                len(found.data),
                self._loaded_in,
            )

    def _api(self) -> Api:
        return Api(
            self.controller,
            masters=self._masters or tuple,
            applied=lambda: self.follower.offset,
            dead_letters=lambda: self.dead_letters,
        )

    def _state_kwargs(self) -> dict[str, int]:
        return {"remember_requests": self.settings.remember_requests}

    def _step_down(self, why: str) -> None:
        if self.role != "standby" and not self.over.is_set():
            log.warning("master %s steps down: %s", self.settings.name, why)
            self.over.set()

    def _lost(self) -> None:
        self.lost_connection = True
        self._step_down("it lost its broker connection")

    def _intake_lost(self) -> None:
        self.lost_connection = True
        self._step_down("its heartbeat intake lost its broker connection")

    # -- the journal --

    def _on_journal(self, delivery: Delivery) -> None:
        offset = offset_of(delivery.headers)
        delivery.ack()
        self._journal_read_at = time.monotonic()
        if offset is None:
            return
        if offset > self.follower.offset + 1:
            log.error(
                "master %s: journal records %d to %d were not read (gone with the stream's "
                "retention, or refused as too large): the state may lack what they said",
                self.settings.name,
                self.follower.offset + 1,
                offset - 1,
            )
        outcome = self.follower.feed(offset, journal.decode(delivery.body))
        if isinstance(outcome, ClaimSeen):
            self._on_claim(outcome)
        elif self.role == "active":
            if self.follower.epoch == self.controller.epoch and self.writer is not None:
                self.writer.committed_through(self.follower.position.seq)
                self.snapshots.committed(self.bus, self.writer.committed)
        elif outcome:
            for event in outcome:
                self.controller.replay(event)
            self.replayed += 1
            self.snapshots.batches += 1

    def _on_claim(self, claim: ClaimSeen) -> None:
        if claim.nonce == self.nonce and self.role == "claiming":
            self._take_over(claim.offset)
        elif self.role == "active":
            self._step_down(f"master {claim.master} claimed the lead (epoch {claim.offset})")
        else:
            log.info("master %s leads with epoch %d", claim.master, claim.offset)

    # -- election --

    def _ping(self) -> None:
        self.bus.publish_raw(
            topology.DEFAULT_EXCHANGE, topology.LEADER_QUEUE, b"ping", transient=True
        )

    def _on_ping(self, delivery: Delivery) -> None:
        delivery.ack()
        if self.role != "standby":
            return
        self.role = "claiming"
        self._claimed_at = time.monotonic()
        log.info("master %s is the active consumer of corral.leader: claiming", self.settings.name)
        claim = Claim(master=self.settings.name, nonce=self.nonce, at=self.clock())
        self.bus.publish_raw(
            topology.DEFAULT_EXCHANGE, topology.JOURNAL_STREAM, journal.encode_claim(claim)
        )

    def _take_over(self, epoch: int) -> None:
        now = self.clock()
        self.role = "active"
        self._ticked_at = time.monotonic()
        self.writer = JournalWriter(self.settings.name, epoch, self._send_batch)
        self.writer.on_sent = self._on_batch_sent
        self.controller.journal = self.writer.add
        grace = self.settings.takeover_grace + (RECONNECT_GRACE if self.after_outage else 0.0)
        self.controller.promote(epoch, now, grace=grace)
        self.net = NetView(self.controller.state, self.settings.cluster_cidr, now + grace)
        self._announce()
        self.bus.consume_messages(topology.API_QUEUE_DECL, self._on_api, prefetch=64)
        self.bus.consume_messages(topology.MASTER_STATUS_QUEUE_DECL, self._on_status, prefetch=500)
        self._closed_connections = ConnectionWatch(
            self.settings.amqp_url,
            self._on_connection_closed,
            self.bus.call_threadsafe,
            name=self.bus.name,
            heartbeat=self.settings.amqp_heartbeat,
            tls=self.settings.tls,
        )
        self._closed_connections.start()
        self._after()
        log.info(
            "master %s takes the lead with epoch %d: replayed %d journal batches%s, "
            "%.2f s after its term began",
            self.settings.name,
            epoch,
            self.replayed,
            f" after a snapshot loaded in {self._loaded_in:.2f} s" if self._loaded_in else "",
            time.monotonic() - self._t0,
        )

    def _announce(self) -> None:
        if self.role != "active":
            return
        live = sum(
            n.state not in ("down", "disconnected") for n in self.controller.state.nodes.values()
        )
        note = LeaderAnnounced(
            master=self.settings.name,
            epoch=self.controller.epoch,
            heartbeat_interval=self.controller.liveness.fleet_interval(live),
        )
        self.bus.publish(topology.CONTROL_EXCHANGE, "", note, epoch=self.controller.epoch)
        key = topology.leader_key(self.settings.name)
        self.bus.publish(topology.STATUS_EXCHANGE, key, note, epoch=self.controller.epoch)

    def _count_dead_letters(self) -> None:
        if self.role == "active":
            try:
                self.dead_letters = self.bus.queue_depth(topology.DEAD_QUEUE)
            except BusError:
                self.dead_letters = None  # the connection is going: run() sees to it

    # -- the other masters --

    def _beat(self) -> None:
        beat = MasterBeat(
            master=self.settings.name,
            instance=self.instance,
            role=self.role,
            epoch=self.follower.epoch if self.follower.epoch >= 0 else None,
            applied=self.follower.offset,
            started_at=self.started_at,
            interval=BEAT_EVERY,
            broker=outputs.host_port(self.bus.connected_url),
        )
        self._seen(beat, self.clock())
        self.bus.publish(topology.MASTERS_EXCHANGE, "", beat, transient=True)

    def _on_master_beat(self, message: Message, delivery: Delivery) -> None:
        delivery.ack()
        beat = message.expect(MasterBeat)
        if beat.instance != self.instance:
            self._seen(beat, self.clock())

    # -- snapshots --

    def _on_batch_sent(self, seq: int) -> None:
        """Batch `seq` just went out: the state is exactly the journal through it."""
        assert self.writer is not None
        position = Position(self.controller.epoch, seq, self.follower.offset, self.settings.name)
        self.snapshots.batch_sent(
            seq, self.writer.sent_bytes, position, lambda: snapshot.dump(self.controller.state)
        )
