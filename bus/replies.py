"""Where a reply may go, and how to send one without risking the bus's connection.

A request names its reply queue in `reply_to`, and the sender is not trusted:

- Only two kinds of name get a reply: a server-named private queue
  (``amq.gen-…``, which no client can name itself) and a direct reply-to name
  (``amq.rabbitmq.reply-to.<pid>.<key>``, as the broker rewrites it). Anything
  else, Corral's own queues included, is treated as "no reply wanted".
- A direct reply-to name encodes the broker node of the requester's
  connection. RabbitMQ 3.10 closes the *publisher's whole connection*
  (541 INTERNAL_ERROR) when that node is unknown to it, so one forged name
  could knock a master off the broker. A reply to a node never seen before
  therefore goes out on a short-lived connection of its own, with a publisher
  confirm: a confirm proves the node good (later replies to it use the bus's
  own connection), the broker closing that connection with 541 marks it bad
  for a while (later replies to it are dropped unsent). Probes run on a thread
  of their own, at most PROBES_PER_SECOND and PROBE_QUEUE waiting, so forged
  names cost the bus thread nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions

from bus import topology
from bus.errors import INTERNAL_ERROR  # how RabbitMQ closes a connection for an unknown node

log = logging.getLogger("corral.bus")

_PRIVATE = re.compile(r"amq\.gen-[A-Za-z0-9_-]{1,64}")
_DIRECT = re.compile(
    re.escape(topology.DIRECT_REPLY_TO) + r"\.([A-Za-z0-9+/]{4,200}={0,2})"
    r"\.([A-Za-z0-9+/]{4,64}={0,2})"
)
# Erlang's external term format: version 131, then a pid, whose first field is the node atom.
_TERM_VERSION, _NEW_PID, _PID = 131, 88, 103
_ATOM_TAGS = {100: 2, 118: 2, 115: 1, 119: 1}  # tag -> bytes of the length field
_PID_TAIL = {_NEW_PID: 12, _PID: 9}  # id, serial, creation

BAD_NODE_SECONDS = 60.0
MAX_REMEMBERED = 1000
# At most this many first-contact connections per second; more replies to unknown nodes wait
# for the next second's budget and are dropped meanwhile (a flood of forged names).
PROBES_PER_SECOND = 5
PROBE_QUEUE = 32
# Replies to one node waiting for its probe (a master just started, many clients at once).
WAITING_PER_NODE = 256


def direct_reply_node(name: str) -> bytes | None:
    """The broker-node tag inside a well-formed direct reply-to name, else None."""
    match = _DIRECT.fullmatch(name)
    if match is None:
        return None
    try:
        term = base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(term) < 4 or term[0] != _TERM_VERSION or term[1] not in _PID_TAIL:
        return None
    size_bytes = _ATOM_TAGS.get(term[2])
    if size_bytes is None:
        return None
    start = 3 + size_bytes
    length = int.from_bytes(term[3:start], "big")
    node = term[start : start + length]
    if len(node) != length or len(term) != start + length + _PID_TAIL[term[1]]:
        return None
    return node


def is_reply_queue(name: str | None) -> bool:
    """Whether `name` may receive replies (see the module docstring)."""
    if not name:
        return False
    return bool(_PRIVATE.fullmatch(name)) or direct_reply_node(name) is not None


def usable_reply_queue(reply_to: str | None) -> bool:
    """Whether a stream (logs) can be sent to `reply_to` through corral.replies: a
    client's private queue, bound there under its own name; not a direct reply-to name."""
    return reply_to is not None and is_reply_queue(reply_to) and not is_direct_reply(reply_to)


def is_direct_reply(name: str) -> bool:
    return name.startswith(topology.DIRECT_REPLY_TO)


class ReplyGuard:
    """Decides which direct reply-to names are safe on the bus's connection; probes the rest.

    `trusted` and `send_untrusted` are called on the bus thread; probes run on a
    daemon thread started on first use, which owns its short-lived connections.
    """

    def __init__(self, parameters: Sequence[pika.ConnectionParameters]) -> None:
        self._parameters = list(parameters)  # the broker nodes, tried in order
        self._lock = threading.Lock()
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._bad: OrderedDict[bytes, float] = OrderedDict()
        self._budget_second = 0
        self._budget = PROBES_PER_SECOND
        self._probes: queue.Queue[bytes] = queue.Queue(PROBE_QUEUE)
        self._waiting: dict[bytes, list[tuple[str, bytes, Any]]] = {}
        self._thread: threading.Thread | None = None

    def trusted(self, name: str) -> bool:
        """Safe to publish to on the bus's own connection."""
        if _PRIVATE.fullmatch(name):
            return True
        node = direct_reply_node(name)
        with self._lock:
            return node is not None and node in self._good

    def send_untrusted(self, name: str, body: bytes, properties: Any) -> None:
        """Hand a reply to a node not yet known to be good to the probe thread. Never blocks,
        never raises; a reply that cannot be probed soon is dropped (the client times out)."""
        node = direct_reply_node(name)
        if node is None:
            log.debug("dropping a reply to %r: not a reply queue", name[:100])
            return
        with self._lock:
            bad_since = self._bad.get(node)
            waiting = self._waiting.get(node)
            if waiting is not None:  # its probe is under way: go out right after it
                if len(waiting) < WAITING_PER_NODE:
                    waiting.append((name, body, properties))
                return
        if bad_since is not None and time.monotonic() - bad_since < BAD_NODE_SECONDS:
            return
        if not self._spend_budget():
            log.debug("dropping a reply to an unknown broker node: too many at once")
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="reply-probe", daemon=True)
            self._thread.start()
        with self._lock:
            self._waiting[node] = [(name, body, properties)]
        try:
            self._probes.put_nowait(node)
        except queue.Full:
            with self._lock:
                self._waiting.pop(node, None)
            log.debug("dropping a reply to an unknown broker node: the probe queue is full")

    def _serve(self) -> None:
        while True:
            self._probe_node(self._probes.get())

    def _probe_node(self, node: bytes) -> None:
        """Send the node's waiting replies on one short-lived connection; judge the node."""
        try:
            self._send_waiting(node)
        except pika.exceptions.ConnectionClosedByBroker as exc:
            with self._lock:
                self._waiting.pop(node, None)
                if exc.reply_code == INTERNAL_ERROR:
                    self._remember(self._bad, node, time.monotonic())
            if exc.reply_code != INTERNAL_ERROR:
                log.warning("could not send a reply: the broker closed the connection (%s)", exc)
                return
            log.warning(
                "the broker closed a reply connection (%s %s): a request named a reply_to "
                "it cannot route to; replies to that node are dropped for %g s",
                exc.reply_code,
                exc.reply_text,
                BAD_NODE_SECONDS,
            )
        except Exception as exc:
            with self._lock:
                self._waiting.pop(node, None)
            log.warning("could not send a reply (%s: %s)", type(exc).__name__, exc)

    def _send_waiting(self, node: bytes) -> None:
        connection = pika.BlockingConnection(self._parameters)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            while True:
                with self._lock:
                    batch = self._waiting.get(node) or []
                    if not batch:
                        # Proven: from now on the bus publishes to it on its own connection.
                        self._waiting.pop(node, None)
                        self._bad.pop(node, None)
                        self._remember(self._good, node, None)
                        return
                    self._waiting[node] = []
                for name, body, properties in batch:
                    channel.basic_publish(
                        topology.DEFAULT_EXCHANGE, name, body, properties=properties
                    )
        finally:
            if connection.is_open:
                connection.close()

    def _spend_budget(self) -> bool:
        second = int(time.monotonic())
        if second != self._budget_second:
            self._budget_second, self._budget = second, PROBES_PER_SECOND
        if self._budget <= 0:
            return False
        self._budget -= 1
        return True

    @staticmethod
    def _remember(table: OrderedDict[bytes, Any], node: bytes, value: Any) -> None:
        table[node] = value
        table.move_to_end(node)
        while len(table) > MAX_REMEMBERED:
            table.popitem(last=False)
