"""What a worker says about its tasks: a `TaskStatus` on corral.status for each change
of state or of health, never going backwards (a mixin of `worker.agent.WorkerAgent`).

Docker's events (`DockerRuntime.events`) come in on the bus thread: a container that
runs, exits or fails, or whose health check changes its verdict. An unhealthy verdict
is published with the check's own output, read (an inspect) on the stop pool first.
Containers being stopped report through the stop instead (`worker.stops`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Literal

from bus import Bus, topology
from schemas.messages import Health, TaskStatus
from worker.containers import ContainerInfo, RuntimeEvent
from worker.runtime import DockerRuntime
from worker.stops import Stopper

log = logging.getLogger("corral.worker")

ReportedState = Literal["running", "exited", "failed", "stopped"]
_ORDER: dict[str, int] = {"running": 1, "exited": 2, "failed": 2, "stopped": 3}


class StatusReports:
    """The status half of a worker agent; `WorkerAgent` provides what is declared here."""

    node_id: str
    bus: Bus
    runtime: DockerRuntime
    stopper: Stopper
    containers: dict[str, ContainerInfo]
    _busy: dict[str, Any]
    _short_calls: Executor
    _reported: dict[str, str]
    _health: dict[str, Health]
    _early_health: dict[str, Health]
    spares: dict[str, Any]  # warm standbys (worker.standbys): never reported
    # Methods it calls that the agent (or another of its mixins) defines: only declared
    # here, so that none of these shadows the real one.
    _check_left: Callable[[], None]
    _drop_spare: Callable[[str], bool]

    def _on_runtime_event(self, event: RuntimeEvent) -> None:
        if event.task_id in self.stopper:
            if event.kind == "exited":
                self.stopper.exited(event.task_id)  # no need to wait out the grace
            return  # the stop itself reports
        if event.task_id in self.spares:
            if event.kind == "exited":  # it died before its pause: no standby any more
                self._drop_spare(event.task_id)
                self._short_calls.submit(self.runtime.remove, event.task_id)
            return
        if event.kind == "health":
            self._on_health(event)
            return
        if event.kind == "running" and event.task_id in self._busy:
            return  # its start result reports it, with what only an inspect tells (address)
        info = self.containers.get(event.task_id)
        if info is not None:
            self.containers[event.task_id] = dataclasses.replace(
                info,
                state=event.kind,
                exit_code=event.exit_code,
                reason=event.reason,
                health=info.health if event.kind == "running" else "",
            )
        self._report(
            event.task_id,
            event.job_id,
            event.kind,
            exit_code=event.exit_code,
            reason=event.reason,
            container_id=event.container_id,
        )
        self._check_left()

    def _on_health(self, event: RuntimeEvent) -> None:
        """Docker's new verdict on a task's health check: kept for the heartbeat and
        published, unless the container has ended (its health no longer matters)."""
        info = self.containers.get(event.task_id)
        if info is None:
            if event.task_id in self._busy:  # its start result is on its way
                self._early_health[event.task_id] = event.health
            return
        if info.state != "running" or info.container_id != event.container_id:
            return
        info = dataclasses.replace(info, health=event.health)
        self.containers[event.task_id] = info
        self._report_container(info)

    def _report_container(self, info: ContainerInfo) -> None:
        if info.state == "created":
            return
        if info.health == "unhealthy" and self._health.get(info.task_id) != "unhealthy":
            self._short_calls.submit(self._read_health_reason, info)  # reported with it
            return
        self._report(
            info.task_id,
            info.job_id,
            info.state,
            health=info.health,
            exit_code=info.exit_code,
            reason=info.reason,
            container_id=info.container_id,
            address=info.address,
        )

    def _read_health_reason(self, info: ContainerInfo) -> None:
        """Stop pool: read why the check failed (an inspect), then publish on the bus thread."""
        try:
            reason = self.runtime.health_reason(info.container_id)
        except Exception as exc:  # the verdict still goes out, with less said
            log.warning("reading the health of task %s failed: %s", info.task_id, exc)
            reason = "health check failed"
        self.bus.call_threadsafe(functools.partial(self._report_unhealthy, info, reason))

    def _report_unhealthy(self, info: ContainerInfo, reason: str) -> None:
        current = self.containers.get(info.task_id)
        if (
            current is None
            or current.container_id != info.container_id
            or current.state != "running"
            or current.health != "unhealthy"  # it recovered meanwhile
            or info.task_id in self.stopper
        ):
            return
        log.info("task %s is unhealthy: %s", info.task_id, reason)
        self._report(
            info.task_id,
            info.job_id,
            "running",
            health="unhealthy",
            reason=reason,
            container_id=info.container_id,
        )

    def _report(
        self,
        task_id: str,
        job_id: str,
        state: ReportedState,
        *,
        health: Health | None = None,
        exit_code: int | None = None,
        reason: str = "",
        container_id: str = "",
        retryable: bool = True,
        address: str = "",
    ) -> None:
        """Publish a task's state, never going backwards (a late 'running' after 'exited').
        A running task is published again, still "running", each time its `health`
        changes (None: as last published); an ended one has no health."""
        last = self._reported.get(task_id)
        published = self._health.get(task_id, "")
        if state != "running":
            health = ""
        elif health is None:
            health = published
        changed_health = state == last == "running" and health != published
        if last is not None and _ORDER[state] <= _ORDER[last] and not changed_health:
            return
        self._reported[task_id] = state
        self._health[task_id] = health
        status = TaskStatus(
            task_id=task_id,
            job_id=job_id,
            node_id=self.node_id,
            state=state,
            exit_code=exit_code,
            reason=reason,
            container_id=container_id,
            retryable=retryable,
            health=health,
            address=address,
        )
        self.bus.publish(
            topology.STATUS_EXCHANGE,
            topology.task_key(job_id, task_id, state, self.node_id),
            status,
        )
