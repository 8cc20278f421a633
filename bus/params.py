"""AMQP URLs checked once, at the edge, into pika's connection parameters."""

from __future__ import annotations

import unicodedata
from urllib.parse import SplitResult, urlsplit

import pika

from bus.errors import InvalidUrl

EXPECTED = "expected amqp://USER:PASSWORD@HOST:PORT/VHOST"
SCHEMES = ("amqp", "amqps")


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as an AMQP URL, as a short phrase (never quoting the
    password); None if its structure is right: scheme, host, port, vhost, no stray
    characters. pika judges the ?options when `connection_parameters` parses it."""
    if not url.strip():
        return "it is empty"
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in url):
        return "it holds a space or a control character (percent-encode them)"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return str(exc)
    if parts.scheme.lower() not in SCHEMES or not url[len(parts.scheme) :].startswith("://"):
        return "it does not start with amqp:// or amqps://"
    if not parts.hostname:
        return "it names no host"
    return _port_problem(parts) or _vhost_problem(parts)


def _port_problem(parts: SplitResult) -> str | None:
    host_port = parts.netloc.rpartition("@")[2]
    if host_port.startswith("["):  # an IPv6 literal: [::1]:5672
        host_port = host_port.partition("]")[2]
    _host, colon, port = host_port.partition(":")
    if not colon:
        return None
    if not port.isascii() or not port.isdigit():
        return f"the port {port!r} is not a number"
    if not 0 < int(port) < 65536:
        return f"the port {port} is not between 1 and 65535"
    return None


def _vhost_problem(parts: SplitResult) -> str | None:
    if "/" in parts.path[1:]:
        # pika would silently use only the part before the second slash.
        return "the vhost holds a '/': write it as %2F"
    return None


def check_url(url: str) -> None:
    """Raise InvalidUrl, naming the problem (never the password), unless `url` is usable."""
    problem = url_problem(url)
    if problem is not None:
        raise InvalidUrl(f"the AMQP URL is not valid: {problem}; {EXPECTED}")


def connection_parameters(url: str, *, name: str, heartbeat: int) -> pika.URLParameters:
    """pika's parameters for `url`: one attempt, short timeouts (the bus retries itself)."""
    check_url(url)
    try:
        parameters = pika.URLParameters(url)
    except Exception as exc:
        raise InvalidUrl(f"the AMQP URL is not valid ({type(exc).__name__}); {EXPECTED}") from None
    parameters.heartbeat = heartbeat
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    parameters.stack_timeout = 15
    parameters.client_properties = {"connection_name": name}
    return parameters


def probe_parameters(url: str, *, name: str) -> pika.URLParameters:
    """Parameters for short-lived connections: no heartbeats, quick to give up."""
    probe = connection_parameters(url, name=name, heartbeat=0)
    probe.socket_timeout = 2
    probe.stack_timeout = 4
    probe.blocked_connection_timeout = 4
    return probe
