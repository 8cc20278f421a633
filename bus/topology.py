"""Every exchange, queue and routing key Corral uses, in one place.

::

    worker ──heartbeat──▶ [corral.heartbeats topic] ─key=node─▶ (server-named, TTL) ──▶ master
    client ──api.*──────▶ [corral.requests topic] ─key=<role>.<type>─▶ (corral.api quorum) ─▶ master
    master ──reply──────▶ reply_to (direct reply-to or the client's queue) ──▶ client
    master ──assign.*───▶ [corral.assignments topic] ─key=node─▶ (corral.node.<id> quorum) ─▶ worker
    worker ──task.*─────▶ [corral.status topic] ─task.#──▶ (corral.master.status quorum) ─▶ master
    master ──job.*/node.*▶ [corral.status topic] ──▶ dashboards, `corral watch` (own queues)
    client ──api.logs───▶ [corral.requests] ──▶ master (checks who may read them)
    master ──logs.request▶ [corral.node-rpc topic] ─key=node─▶ (corral.node.<id>.rpc) ─▶ worker
    worker ──logs.chunk─▶ [corral.replies direct] ─key=queue─▶ (the client's private queue)
    master ──announce───▶ [corral.control fanout] ──▶ workers (own queues)
    master ──net.update─▶ [corral.control fanout] ──▶ workers (changes of the network view)
    master ──net.update─▶ [corral.node-rpc topic] ─key=node─▶ one worker (a snapshot)
    master ──beat───────▶ [corral.masters fanout] ──▶ masters (own queues)
    master ──ping───────▶ (corral.leader quorum, single active consumer) ──▶ the active master
    master ──record─────▶ (corral.journal stream) ──▶ every master tails it
    master ──snapshot───▶ (corral.snapshots stream) ──▶ a starting master reads the newest
    worker ──refused.*──▶ [corral.status topic] ──▶ dashboards, `corral watch`
    broker / consumers ─▶ [corral.dlx fanout] ──▶ (corral.dead) ──▶ operators
    broker ──connection.*▶ [amq.rabbitmq.event topic, on /] ──▶ (server-named) ──▶ active master

Status routing keys: ``task.<job>.<task>.<state>.<node>``, ``job.<job>.<state>``,
``node.<node>.<state>``, ``refused.<node>``. Job names and node ids never contain
dots. Whatever a worker publishes names its node in the routing key, so that the
broker's topic permissions (see `bus.access`) hold each worker to its own node id.

This module only names things and describes their arguments; `bus.connection`
declares them. Nothing else in Corral spells a queue or exchange name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

HEARTBEAT_EXCHANGE = "corral.heartbeats"  # topic: the key is the node id
API_EXCHANGE = "corral.requests"  # topic: the key is <role>.<type>, e.g. submitter.api.submit
REPLIES_EXCHANGE = "corral.replies"  # direct: the key is a client's private queue name
ASSIGN_EXCHANGE = "corral.assignments"  # topic (keys: node ids), for topic permissions
STATUS_EXCHANGE = "corral.status"
CONTROL_EXCHANGE = "corral.control"
RPC_EXCHANGE = "corral.node-rpc"  # topic (keys: node ids), for topic permissions
MASTERS_EXCHANGE = "corral.masters"
DEAD_LETTER_EXCHANGE = "corral.dlx"
DEFAULT_EXCHANGE = ""

API_QUEUE = "corral.api"
MASTER_STATUS_QUEUE = "corral.master.status"
DEAD_QUEUE = "corral.dead"
LEADER_QUEUE = "corral.leader"
JOURNAL_STREAM = "corral.journal"
SNAPSHOT_STREAM = "corral.snapshots"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

# Headers Corral adds to a message it dead-letters itself.
REASON_HEADER = "x-corral-reason"
SOURCE_QUEUE_HEADER = "x-corral-queue"
SOURCE_EXCHANGE_HEADER = "x-corral-exchange"
SOURCE_KEY_HEADER = "x-corral-routing-key"
TRUNCATED_HEADER = "x-corral-truncated"  # the original body size, when Corral kept only part

# corral.dead keeps the newest dead letters only: at most this many, this many bytes, this long.
DEAD_LETTERS_MAX = 10_000
DEAD_LETTERS_MAX_BYTES = 64 * 1024 * 1024
DEAD_LETTER_TTL_MS = 7 * 24 * 3600 * 1000

HEARTBEAT_TTL_MS = 5_000
ASSIGN_DELIVERY_LIMIT = 20

# RabbitMQ's own events (the rabbitmq_event_exchange plugin): one exchange, in one vhost
# ("/" unless the broker's rabbitmq_event_exchange.vhost says otherwise), for every vhost's
# events. `bus.brokerevents` reads the connection events from it.
EVENT_EXCHANGE = "amq.rabbitmq.event"
EVENTS_VHOST = "/"
CONNECTION_CREATED_KEY = "connection.created"
CONNECTION_CLOSED_KEY = "connection.closed"
BROKER_EVENTS_MAX = 10_000  # events waiting for a slow reader, at most (the oldest go first)


@dataclass(frozen=True)
class Exchange:
    name: str
    kind: Literal["fanout", "direct", "topic"]
    durable: bool = True


@dataclass(frozen=True)
class Queue:
    """A queue and its bindings. An empty name asks the broker to name it (exclusive)."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)


EXCHANGES = (
    Exchange(HEARTBEAT_EXCHANGE, "topic"),
    Exchange(API_EXCHANGE, "topic"),
    Exchange(REPLIES_EXCHANGE, "direct"),
    Exchange(ASSIGN_EXCHANGE, "topic"),
    Exchange(STATUS_EXCHANGE, "topic"),
    Exchange(CONTROL_EXCHANGE, "fanout"),
    Exchange(RPC_EXCHANGE, "topic"),
    Exchange(MASTERS_EXCHANGE, "fanout"),
    Exchange(DEAD_LETTER_EXCHANGE, "fanout"),
)

# Durable queues and streams are replicated on up to this many broker nodes.
REPLICAS = 3

_QUORUM: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-quorum-initial-group-size": REPLICAS,
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
}

DEAD_QUEUE_DECL = Queue(
    DEAD_QUEUE,
    arguments={
        "x-queue-type": "quorum",
        "x-quorum-initial-group-size": REPLICAS,
        "x-max-length": DEAD_LETTERS_MAX,
        "x-max-length-bytes": DEAD_LETTERS_MAX_BYTES,
        "x-overflow": "drop-head",  # the oldest letters go first
        "x-message-ttl": DEAD_LETTER_TTL_MS,
    },
    bindings=((DEAD_LETTER_EXCHANGE, ""),),
)
API_QUEUE_DECL = Queue(API_QUEUE, arguments=dict(_QUORUM), bindings=((API_EXCHANGE, "#"),))
MASTER_STATUS_QUEUE_DECL = Queue(
    MASTER_STATUS_QUEUE,
    arguments=dict(_QUORUM),
    bindings=((STATUS_EXCHANGE, "task.#"),),
)

# Election: every master consumes corral.leader (single active consumer) and pings it;
# the one the broker delivers to is the active master. Pings are tiny and short-lived.
LEADER_PING_TTL_MS = 5_000
LEADER_QUEUE_DECL = Queue(
    LEADER_QUEUE,
    arguments={
        "x-queue-type": "quorum",
        "x-quorum-initial-group-size": REPLICAS,
        "x-single-active-consumer": True,
        "x-max-length": 100,
        "x-overflow": "drop-head",
        "x-message-ttl": LEADER_PING_TTL_MS,
    },
)

# The journal keeps at least a week and at most JOURNAL_MAX_BYTES; the active master
# writes a snapshot often enough (master settings) that the newest one is always newer
# than the oldest record retention keeps.
JOURNAL_MAX_AGE = "7D"
JOURNAL_MAX_BYTES = 2 * 1024**3
JOURNAL_SEGMENT_BYTES = 64 * 1024**2
SNAPSHOTS_MAX_AGE = "7D"
SNAPSHOTS_MAX_BYTES = 2 * 1024**3
SNAPSHOTS_SEGMENT_BYTES = 64 * 1024**2


def _stream(name: str, max_age: str, max_bytes: int, segment: int) -> Queue:
    return Queue(
        name,
        arguments={
            "x-queue-type": "stream",
            "x-initial-cluster-size": REPLICAS,
            "x-max-age": max_age,
            "x-max-length-bytes": max_bytes,
            "x-stream-max-segment-size-bytes": segment,
        },
    )


JOURNAL_STREAM_DECL = _stream(
    JOURNAL_STREAM, JOURNAL_MAX_AGE, JOURNAL_MAX_BYTES, JOURNAL_SEGMENT_BYTES
)
SNAPSHOT_STREAM_DECL = _stream(
    SNAPSHOT_STREAM, SNAPSHOTS_MAX_AGE, SNAPSHOTS_MAX_BYTES, SNAPSHOTS_SEGMENT_BYTES
)

# Declared by the masters and `corral admin bootstrap` (workers and clients may not), so
# that no message is published into nothing.
CORE_QUEUES = (DEAD_QUEUE_DECL, API_QUEUE_DECL, MASTER_STATUS_QUEUE_DECL)


def _beats_view(exchange: str, key: str = "") -> Queue:
    """A private queue on an exchange of beats; stale beats expire unread."""
    return Queue(
        "",
        durable=False,
        exclusive=True,
        auto_delete=True,
        arguments={"x-message-ttl": HEARTBEAT_TTL_MS},  # expired beats are dropped
        bindings=((exchange, key),),
    )


def heartbeat_queue() -> Queue:
    """A master's private view of the workers' heartbeats (every node's)."""
    return _beats_view(HEARTBEAT_EXCHANGE, "#")


def heartbeat_key(node_id: str) -> str:
    return node_id


ROLES = ("viewer", "submitter", "admin")  # client roles, least to most allowed


def api_key(role: str, message_type: str) -> str:
    """The routing key of an API request: the role it is sent as, then its type. The
    broker lets each client user publish only under the roles it was given."""
    return f"{role}.{message_type}"


def broker_events_queue() -> Queue:
    """A master's private view of the broker's connection events (of every vhost). Declared
    on the events vhost, where EVENT_EXCHANGE lives."""
    return Queue(
        "",
        durable=False,
        exclusive=True,
        auto_delete=True,
        arguments={"x-max-length": BROKER_EVENTS_MAX},
        bindings=(
            (EVENT_EXCHANGE, CONNECTION_CREATED_KEY),
            (EVENT_EXCHANGE, CONNECTION_CLOSED_KEY),
        ),
    )


def node_queue_name(node_id: str) -> str:
    return f"corral.node.{node_id}"


def node_queue(node_id: str) -> Queue:
    """A worker's assignment queue: survives the worker and the broker restarting."""
    return Queue(
        node_queue_name(node_id),
        arguments={**_QUORUM, "x-delivery-limit": ASSIGN_DELIVERY_LIMIT},
        bindings=((ASSIGN_EXCHANGE, node_id),),
    )


def node_rpc_queue(node_id: str) -> Queue:
    """A worker's queue for interactive requests (logs); gone with the worker."""
    return Queue(
        f"corral.node.{node_id}.rpc",
        durable=False,
        exclusive=True,
        auto_delete=True,
        bindings=((RPC_EXCHANGE, node_id),),
    )


def control_queue() -> Queue:
    return Queue(
        "", durable=False, exclusive=True, auto_delete=True, bindings=((CONTROL_EXCHANGE, ""),)
    )


def masters_queue() -> Queue:
    """A master's private view of the masters' beats (its own included)."""
    return _beats_view(MASTERS_EXCHANGE)


def leader_key(master: str) -> str:
    return f"leader.{master}"


def refused_key(node_id: str) -> str:
    return f"refused.{node_id}"


def status_queue(patterns: tuple[str, ...] = ("#",)) -> Queue:
    """A private subscription to status events (dashboards, `corral watch`, Job.wait)."""
    return Queue(
        "",
        durable=False,
        exclusive=True,
        auto_delete=True,
        bindings=tuple((STATUS_EXCHANGE, pattern) for pattern in patterns),
    )


# A binding key that stands for the queue's own (server-given) name.
OWN_NAME = "{queue}"


def reply_queue() -> Queue:
    """A private queue for streamed replies (logs), bound to corral.replies under its own
    name: workers publish there, never on the default exchange."""
    return Queue(
        "",
        durable=False,
        exclusive=True,
        auto_delete=True,
        bindings=((REPLIES_EXCHANGE, OWN_NAME),),
    )


def task_key(job_id: str, task_id: str, state: str, node_id: str) -> str:
    return f"task.{job_id}.{task_id}.{state}.{node_id}"


def job_key(job_id: str, state: str) -> str:
    return f"job.{job_id}.{state}"


def node_key(node_id: str, state: str) -> str:
    return f"node.{node_id}.{state}"


def job_events_pattern(job_id: str) -> str:
    """Every status event of one job: its own and its tasks'."""
    return f"*.{job_id}.#"
