"""Bounded history: the master forgets old attempts and ended jobs, through events."""

from __future__ import annotations

from master import events as ev
from master import views
from master.controller import Controller, StartCommand, StopCommand
from master.settings import MasterSettings
from master.state import ClusterState
from schemas.messages import TaskStatus
from tests.unit.factories import heartbeat, job_spec, running


class RecordingState(ClusterState):
    """A ClusterState that keeps every event it applied, to replay them."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[ev.Event] = []

    def apply(self, event: ev.Event) -> None:
        self.history.append(event)
        super().apply(event)


def master(**settings: int) -> Controller:
    controller = Controller(
        MasterSettings(amqp_url="amqp://x", **settings), epoch=1, state=RecordingState()
    )
    controller.heartbeat(heartbeat("a", cpus=64), 0.0)
    controller.drain()
    return controller


def exit_each_start(controller: Controller, now: float, code: int = 1) -> None:
    """Every task started since the last call runs and exits with `code`."""
    for command in controller.drain()[0]:
        if isinstance(command, StartCommand):
            for state in ("running", "exited"):
                status = TaskStatus(
                    task_id=command.task_id,
                    job_id=controller.state.tasks[command.task_id].job_id,
                    node_id=command.node_id,
                    state=state,
                    exit_code=code if state == "exited" else None,
                )
                controller.task_status(status, now)


def crash_loop(controller: Controller, restarts: int) -> float:
    """Run a service whose task exits at once, `restarts` times; returns the time."""
    now = 1.0
    controller.submit(job_spec(kind="service", restart={"backoff_max": 30}), now)
    for _ in range(restarts):
        exit_each_start(controller, now)
        now += 31.0  # past any backoff
        controller.heartbeat(heartbeat("a", cpus=64), now)
        controller.tick(now)
    return now


def test_a_crash_loop_keeps_only_the_newest_attempts() -> None:
    controller = master(keep_attempts=3)
    crash_loop(controller, restarts=40)
    attempts = controller.state.jobs["web"].slots[0]
    assert len(attempts) == 4  # the current one and 3 ended ones
    assert attempts == [f"web-0-{n}" for n in range(37, 41)]
    assert set(controller.state.tasks) == set(attempts)


def test_the_backoff_of_a_crash_loop_survives_forgetting() -> None:
    controller = master(keep_attempts=0)
    now = crash_loop(controller, restarts=12)
    exit_each_start(controller, now)
    current = controller.state.current_tasks(controller.state.jobs["web"])[0]
    assert current.not_before == now + 30.0  # capped, not back to 1 s
    assert current.failures == 13


def test_a_batch_job_still_gives_up_after_its_retries_when_attempts_are_forgotten() -> None:
    controller = master(keep_attempts=1)
    now = 1.0
    controller.submit(job_spec(restart={"max_retries": 8, "backoff_max": 1}), now)
    for _ in range(20):
        exit_each_start(controller, now)
        now += 2.0
        controller.heartbeat(heartbeat("a", cpus=64), now)
        controller.tick(now)
    info = controller.job_info("web")
    assert (info.state, info.reason) == (
        "failed",
        "task web-0-8 exited with code 1; gave up after 8 retries",
    )


def test_ended_jobs_beyond_the_limit_are_forgotten_oldest_first() -> None:
    controller = master(keep_ended_jobs=3)
    for index in range(10):
        controller.submit(job_spec(f"job-{index}", kind="service"), float(index))
        controller.cancel(f"job-{index}", float(index))
    controller.submit(job_spec("active", kind="service"), 20.0)
    assert sorted(controller.state.jobs) == ["active", "job-7", "job-8", "job-9"]
    assert list(controller.state.ended) == ["job-7", "job-8", "job-9"]
    footprint = controller.footprint()
    assert (footprint["tasks"], footprint["jobs"]) == (4, 4)


def test_a_job_ending_with_nothing_kept_is_still_answered_and_announced() -> None:
    controller = master(keep_ended_jobs=0)
    controller.submit(job_spec(kind="service"), 1.0)
    info = controller.cancel("web", 2.0)
    assert info.state == "cancelled" and info.tasks
    assert "web" not in controller.state.jobs
    notifications = controller.drain()[1]
    assert any(getattr(n, "state", None) == "cancelled" for n in notifications)


def test_submit_and_cancel_for_ever_holds_a_bounded_number_of_records() -> None:
    controller = master(keep_ended_jobs=20, keep_attempts=2)
    sizes = []
    for index in range(1000):
        now = float(index)
        name = f"job-{index % 300}"  # names come back, as a busy user's would
        controller.submit(job_spec(name, kind="service", replicas=3), now)
        exit_each_start(controller, now)
        controller.cancel(name, now)
        controller.heartbeat(heartbeat("a", cpus=64), now)
        controller.tick(now)
        if index % 250 == 249:
            sizes.append(controller.footprint())
    assert sizes[0] == sizes[-1]
    assert sizes[-1]["jobs"] == 20


def test_replaying_what_was_applied_forgets_the_same_things() -> None:
    controller = master(keep_ended_jobs=2, keep_attempts=1)
    crash_loop(controller, restarts=5)
    for index in range(4):
        controller.submit(job_spec(f"job-{index}"), 200.0 + index)
        controller.cancel(f"job-{index}", 200.0 + index)
    recorded = controller.state
    assert isinstance(recorded, RecordingState)
    kinds = {event.kind for event in recorded.history if hasattr(event, "kind")}
    assert {"task.forgotten", "job.forgotten"} <= kinds
    replayed = ClusterState()
    for event in recorded.history:
        replayed.apply(event)
    assert sorted(replayed.tasks) == sorted(recorded.tasks)
    assert list(replayed.ended) == list(recorded.ended)
    assert [views.job_detail(replayed, j) for j in replayed.jobs.values()] == [
        views.job_detail(recorded, j) for j in recorded.jobs.values()
    ]


def test_a_forgotten_jobs_containers_are_stopped_and_a_late_one_is_fenced() -> None:
    """A lost task's node comes back after its job was forgotten: its container goes."""
    controller = Controller(MasterSettings(amqp_url="amqp://x", keep_ended_jobs=0), epoch=1)
    controller.heartbeat(heartbeat("n1"), 0.0)
    controller.submit(job_spec("web", kind="service"), 0.0, submission="s1")
    task_id = next(iter(controller.state.tasks))
    status = TaskStatus(task_id=task_id, job_id="web", node_id="n1", state="running")
    controller.task_status(status, 0.1)
    for second in range(1, 6):
        controller.tick(float(second))  # n1 goes silent: down, its task lost
    controller.drain()
    controller.cancel("web", 6.0)
    stops = [c for c in controller.drain()[0] if isinstance(c, StopCommand)]
    assert "web" not in controller.state.jobs  # forgotten at once (keep_ended_jobs=0)
    assert [(s.task_id, s.node_id) for s in stops] == [(task_id, "n1")]

    controller.heartbeat(heartbeat("n1", tasks=[running(task_id)], seq=1), 7.0)
    fences = [c for c in controller.drain()[0] if isinstance(c, StopCommand)]
    assert [(s.task_id, s.reason) for s in fences] == [(task_id, "fenced")]


def test_undelivered_backoff_does_not_depend_on_the_attempts_kept() -> None:
    """Each undelivered loss in a row doubles the wait, however few attempts are kept."""
    controller = master(keep_attempts=0, unroutable_hold=1)
    controller.submit(job_spec("web", restart={"backoff_initial": 1, "backoff_max": 64}), 0.0)
    delays = []
    now = 0.0
    for _ in range(5):
        start = next(c for c in controller.drain()[0] if isinstance(c, StartCommand))
        controller.assignment_unroutable(start.task_id, now)
        pending = next(t for t in controller.state.tasks.values() if t.state == "pending")
        delays.append(pending.not_before - now)
        now = max(pending.not_before, now + 1.0) + 0.5  # past the backoff and the node's hold
        controller.heartbeat(heartbeat("a", cpus=64, seq=int(now)), now)  # same boot
        controller.tick(now)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_node_down_for_long_with_nothing_on_it_is_forgotten_until_it_returns() -> None:
    """Invented or retired node ids do not pile up in the master's table."""
    settings = MasterSettings(amqp_url="amqp://x", forget_down_nodes_after=60)
    controller = Controller(settings, epoch=1)
    controller.heartbeat(heartbeat("gone"), 0.0)
    for second in range(1, 40):
        controller.tick(float(second))
    assert controller.state.nodes["gone"].state == "down"  # shown as down for a while
    for second in range(40, 70):
        controller.tick(float(second))
    assert "gone" not in controller.state.nodes
    controller.heartbeat(heartbeat("gone", seq=2), 70.0)
    assert "gone" in controller.state.nodes and controller.state.nodes["gone"].state != "down"
