"""A private queue read on the owning thread (clients: `corral watch`, Job.wait, logs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bus.errors import CONNECTION_ERRORS, ConnectionLost
from schemas.envelope import InvalidMessage, Message, decode

if TYPE_CHECKING:
    from bus.connection import Bus

log = logging.getLogger("corral.bus")


class Subscription:
    """A private queue read on the owning thread. `get` blocks up to `timeout` s."""

    def __init__(self, bus: Bus, channel: Any, name: str) -> None:
        self.bus = bus
        self.name = name
        self._channel = channel
        self._stream: Iterator[Any] | None = None

    def get(self, timeout: float) -> tuple[str, Message] | None:
        """The next (routing key, message), or None if nothing came within `timeout`.

        Invalid messages (garbage, too large, too deeply nested, unknown type)
        are skipped with a warning: whoever can publish to the status exchange
        must not be able to stop a reader. Raises ConnectionLost.
        """
        if self._stream is None:
            self._stream = self._channel.consume(self.name, auto_ack=True, inactivity_timeout=0.1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                method, _properties, body = next(self._stream)
                if method is not None:
                    try:
                        return method.routing_key, decode(body)
                    except InvalidMessage as exc:
                        log.warning("skipping an invalid message on %s: %s", self.name, exc)
                if time.monotonic() >= deadline:
                    return None
        except StopIteration:  # pika ends the generator when the broker cancels the consumer
            raise ConnectionLost(f"the broker cancelled the subscription to {self.name}") from None
        except CONNECTION_ERRORS as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from None

    def close(self) -> None:
        try:
            self._channel.close()
        except Exception:
            log.debug("closing subscription %s", self.name, exc_info=True)
