"""Restart policies: what follows a task that ended (a new attempt, a failed job, nothing)."""

from __future__ import annotations

import pytest

from master import events as ev
from master import reconciler
from schemas.job import RestartPolicy
from tests.unit.factories import Cluster, TaskUpdate, job_spec


def cluster_with(**fields: object) -> Cluster:
    """One node and one job named `web` with `fields`, its first attempts created."""
    cluster = Cluster(now=100.0)
    cluster.node("a")
    cluster.job(job_spec(**fields))
    return cluster


def end(
    cluster: Cluster,
    task_id: str,
    state: TaskUpdate,
    code: int | None = None,
    *,
    ran: float = 1.0,
    retryable: bool = True,
    reason: str = "",
) -> list[ev.Event]:
    """Run `task_id` on node a for `ran` seconds, end it, and ask what follows."""
    cluster.assign(task_id, "a")
    if state != "failed":
        cluster.update(task_id, "running")
    cluster.now += ran
    task = cluster.update(task_id, state, code, reason=reason, retryable=retryable)
    return reconciler.after_task_ended(cluster.state, task, cluster.now)


def only_attempt(events: list[ev.Event]) -> ev.TaskCreated:
    (event,) = events
    assert isinstance(event, ev.TaskCreated)
    return event


def only_failure(events: list[ev.Event]) -> ev.JobFailed:
    (event,) = events
    assert isinstance(event, ev.JobFailed)
    return event


# -- backoff --


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (50, 30.0)],
)
def test_restart_delay_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert reconciler.restart_delay(RestartPolicy(), failures) == delay


def test_restart_delay_with_a_custom_policy() -> None:
    policy = RestartPolicy(backoff_initial=0.5, backoff_max=3.0)
    assert [reconciler.restart_delay(policy, n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


def test_restart_delay_stays_capped_for_a_long_crash_loop() -> None:
    assert reconciler.restart_delay(RestartPolicy(), 1025) == 30.0


# -- batch --


def test_batch_success_completes_the_slot() -> None:
    cluster = cluster_with()
    assert end(cluster, "web-0-0", "exited", 0) == []


def test_batch_failures_retry_with_backoff_then_fail_the_job() -> None:
    cluster = cluster_with(restart={"max_retries": 2})
    delays = []
    task_id = "web-0-0"
    for attempt in (1, 2):
        created = only_attempt(end(cluster, task_id, "exited", 1))
        assert (created.slot, created.attempt) == (0, attempt)
        assert created.reason.startswith(f"restarting after {task_id} exited with code 1 (in ")
        delays.append(created.not_before - cluster.now)
        cluster.apply(created)
        task_id = created.task_id
    assert delays == [1.0, 2.0]
    failed = only_failure(end(cluster, task_id, "exited", 1))
    assert failed.reason == "task web-0-2 exited with code 1; gave up after 2 retries"


def test_batch_with_no_retries_fails_at_once() -> None:
    cluster = cluster_with(restart={"max_retries": 0})
    assert "gave up after 0 retries" in only_failure(end(cluster, "web-0-0", "exited", 7)).reason


@pytest.mark.parametrize(("code", "fails"), [(1, True), (0, False)])
def test_batch_never_restarts(code: int, fails: bool) -> None:
    cluster = cluster_with(restart={"condition": "never"})
    events = end(cluster, "web-0-0", "exited", code)
    if fails:
        assert only_failure(events).reason == "task web-0-0 exited with code 1"
    else:
        assert events == []


def test_a_lost_task_is_replaced_at_once_and_is_not_a_failure() -> None:
    cluster = cluster_with(restart={"max_retries": 2})
    created = only_attempt(end(cluster, "web-0-0", "exited", 1))
    cluster.apply(created)
    lost = only_attempt(end(cluster, created.task_id, "lost", reason="node a is down"))
    assert (lost.attempt, lost.not_before, lost.reason) == (2, cluster.now, "")
    cluster.apply(lost)
    # Had the loss counted, this third end would be the third failure: over the limit.
    again = only_attempt(end(cluster, lost.task_id, "exited", 1))
    assert again.not_before == cluster.now + 2.0


def test_a_start_that_cannot_succeed_fails_the_job() -> None:
    cluster = cluster_with(kind="service")
    events = end(cluster, "web-0-0", "failed", reason="no such image: nope", retryable=False)
    assert only_failure(events).reason == "task web-0-0 no such image: nope"


def test_a_start_that_may_succeed_later_is_retried() -> None:
    cluster = cluster_with()
    created = only_attempt(end(cluster, "web-0-0", "failed", reason="engine busy"))
    assert created.reason == "restarting after web-0-0 engine busy (in 1 s)"
    assert created.not_before == cluster.now + 1.0


# -- services --


def test_service_always_restarts_even_after_success() -> None:
    cluster = cluster_with(kind="service")
    created = only_attempt(end(cluster, "web-0-0", "exited", 0))
    assert (created.attempt, created.not_before) == (1, cluster.now + 1.0)


def test_service_restarts_without_a_retry_limit() -> None:
    cluster = cluster_with(kind="service", restart={"max_retries": 1})
    task_id = "web-0-0"
    for _ in range(4):
        created = only_attempt(end(cluster, task_id, "exited", 1))
        cluster.apply(created)
        task_id = created.task_id
    assert created.not_before == cluster.now + 8.0


def test_a_healthy_run_resets_a_services_backoff() -> None:
    cluster = cluster_with(kind="service")
    cluster.apply(only_attempt(end(cluster, "web-0-0", "exited", 1)))
    created = only_attempt(end(cluster, "web-0-1", "exited", 1, ran=reconciler.HEALTHY_RUN_SECONDS))
    assert created.not_before == cluster.now


@pytest.mark.parametrize(("code", "restarts"), [(0, False), (1, True)])
def test_service_on_failure(code: int, restarts: bool) -> None:
    cluster = cluster_with(kind="service", restart={"condition": "on-failure"})
    events = end(cluster, "web-0-0", "exited", code)
    assert len(events) == (1 if restarts else 0)


def test_service_never_leaves_the_slot_done() -> None:
    cluster = cluster_with(kind="service", restart={"condition": "never"})
    assert end(cluster, "web-0-0", "exited", 1) == []


# -- nothing to do --


def test_an_older_attempt_ending_changes_nothing() -> None:
    cluster = cluster_with(kind="service")
    cluster.assign("web-0-0", "a")
    cluster.attempt("web", 0, 1)
    old = cluster.update("web-0-0", "exited", 1)
    assert reconciler.after_task_ended(cluster.state, old, cluster.now) == []


@pytest.mark.parametrize(
    "event",
    [
        ev.JobCancelled(at=100.0, job_id="web"),
        ev.JobFailed(at=100.0, job_id="web", reason="x"),
        ev.JobScaled(at=100.0, job_id="web", replicas=0),
    ],
    ids=lambda e: e.kind,
)
def test_a_job_that_no_longer_wants_the_slot_gets_nothing(event: ev.Event) -> None:
    cluster = cluster_with(kind="service")
    cluster.apply(event)
    assert end(cluster, "web-0-0", "exited", 1) == []


def test_a_task_the_master_stopped_is_not_replaced() -> None:
    cluster = cluster_with(kind="service")
    assert end(cluster, "web-0-0", "stopped") == []


# -- first attempts --


def test_fill_slots_creates_first_attempts_for_empty_slots() -> None:
    cluster = Cluster(now=5.0)
    job = cluster.job(job_spec(replicas=3), tasks=False)
    cluster.attempt("web", 1, 0)
    events = reconciler.fill_slots(cluster.state, job, 5.0)
    assert events == [
        ev.TaskCreated(
            at=5.0, task_id=f"web-{slot}-0", job_id="web", slot=slot, attempt=0, not_before=5.0
        )
        for slot in (0, 2)
    ]


def test_new_attempt_without_a_reason_says_it_waits() -> None:
    job = Cluster().job(job_spec(), tasks=False)
    created = reconciler.new_attempt(job, 0, 4, now=10.0, delay=2.5)
    assert (created.task_id, created.not_before) == ("web-0-4", 12.5)
    assert created.reason == "waiting 2.5 s"


# -- counts that survive forgetting --


def test_each_new_attempt_carries_the_slots_failures() -> None:
    cluster = cluster_with(kind="service")
    created = only_attempt(end(cluster, "web-0-0", "exited", 1))
    assert created.failures == 1
    cluster.apply(created)
    lost = only_attempt(end(cluster, created.task_id, "lost"))
    assert lost.failures == 1  # a loss is not a failure, and does not reset the count
    cluster.apply(lost, ev.TaskForgotten(at=cluster.now, task_id="web-0-0"))
    cluster.apply(ev.TaskForgotten(at=cluster.now, task_id=created.task_id))
    again = only_attempt(end(cluster, lost.task_id, "exited", 1))
    assert (again.failures, again.not_before) == (2, cluster.now + 2.0)


def test_scaling_back_up_keeps_the_count_and_numbers_attempts_on() -> None:
    cluster = cluster_with(kind="service", replicas=2)
    cluster.apply(only_attempt(end(cluster, "web-1-0", "exited", 1)))
    cluster.apply(ev.JobScaled(at=cluster.now, job_id="web", replicas=1))
    cluster.update("web-1-1", "stopped")
    cluster.apply(ev.TaskForgotten(at=cluster.now, task_id="web-1-0"))
    cluster.apply(ev.JobScaled(at=cluster.now, job_id="web", replicas=2))
    (refill,) = reconciler.fill_slots(cluster.state, cluster.state.jobs["web"], cluster.now)
    assert isinstance(refill, ev.TaskCreated)
    assert (refill.task_id, refill.failures) == ("web-1-2", 1)


def undeliver(cluster: Cluster, task_id: str) -> list[ev.Event]:
    cluster.assign(task_id, "a")
    cluster.apply(
        ev.TaskUndelivered(
            at=cluster.now, task_id=task_id, node_id="a", hold_until=cluster.now, reason="x"
        )
    )
    return reconciler.after_task_ended(cluster.state, cluster.state.tasks[task_id], cluster.now)


def test_undelivered_assignments_are_replaced_after_a_growing_backoff() -> None:
    cluster = cluster_with(kind="service")
    task_id, delays = "web-0-0", []
    for _ in range(4):
        created = only_attempt(undeliver(cluster, task_id))
        assert created.failures == 0  # the job did nothing wrong
        delays.append(created.not_before - cluster.now)
        cluster.apply(created)
        task_id = created.task_id
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert "could not be delivered" in created.reason
