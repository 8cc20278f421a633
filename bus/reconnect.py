"""How a bus retries: capped exponential backoff with jitter, each failure logged once.

Every failure to connect or to declare, of any type, is retried (`Bus.connect`
translates them all into BusError first). The same failure is logged again only
after REPEAT_LOG_SECONDS; a new cause at once. Connections that die as soon as
they are made count as failures too: the next reconnect waits (`pause`).
"""

from __future__ import annotations

import logging
import threading
import time

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from bus.errors import BusError

log = logging.getLogger("corral.bus")

# The same failure to connect is logged again after this long (a new cause at once).
REPEAT_LOG_SECONDS = 60.0
# A connection lost sooner than this after it was made counts as short-lived: the next
# reconnect waits with backoff even though connecting itself succeeded.
SHORT_LIVED = 5.0


class Reconnects:
    """The retry policy and failure log of the bus named `name`."""

    def __init__(self, name: str, max_backoff: float) -> None:
        self.name = name
        self.max_backoff = max_backoff
        self._connected_at = 0.0
        self._short_lived = 0  # connections in a row lost within SHORT_LIVED seconds
        self._last_failure: tuple[str, float] = ("", 0.0)

    def retrying(self, stop: threading.Event, attempts: int | None) -> Retrying:
        """Retry BusError with backoff until it succeeds, `stop` is set or `attempts` ran
        out (None: no limit); then re-raise the last failure. Sleeps are cut short by `stop`."""

        def give_up(state: RetryCallState) -> bool:
            return stop.is_set() or (attempts is not None and state.attempt_number >= attempts)

        def report(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            self.report_failure(error, state.upcoming_sleep)

        return Retrying(
            retry=retry_if_exception_type(BusError),
            wait=wait_exponential_jitter(multiplier=0.2, max=self.max_backoff, jitter=0.5),
            stop=give_up,
            sleep=stop.wait,  # type: ignore[arg-type]  # interruptible; its bool is ignored
            before_sleep=report,
            reraise=True,
        )

    def report_failure(self, error: BaseException | None, pause: float | None) -> None:
        text = f"{type(error).__name__}: {error}" if error is not None else "unknown failure"
        previous, at = self._last_failure
        now = time.monotonic()
        if text != previous or now - at >= REPEAT_LOG_SECONDS:
            self._last_failure = (text, now)
            log.warning(
                "%s: cannot connect to the broker (%s); retrying every few seconds",
                self.name,
                text,
            )
        else:
            log.debug("%s: still cannot connect (%s); next try in %.1f s", self.name, text, pause)

    def connected(self) -> None:
        """A connection is up: failures start afresh, and its lifetime is measured."""
        self._last_failure = ("", 0.0)
        self._connected_at = time.monotonic()

    def lost(self) -> None:
        """The connection went: was it short-lived?"""
        if time.monotonic() - self._connected_at < SHORT_LIVED:
            self._short_lived += 1
        else:
            self._short_lived = 0

    def pause(self, stop: threading.Event) -> None:
        """Before reconnecting: wait, with backoff, while connections keep dying at once."""
        if self._short_lived:  # connections that die at once: don't spin
            stop.wait(min(self.max_backoff, 0.2 * 2.0 ** min(self._short_lived, 8)))
