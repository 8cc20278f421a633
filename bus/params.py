"""AMQP URLs checked once, at the edge, into pika's connection parameters; which node to try.

A URL setting is one string that may hold several AMQP URLs, the nodes of one
RabbitMQ cluster, separated by commas: ``amqp://u:p@rabbit1/,amqp://u:p@rabbit2/``.
A comma starts another URL only where a scheme (``amqp://``) follows it, so
a comma inside a password still works; one URL alone behaves exactly as a
single-URL setting always did.

``amqps://`` URLs speak TLS: the broker's certificate and host name are checked
against the system's CAs, or the files of a `bus.tls.Tls` given beside the URL,
which may also hold a client certificate; with one, a URL without a password
logs in by the certificate (SASL EXTERNAL).
"""

from __future__ import annotations

import re
import ssl
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qs, urlsplit, urlunsplit

import pika
import pika.credentials
import pika.exceptions

from bus.errors import AccessRefused, BusError, ConnectionLost, InvalidUrl
from bus.tls import InvalidTls, reason, ssl_context

# Part of this module's interface: the settings beside a URL, and whom they log in as.
from bus.tls import Tls as Tls
from bus.tls import tls_user as tls_user

EXPECTED = "expected amqp://USER:PASSWORD@HOST:PORT/VHOST"
SEVERAL = "several separated by commas"
SCHEMES = ("amqp", "amqps")

# A comma (blanks around it allowed) followed by a scheme: where one URL ends and the next starts.
_SEPARATOR = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")

C = TypeVar("C")


def split_urls(url: str) -> list[str]:
    """The URLs of a URL setting, in order (see the module docstring); `[url]` for one."""
    return _SEPARATOR.split(url)


def url_problem(url: str) -> str | None:
    """What is wrong with `url` (one AMQP URL or several) as a short phrase, never quoting a
    password; None if each one's structure is right: scheme, host, port, vhost, no stray
    characters. With several, the phrase says which one: "URL 2 of 3: …". pika judges
    the ?options when `connection_parameters` parses them."""
    urls = split_urls(url)
    for index, one in enumerate(urls, 1):
        problem = single_url_problem(one)
        if problem is not None:
            return which_url(index, len(urls), problem)
    return None


def which_url(index: int, count: int, problem: str) -> str:
    """`problem` of URL `index` (from 1) of `count`, saying which when there are several."""
    return problem if count == 1 else f"URL {index} of {count}: {problem}"


def single_url_problem(url: str) -> str | None:
    """`url_problem` for one URL."""
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
    return _port_problem(parts) or _comma_problem(parts) or _vhost_problem(parts)


def _host_port(parts: SplitResult) -> str:
    return parts.netloc.rpartition("@")[2]


def _port_problem(parts: SplitResult) -> str | None:
    host_port = _host_port(parts)
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


def _comma_problem(parts: SplitResult) -> str | None:
    # Several nodes written as one URL (amqp://h1,h2/), or a list whose second URL lacks
    # its scheme (amqp://h1/,h2:5672): pika would resolve "h1,h2" or use the vhost ",h2:5672".
    if "," in _host_port(parts) or "," in parts.path:
        return (
            "it holds a ',' outside the password: give each broker node a URL of its own, "
            "amqp://…,amqp://… (a ',' in a vhost name is written %2C)"
        )
    return None


def _vhost_problem(parts: SplitResult) -> str | None:
    if "/" in parts.path[1:]:
        # pika would silently use only the part before the second slash.
        return "the vhost holds a '/': write it as %2F"
    return None


def check_url(url: str) -> None:
    """Raise InvalidUrl, naming the problem (and which URL, of several; never the password),
    unless every URL of `url` is usable."""
    urls = split_urls(url)
    for index, one in enumerate(urls, 1):
        problem = single_url_problem(one)
        if problem is None:
            continue
        if len(urls) == 1:
            raise InvalidUrl(f"the AMQP URL is not valid: {problem}; {EXPECTED}")
        raise InvalidUrl(
            f"AMQP URL {index} of {len(urls)} is not valid: {problem}; {EXPECTED}, {SEVERAL}"
        )


def connection_parameters(
    url: str, *, name: str, heartbeat: int, tls: Tls | None = None
) -> list[pika.URLParameters]:
    """pika's parameters for each URL of `url`, in order: one attempt each, short timeouts
    (the bus retries itself).

    With `tls` (files set), every URL must be amqps://: each connection verifies the
    broker against `tls.ca_file` and shows `tls.cert_file`, and a URL with a certificate
    but no password logs in by it (EXTERNAL). Raises InvalidUrl, or InvalidTls naming the
    setting and the path of a file that cannot be used."""
    check_url(url)
    urls = split_urls(url)
    count = len(urls)
    context = _tls_context(urls, tls)
    parameters = []
    for index, one in enumerate(urls, 1):
        by_certificate = context is not None and certificate_login(one, tls)
        # pika cannot parse a user without a password; with EXTERNAL the user is unused.
        parsed = _parameters(_without_login(one) if by_certificate else one, index, count, name)
        parsed.heartbeat = heartbeat
        if context is not None:
            parsed.ssl_options = pika.SSLOptions(context, server_hostname=parsed.host)
        if by_certificate:
            parsed.credentials = pika.credentials.ExternalCredentials()
        parameters.append(parsed)
    return parameters


def certificate_login(url: str, tls: Tls | None) -> bool:
    """Whether a connection with `url` and `tls` logs in by certificate (EXTERNAL): a client
    certificate is set and the (first) URL has no password. Its user is then `tls_user(tls)`,
    whatever user name the URL holds."""
    return tls is not None and tls.cert_file is not None and not _password(split_urls(url)[0])


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _tls_context(urls: list[str], tls: Tls | None) -> ssl.SSLContext | None:
    """The TLS context for `tls`, shared by all the URLs; None when `tls` sets no file
    (an amqps:// URL then keeps pika's: the system's CAs, the host name checked)."""
    if tls is None or not tls.given:
        return None
    for index, one in enumerate(urls, 1):
        parts = urlsplit(one)
        if parts.scheme.lower() != "amqps":
            where = "the AMQP URL is" if len(urls) == 1 else f"URL {index} of {len(urls)} is"
            raise InvalidTls(
                f"TLS settings ({tls.names()}) need amqps:// URLs but {where} amqp://:"
                " write amqps://HOST:PORT/VHOST, the broker's TLS listener (5671 by default),"
                " or drop the TLS settings"
            )
        if "ssl_options" in parse_qs(parts.query):
            raise InvalidTls(
                f"TLS settings ({tls.names()}) and an ssl_options query in the URL: give the"
                " TLS files in one place, the settings"
            )
    return ssl_context(tls)


def _without_login(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=_host_port(parts)))


def _parameters(url: str, index: int, count: int, name: str) -> pika.URLParameters:
    try:
        parameters = pika.URLParameters(url)
    except Exception as exc:
        problem = which_url(index, count, f"the AMQP URL is not valid ({type(exc).__name__})")
        raise InvalidUrl(f"{problem}; {EXPECTED}") from None
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    parameters.stack_timeout = 15
    parameters.client_properties = {"connection_name": name}
    return parameters


def probe_parameters(url: str, *, name: str, tls: Tls | None = None) -> list[pika.URLParameters]:
    """Parameters for short-lived connections: no heartbeats, quick to give up."""
    probes = connection_parameters(url, name=name, heartbeat=0, tls=tls)
    for probe in probes:
        probe.socket_timeout = 2
        probe.stack_timeout = 4
        probe.blocked_connection_timeout = 4
    return probes


def redacted(url: str) -> str:
    """One well-formed URL (it passed `check_url`) with its password shown as ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{_host_port(parts)}"))


def node_name(parameters: Any) -> str:
    """HOST:PORT of a node's connection parameters, for messages."""
    host = str(parameters.host)
    return f"[{host}]:{parameters.port}" if ":" in host else f"{host}:{parameters.port}"


def rotation(start: int, count: int) -> list[int]:
    """The indexes 0 … count-1 in the order to try them: from `start`, round to `start - 1`."""
    return [(start + step) % count for step in range(count)]


def connect_first(
    parameters: Sequence[Any], start: int, connect: Callable[[Any], C]
) -> tuple[int, C]:
    """`connect(p)` for each of `parameters` in `rotation(start, …)` order until one works:
    that one's index and connection.

    When none works, raises AccessRefused if a node refused our credentials or vhost
    (worth telling the user before "unreachable"), else ConnectionLost. With one node the
    text is that failure's; with several it names each node's failure.
    """
    failures: list[tuple[str, BusError]] = []
    for index in rotation(start, len(parameters)):
        try:
            return index, connect(parameters[index])
        except Exception as exc:
            failures.append((node_name(parameters[index]), _failure(exc, parameters[index])))
    if len(failures) == 1:
        raise failures[0][1]
    text = "; ".join(f"{node}: {_detailed(str(error))}" for node, error in failures)
    if any(isinstance(error, AccessRefused) for _node, error in failures):
        raise AccessRefused(text)
    raise ConnectionLost(f"no broker node accepts a connection ({text})")


def _detailed(text: str) -> str:
    # pika's AMQPConnectionError often says nothing more (the single-node text gets the
    # same hint from corral.errors.BrokerUnreachable).
    return text if ":" in text else f"{text} (nothing listens there, or it is not RabbitMQ)"


def _failure(exc: BaseException, parameters: Any = None) -> BusError:
    """What a failed connection attempt (with `parameters`) means, as a BusError."""
    by_certificate = isinstance(
        getattr(parameters, "credentials", None), pika.credentials.ExternalCredentials
    )
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError) and by_certificate:
        return AccessRefused(
            "the broker refused the certificate login (EXTERNAL): it has no user named as the"
            " client certificate's CN (or a password is missing from the URL)"
        )
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return AccessRefused("the broker refused the user name or password")
    if isinstance(exc, pika.exceptions.AuthenticationError):
        return AccessRefused(
            f"the broker does not offer the {exc.args[0] if exc.args else ''} login mechanism"
            " (certificate login needs the broker's rabbitmq_auth_mechanism_ssl plugin and"
            " EXTERNAL in its auth_mechanisms), or put a password in the URL"
        )
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return AccessRefused(f"the broker refused access to the vhost ({exc})")
    tls = _tls_failure(exc)
    if tls is not None:
        return ConnectionLost(tls)
    # A timeout, a reset, a refused socket, a broker in recovery…
    return ConnectionLost(describe(exc))


def _tls_failure(exc: BaseException) -> str | None:
    """What a failed TLS handshake means, or None if `exc` is no TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the broker's TLS certificate is not trusted ({reason(exc)}): check the TLS"
            " ca_file, and that the URL's host is one the certificate names"
        )
    text = str(exc)
    # The broker ended the handshake: it sent an alert, or (TLS 1.3, where the client may
    # finish first) just closed the socket. Most often it refused our certificate.
    if "ALERT" in text or "SSLEOFError" in text:
        return (
            f"the broker ended the TLS handshake ({reason(exc)}): does it want a client"
            " certificate (TLS cert_file), and is the one given signed by a CA it trusts,"
            " and still valid?"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS failed ({reason(exc)}): is that port the broker's TLS listener (5671 by"
            " default)? amqp:// URLs are for its plain one (5672)"
        )
    return None


def describe(exc: BaseException) -> str:
    """`Type: text` of an exception, or its type alone when it says nothing."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
