"""Checking AMQP URLs before anything connects with them.

A URL setting (--amqp, CORRAL_AMQP_URL, `Client(url)`) is one AMQP URL or
several, the nodes of one RabbitMQ cluster, separated by commas; a repeated
--amqp is joined into one such setting (`join_urls`).

A malformed URL is a mistake on the command line or in CORRAL_AMQP_URL, so it
is refused at once with a sentence that shows the URL (password hidden), what
is wrong and the expected form, instead of a traceback from deep in the AMQP
library or a connection attempt to somewhere unintended. Of several URLs, the
sentence shows the bad one and says which it is ("URL 2 of 3").
"""

from __future__ import annotations

from collections.abc import Iterable

from bus import errors as bus_errors
from bus import params
from corral.errors import InvalidUrl


def split_urls(url: str) -> list[str]:
    """The URLs of a URL setting, in order; `[url]` for a single one."""
    return params.split_urls(url)


def join_urls(urls: Iterable[str]) -> str:
    """One URL setting from several (each may itself hold several): comma-separated."""
    return ",".join(urls)


def url_problem(url: str) -> str | None:
    """What is wrong with `url` (one AMQP URL or several) as a short phrase; None if it
    looks right. Of several, the phrase says which: "URL 2 of 3: …".

    The bus's own check of the structure (scheme, host, port, vhost, stray
    characters), then the bus parsing it as it will when connecting (query
    options such as `?heartbeat=30`). Opens no connection.
    """
    found = _first_problem(url)
    return None if found is None else found[1]


def _first_problem(url: str) -> tuple[str, str] | None:
    """(the first bad URL of `url`, what is wrong with it, saying which of several) or None."""
    urls = params.split_urls(url)
    for index, one in enumerate(urls, 1):
        problem = params.single_url_problem(one) or _bus_problem(one)
        if problem is not None:
            return one, params.which_url(index, len(urls), problem)
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
    """`url` unchanged if every URL in it looks right; else InvalidUrl (a CorralError) naming
    `option`, showing the bad URL (password hidden) and, of several, which one it is."""
    found = _first_problem(url)
    if found is None:
        return url
    bad, problem = found
    raise InvalidUrl(bad, problem, option=option, several=len(params.split_urls(url)) > 1)
