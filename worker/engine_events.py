"""Docker's event stream, as the worker reads it (a mixin of `worker.runtime.DockerRuntime`,
which holds the engine's client; like it, this module talks to Docker).

Read in windows of at most a second, each overlapping the last by a second and
de-duplicated (`EventDecoder`), so nothing is lost or repeated between windows, and a
stream the engine cuts or a lost engine only costs a retry with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import closing, suppress

import docker
import requests
import urllib3
from docker.errors import APIError, DockerException

from worker.containers import EVENT_ACTIONS, EventDecoder, RuntimeEvent

log = logging.getLogger("worker.runtime")

# Transport failures: the engine went away or the socket broke mid-request.
TRANSPORT_ERRORS = (DockerException, requests.RequestException, urllib3.exceptions.HTTPError)


def explain(error: Exception) -> str:
    """Docker's explanation of an error, on one line."""
    text = error.explanation if isinstance(error, APIError) and error.explanation else str(error)
    return " ".join(str(text).split())


class EngineEvents:
    """The event half of the runtime; `DockerRuntime` provides what is declared here."""

    _client: docker.DockerClient
    _filters: list[str]

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """Yield start, exit and health events of this node's containers until `stop` is
        set. An exit the kernel's OOM killer caused carries the reason `out of memory
        (limit 64Mi)`; a health event carries Docker's new verdict.

        Blocks between events; returns within about a second of `stop` being set. The
        engine is read in windows of at most a second, each overlapping the last by a
        second and de-duplicated, so nothing is lost or repeated between windows. The
        first window also replays up to a second before the call. If the engine is
        unreachable it retries with backoff and never raises; events that happened
        while it was down cannot be replayed, so callers reconcile with `list_tasks`.
        """
        since = int(time.time())
        decoder = EventDecoder()
        backoff = 0.2
        while not stop.is_set():
            until = max(since + 1, int(time.time()) + 1)
            try:
                with closing(self._window(since, until, decoder)) as window:
                    for event in window:
                        yield event
                        if stop.is_set():
                            return
            except (*TRANSPORT_ERRORS, ValueError) as error:
                if backoff == 0.2:  # Once per outage, not once per retry.
                    log.warning("Docker event stream failed, retrying: %s", explain(error))
                stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue  # Keep `since`: what the engine still buffers will be replayed.
            backoff = 0.2
            # A stream the engine cut short only covers events up to now.
            since = max(since, min(until, int(time.time())) - 1)
            decoder.forget_before(since)

    def _window(
        self, since: int, until: int, decoder: EventDecoder
    ) -> Generator[RuntimeEvent, None, None]:
        """Events from `since` (inclusive, replayed from the engine's buffer) until the engine
        closes the stream at `until`; events `decoder` has seen already are skipped."""
        # `oom` comes before the `die` of a container the kernel killed at its memory limit.
        # `health_status` matches the actions `health_status: <verdict>` (a prefix match
        # the engine makes for that value alone).
        stream = self._client.events(
            since=since,
            until=until,
            decode=True,
            filters={"type": "container", "label": self._filters, "event": list(EVENT_ACTIONS)},
        )
        try:
            for raw in stream:
                event = decoder.decode(raw)
                if event is not None:
                    yield event
        finally:
            with suppress(*TRANSPORT_ERRORS, OSError):
                stream.close()
