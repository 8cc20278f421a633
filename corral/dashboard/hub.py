"""The fan-out: one loop turns the live model's changes into messages, every browser
gets them through a bounded queue of its own.

::

    LiveCluster --wait()--> Hub.run (at most one change per tick) --Board.advance-->
        message --put_nowait--> [queue] --> stream() --> SSE --> browser
                                [queue] --> stream() --> SSE --> browser

The work per tick (the diff and its JSON) is done once, in a worker thread, however
many browsers are connected; a browser costs one queue and one encoded string per
message. A browser whose queue is full (it reads slower than changes come, or it is
gone and the socket has not said so yet) is dropped: its queue is emptied at once,
its stream ends, and its EventSource reconnects and starts over from a snapshot.
Nothing waits for it. (A browser that stops reading altogether blocks its stream in
sending, where nothing here can see it: `app.EventStream` cuts it off.) At most
`max_streams` streams are open at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from corral.dashboard.board import Board, ClusterView, Message

log = logging.getLogger(__name__)

# What a queue holds: (seq, encoded message), or None to end the stream.
Item = tuple[int, str] | None
MAX_STREAMS = 100


class ViewSource(Protocol):
    """What the dashboard needs of `corral.live.LiveCluster`."""

    def view(self) -> ClusterView: ...
    def wait(self, after: int, timeout: float) -> ClusterView: ...


def encode(message: Message) -> str:
    """Compact JSON, one line (SSE data lines end at a newline)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sse(event: str, data: str) -> str:
    """One Server-Sent Event; `data` holds no newline (see `encode`)."""
    return f"event: {event}\ndata: {data}\n\n"


@dataclass(eq=False)
class Subscriber:
    """One browser's stream: its queue, and whether it was dropped."""

    queue: asyncio.Queue[Item]
    dropped: bool = False


class Hub:
    """Coalesces the live model's changes and fans them out to every connected browser.

    `run` is the loop (a task on the server's event loop); `stream` is one
    browser's Server-Sent Events; `close` ends them all. Only the event loop's
    thread touches the subscribers; the board is advanced in a worker thread.
    """

    def __init__(
        self,
        source: ViewSource,
        *,
        tick: float = 0.3,
        queue_size: int = 32,
        wait: float = 1.0,
        ping: float = 15.0,
        retry_ms: int = 2000,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.board = Board()
        self._source = source
        self._tick = tick
        self._queue_size = queue_size
        self._wait = wait
        self._ping = ping
        self._retry_ms = retry_ms
        self.max_streams = max_streams
        self._subscribers: set[Subscriber] = set()
        self._closed = False

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    @property
    def full(self) -> bool:
        """True when another stream would be one too many."""
        return len(self._subscribers) >= self.max_streams

    async def run(self) -> None:
        """Until `close` (or cancelled): wait for a change, advance the board, send the
        change to everyone, then let at least `tick` s pass before the next one, so that
        a burst of changes makes one message."""
        while not self._closed:
            started = time.monotonic()
            try:
                item = await asyncio.to_thread(self._next)
            except Exception:
                log.exception("dashboard: could not read the live model; trying again")
                item = None
            if item is not None:
                self.broadcast(*item)
            if self._closed:
                return
            if item is not None or time.monotonic() - started < self._tick:
                await asyncio.sleep(self._tick)

    def _next(self) -> tuple[int, str] | None:
        """(seq, the encoded change) after the next change, or None when none came within
        `wait` s (or nothing a browser shows changed). Runs in a worker thread."""
        view = self._source.wait(self.board.version, self._wait)
        message = self.board.advance(view)
        return None if message is None else (self.board.seq, encode(message))

    def broadcast(self, seq: int, text: str) -> None:
        """Queue one change for every browser; drop those whose queue is full."""
        for subscriber in list(self._subscribers):
            try:
                subscriber.queue.put_nowait((seq, text))
            except asyncio.QueueFull:
                log.info("dashboard: a browser fell %d changes behind; dropped", self._queue_size)
                self._drop(subscriber)

    def close(self) -> None:
        """End every stream and the loop (on the event loop's thread)."""
        self._closed = True
        for subscriber in list(self._subscribers):
            self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        subscriber.dropped = True
        self._subscribers.discard(subscriber)
        queue = subscriber.queue
        while not queue.empty():  # nobody will read these: free them now
            queue.get_nowait()
        queue.put_nowait(None)

    async def snapshot(self) -> tuple[int, str]:
        """(seq, the whole picture as JSON), encoded in a worker thread."""
        return await asyncio.to_thread(self.board.encoded_snapshot, encode)

    async def stream(self, lifetime: float | None = None) -> AsyncGenerator[str, None]:
        """One browser's Server-Sent Events: `snapshot` (the whole picture), then a
        `change` for each message after it, and a comment every `ping` s so that a gone
        browser is noticed. Ends when dropped, closed, the browser goes, or after
        `lifetime` s (the browser then connects again, and logs in again). Ends at once,
        empty, when `max_streams` are open already."""
        subscriber = Subscriber(asyncio.Queue(self._queue_size))
        if self._closed or self.full:
            return
        loop = asyncio.get_running_loop()
        end = None if lifetime is None else loop.time() + lifetime
        # Subscribe first, then take the snapshot: a change is in one or the other.
        self._subscribers.add(subscriber)
        try:
            yield f"retry: {self._retry_ms}\n\n"
            seen, text = await self.snapshot()
            yield sse("snapshot", text)
            while True:
                wait = self._ping if end is None else min(self._ping, end - loop.time())
                if wait <= 0:
                    yield "retry: 100\n\n"  # an end on purpose: come back at once
                    return
                try:
                    item = await asyncio.wait_for(subscriber.queue.get(), wait)
                except TimeoutError:
                    if end is None or loop.time() < end:
                        yield ": ping\n\n"
                    continue
                if item is None or subscriber.dropped:
                    return
                seq, text = item
                if seq > seen:
                    yield sse("change", text)
        finally:
            self._subscribers.discard(subscriber)
