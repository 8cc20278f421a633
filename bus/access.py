"""Who may do what on the broker: one RabbitMQ user per role, and each role's permissions.

No I/O: names and regular expressions in, `Permissions` out (`corral.admin` applies them
through the management API). The broker itself then refuses what a role may not do::

    user               configure          write                          read
    corral-master      everything         everything (amq.default too)   everything
    worker-<node>      its two queues     heartbeats, status, replies,   assignments, node-rpc,
                                          dlx, its two queues            control, its two queues
    <client> (role R)  private queues     requests, dlx                  status, replies

    (every role: its server-named private queues, amq.gen-*, in all three columns)

Topic permissions hold a user to routing keys on a topic exchange: a worker publishes
heartbeats and status events only under its own node id and binds its queues to
corral.assignments and corral.node-rpc only under its own node id; a client publishes
on corral.requests only under its role or a lesser one (`<role>.<type>`).

How RabbitMQ reads these (checked in its source, rabbit_auth_backend_internal): each
regex is matched with Erlang's ``re:run`` against the resource name or the routing key,
**unanchored**, so every pattern here is anchored ``^(...)$`` and every name in it is
escaped. The default exchange is the resource ``amq.default``, which only the master's
``.*`` matches. Nothing here relies on variable expansion (``{username}``): escaped
braces are never expanded. Two limits to know:

- PCRE's ``$`` also matches before a final newline, so the key ``n1\\n`` passes ``^n1$``
  (it names the same node; it routes nowhere a node id does).
- Before RabbitMQ 4.1, topic permissions check the routing key only, not the CC and BCC
  headers a publisher may add to route a message further: a worker may get its status
  event into a queue bound to ``job.#``. The delivered routing key is still the checked
  one, so a consumer judges a message by that key (and the sender by ``user_id``, which
  the broker checks too), never by which of its bindings brought it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bus import topology
from schemas.base import NODE_ID_PATTERN

MASTER_USER = "corral-master"
WORKER_PREFIX = "worker-"

ANY = ".*"
NOTHING = "^$"
PRIVATE = r"amq\.gen-.*"  # server-named queues: RabbitMQ names them amq.gen-<random>

_NODE_ID = re.compile(NODE_ID_PATTERN)


@dataclass(frozen=True)
class Permissions:
    """A user's permissions on one vhost: three regexes over resource names (exchanges and
    queues), and per topic exchange a (write, read) pair of regexes over routing keys. A
    topic exchange missing from `topics` is not restricted by key."""

    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]] = field(default_factory=dict)


FULL = Permissions(ANY, ANY, ANY)


def check_node_id(node_id: str) -> str:
    """`node_id` unchanged if the table can hold a worker to it; else ValueError.

    The form is the wire's (`schemas.base.NODE_ID_PATTERN`): no dot, so that a node id
    is one word of a routing key and `corral.node.<id>` names one node's queue only.
    """
    if _NODE_ID.fullmatch(node_id) is None:
        raise ValueError(
            f"invalid node id {node_id!r}: 1 to 63 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return node_id


def worker_user(node_id: str) -> str:
    """The broker user of worker `node_id`: `worker-<node_id>`. ValueError for a bad id."""
    return WORKER_PREFIX + check_node_id(node_id)


def node_of_worker_user(user: str) -> str | None:
    """The node id a worker user name stands for; None if `user` is not one."""
    if not user.startswith(WORKER_PREFIX):
        return None
    node_id = user[len(WORKER_PREFIX) :]
    return node_id if _NODE_ID.fullmatch(node_id) else None


def check_role(role: str) -> str:
    """`role` unchanged if it is a client role (`topology.ROLES`); else ValueError."""
    if role not in topology.ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(topology.ROLES)}")
    return role


def roles_up_to(role: str) -> tuple[str, ...]:
    """The roles a client of `role` may send requests as: its own and the lesser ones."""
    return topology.ROLES[: topology.ROLES.index(check_role(role)) + 1]


def exactly(*alternatives: str) -> str:
    """A regex matching exactly one of `alternatives` (regexes themselves), whole."""
    if len(alternatives) == 1:
        return f"^{alternatives[0]}$"
    return f"^({'|'.join(alternatives)})$"


def names(*resources: str) -> tuple[str, ...]:
    """`resources` as regexes matching each literally."""
    return tuple(re.escape(resource) for resource in resources)


def master_permissions() -> Permissions:
    """The master declares the topology and publishes anywhere, the default exchange
    included (journal, snapshots, leader pings, API replies)."""
    return FULL


def master_events_permissions() -> Permissions:
    """The master's permissions on the events vhost: a private queue bound to RabbitMQ's
    event exchange, nothing else of that vhost."""
    return Permissions(
        configure=exactly(PRIVATE),
        write=exactly(PRIVATE),
        read=exactly(*names(topology.EVENT_EXCHANGE), PRIVATE),
    )


def master_grants(vhost: str) -> dict[str, Permissions]:
    """Vhost -> the master's permissions there: Corral's `vhost`, and the events vhost
    unless it is the same one (the first grant covers it then)."""
    grants = {vhost: master_permissions()}
    if vhost != topology.EVENTS_VHOST:
        grants[topology.EVENTS_VHOST] = master_events_permissions()
    return grants


def worker_permissions(node_id: str) -> Permissions:
    """What worker `node_id` needs, and no more: declare and consume its own two queues,
    publish its heartbeats and status events (keyed by its own id), stream log chunks
    to a client, dead-letter a delivery. Writing a queue is what binding it takes.
    ValueError for a node id the table cannot hold (`check_node_id`)."""
    check_node_id(node_id)
    own = names(topology.node_queue(node_id).name, topology.node_rpc_queue(node_id).name)
    node = re.escape(node_id)
    task = r"task\.[^.]+\.[^.]+\.[^.]+\." + node  # task.<job>.<task>.<state>.<node>
    return Permissions(
        configure=exactly(*own, PRIVATE),
        write=exactly(
            *names(
                topology.HEARTBEAT_EXCHANGE,
                topology.STATUS_EXCHANGE,
                topology.REPLIES_EXCHANGE,
                topology.DEAD_LETTER_EXCHANGE,
            ),
            *own,
            PRIVATE,
        ),
        read=exactly(
            *names(topology.ASSIGN_EXCHANGE, topology.RPC_EXCHANGE, topology.CONTROL_EXCHANGE),
            *own,
            PRIVATE,
        ),
        topics={
            topology.HEARTBEAT_EXCHANGE: (
                exactly(re.escape(topology.heartbeat_key(node_id))),
                NOTHING,
            ),
            topology.STATUS_EXCHANGE: (
                exactly(task, *names(topology.refused_key(node_id))),
                NOTHING,
            ),
            # Reading a topic exchange's key is binding a queue under it.
            topology.ASSIGN_EXCHANGE: (NOTHING, exactly(node)),
            topology.RPC_EXCHANGE: (NOTHING, exactly(node)),
        },
    )


def client_permissions(role: str) -> Permissions:
    """What a client of `role` needs: private queues (direct reply-to needs no permission),
    requests under its role or a lesser one, status events and streamed replies to read.
    ValueError for an unknown role."""
    allowed = names(*roles_up_to(role))
    prefix = allowed[0] if len(allowed) == 1 else f"({'|'.join(allowed)})"
    return Permissions(
        configure=exactly(PRIVATE),
        write=exactly(*names(topology.API_EXCHANGE, topology.DEAD_LETTER_EXCHANGE), PRIVATE),
        read=exactly(*names(topology.STATUS_EXCHANGE, topology.REPLIES_EXCHANGE), PRIVATE),
        topics={
            topology.API_EXCHANGE: (f"^{prefix}\\.", NOTHING),
            topology.STATUS_EXCHANGE: (NOTHING, ANY),
        },
    )
