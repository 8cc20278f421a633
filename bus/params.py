"""AMQP URLs checked once, at the edge, into pika's connection parameters."""

from __future__ import annotations

from urllib.parse import urlsplit

import pika

from bus.errors import InvalidUrl

EXPECTED = "expected amqp://USER:PASSWORD@HOST:PORT/VHOST"


def check_url(url: str) -> None:
    """Raise InvalidUrl, naming the problem (never the password), unless `url` is usable."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidUrl(f"the AMQP URL is not valid ({exc}); {EXPECTED}") from None
    if parts.scheme not in ("amqp", "amqps"):
        shown = f"scheme {parts.scheme!r}" if parts.scheme and parts.netloc else "no scheme"
        raise InvalidUrl(f"the AMQP URL has {shown}; {EXPECTED}")
    if not parts.hostname:
        raise InvalidUrl(f"the AMQP URL names no host; {EXPECTED}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise InvalidUrl(
            f"the AMQP URL's port is not a number from 1 to 65535; {EXPECTED}"
        ) from None
    if any(ord(ch) < 32 or ch.isspace() for ch in url):
        raise InvalidUrl(f"the AMQP URL contains spaces or control characters; {EXPECTED}")


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
