"""The broker nodes a command was given, and whether each one answers.

`corral status` and `corral masters` take the URLs of a RabbitMQ cluster's nodes
(`clitools.AmqpUrls`). Each node is shown as host:port, never with its
credentials, and is *reachable* if a TCP connection to it opens within a second:
that says the node is up and listening, not that it lets this user in.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from corral.urls import join_urls

PROBE_TIMEOUT = 1.0
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}

Connect = Callable[[tuple[str, int], float], socket.socket]


@dataclass(frozen=True)
class BrokerNode:
    """One broker URL as given (it may hold a password: show `address`) and whether a
    TCP connection to it opened (None: not tried)."""

    url: str
    address: str
    reachable: bool | None = None


def host_port(url: str) -> tuple[str, int]:
    """The host and port a (valid) AMQP URL points at; the scheme's port if it has none."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 5672)


def address(url: str) -> str:
    """`host:port` of the URL (`[::1]:5672` for an IPv6 address), without credentials."""
    host, port = host_port(url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connects(url: str, timeout: float, connect: Connect) -> bool:
    try:
        connect(host_port(url), timeout).close()
    except OSError:  # refused, unreachable, no such host, timed out
        return False
    return True


def probe(
    urls: Sequence[str],
    *,
    timeout: float = PROBE_TIMEOUT,
    connect: Connect = socket.create_connection,
) -> list[BrokerNode]:
    """Each URL with whether a TCP connection to it opens within `timeout` seconds.

    The connections are tried at once, one thread each, so this blocks about
    `timeout` seconds at most whatever the number of URLs; each is closed at once.
    """
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(len(urls), 16)) as pool:
        answers = list(pool.map(lambda url: _connects(url, timeout, connect), urls))
    return [BrokerNode(url, address(url), ok) for url, ok in zip(urls, answers, strict=True)]


def reachable_first(nodes: Sequence[BrokerNode]) -> str:
    """One URL setting of every node, those that answered first, each group in the
    order given: the bus connects to the first node that lets it in."""
    ordered = sorted(nodes, key=lambda node: not node.reachable)
    return join_urls(node.url for node in ordered)
