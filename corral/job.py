"""A handle on a submitted job: read its state, change it, wait for it to settle.

What "settled" means is a predicate on the job's JobInfo: `is_settled` (a batch
job ended; a service runs every replica healthy, ended, or cannot get there) by
default, `rollout_ended` after an update or a rollback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bus import topology
from corral.errors import WaitTimeout
from corral.lookup import slot_attempts
from schemas.api import CRASH_LOOP_RESTARTS, JobInfo, TaskInfo
from schemas.messages import TERMINAL_JOB_STATES

if TYPE_CHECKING:
    from bus.subscription import Subscription
    from corral.client import Client
    from schemas.job import JobSpec

# Without events, re-read the job this often anyway (an event may have been
# published before our queue was bound, or the master may have restarted).
POLL_INTERVAL = 1.0
# After an event, gather the burst that usually follows for this long before
# asking the master again, so a 1,000-task job is not re-read 1,000 times.
BURST_WINDOW = 0.2
# A rollout in these states is still under way; any other state is how it ended
# ("done", "rolled-back", "failed", or one a newer master knows, such as "paused").
ROLLOUT_ACTIVE = frozenset({"updating", "rolling-back"})

Until = Callable[[JobInfo], bool]


def is_settled(info: JobInfo) -> bool:
    """Whether `Job.wait` is done by default: a batch job has ended; a service runs with
    every replica healthy (state "running"), has ended, or is in `trouble`."""
    if info.state in TERMINAL_JOB_STATES:
        return True
    if info.spec.kind != "service":
        return False
    return info.state == "running" or bool(trouble(info))


def rollout_ended(info: JobInfo) -> bool:
    """Whether the job's rollout (an update or a rollback) is over, or the job ended."""
    if info.state in TERMINAL_JOB_STATES:
        return True
    return info.rollout is None or info.rollout.state not in ROLLOUT_ACTIVE


def current_tasks(info: JobInfo) -> list[TaskInfo]:
    """The current attempt of each slot the job wants (slot < replicas), in slot order.

    A task that keeps running while its slot's newer attempt starts (`retiring`) is
    never the current one. Only the tasks the JobInfo holds (see `tasks_omitted`).
    """
    kept = [task for task in info.tasks if not task.retiring]
    chosen = slot_attempts(kept)
    return [task for slot, task in chosen.items() if task is not None and slot < info.spec.replicas]


def trouble(info: JobInfo) -> str:
    """Why a service cannot get every replica healthy, "" if nothing says it cannot.

    A slot crash-loops (its attempts failed CRASH_LOOP_RESTARTS times in a row and the
    current one is not healthy; the master's reason then starts with "crash loop"), or a
    replica's health check fails (Docker's verdict "unhealthy").
    """
    if info.reason.startswith("crash loop"):
        return info.reason
    for task in current_tasks(info):
        if task.restarts >= CRASH_LOOP_RESTARTS and not task.healthy:
            why = f": {task.reason}" if task.reason else ""
            return (
                f"crash loop: slot {task.slot} failed {task.restarts} times in a row"
                f" (now {task.task_id}, {task.state}){why}"
            )
        if task.health == "unhealthy":
            why = f": {task.reason}" if task.reason else ""
            return f"slot {task.slot} is unhealthy ({task.task_id} fails its health check){why}"
    return ""


def exit_code(codes: Mapping[int, int | None]) -> int | None:
    """A batch job's exit code, as `docker run` gives its container's: from the exit code
    of each slot's newest attempt (`JobInfo.exit_codes`), the first that is not 0 (in slot
    order); 0 if every slot exited 0; None if no slot did otherwise but some has no code
    (it never ran or has not ended), or if there are no slots."""
    for code in codes.values():
        if code is not None and code != 0:
            return code
    if codes and all(code == 0 for code in codes.values()):
        return 0
    return None


class Job:
    """A submitted job. Cheap to build: `Job(client, "my-job")` for an existing one.

    `last` is the newest JobInfo this handle has seen (from submit, info or wait).
    `on_change`, if set, is called with each JobInfo `wait` reads, the first included
    (to show progress); it runs on the waiting thread, so keep it quick.
    """

    def __init__(
        self,
        client: Client,
        job_id: str,
        last: JobInfo | None = None,
        *,
        on_change: Callable[[JobInfo], Any] | None = None,
    ) -> None:
        self.client = client
        self.id = job_id
        self.last = last
        self.on_change = on_change

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def info(self) -> JobInfo:
        """The job and its tasks, as the master sees them now."""
        self.last = self.client.job(self.id)
        return self.last

    def cancel(self) -> JobInfo:
        return self.client.cancel(self.id)

    def scale(self, replicas: int) -> JobInfo:
        return self.client.scale(self.id, replicas)

    def update(self, spec: JobSpec | Mapping[str, Any]) -> JobInfo:
        """Roll the service out to `spec`: see `Client.update`."""
        self.last = self.client.update(self.id, spec)
        return self.last

    def rollback(self) -> JobInfo:
        """Roll the service back to its previous version: see `Client.rollback`."""
        self.last = self.client.rollback(self.id)
        return self.last

    def exit_codes(self, info: JobInfo | None = None) -> dict[int, int | None]:
        """The exit code of each slot's newest attempt, by slot (see `exit_code`).

        From `info` (default: `last`, else the master's answer now); if it left
        tasks out, the job's current attempts are listed instead.
        """
        info = info or self.last or self.info()
        if not info.tasks_omitted:
            return info.exit_codes
        current = self.client.tasks(self.id, current=True)
        return {task.slot: task.exit_code for task in current}

    def wait(self, timeout: float | None = None, *, until: Until = is_settled) -> JobInfo:
        """Block until `until(info)` holds (by default the job settles: see `is_settled`;
        after an update, pass `rollout_ended`) and return that info.

        Status events of the job wake the wait early; without them the job is
        re-read every second. Only the master's answers are believed: an event
        just wakes the wait, and messages on corral.status that are not valid
        Corral messages (garbage, too large, too deep) are skipped unread.
        Raises WaitTimeout (a TimeoutError) after `timeout` s, naming the last
        state and reason; None waits forever.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pattern = topology.job_events_pattern(self.id)
        # Bound before the first read, so an event between the two is not lost.
        subscription = self.client._subscribe(topology.status_queue((pattern,)))
        try:
            info = self._read()
            while not until(info):
                pause = POLL_INTERVAL
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        raise WaitTimeout(self.id, timeout or 0.0, info.state, info.reason)
                if self.client._receive(subscription, pause) is not None:
                    self._skip_burst(subscription)
                info = self._read()
            return info
        finally:
            subscription.close()

    def _read(self) -> JobInfo:
        info = self.info()
        if self.on_change is not None:
            self.on_change(info)
        return info

    def _skip_burst(self, subscription: Subscription) -> None:
        end = time.monotonic() + BURST_WINDOW
        while time.monotonic() < end:
            if self.client._receive(subscription, 0) is None:
                return
