"""Transport errors, translated once at the bus's edge so callers never mention pika."""

from __future__ import annotations

import pika.exceptions

from schemas.limits import MAX_MESSAGE_BYTES

# AMQP reply codes the bus acts on.
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
INTERNAL_ERROR = 541


class BusError(Exception):
    """Something went wrong talking to the broker."""


class ConnectionLost(BusError):
    """The broker cannot be reached, or the connection (or one of its channels) dropped."""


class TopologyError(BusError):
    """The broker refused a declaration (for example a queue exists with other arguments).

    Retrying rarely helps; an operator has to look. Daemons retry anyway, with backoff.
    """


class AccessRefused(TopologyError):
    """The broker refused the user, the password or the vhost."""


class InvalidUrl(BusError):
    """The AMQP URL cannot be used; the text says what is wrong (never the password)."""


class RequestTimeout(BusError):
    """No reply arrived in time."""


class NoRoute(BusError):
    """The broker could not route a request: its queue does not exist on this vhost."""


class MessageTooLarge(BusError):
    """A message over schemas.limits.MAX_MESSAGE_BYTES; it was not sent."""


def check_size(body: bytes, what: str) -> None:
    """Raise MessageTooLarge, naming `what`, if `body` is over MAX_MESSAGE_BYTES."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"{what} is {len(body)} bytes, over the {MAX_MESSAGE_BYTES}-byte message limit;"
            " not sent"
        )


# What pika raises when a connection or a channel is gone or going.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.AMQPChannelError,
    ConnectionLost,
    OSError,
)
