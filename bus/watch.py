"""Noticing that the broker closed one of our channels, or cancelled one of our consumers.

pika reports either on a callback, while the connection itself lives on; `check`
turns it into an exception on the bus thread, which reconnects. Without this a
master whose publishing channel the broker closed went on consuming and acking
requests while sending nothing at all.
"""

from __future__ import annotations

from typing import Any

import pika.exceptions

from bus.errors import ACCESS_REFUSED, ConnectionLost


class ChannelBroken(ConnectionLost):
    """The broker closed one of our channels (or cancelled a consumer) on a live connection.

    `publishing`: it was the publishing channel, so what was in flight there may be the
    cause (see `ConfirmingPublisher.detach`). `refused`: the broker said 403 ACCESS_REFUSED,
    which no retry will change.
    """

    def __init__(self, reason: str, *, publishing: bool, refused: bool = False) -> None:
        super().__init__(reason)
        self.publishing = publishing
        self.refused = refused


class ChannelWatch:
    """The first breakage on the current connection's channels, until `check` raises it."""

    def __init__(self) -> None:
        self._generation = 0
        # (why, the publishing channel?, refused?)
        self._broken: tuple[str, bool, bool] | None = None

    def reset(self, generation: int) -> None:
        """A new connection, number `generation`: what broke on older ones no longer counts."""
        self._generation = generation
        self._broken = None

    def watch(self, channel: Any, what: str, *, publishing: bool = False) -> None:
        """Note the broker closing `channel` (a BlockingChannel) or cancelling its consumer."""
        generation = self._generation

        def closed(_channel: Any, reason: BaseException) -> None:
            if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
                why = f"the broker closed the {what} channel ({reason})"
                refused = reason.reply_code == ACCESS_REFUSED
                self._break(generation, why, publishing=publishing, refused=refused)

        channel._impl.add_on_close_callback(closed)
        channel.add_on_cancel_callback(
            lambda _frame: self._break(generation, f"the broker cancelled the {what} consumer")
        )

    def check(self) -> None:
        """Raise ChannelBroken (once) if a watched channel broke since the last check."""
        if self._broken is not None:
            (reason, publishing, refused), self._broken = self._broken, None
            raise ChannelBroken(reason, publishing=publishing, refused=refused)

    def _break(
        self, generation: int, reason: str, *, publishing: bool = False, refused: bool = False
    ) -> None:
        if generation == self._generation and self._broken is None:
            self._broken = (reason, publishing, refused)
