"""Leaving the cluster on purpose (`--leave-on-terminate`, then SIGTERM): a mixin of
`worker.agent.WorkerAgent`.

The agent says `leaving` in every heartbeat from then on; the master moves the node's
tasks elsewhere (start-first) and stops them here. The agent ends once it runs no
container and no start or stop is under way, or, if the master does not see to it
within `leave_timeout`, stops what is left itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from bus import Bus
from schemas.messages import StopTask
from worker.containers import ContainerInfo
from worker.settings import WorkerSettings
from worker.stops import Stopper

log = logging.getLogger("corral.worker")

# Grace (SIGTERM to SIGKILL) of the containers a leave that timed out stops itself; the
# agent does not know their jobs' grace.
LEAVE_STOP_GRACE = 10.0
# How long after that the agent waits for the removals before it exits anyway.
LEAVE_STOP_SLACK = 10.0


class Leaving:
    """The leave of a worker agent; `WorkerAgent` provides what is declared here."""

    node_id: str
    settings: WorkerSettings
    bus: Bus
    stopper: Stopper
    containers: dict[str, ContainerInfo]
    leaving: bool
    _end: threading.Event
    _busy: dict[str, Any]
    _evicting: bool
    # Methods it calls that the agent defines: only declared here, so that none of these
    # shadows the real one.
    _running: Callable[[], list[ContainerInfo]]
    _beat: Callable[[], None]

    def _leave_if_asked(self, leave: threading.Event) -> None:
        if leave.is_set() and not self.leaving:
            self._leave()

    def _leave(self) -> None:
        """Announce the leave (a heartbeat now, and every one after), then wait for the
        master to move this node's tasks: it starts them elsewhere and stops them here."""
        self.leaving = True
        log.info(
            "leaving the cluster: waiting for the master to move %d task(s) (at most %g s)",
            len(self._running()),
            self.settings.leave_timeout,
        )
        self._beat()
        self.bus.call_later(self.settings.leave_timeout, self._leave_timed_out)
        self._check_left()

    def _check_left(self) -> None:
        """End `run` once a leaving node runs no container and no start or stop is under way."""
        if not self.leaving or self._end.is_set():
            return
        if self._busy or len(self.stopper) or self._running():
            return
        log.info("no task runs here any more: leaving")
        self._end.set()

    def _leave_timed_out(self) -> None:
        if self._end.is_set():
            return
        left = list(self.containers.values())
        log.warning(
            "leave timed out after %g s: stopping the %d container(s) still here "
            "(SIGKILL after %g s)",
            self.settings.leave_timeout,
            len(left),
            LEAVE_STOP_GRACE,
        )
        self._evicting = True
        for info in left:
            self._evict(info)
        self.bus.call_later(LEAVE_STOP_GRACE + LEAVE_STOP_SLACK, self._give_up_leaving)
        self._check_left()

    def _evict(self, info: ContainerInfo) -> None:
        command = StopTask(
            task_id=info.task_id,
            job_id=info.job_id,
            node_id=self.node_id,
            reason=f"node {self.node_id} left the cluster before the task was moved",
            grace=LEAVE_STOP_GRACE,
        )
        self.stopper.stop(command)

    def _give_up_leaving(self) -> None:
        if not self._end.is_set():
            log.warning("containers are still being stopped; leaving anyway")
            self._end.set()
