"""Transport errors, translated once at the bus's edge so callers never mention pika."""

from __future__ import annotations


class BusError(Exception):
    """Something went wrong talking to the broker."""


class ConnectionLost(BusError):
    """The broker cannot be reached, or the connection dropped."""


class TopologyError(BusError):
    """The broker refused a declaration (for example a queue exists with other arguments).

    Retrying cannot help; an operator has to look.
    """


class RequestTimeout(BusError):
    """No reply arrived in time."""
