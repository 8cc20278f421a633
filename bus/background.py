"""A bus served on a thread of its own, for a reader that hands what it reads to its
owner's thread (`bus.brokerevents.ConnectionWatch`, `master.intake.HeartbeatIntake`).

The subclass makes `_bus` and serves it in `_serve` (until `_stopping` is set); it posts
its results to the owner's thread and, there, drops them once `_stopped` is set: nothing
reaches the owner after `stop()` returned, if `stop()` runs on the owner's thread.
"""

from __future__ import annotations

import threading

from bus.connection import Bus

JOIN_TIMEOUT = 2.0


class BusThread:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._stopping = threading.Event()  # the bus stops serving
        self._stopped = False  # the owner has called stop(): no more callbacks
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start serving on a thread of its own; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._bus.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop serving, waiting up to `timeout` s for the thread to end. Idempotent."""
        self._stopped = True
        self._stopping.set()
        self._bus.call_threadsafe(lambda: None)  # wakes its I/O wait
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the thread still runs (False once it gave up, or was stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def _serve(self) -> None:
        raise NotImplementedError
