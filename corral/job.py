"""A handle on a submitted job: read its state, wait for it to settle."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bus import topology
from corral.errors import WaitTimeout
from schemas.api import JobInfo
from schemas.messages import TERMINAL_JOB_STATES

if TYPE_CHECKING:
    from bus.subscription import Subscription
    from corral.client import Client

# Without events, re-read the job this often anyway (an event may have been
# published before our queue was bound, or the master may have restarted).
POLL_INTERVAL = 1.0
# After an event, gather the burst that usually follows for this long before
# asking the master again, so a 1,000-task job is not re-read 1,000 times.
BURST_WINDOW = 0.2


def is_settled(info: JobInfo) -> bool:
    """Whether `Job.wait` is done: a batch job has ended; a service runs (or ended)."""
    if info.state in TERMINAL_JOB_STATES:
        return True
    return info.spec.kind == "service" and info.state == "running"


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
    """

    def __init__(self, client: Client, job_id: str, last: JobInfo | None = None) -> None:
        self.client = client
        self.id = job_id
        self.last = last

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

    def wait(self, timeout: float | None = None) -> JobInfo:
        """Block until the job settles (see `is_settled`) and return its final info.

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
            info = self.info()
            while not is_settled(info):
                pause = POLL_INTERVAL
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        raise WaitTimeout(self.id, timeout or 0.0, info.state, info.reason)
                if self.client._receive(subscription, pause) is not None:
                    self._skip_burst(subscription)
                info = self.info()
            return info
        finally:
            subscription.close()

    def _skip_burst(self, subscription: Subscription) -> None:
        end = time.monotonic() + BURST_WINDOW
        while time.monotonic() < end:
            if self.client._receive(subscription, 0) is None:
                return
