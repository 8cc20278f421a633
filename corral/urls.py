"""Checking an AMQP URL before anything connects with it.

A malformed URL is a mistake on the command line or in CORRAL_AMQP_URL, so it
is refused at once with a sentence that shows the URL (password hidden), what
is wrong and the expected form, instead of a traceback from deep in the AMQP
library or a connection attempt to somewhere unintended.
"""

from __future__ import annotations

from bus import errors as bus_errors
from bus import params
from corral.errors import InvalidUrl


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as an AMQP URL, as a short phrase; None if it looks right.

    The bus's own check of the structure (scheme, host, port, vhost, stray
    characters), then the bus parsing it as it will when connecting (query
    options such as `?heartbeat=30`). Opens no connection.
    """
    return params.url_problem(url) or _bus_problem(url)


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
