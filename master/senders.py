"""Who sent an input, as the broker vouches for it, and whether it may send it.

RabbitMQ refuses a message whose `user_id` is not the user of the connection that
publishes it, and every Corral process sets it, so `Delivery.user_id` names the
sender. The broker's permissions (`bus.access`) already keep each role to its own
exchanges and routing keys; the master checks what the broker cannot see, the
body:

- a heartbeat or a task status names a node: its sender must be that node's
  worker user (`worker-<node id>`);
- an API request comes through `corral.requests` under the routing key
  `<role>.<type>`, which the broker lets a client user publish only under the
  roles it was given: the prefix is the caller's role.

The master's own broker user is trusted as any sender (whoever holds its
credentials has every permission anyway). That is also the single-user setup,
where every process shares one user (the tests' and the demo's `guest`).
"""

from __future__ import annotations

from typing import cast

from bus import topology
from bus.access import WORKER_PREFIX
from master.access import Caller, Role


def node_sender_refusal(user_id: str | None, node_id: str, trusted: str) -> str | None:
    """Why a report naming `node_id` (already checked by the message's schema, whose
    NodeId is the form `bus.access.worker_user` takes) from broker user `user_id` is
    refused, or None. Called for every heartbeat: string comparisons, no regex."""
    own = WORKER_PREFIX + node_id
    if user_id in (trusted, own):
        return None
    return (
        f"sent by broker user {user_id!r} about node {node_id}, whose worker user is "
        f"{own!r}: a worker reports only on itself"
    )


def caller_of(user_id: str | None, exchange: str, routing_key: str, trusted: str) -> Caller | str:
    """The caller of an API request, or why it is refused."""
    if user_id == trusted:
        return Caller(user_id, "admin")
    if exchange != topology.API_EXCHANGE:
        return f"API requests come through the {topology.API_EXCHANGE} exchange, not {exchange!r}"
    if not user_id:
        return "the request carries no user_id (every Corral client sets it)"
    role = routing_key.partition(".")[0]
    if role not in topology.ROLES:
        return (
            f"routing key {routing_key!r} names no role: send requests as "
            f"<role>.<type>, the role one of {', '.join(topology.ROLES)}"
        )
    return Caller(user_id, cast(Role, role))
