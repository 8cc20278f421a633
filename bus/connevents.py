"""What RabbitMQ's connection events say, and which worker connection of a vhost closed.

No I/O: headers in, node ids out (`bus.brokerevents` does the consuming). What the
rabbitmq_event_exchange plugin publishes, as checked on RabbitMQ 3.10 and in the
server's source up to 4.x: an empty message whose headers are the event's
properties.

- ``connection.created``: ``vhost``, ``user``, ``pid``, ``node``, ``name`` (the
  peer and local addresses), ``user_provided_name`` (the client's connection_name),
  ``client_properties`` and more.
- ``connection.closed``: only ``pid``, ``node``, ``name``, ``user_provided_name``
  and ``client_properties``. **No vhost.**
- ``client_properties`` is an array of strings, each an Erlang term:
  ``{<<"connection_name">>,longstr,<<"worker:n1">>}``.

So the vhost of a closing connection comes, in order of trust, from: a ``vhost``
header (should a broker ever send one); the ``connection.created`` event of the
same ``pid``, when it was seen (the broker's own word); else the vhost the client
claims in its client properties (`VHOST_PROPERTY`, which every `Bus` sends): the
only source for a connection made before the reader started, such as every worker
already connected when a master takes the lead. Since a claim is only a claim, a
connection whose creation was seen is judged by the broker's word alone.

Every header is untrusted (any client names its connection as it likes): a value
of the wrong type or form makes the event say nothing, and nothing here raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from bus import topology
from schemas.base import NODE_ID_PATTERN

WORKER_PREFIX = "worker:"  # a worker's connection is named worker:<node id>
VHOST_PROPERTY = "corral_vhost"  # the client property in which a Bus names its vhost
TRACKED_MAX = 65_536  # worker connections remembered at most (the oldest are forgotten)
_LONGEST = 4096  # a header string longer than this is not one Corral wrote

_NODE_ID = re.compile(NODE_ID_PATTERN)
# One client property as the plugin prints it. Only plain strings: a quote or a backslash
# (escaped by Erlang) is never in a worker's name nor in a claim (percent-encoded).
_PROPERTY = re.compile(r'\{<<"([A-Za-z0-9_]{1,64})">>,longstr,<<"([^"\\]*)">>\}')
_CLAIM = re.compile(r"[A-Za-z0-9._~%-]*")


def worker_connection_name(node_id: str) -> str:
    """The connection name of worker `node_id`'s bus."""
    return f"{WORKER_PREFIX}{node_id}"


def vhost_claim(vhost: str) -> str:
    """The value of VHOST_PROPERTY for `vhost`: percent-encoded, so the plugin prints it as
    it is."""
    return quote(vhost, safe="")


def claim_vhost(parameters: Any) -> None:
    """Name the vhost of pika's connection `parameters` in their client properties."""
    claim = vhost_claim(parameters.virtual_host)
    parameters.client_properties = {**(parameters.client_properties or {}), VHOST_PROPERTY: claim}


@dataclass(frozen=True)
class ConnectionEvent:
    """One connection event, reduced to what Corral uses; None where a header was missing or
    unusable."""

    closed: bool  # connection.closed, else connection.created
    node_id: str | None  # the worker the connection's name says it is
    pid: str | None  # the broker's id for the connection
    vhost: str | None  # the broker's word
    claimed_vhost: str | None  # the client's word (VHOST_PROPERTY)


def parse_event(routing_key: str, headers: Any) -> ConnectionEvent | None:
    """The event of a message from EVENT_EXCHANGE; None for any other kind, or headers that
    are not a table."""
    if routing_key not in (topology.CONNECTION_CREATED_KEY, topology.CONNECTION_CLOSED_KEY):
        return None
    if not isinstance(headers, Mapping):
        return None
    properties = client_properties(headers.get("client_properties"))
    name = _text(headers.get("user_provided_name")) or properties.get("connection_name")
    claim = properties.get(VHOST_PROPERTY)
    return ConnectionEvent(
        closed=routing_key == topology.CONNECTION_CLOSED_KEY,
        node_id=worker_node(name),
        pid=_text(headers.get("pid")),
        vhost=_text(headers.get("vhost")),
        claimed_vhost=_unclaim(claim) if claim is not None else None,
    )


def worker_node(name: str | None) -> str | None:
    """The node id in a connection name worker:<node id>; None for any other name."""
    if name is None or not name.startswith(WORKER_PREFIX):
        return None
    node_id = name[len(WORKER_PREFIX) :]
    return node_id if _NODE_ID.fullmatch(node_id) else None


def client_properties(value: Any) -> dict[str, str]:
    """The plain string properties in a `client_properties` header (an array of printed
    Erlang terms); nested tables, other types and anything malformed are left out."""
    if not isinstance(value, Iterable) or isinstance(value, str | bytes | Mapping):
        return {}
    found: dict[str, str] = {}
    for item in value:
        text = _text(item)
        match = _PROPERTY.fullmatch(text) if text is not None else None
        if match is not None:
            found.setdefault(match[1], match[2])
    return found


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not value or len(value) > _LONGEST:
        return None
    return value


def _unclaim(claim: str) -> str | None:
    if not _CLAIM.fullmatch(claim):
        return None
    try:
        return unquote(claim, errors="strict")
    except UnicodeDecodeError:
        return None


class WorkerConnections:
    """Which worker connection of `vhosts` each closing event is about.

    Remembers the vhost of every worker connection whose creation it saw (at most
    TRACKED_MAX, the oldest forgotten first), to judge its closing by the broker's
    word (see the module docstring).
    """

    def __init__(self, vhosts: Iterable[str], *, limit: int = TRACKED_MAX) -> None:
        self.vhosts = frozenset(vhosts)
        self._limit = limit
        self._vhost_of: dict[str, str | None] = {}  # pid -> the vhost connection.created gave

    def __len__(self) -> int:
        return len(self._vhost_of)

    def feed(self, event: ConnectionEvent) -> str | None:
        """The node id whose worker connection in one of `vhosts` this event says closed;
        None for anything else."""
        if event.node_id is None or event.pid is None:
            return None
        if not event.closed:
            self._remember(event.pid, event.vhost)
            return None
        vhost = event.claimed_vhost
        if event.pid in self._vhost_of:
            vhost = self._vhost_of.pop(event.pid)
        if event.vhost is not None:
            vhost = event.vhost
        return event.node_id if vhost in self.vhosts else None

    def _remember(self, pid: str, vhost: str | None) -> None:
        self._vhost_of.pop(pid, None)
        self._vhost_of[pid] = vhost
        while len(self._vhost_of) > self._limit:
            del self._vhost_of[next(iter(self._vhost_of))]
