"""The worker's Docker runtime: the only module in Corral that imports `docker`.

Every method blocks on the Docker engine, so callers run them in a thread pool,
never on a bus connection's thread. One `DockerClient` is shared; it is safe to
use from several threads at once. Docker's own errors are translated here
(`StartError`, `RuntimeUnavailable`, `KeyError`) so callers never mention docker.
The Docker-free side (labels, states, the types callers see) is
`worker.containers`; its names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, Literal

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import CancellableStream

from schemas.messages import StartTask
from worker.containers import (
    CPU,
    EPOCH,
    JOB,
    MANAGED,
    MEMORY,
    NETWORK,
    NODE,
    SLOT,
    TASK,
    Attachment,
    ContainerInfo,
    RuntimeEvent,
    RuntimeUnavailable,
    StartError,
    StopOutcome,
    container_info,
)
from worker.engine_events import TRANSPORT_ERRORS as _TRANSPORT_ERRORS
from worker.engine_events import EngineEvents
from worker.engine_events import explain as _explain
from worker.health import configured_health, docker_healthcheck, unhealthy_reason

__all__ = [
    "ContainerInfo",
    "DockerRuntime",
    "LogStream",
    "RuntimeEvent",
    "RuntimeUnavailable",
    "StartError",
    "StopOutcome",
]

# Failures that no retry on this node can fix, whatever status the engine gave them.
_PERMANENT_ERRORS = ("executable file not found", "no such file or directory")
# The signal `docker stop` sends first when an image names none.
_STOP_SIGNAL = "SIGTERM"

log = logging.getLogger(__name__)


class LogStream(Iterator[bytes]):
    """Raw stdout+stderr chunks of one container. `close()` may be called from any
    thread and returns at once (it shuts the socket down): it unblocks a reader waiting
    on a followed stream, which then ends."""

    def __init__(self, stream: CancellableStream[bytes]) -> None:
        self._stream = stream

    def __next__(self) -> bytes:
        return next(self._stream)

    def close(self) -> None:
        try:
            self._stream.close()
        except (*_TRANSPORT_ERRORS, OSError):
            pass  # Already closed or the engine went away: either way the stream is over.


def _retryable(error: APIError) -> bool:
    """Engine-side failures are worth retrying; a rejected spec is not. 404 and 409 at this
    point mean a concurrent start or stop of the same container, so a retry sorts it out."""
    if any(text in _explain(error).lower() for text in _PERMANENT_ERRORS):
        return False
    status = error.status_code or 500
    return status >= 500 or status in (404, 409)


@contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Translate any failure of the engine or its socket into `RuntimeUnavailable`."""
    try:
        yield
    except _TRANSPORT_ERRORS as error:
        raise RuntimeUnavailable(f"{what}: {_explain(error)}") from error


class DockerRuntime(EngineEvents):
    """Runs the tasks of node `node_id` as Docker containers.

    `extra_labels` are put on every container this runtime creates (tests use
    them to tag a run). Raises `RuntimeUnavailable` if the engine cannot be reached.
    """

    def __init__(self, node_id: str, *, extra_labels: Mapping[str, str] | None = None) -> None:
        self.node_id = node_id
        self._extra_labels = dict(extra_labels or {})
        self._filters = [f"{MANAGED}=true", f"{NODE}={node_id}"]
        try:
            # docker-py asks the engine for its API version here, so this can fail.
            self._client = docker.from_env(max_pool_size=16)
        except DockerException as error:
            raise RuntimeUnavailable(f"Docker engine not reachable: {_explain(error)}") from error

    def ping(self) -> None:
        """Raise `RuntimeUnavailable` unless the engine answers; blocks up to 60 s."""
        try:
            self._client.ping()
        except _TRANSPORT_ERRORS as error:
            raise RuntimeUnavailable(f"Docker engine not answering: {_explain(error)}") from error

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client, for `worker.bridges` (the cluster network's bridge)."""
        return self._client

    def close(self) -> None:
        """Release the client's connections; call once event and log readers are done."""
        self._client.close()

    def list_tasks(self) -> list[ContainerInfo]:
        """Every container of this node, running or not; one engine call plus one per
        exited container. Raises `RuntimeUnavailable` if the engine fails."""
        infos = []
        with _engine_errors("listing containers failed"):
            for container in self._client.containers.list(
                all=True, filters={"label": self._filters}, sparse=True
            ):
                try:
                    infos.append(self._info(container))
                except NotFound:
                    continue  # Removed since the list was taken.
        return infos

    def start(
        self,
        task: StartTask,
        epoch: int,
        attachment: Attachment | None = None,
        *,
        paused: bool = False,
    ) -> ContainerInfo:
        """Create and start the task's container and return its state. Idempotent: if the
        task already has a container on this node it is returned (and started if it was
        only created), never duplicated. Blocks for the create and start calls (and for
        the pull, if the spec asks for one). Raises only `StartError`, retryable when
        the engine was unreachable or failed on its side. With an `attachment` the
        container joins the cluster network (one more engine call: its address).
        `paused`: pause it right after the start (a warm standby, `worker.standbys`)."""
        try:
            return self._start_task(task, epoch, attachment, paused)
        except APIError as error:
            raise StartError(_explain(error), retryable=_retryable(error)) from error
        except _TRANSPORT_ERRORS as error:
            raise StartError(f"Docker engine failed: {_explain(error)}", retryable=True) from error

    def _start_task(
        self, task: StartTask, epoch: int, attachment: Attachment | None, paused: bool
    ) -> ContainerInfo:
        # No look-up first: the name is unique per task, so a second create fails with
        # 409 and joins the existing container. That saves a list call on every start.
        try:
            container = self._create(task, epoch, attachment)
        except APIError as error:
            if error.status_code != 409:
                raise
            # Another thread (or an earlier delivery) holds the name: join it.
            existing = self._find_soon(task.task_id)
            if existing is None:
                raise StartError(
                    f"container name corral-{task.task_id} is taken by a container "
                    f"not labelled for node {self.node_id}",
                    retryable=True,
                ) from error
            return self._resume(existing, paused=paused)
        return self._started_as(self._start(container), paused)

    def unpause(self, standby: ContainerInfo) -> ContainerInfo:
        """Unpause a warm standby (one engine call) and return it as running. Raises only
        `StartError` (the container died or is gone: start the task afresh)."""
        try:
            self._client.api.unpause(standby.container_id)
        except APIError as error:
            raise StartError(_explain(error), retryable=True) from error
        except _TRANSPORT_ERRORS as error:
            raise StartError(f"Docker engine failed: {_explain(error)}", retryable=True) from error
        return dataclasses.replace(standby, paused=False)

    def terminate(self, task_id: str) -> StopOutcome:
        """Ask the task's container to stop: SIGTERM if it is running (the caller kills
        it later with `remove` if it does not end), else remove it at once. Never waits
        for the container to end: one or two quick engine calls. Raises
        `RuntimeUnavailable` if the engine fails."""
        with _engine_errors(f"stopping task {task_id} failed"):
            container = self._find(task_id)
            if container is None:
                return "gone"
            if container.attrs.get("State") == "running":
                try:
                    container.kill(signal=_STOP_SIGNAL)
                    return "signalled"
                except NotFound:
                    return "removed"
                except APIError as error:
                    # 409: it ended since the list was taken; remove it like any other.
                    if error.status_code != 409:
                        raise
            self._remove(container)
        return "removed"

    def remove(self, task_id: str) -> bool:
        """Kill (SIGKILL) and remove the task's container. Returns False if there was no
        such container; one that vanishes meanwhile counts as removed. Blocks for the
        engine's calls only. Raises `RuntimeUnavailable` if the engine fails."""
        with _engine_errors(f"removing task {task_id} failed"):
            container = self._find(task_id)
            if container is None:
                return False
            self._remove(container)
        return True

    def logs(self, task_id: str, *, follow: bool, tail: int | None) -> LogStream:
        """The task container's stdout+stderr as raw chunks, from the last `tail` lines
        (all if None). With `follow` the stream blocks for new output until the container
        stops or the stream is closed. Raises `KeyError(task_id)` if there is no container,
        `RuntimeUnavailable` if the engine fails."""
        with _engine_errors(f"reading logs of task {task_id} failed"):
            container = self._find(task_id)
            if container is None:
                raise KeyError(task_id)
            try:
                tail_arg: int | Literal["all"] = "all" if tail is None else tail
                return LogStream(container.logs(stream=True, follow=follow, tail=tail_arg))
            except NotFound:
                raise KeyError(task_id) from None

    def health_reason(self, container_id: str) -> str:
        """Why the container's health check judged it unhealthy, quoting the last check's
        output (`worker.health.unhealthy_reason`); one inspect. Raises `KeyError` if
        there is no such container, `RuntimeUnavailable` if the engine fails."""
        with _engine_errors(f"inspecting container {container_id} failed"):
            try:
                attrs = self._client.api.inspect_container(container_id)
            except NotFound:
                raise KeyError(container_id) from None
        return unhealthy_reason((attrs.get("State") or {}).get("Health") or {})

    # -- internals --------------------------------------------------------------------

    def _find(self, task_id: str) -> Container | None:
        found = self._client.containers.list(
            all=True, filters={"label": [*self._filters, f"{TASK}={task_id}"]}, sparse=True
        )
        return found[0] if found else None

    def _find_soon(self, task_id: str) -> Container | None:
        # The engine reserves a name before the container shows in lists, so the loser
        # of a create race may have to wait a moment for the winner's container.
        deadline = time.monotonic() + 2.0
        while (found := self._find(task_id)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def _create(self, task: StartTask, epoch: int, attachment: Attachment | None) -> Container:
        spec = task.spec
        labels = {
            **spec.labels,
            **self._extra_labels,
            MANAGED: "true",
            NODE: self.node_id,
            TASK: task.task_id,
            JOB: task.job_id,
            SLOT: str(task.slot),
            EPOCH: str(epoch),
            CPU: str(spec.cpu),
            MEMORY: str(spec.memory),
        }
        # docker-py accepts a list of (ip, port) per container port; its stubs omit that.
        ports: dict[str, Any] = {}
        for port in spec.ports:
            ports.setdefault(f"{port.container}/{port.protocol}", []).append(
                (port.host_ip, port.host)
            )
        kwargs: dict[str, Any] = {
            "name": f"corral-{task.task_id}",
            "labels": labels,
            "environment": {**spec.env, **spec.secret_env} or None,  # no name is in both
            "nano_cpus": int(spec.cpu * 1e9),
            "mem_limit": spec.memory,
            "ports": ports or None,  # an empty mapping still costs the engine time
            "detach": True,
            "init": False,
        }
        if attachment is not None:
            labels[NETWORK] = attachment.network
            kwargs["network"] = attachment.network
            kwargs["dns"] = [attachment.dns]
            # Docker's resolver does not forward a name without a dot when the host's
            # resolv.conf sets ndots: `web` is then asked again as `web.corral`.
            kwargs["dns_search"] = [attachment.search]
        # Without a check in the spec the image's own HEALTHCHECK is switched off: health
        # is the job's business (a task without a check is healthy once it has run).
        kwargs["healthcheck"] = (
            docker_healthcheck(spec.health) if spec.health is not None else {"test": ["NONE"]}
        )
        try:
            return self._client.containers.create(spec.image, spec.command, **kwargs)
        except ImageNotFound as error:
            if not spec.pull:
                raise StartError(
                    f"image {spec.image!r} is not present on node {self.node_id} and pull is "
                    "off; build or load it on the node, or set pull: true",
                    retryable=False,
                ) from error
        self._pull(spec.image)
        return self._client.containers.create(spec.image, spec.command, **kwargs)

    def _pull(self, image: str) -> None:
        try:
            self._client.images.pull(image)
        except APIError as error:
            raise StartError(
                f"pulling image {image!r} failed: {_explain(error)}",
                retryable=error.status_code not in (400, 401, 403, 404),
            ) from error

    def _resume(self, container: Container, *, paused: bool = False) -> ContainerInfo:
        """An existing container of the task, started if it was only created; unpaused if
        it is a standby the agent no longer holds, unless a standby is what is asked."""
        info = self._info(container)
        if info.paused and not paused:  # the task is wanted now
            self._client.api.unpause(container.id or "")
            return dataclasses.replace(info, paused=False)
        if info.state != "created":
            return info
        return self._started_as(self._start(container), paused)

    def _started_as(self, info: ContainerInfo, paused: bool) -> ContainerInfo:
        """A container just started, paused at once if `paused` (a warm standby)."""
        if paused and info.state == "running":
            self._client.api.pause(info.container_id)
            info = dataclasses.replace(info, paused=True)
        return info

    def _start(self, container: Container) -> ContainerInfo:
        try:
            container.start()
        except APIError:
            # A container that cannot start must not be found, and returned, by a retry.
            self._remove(container)
            raise
        # Started means running; if it has already ended, its die event says so next.
        # (No inspect here, but for the address on the cluster network: it would add a
        # round trip to every start.) A check starts as "starting"; Docker sends an event
        # when its verdict changes.
        if ((container.attrs.get("Config") or {}).get("Labels") or {}).get(NETWORK):
            with suppress(NotFound):
                container.reload()
        return dataclasses.replace(
            self._info(container),
            state="running",
            exit_code=None,
            health=configured_health(container.attrs),
        )

    def _remove(self, container: Container) -> None:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as error:
            # 409: removal already in progress, which is what we want.
            if error.status_code != 409:
                raise

    def _info(self, container: Container) -> ContainerInfo:
        """Raises NotFound if the container is gone before its exit code could be read."""
        if container.attrs.get("State") in ("exited", "dead"):
            container.reload()  # A sparse list entry carries no exit code.
        return container_info(container.attrs, container.id or "")
