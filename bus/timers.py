"""Timers and cross-thread calls run by the bus thread between I/O waits.

Nothing here touches the broker: `Bus.run` asks `idle_time()` how long it may
wait for I/O, then calls `run_due(guard)`. A callback that raises is reported
by `guard` and never stops the loop.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# The longest the bus waits for I/O before looking at its timers again.
MAX_IDLE = 0.5


@dataclass(order=True)
class Timer:
    due: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    interval: float | None = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """A heap of timers plus a queue of calls handed over from other threads."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, next(self._seq), fn)
        heapq.heappush(self._heap, timer)
        return timer

    def every(self, interval: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + interval, next(self._seq), fn, interval)
        heapq.heappush(self._heap, timer)
        return timer

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Queue `fn` for the bus thread. Safe from any thread."""
        self._calls.put(fn)

    def idle_time(self) -> float:
        """How long the bus may wait for I/O before something here is due."""
        if not self._calls.empty():
            return 0.0
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return MAX_IDLE
        return max(0.0, min(MAX_IDLE, self._heap[0].due - time.monotonic()))

    def run_due(self, guard: Callable[[Callable[[], None]], None]) -> None:
        """Run the queued calls, then the timers that are due, each through `guard`."""
        while not self._calls.empty():
            guard(self._calls.get_nowait())
        now = time.monotonic()
        while self._heap and self._heap[0].due <= now:
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.due = max(timer.due + timer.interval, now)
                heapq.heappush(self._heap, timer)
            guard(timer.fn)
