"""Checking an AMQP URL before anything connects with it.

A malformed URL is a mistake on the command line or in CORRAL_AMQP_URL, so it
is refused at once with a sentence that shows the URL (password hidden), what
is wrong and the expected form, instead of a traceback from deep in the AMQP
library or a connection attempt to somewhere unintended.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import SplitResult, urlsplit

from bus import errors as bus_errors
from bus import params
from corral.errors import InvalidUrl

SCHEMES = ("amqp", "amqps")


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as an AMQP URL, as a short phrase; None if it looks right.

    Checks the structure (scheme, host, port, vhost, stray characters), then
    lets the bus parse it as it will when connecting (query options such as
    `?heartbeat=30`). Opens no connection.
    """
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
    return _port_problem(parts) or _vhost_problem(parts) or _bus_problem(url)


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


def _bus_problem(url: str) -> str | None:
    try:
        params.connection_parameters(url, name="corral-url-check", heartbeat=0)
    except bus_errors.InvalidUrl:
        # The structure passed the checks above, so what the bus refuses is in the options
        # (its text does not say which: it may quote the password).
        return "its ?options are not valid" if "?" in url else "the AMQP library refuses it"
    return None


def check_url(url: str, *, option: str = "AMQP") -> str:
    """`url` unchanged if it looks right; InvalidUrl (a CorralError) naming `option` if not."""
    problem = url_problem(url)
    if problem is not None:
        raise InvalidUrl(url, problem, option=option)
    return url
