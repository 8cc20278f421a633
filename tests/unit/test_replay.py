"""Failover: a standby built from the leader's journal (and the heartbeats) holds the
leader's state, and once promoted acts as the leader would have.

The property test drives a leader through hypothesis-drawn runs (submits,
redeliveries, cancels, scaling, heartbeats, task statuses, node loss and
reboots, blackouts, unroutable assignments, forgetting) and checks every way a standby
can be built: by following the journal and heartbeats as they happen, from a
snapshot and the journal after it, and from the journal alone before any
heartbeat.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from master import events as ev
from master import snapshot
from master.api import Api
from master.controller import Controller, StartCommand, StopCommand
from schemas.api import ScaleJob, SubmitJob
from schemas.messages import JobEvent, NodeEvent, TaskStatus
from tests.unit.factories import ADMIN, heartbeat, job_spec, running
from tests.unit.journaled import (
    NODES,
    SETTINGS,
    STEPS,
    Leader,
    Step,
    events_of,
    feed,
    standby,
)

steps = st.lists(
    st.tuples(st.sampled_from(STEPS), st.integers(0, 60), st.integers(0, 60)),
    min_size=1,
    max_size=60,
)

# A run that reaches every journaled kind of event (checked below).
SCRIPTED: list[Step] = [
    ("tick", 0, 0),
    ("submit", 3, 0),  # web: a service of 1 replica
    ("submit", 8, 0),  # db: a service of 2 replicas, a host port each
    ("start", 0, 0),
    ("start", 0, 0),
    ("start", 0, 0),
    ("redeliver", 0, 0),  # web's submit again: remembered, not carried out
    ("snapshot", 0, 0),
    ("exit", 2, 1),  # web crashes three times: its oldest attempts are forgotten
    *[("tick", 0, 0)] * 2,
    ("start", 0, 0),
    ("exit", 2, 1),
    *[("tick", 0, 0)] * 3,
    ("start", 0, 0),
    ("exit", 2, 1),
    ("silence", 1, 0),  # n1 goes silent: down, its db task lost and replaced
    *[("tick", 0, 0)] * 8,
    ("snapshot", 0, 0),
    ("silence", 1, 0),  # n1 is back, with the container of its lost task: fenced
    ("tick", 0, 0),
    ("snapshot", 0, 0),
    ("submit", 10, 1),  # batch: a batch job of 3 replicas
    ("unroutable", 0, 0),  # one start comes back: its node has no queue
    ("fail", 0, 0),  # another fails for good: the job fails
    ("scale", 2, 3),  # db to 3: the third has no node with its port free
    ("cancel", 2, 0),
    ("cancel", 0, 0),  # more ended jobs than kept: the oldest is forgotten
    ("snapshot", 0, 0),
    ("reboot", 1, 0),
    ("silence", 1, 0),  # n1 is gone for good: down, then forgotten
    *[("tick", 0, 0)] * 12,
    ("submit", 6, 0),  # web again, 2 replicas: one runs, one is still assigned
    ("start", 0, 0),
    ("snapshot", 0, 0),
    ("tick", 0, 0),
    ("silence", 1, 0),  # n1 back
    ("reboot", 1, 0),
    *[("tick", 0, 0)] * 4,
    ("start", 0, 0),
    ("health", 0, 1),  # healthy
    *[("tick", 0, 0)] * 3,  # web's tasks healthy after min_healthy
    ("update", 0, 1),  # web: start-first, 2 at a time
    ("start", 0, 0),
    ("start", 0, 0),
    *[("tick", 0, 0)] * 4,  # the new version healthy: the rollout is done
    ("snapshot", 0, 0),
    ("rollback", 0, 0),
    ("schedule", 0, 2),  # drain n0
    ("start", 0, 0),
    ("start", 0, 0),
    ("health", 0, 2),  # unhealthy: replaced
    ("close", 2, 0),  # n2's agent stops
    *[("tick", 0, 0)] * 6,  # past the agent grace
    ("snapshot", 0, 0),
    ("cancel", 0, 0),
    ("purge", 0, 0),
    ("submit", 6, 0),  # web once more: the state ends with a job on every node it can
    ("start", 0, 0),
    ("tick", 0, 0),
]


def check_failover(leader: Leader) -> None:
    """Every way of building a standby gives the leader's state; promoted, it acts right."""
    truth = leader.controller.state

    follower = standby()  # (a) followed the journal and the heartbeats as they came
    feed(follower, leader.timeline)
    assert follower.drain() == ([], [])
    assert follower.state.differences(truth) == []

    for index, data in leader.snapshots:  # (b) a snapshot, then the journal after it
        restored = standby(snapshot.load(data, remember_requests=SETTINGS.remember_requests))
        feed(restored, leader.timeline[index:])
        assert restored.state.differences(truth) == []

    cold = standby()  # the journal alone first, then one heartbeat per node
    feed(cold, events_of(leader.timeline))
    feed(cold, [leader.last_beats[node_id] for node_id in truth.nodes])
    assert cold.state.differences(truth) == []

    check_promotion(leader, follower)


def check_promotion(leader: Leader, successor: Controller) -> None:
    """(c) the promoted standby restarts what was assigned and assigns nothing twice;
    (d) a redelivered request gets the outcome the leader gave it."""
    state = successor.state
    assigned = {t.task_id for t in state.tasks.values() if t.state == "assigned"}
    pending = {t.task_id for t in state.tasks.values() if t.state == "pending"}
    journal: list[ev.Event] = []
    successor.journal = journal.append
    successor.promote(2, leader.now + 0.1)
    commands, notifications = successor.drain()
    starts = [c.task_id for c in commands if isinstance(c, StartCommand)]
    newly_assigned = [e.task_id for e in journal if isinstance(e, ev.TaskAssigned)]
    assert len(starts) == len(set(starts))
    assert set(starts) == assigned | set(newly_assigned)
    assert set(newly_assigned) <= pending
    assert all(e.epoch == 2 for e in journal if isinstance(e, ev.TaskAssigned))
    assert not [n for n in notifications if isinstance(n, JobEvent)]  # all announced already
    assert {type(e) for e in journal} <= {ev.TaskAssigned, ev.TaskUnplaced}

    api = Api(successor)
    for message_id, request in leader.requests:
        if leader.controller.state.requests.recall(message_id, request.TYPE, _job(request)):
            journal.clear()
            reply = api.answer(
                request, message_id=message_id, now=leader.now + 0.2, token="new", caller=ADMIN
            )
            outcome = leader.controller.state.requests.recall(
                message_id, request.TYPE, _job(request)
            )
            assert outcome is not None
            if outcome.error is not None:
                assert reply.error == outcome.error
            else:
                assert reply.error is None or reply.error.code == "not_found"
            assert [type(e) for e in journal] == [ev.RequestDone]


def _job(request: object) -> str:
    if isinstance(request, SubmitJob):
        return request.spec.name
    return str(getattr(request, "job_id", ""))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_a_standby_holds_the_leaders_state_however_it_was_built(run: list[Step]) -> None:
    leader = Leader()
    leader.run([("tick", 0, 0), *run, ("snapshot", 0, 0), ("tick", 0, 0)])
    check_failover(leader)


def test_a_scripted_run_reaches_every_journaled_event_and_fails_over() -> None:
    leader = Leader()
    leader.run(SCRIPTED)
    kinds = {type(e) for e in events_of(leader.timeline)}
    journaled = {
        ev.JobSubmitted,
        ev.JobScaled,
        ev.JobCancelled,
        ev.JobFailed,
        ev.JobForgotten,
        ev.JobStateChanged,
        ev.TaskCreated,
        ev.TaskAssigned,
        ev.TaskUpdated,
        ev.TaskUndelivered,
        ev.TaskForgotten,
        ev.TaskFenced,
        ev.RequestDone,
        ev.NodeStateChanged,
        ev.NodeForgotten,
        ev.TaskHealth,
        ev.TaskHealthy,
        ev.JobUpdated,
        ev.RolloutEnded,
        ev.NodeScheduling,
    }
    assert journaled - kinds == set()
    assert len(leader.snapshots) == 7
    check_failover(leader)


# -- one thing at a time --


def leader_with_two_nodes() -> tuple[Controller, list[ev.Event]]:
    master = Controller(SETTINGS, epoch=1)
    journal: list[ev.Event] = []
    master.journal = journal.append
    for node_id in ("a", "b"):
        master.heartbeat(heartbeat(node_id), 0.0)
    return master, journal


def replayed(events: list[ev.Event]) -> Controller:
    successor = standby()
    for event in events:
        successor.replay(event)
    return successor


def test_replay_and_observe_send_nothing_and_journal_nothing() -> None:
    master, journal = leader_with_two_nodes()
    master.submit(job_spec(kind="service", replicas=2), 1.0)
    successor = replayed(journal)
    echoed: list[ev.Event] = []
    successor.journal = echoed.append
    successor.observe(heartbeat("a", tasks=[running("web-0-0")]), 2.0)
    assert successor.drain() == ([], [])
    assert echoed == []
    assert successor.state.tasks["web-0-0"].state == "assigned"  # the leader decides that


def test_a_redelivered_submit_after_failover_gets_its_job_not_a_conflict() -> None:
    master, journal = leader_with_two_nodes()
    request = SubmitJob(spec=job_spec(kind="service"))
    first = Api(master).answer(request, message_id="m1", now=1.0, token="abc", caller=ADMIN)
    successor = replayed(journal)
    successor.promote(2, 2.0)
    successor.drain()
    again = Api(successor).answer(request, message_id="m1", now=2.5, token="def", caller=ADMIN)
    assert (first.ok, again.ok) == (True, True)
    assert again.result["tasks"] == first.result["tasks"]
    assert [t for t in successor.state.tasks if "def" in t] == []
    other = Api(successor).answer(request, message_id="m2", now=3.0, token="ghi", caller=ADMIN)
    assert other.error is not None and other.error.code == "conflict"


def test_a_refused_request_is_refused_the_same_way_after_failover() -> None:
    master, journal = leader_with_two_nodes()
    request = ScaleJob(job_id="web", replicas=3)
    first = Api(master).answer(request, message_id="m1", now=1.0, token="t", caller=ADMIN)
    master.submit(job_spec(kind="service"), 1.5)
    successor = replayed(journal)
    again = Api(successor).answer(request, message_id="m1", now=2.0, token="t", caller=ADMIN)
    assert first.error is not None and again.error == first.error
    assert successor.state.jobs["web"].replicas == 1


def test_the_request_memory_is_least_recently_used_on_every_master() -> None:
    settings = SETTINGS.model_copy(update={"remember_requests": 2})
    master = Controller(settings, epoch=1)
    journal: list[ev.Event] = []
    master.journal = journal.append
    api = Api(master)
    for message_id, name in (("m1", "one"), ("m2", "two")):
        api.answer(
            SubmitJob(spec=job_spec(name)), message_id=message_id, now=1.0, token="t", caller=ADMIN
        )
    api.answer(
        SubmitJob(spec=job_spec("one")), message_id="m1", now=2.0, token="t", caller=ADMIN
    )  # again
    api.answer(SubmitJob(spec=job_spec("three")), message_id="m3", now=3.0, token="t", caller=ADMIN)
    assert [m for m, _ in master.state.requests.items()] == ["m1", "m3"]
    successor = Controller(settings, epoch=0)
    for event in journal:
        successor.replay(event)
    assert successor.state.differences(master.state) == []


def test_a_promoted_standby_restarts_the_assigned_tasks_once_and_places_the_pending() -> None:
    master, journal = leader_with_two_nodes()
    master.submit(job_spec(kind="service", replicas=2, cpu=1), 1.0)
    status = TaskStatus(task_id="web-0-0", job_id="web", node_id="a", state="running")
    master.task_status(status, 1.5)
    master.submit(job_spec("big", cpu=4), 1.6)  # waits: no node has 4 free CPUs
    successor = replayed(journal)
    for node_id in ("a", "b"):
        successor.observe(heartbeat(node_id), 1.7)
    journal.clear()
    successor.journal = journal.append
    successor.promote(9, 2.0)
    commands, notifications = successor.drain()
    assert [(c.task_id, c.node_id) for c in commands] == [("web-1-0", "b")]
    assert notifications == []
    assert journal == []  # big still does not fit, and already says why
    assert successor.epoch == 9


def test_a_new_leader_waits_takeover_grace_before_judging_nodes() -> None:
    successor = standby()
    successor.observe(heartbeat("a"), 0.0)
    successor.promote(2, 100.0)  # a silent for long (e.g. the standby lost the fanout)
    successor.tick(100.0 + SETTINGS.takeover_grace - 0.25)
    assert successor.state.nodes["a"].state == "suspect"
    successor.drain()
    successor.tick(100.0 + SETTINGS.takeover_grace)
    notes = successor.drain()[1]
    assert [(n.node_id, n.state) for n in notes if isinstance(n, NodeEvent)] == [("a", "down")]


def test_tasks_booked_on_a_node_not_heard_yet_are_bound_when_it_is() -> None:
    master, journal = leader_with_two_nodes()
    master.submit(job_spec(kind="service", replicas=2, cpu=1.5, ports=["80:80"]), 1.0)
    successor = replayed(journal)
    assert successor.state.nodes == {}
    assert successor.state.unseen["a"].task_ids == {"web-0-0"}
    successor.observe(heartbeat("a"), 2.0)
    node = successor.state.nodes["a"]
    assert (node.used_cpu, node.task_ids, node.ports) == (1.5, {"web-0-0"}, {(80, "tcp"): 1})
    assert "a" not in successor.state.unseen
    successor.observe(heartbeat("b"), 2.0)
    master.heartbeat(heartbeat("a"), 2.0)
    master.heartbeat(heartbeat("b"), 2.0)
    assert successor.state.differences(master.state) == []


def test_a_node_the_journal_says_is_down_stays_down_when_a_standby_first_hears_it() -> None:
    master, journal = leader_with_two_nodes()
    master.submit(job_spec(kind="service"), 1.0)
    master.heartbeat(heartbeat("b", seq=1), 3.0)
    master.tick(4.0)  # a is silent: down, its task lost and replaced on b
    assert master.state.nodes["a"].state == "down"
    successor = replayed(journal)
    assert successor.state.unseen["a"].state == "down"
    successor.observe(heartbeat("b", seq=1), 3.0)
    successor.observe(heartbeat("a", seq=5, tasks=[running("web-0-0")]), 5.0)
    before = successor.state.nodes["a"].state  # down, until the leader says otherwise

    journal.clear()
    master.heartbeat(heartbeat("a", seq=5, tasks=[running("web-0-0")]), 5.0)
    assert [type(e).__name__ for e in journal] == ["NodeStateChanged", "TaskFenced"]
    for event in journal:
        successor.replay(event)
    assert (before, successor.state.nodes["a"].state) == ("down", "ready")
    assert successor.state.differences(master.state, soft=False) == []  # nodes in another order


def test_a_new_leader_judges_a_node_it_never_heard_and_replaces_its_tasks() -> None:
    master, journal = leader_with_two_nodes()
    master.submit(job_spec(kind="service", replicas=2), 1.0)
    successor = replayed(journal)
    successor.observe(heartbeat("b"), 1.5)  # a died during the failover: never heard
    successor.promote(2, 2.0)
    successor.drain()
    for second in range(3, 6):  # no node is judged down before 2.0 + takeover_grace
        successor.heartbeat(heartbeat("b", seq=second), float(second))
        successor.tick(float(second))
    lost = successor.state.tasks["web-0-0"]
    assert (lost.state, lost.reason) == ("lost", "node a is down (no heartbeat for 4.0 s)")
    assert successor.state.unseen["a"].state == "down"
    replacement = successor.state.current_tasks(successor.state.jobs["web"])[0]
    assert (replacement.state, replacement.node_id) == ("assigned", "b")
    _, notifications = successor.drain()
    assert NodeEvent(node_id="a", state="down", reason="no heartbeat for 4.0 s") in notifications
    for second in range(6, 12):
        successor.heartbeat(heartbeat("b", seq=second), float(second))
        successor.tick(float(second))
    assert "a" not in successor.state.unseen  # down with nothing booked: forgotten


def test_a_hold_is_kept_for_the_agent_it_was_for_only() -> None:
    master, journal = leader_with_two_nodes()
    master.submit(job_spec(kind="service"), 1.0)
    master.assignment_unroutable("web-0-0", 1.5)
    assert master.state.nodes["a"].held_until == 1.5 + SETTINGS.unroutable_hold
    same = replayed(journal)
    same.observe(heartbeat("a"), 2.0)  # the agent it was for: still held
    assert same.state.nodes["a"].held_until == master.state.nodes["a"].held_until
    rebooted = heartbeat("a").model_copy(update={"boot_id": "boot-a-2"})
    other = replayed(journal)
    other.observe(rebooted, 2.0)  # a new agent: the leader dropped the hold too
    master.heartbeat(rebooted, 2.0)
    assert other.state.nodes["a"].held_until == master.state.nodes["a"].held_until == 0.0


def test_a_stray_fenced_just_before_a_failover_is_not_fenced_again_at_once() -> None:
    master, journal = leader_with_two_nodes()
    stray = heartbeat("a", tasks=[running("old-0-0", job_id="web")])
    master.submit(job_spec(kind="service", replicas=0), 1.0)
    master.heartbeat(stray, 2.0)
    stops = [c for c in master.drain()[0] if isinstance(c, StopCommand)]
    assert [(s.task_id, s.reason) for s in stops] == [("old-0-0", "fenced")]
    successor = replayed(journal)
    successor.observe(heartbeat("b"), 2.0)
    successor.promote(2, 3.0)
    successor.heartbeat(stray, 3.0)
    assert successor.drain()[0] == []
    successor.heartbeat(stray, 7.0)
    assert [c.task_id for c in successor.drain()[0]] == ["old-0-0"]


def test_the_fenced_memory_is_bounded_by_age() -> None:
    master, _ = leader_with_two_nodes()
    master.submit(job_spec(kind="service", replicas=0), 1.0)
    for second in range(20):
        strays = [running(f"old-{second}-{n}", job_id="web") for n in range(3)]
        master.heartbeat(heartbeat("a", tasks=strays, seq=second), float(second))
    assert len(master.state.fenced) <= 3 * 5


def test_a_resubmitted_name_gets_the_next_generation_on_every_master() -> None:
    master, journal = leader_with_two_nodes()
    for now in (1.0, 3.0, 5.0):
        master.submit(job_spec(kind="service"), now)
        master.cancel("web", now + 1)
    assert master.state.jobs["web"].generation == 3
    successor = replayed(journal)
    successor.promote(2, 7.0)
    successor.submit(job_spec(kind="service"), 7.0)
    assert successor.state.jobs["web"].submission == "v4"


def test_nodes_observed_on_a_standby_are_no_more_than_soft_state() -> None:
    follower = standby()
    follower.observe(heartbeat(NODES[0]), 1.0)
    follower.observe(heartbeat(NODES[0]).model_copy(update={"boot_id": "new"}), 2.0)
    assert follower.drain() == ([], [])
    assert follower.state.nodes[NODES[0]].boot_id == "new"
