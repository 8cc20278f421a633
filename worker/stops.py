"""Stopping task containers without holding a thread through their grace period.

A stop is three short steps, never one long blocking call:

1. a stop thread sends SIGTERM (`runtime.terminate`: one or two quick engine
   calls; a container that is not running is removed right away);
2. the bus thread waits, with a bus timer, until the grace period is over, or
   until the container's `die` event comes, whichever is first;
3. a stop thread kills (SIGKILL) and removes the container.

So a service whose process ignores SIGTERM, stopped with a grace of an hour,
costs a timer for that hour, not a thread: starts, other stops and log streams
go on. The bus's timers wait while it is disconnected, so a kill may come that
much later. If the worker stops during the grace period the container keeps
running (it was only sent SIGTERM); the restarted worker adopts it, reports it
in its heartbeat, and the master, which has the task as stopped, stops it again.

Everything here runs on the bus thread except the engine calls, which run in
the given pool and come back through `call_threadsafe`. Nothing is locked.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal, Protocol

from schemas.messages import StopTask
from worker.containers import StopOutcome

log = logging.getLogger("corral.worker")


class Timer(Protocol):
    def cancel(self) -> None: ...


class StopBus(Protocol):
    """What the stopper needs of `bus.Bus`."""

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer: ...

    def call_threadsafe(self, fn: Callable[[], None]) -> None: ...


class StopRuntime(Protocol):
    """What the stopper needs of `worker.runtime.DockerRuntime`."""

    def terminate(self, task_id: str) -> StopOutcome: ...

    def remove(self, task_id: str) -> bool: ...


REMOVE_RETRY_MAX = 30.0


@dataclass(eq=False)
class _Stop:
    command: StopTask
    grace: float
    deadline: float | None = None  # set once SIGTERM has been sent
    timer: Timer | None = None
    exited: bool = False  # its die event came
    removing: bool = False
    failures: int = 0  # removals the engine failed, in a row


class Stopper:
    """Stops task containers: SIGTERM, then SIGKILL and removal after the grace period.

    `signalled(command)` is called on the bus thread once SIGTERM has been sent, or
    once the container turned out not to be running (and was removed) or absent: the
    caller settles the command's delivery then. `removed(command)` follows once the
    container is gone. A removal the engine fails is logged and tried again, with
    backoff up to REMOVE_RETRY_MAX seconds, until it succeeds: a container SIGTERM
    did not end must not be forgotten while it may still run.
    """

    def __init__(
        self,
        bus: StopBus,
        runtime: StopRuntime,
        pool: Executor,
        *,
        signalled: Callable[[StopTask], None],
        removed: Callable[[StopTask], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._runtime = runtime
        self._pool = pool
        self._signalled = signalled
        self._removed = removed
        self._clock = clock
        self._stops: dict[str, _Stop] = {}  # task id -> stop under way

    def __contains__(self, task_id: object) -> bool:
        """Whether the task's container is being stopped (from `stop` until `removed`)."""
        return task_id in self._stops

    def __len__(self) -> int:
        return len(self._stops)

    def stop(self, command: StopTask) -> bool:
        """Bus thread: begin stopping the task's container and return True; `signalled`
        and then `removed` follow. If the task is already being stopped, return False
        and call neither: the stop only brings the kill forward if its grace ends
        sooner."""
        current = self._stops.get(command.task_id)
        if current is not None:
            self._hurry(current, command.grace)
            return False
        stop = _Stop(command, command.grace)
        self._stops[command.task_id] = stop
        self._pool.submit(self._signal_in_pool, stop)
        return True

    def exited(self, task_id: str) -> None:
        """Bus thread: the container of a task being stopped has ended; remove it now
        rather than at the deadline."""
        stop = self._stops.get(task_id)
        if stop is None:
            return
        stop.exited = True
        if stop.timer is not None:  # else SIGTERM is still on its way: `_on_signal` sees it
            self._kill(stop)

    # -- internals --

    def _hurry(self, stop: _Stop, grace: float) -> None:
        if grace >= stop.grace or stop.removing:
            return
        stop.grace = grace
        if stop.deadline is None or stop.timer is None:
            return  # SIGTERM is still on its way; the timer will use the shorter grace
        deadline = self._clock() + grace
        if deadline < stop.deadline:
            stop.timer.cancel()
            stop.deadline = deadline
            stop.timer = self._bus.call_later(grace, functools.partial(self._kill, stop))

    def _signal_in_pool(self, stop: _Stop) -> None:
        task_id = stop.command.task_id
        outcome: StopOutcome | Literal["failed"]
        try:
            if stop.grace > 0:
                outcome = self._runtime.terminate(task_id)
            else:
                outcome = "removed" if self._runtime.remove(task_id) else "gone"
        except Exception:
            log.exception("stopping %s failed; removing it by force", task_id)
            outcome = "failed"
        self._bus.call_threadsafe(functools.partial(self._on_signal, stop, outcome))

    def _on_signal(self, stop: _Stop, outcome: StopOutcome | Literal["failed"]) -> None:
        self._signalled(stop.command)
        if outcome in ("removed", "gone"):
            self._finish(stop)
        elif outcome == "failed" or stop.exited or stop.grace <= 0:
            self._kill(stop)
        else:
            stop.deadline = self._clock() + stop.grace
            stop.timer = self._bus.call_later(stop.grace, functools.partial(self._kill, stop))

    def _kill(self, stop: _Stop) -> None:
        if stop.removing:
            return
        stop.removing = True
        if stop.timer is not None:
            stop.timer.cancel()
        self._pool.submit(self._remove_in_pool, stop)

    def _remove_in_pool(self, stop: _Stop) -> None:
        try:
            self._runtime.remove(stop.command.task_id)
        except Exception:
            log.exception("removing the container of %s failed", stop.command.task_id)
            self._bus.call_threadsafe(functools.partial(self._retry, stop))
            return
        self._bus.call_threadsafe(functools.partial(self._finish, stop))

    def _retry(self, stop: _Stop) -> None:
        stop.failures += 1
        stop.removing = False
        delay = min(REMOVE_RETRY_MAX, 0.5 * 2.0 ** min(stop.failures, 10))
        stop.timer = self._bus.call_later(delay, functools.partial(self._kill, stop))

    def _finish(self, stop: _Stop) -> None:
        if self._stops.get(stop.command.task_id) is stop:
            del self._stops[stop.command.task_id]
        self._removed(stop.command)
