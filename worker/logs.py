"""Streaming container logs to clients: a bounded number at once, ended when the client goes.

A `logs.request` is answered on its `reply_to` with `logs.chunk` messages:
first an empty chunk (the stream has begun), then the output, then a chunk
with `end: true` (and `error` if it failed). The costs are bounded:

- **Only from the master.** Clients ask the master (`api.logs`), which checks
  who may read which task's logs and forwards the request; the agent drops one
  from any other broker user (see worker/agent.py).
- **No reply queue, no stream.** A request without a usable `reply_to` (none,
  or not a client's server-named `amq.gen-*` queue; direct reply-to names are
  not usable: the chunks go through the `corral.replies` exchange, the only one
  a worker may write replies to, keyed by the queue's name) is dropped before
  anything is started.
- **At most `limit` streams at once,** one thread each. A request beyond that
  is answered at once with an error chunk saying the node is busy.
- **A stream ends when its client is gone.** Chunks go to a private queue
  with `mandatory`, so when the client's queue is gone the broker returns
  them. A followed stream on a quiet container sends nothing, so every open
  stream also gets an empty keepalive chunk every `keepalive` seconds; when
  one comes back, the bus thread closes the Docker log stream, which
  unblocks and ends its thread.

A queue that is named like a private one but does not exist still costs one
engine call: the first chunk comes back and the stream is closed at once.
"""

from __future__ import annotations

import codecs
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

from bus import topology
from bus.replies import usable_reply_queue
from schemas.messages import LogChunk, LogsRequest, Payload
from worker.containers import RuntimeUnavailable

log = logging.getLogger("corral.worker")

LOG_CHUNK_BYTES = 64 * 1024
# Chunks a stream may have handed to the bus thread and not yet published: bounds the
# memory a fast log takes while the bus is busy or the broker slow.
_IN_FLIGHT = 16
# How long a stream waits for the bus thread to take a chunk before giving up on it.
_HANDOVER_TIMEOUT = 30.0


class LogSource(Protocol):
    """A container's raw output; `close` may be called from another thread."""

    def __iter__(self) -> Iterator[bytes]: ...

    def __next__(self) -> bytes: ...

    def close(self) -> None: ...


class LogRuntime(Protocol):
    """What the log streamer needs of `worker.runtime.DockerRuntime`."""

    def logs(self, task_id: str, *, follow: bool, tail: int | None) -> LogSource: ...


class LogBus(Protocol):
    """What the log streamer needs of `bus.Bus`."""

    def publish(
        self,
        exchange: str,
        routing_key: str,
        payload: Payload,
        *,
        mandatory: bool = False,
        transient: bool = False,
        correlation_id: str | None = None,
        on_returned: Callable[[], None] | None = None,
    ) -> None: ...

    def call_threadsafe(self, fn: Callable[[], None]) -> None: ...


@dataclass(eq=False)
class _Session:
    request: LogsRequest
    reply_to: str
    correlation_id: str | None
    gone: threading.Event = field(default_factory=threading.Event)
    source: LogSource | None = None  # set by the stream's thread once open
    credit: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(_IN_FLIGHT))

    def chunk(self, data: str = "", *, end: bool = False, error: str = "") -> LogChunk:
        return LogChunk(task_id=self.request.task_id, data=data, end=end, error=error)


class LogStreamer:
    """Serves log requests for node `node_id`, at most `limit` at once, each on a thread
    of `pool` (which should have `limit` threads). `handle`, `keepalive` and `close` run
    on the bus thread."""

    def __init__(
        self, bus: LogBus, runtime: LogRuntime, node_id: str, pool: Executor, *, limit: int
    ) -> None:
        self._bus = bus
        self._runtime = runtime
        self._node_id = node_id
        self._pool = pool
        self._limit = limit
        self._sessions: set[_Session] = set()

    @property
    def active(self) -> int:
        """Streams under way."""
        return len(self._sessions)

    def handle(
        self, request: LogsRequest, reply_to: str | None, correlation_id: str | None
    ) -> None:
        """Start streaming, or answer at once that the node is busy, or (no usable
        `reply_to`) do nothing at all. Never blocks."""
        if reply_to is None or not usable_reply_queue(reply_to):
            log.debug("dropping a log request for %s: no reply queue", request.task_id)
            return
        session = _Session(request, reply_to, correlation_id)
        if len(self._sessions) >= self._limit:
            self._send(
                session,
                session.chunk(
                    end=True,
                    error=f"node {self._node_id} is busy: it is already streaming "
                    f"{len(self._sessions)} logs, the most it serves at once; try again later",
                ),
            )
            return
        self._sessions.add(session)
        self._send(session, session.chunk())  # begun; and a gone client shows at once
        self._pool.submit(self._stream, session)

    def keepalive(self) -> None:
        """Send every open stream an empty chunk, so a client that is gone is noticed
        even while its container is quiet."""
        for session in list(self._sessions):
            if not session.gone.is_set():
                self._send(session, session.chunk())

    def close(self) -> None:
        """End every stream (the worker is stopping): their threads finish soon."""
        for session in list(self._sessions):
            self._client_gone(session)

    # -- bus thread --

    def _send(self, session: _Session, chunk: LogChunk) -> None:
        self._bus.publish(
            topology.REPLIES_EXCHANGE,
            session.reply_to,
            chunk,
            mandatory=True,
            transient=True,
            correlation_id=session.correlation_id,
            on_returned=functools.partial(self._client_gone, session),
        )

    def _client_gone(self, session: _Session) -> None:
        if session.gone.is_set():
            return
        session.gone.set()
        source = session.source
        if source is not None:
            source.close()  # unblocks the stream's thread; returns at once

    def _finish(self, session: _Session, error: str) -> None:
        self._sessions.discard(session)
        if not session.gone.is_set():
            self._send(session, session.chunk(end=True, error=error))

    def _publish_data(self, session: _Session, chunk: LogChunk) -> None:
        session.credit.release()
        if not session.gone.is_set():
            self._send(session, chunk)

    # -- a stream's thread --

    def _stream(self, session: _Session) -> None:
        request = session.request
        error = ""
        try:
            source = self._runtime.logs(request.task_id, follow=request.follow, tail=request.tail)
        except KeyError:
            error = "no container on this node"
        except RuntimeUnavailable as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("reading the logs of %s failed", request.task_id)
            error = f"reading the logs failed: {exc}"
        else:
            # Set before looking at `gone`: the bus thread closes whatever it finds here,
            # and a client gone before that is caught by the check below.
            session.source = source
            try:
                self._pump(session, source)
            finally:
                source.close()
        self._bus.call_threadsafe(functools.partial(self._finish, session, error))

    def _pump(self, session: _Session, source: LogSource) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if session.gone.is_set():
            return
        for data in source:
            for start in range(0, len(data), LOG_CHUNK_BYTES):
                text = decoder.decode(data[start : start + LOG_CHUNK_BYTES])
                if text and not self._hand_over(session, session.chunk(text)):
                    return
            if session.gone.is_set():
                return
        tail = decoder.decode(b"", final=True)
        if tail:
            self._hand_over(session, session.chunk(tail))

    def _hand_over(self, session: _Session, chunk: LogChunk) -> bool:
        """Queue a chunk for the bus thread; False (and the session counts as gone) if
        the bus thread has not taken the earlier ones for a long time."""
        if not session.credit.acquire(timeout=_HANDOVER_TIMEOUT):
            log.warning("the bus is not taking log chunks; ending a stream")
            session.gone.set()
            return False
        self._bus.call_threadsafe(functools.partial(self._publish_data, session, chunk))
        return not session.gone.is_set()
