"""The commands that take a node in and out of service: cordon, uncordon, drain."""

from __future__ import annotations

from typing import Annotated

import typer

from corral import waiting
from corral.client import Client
from corral.clitools import DEFAULT_URLS, AmqpUrls, Connect, WaitTimeoutOpt, friendly_errors
from corral.rows import node_state
from corral.text import visible
from schemas.api import NodeInfo

NodeArg = Annotated[str, typer.Argument(metavar="NODE", help="A node id (`corral nodes`).")]


def find_node(client: Client, node_id: str) -> NodeInfo | None:
    """The node as the master lists it now; None if it no longer knows it."""
    for page in client.iter_nodes():
        for node in page:
            if node.node_id == node_id:
                return node
    return None


def describe(node: NodeInfo) -> str:
    """`node w1: ready,draining, 3 tasks`."""
    return visible(f"node {node.node_id}: {node_state(node)}, {node.tasks} tasks")


def register_node_commands(app: typer.Typer, connect: Connect) -> None:
    """Add cordon, uncordon and drain to `app`; `connect(amqp)` makes their client."""

    @app.command(no_args_is_help=True)
    @friendly_errors
    def cordon(node: NodeArg, amqp: AmqpUrls = DEFAULT_URLS) -> None:
        """Give NODE no new tasks; the tasks it runs stay."""
        with connect(amqp) as client:
            typer.echo(describe(client.cordon(node)))

    @app.command(no_args_is_help=True)
    @friendly_errors
    def uncordon(node: NodeArg, amqp: AmqpUrls = DEFAULT_URLS) -> None:
        """Let NODE take new tasks again (after cordon or drain)."""
        with connect(amqp) as client:
            typer.echo(describe(client.uncordon(node)))

    @app.command(no_args_is_help=True)
    @friendly_errors
    def drain(
        node: NodeArg,
        wait: Annotated[
            bool, typer.Option(help="Wait until no task is left on NODE, showing how many are.")
        ] = False,
        timeout: WaitTimeoutOpt = None,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """Move the services off NODE, and give it no new tasks.

        Each service task on NODE is replaced on another node, the new task started (and
        healthy) before the old one stops. Batch tasks there run to their end."""
        with connect(amqp) as client:
            typer.echo(describe(client.drain(node)))
            if wait:
                waiting.wait_drained(lambda: find_node(client, node), node, timeout)
