"""Small helpers the CLI commands share: error exits, option parsing, logging setup."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer

from bus.tls import Tls
from corral.client import DEFAULT_URL, URL_ENV, Client
from corral.contexts import CONTEXT_ENV, Context, ContextError, chosen, contexts_path
from corral.errors import CorralError, InvalidUrl
from corral.text import visible
from corral.urls import check_url, join_urls, split_urls
from schemas.files import JobFileError
from schemas.job import parse_size

P = ParamSpec("P")
R = TypeVar("R")


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


# The app's global `--context NAME` (CORRAL_CONTEXT).
CONTEXT_PARAM = "context_name"
# The TLS files of the context the running command's URLs came from, for its client:
# typer hands a command its --amqp value as a plain list, and `Connect` takes only that.
# Set (to None without a context) each time a command's --amqp is resolved.
_context_tls: ContextVar[Tls | None] = ContextVar("corral_context_tls", default=None)
ContextOpt = Annotated[
    str | None,
    typer.Option(
        "--context",
        envvar=CONTEXT_ENV,
        metavar="NAME",
        help="Talk to the broker of this context (`corral context list`), not the current"
        " one. --amqp and CORRAL_AMQP_URL still win.",
        show_default=False,
    ),
]


def check_amqp_option(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """Refuse a malformed --amqp URL (or CORRAL_AMQP_URL) before the command runs: exit 2."""
    try:
        return check_url(value, option="--amqp")
    except InvalidUrl as exc:
        source = ctx.get_parameter_source(param.name) if param.name else None
        from_env = getattr(source, "name", "") == "ENVIRONMENT"
        usage_error(f"{exc} (it came from {URL_ENV})" if from_env else str(exc))


def check_amqp_urls(
    ctx: typer.Context, param: typer.CallbackParam, values: list[str] | None
) -> list[str]:
    """`check_amqp_option` for a repeatable --amqp: every URL given, one per item, in order
    (a comma-separated item counts as several). Neither --amqp nor CORRAL_AMQP_URL given:
    the URLs of the context in effect (`corral.contexts.chosen`), else DEFAULT_URL."""
    _context_tls.set(None)
    source = ctx.get_parameter_source(param.name) if param.name else None
    if getattr(source, "name", "DEFAULT") in ("DEFAULT", "DEFAULT_MAP"):
        return context_urls(ctx)
    return check_given_amqp_urls(ctx, param, values)


def check_given_amqp_urls(
    ctx: typer.Context, param: typer.CallbackParam, values: list[str] | None
) -> list[str]:
    """`check_amqp_urls` without contexts: the URLs given, else DEFAULT_URL."""
    # click splits CORRAL_AMQP_URL at blanks: "URL1, URL2" comes as ["URL1,", "URL2"].
    items = [item.strip(",") for item in values or [DEFAULT_URL]]
    url = check_amqp_option(ctx, param, join_urls(item for item in items if item))
    return split_urls(url)


def context_in_effect(ctx: typer.Context) -> tuple[Context | None, Path]:
    """The context named by --context or CORRAL_CONTEXT, else the current one (None: no
    context), and the contexts file. Exits 2 for an unknown context named on the command
    line, 1 for an unreadable contexts file."""
    name = ctx.find_root().params.get(CONTEXT_PARAM) or os.environ.get(CONTEXT_ENV) or None
    path = contexts_path()
    try:
        return chosen(name, path), path
    except ContextError as exc:
        if exc.usage:
            usage_error(str(exc))
        fail(str(exc))


def context_urls(ctx: typer.Context) -> list[str]:
    """The URLs of the context in effect (see `corral.contexts`), or [DEFAULT_URL]; its TLS
    files are kept for `context_tls`. Exits 2 for an unknown context named on the command
    line, 1 for an unreadable contexts file or a bad URL in it."""
    context, path = context_in_effect(ctx)
    if context is None:
        return [DEFAULT_URL]
    try:
        url = check_url(join_urls(context.urls), option="--amqp")
    except InvalidUrl as exc:
        fail(f"{exc} (it came from context {context.name!r} in {path})")
    _context_tls.set(context.tls())
    return split_urls(url)


def connector(connect: Connect, amqp: list[str] | str) -> Callable[[], Client]:
    """`connect(amqp)` to be called later on another thread (a live model's): with what
    this command's options chose (a context's TLS files), which a new thread does not see."""
    chosen = contextvars.copy_context()
    return lambda: chosen.run(connect, amqp)


def context_tls() -> Tls | None:
    """The TLS files of the context this command's URLs came from (None: no context, or
    one without TLS files; a Client then reads CORRAL_TLS_CA, ... itself)."""
    return _context_tls.get()


AMQP_HELP = (
    "RabbitMQ URL: amqp://USER:PASSWORD@HOST:PORT/VHOST. For the nodes of a broker"
    " cluster, repeat --amqp or separate the URLs with commas."
)

# Every command that talks to the broker takes this option, with `= DEFAULT_URL`.
# One URL, or several separated by commas (CORRAL_AMQP_URL too); not repeatable.
Amqp = Annotated[
    str,
    typer.Option(
        "--amqp",
        envvar=URL_ENV,
        metavar="URL",
        help=AMQP_HELP,
        callback=check_amqp_option,
    ),
]

# The same, repeatable (`--amqp URL1 --amqp URL2`), with `= DEFAULT_URLS`: the command gets
# every URL, one per item (join them with `corral.urls.join_urls` for a URL setting).
# CORRAL_AMQP_URL stays one value: URLs separated by commas (or blanks). Neither given,
# the URLs of the context in effect (`corral.contexts`), and DEFAULT_URL without one.
AmqpUrls = Annotated[
    list[str],
    typer.Option(
        "--amqp",
        envvar=URL_ENV,
        metavar="URL",
        help=AMQP_HELP + " Without it: the context's (`corral context`), else the default.",
        callback=check_amqp_urls,
    ),
]
DEFAULT_URLS = [DEFAULT_URL]

# The same for a daemon (`corral master`, `corral worker`): a process with a broker user
# of its own is told its URL, and never follows the contexts of whoever starts it.
DaemonAmqpUrls = Annotated[
    list[str],
    typer.Option(
        "--amqp",
        envvar=URL_ENV,
        metavar="URL",
        help=AMQP_HELP,
        callback=check_given_amqp_urls,
    ),
]

# TLS for amqps:// URLs (the daemons' options; a client reads the same variables).
TlsCaOpt = Annotated[
    str | None,
    typer.Option(
        "--tls-ca",
        envvar="CORRAL_TLS_CA",
        metavar="FILE",
        help="CA certificate(s) to check the broker's certificate (amqps:// URLs).",
    ),
]
TlsCertOpt = Annotated[
    str | None,
    typer.Option(
        "--tls-cert",
        envvar="CORRAL_TLS_CERT",
        metavar="FILE",
        help="Client certificate: with a URL without password, log in by it (its CN).",
    ),
]
TlsKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--tls-key", envvar="CORRAL_TLS_KEY", metavar="FILE", help="The client certificate's key."
    ),
]


def tls_option(ca: str | None, cert: str | None, key: str | None) -> Tls | None:
    """The TLS setting from the three options, None when none is given."""
    tls = Tls(ca_file=ca, cert_file=cert, key_file=key)
    return tls if tls.given else None


# What the command modules get to make their client: the --amqp URLs (a list, or one
# string of comma-separated URLs) -> a Client. `corral.cli` passes its own, the one
# place a client is built (tests replace it).
Connect = Callable[[list[str] | str], Client]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class ListFormat(StrEnum):
    """How a listing is shown: see docs/cli.md."""

    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json or yaml.")]
ListOutput = Annotated[
    ListFormat,
    typer.Option(
        "--output",
        "-o",
        help="table, wide (more columns), json or yaml (the API's fields: docs/cli.md).",
    ),
]
NoHeadersOpt = Annotated[
    bool, typer.Option("--no-headers", help="No header line (table and wide).")
]
WatchOpt = Annotated[
    bool,
    typer.Option(
        "--watch",
        "-w",
        help="Then keep it current: on a terminal the table is redrawn as it changes;"
        " otherwise each changed row is printed (json, yaml: each changed item). Ctrl-C ends.",
    ),
]


# The options of the commands that run and change jobs (`corral.cli`).
class Kind(StrEnum):
    batch = "batch"
    service = "service"


class Restart(StrEnum):
    always = "always"
    on_failure = "on-failure"
    never = "never"


JobArg = Annotated[str, typer.Argument(metavar="JOB")]
WaitOpt = Annotated[
    bool,
    typer.Option(help="Wait until the job ends (a service: until every replica is healthy)."),
]
EnvOpt = Annotated[
    list[str] | None, typer.Option("--env", "-e", metavar="K=V", help="Environment variable.")
]
SecretEnvOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--secret-env",
        metavar="K=V|K=@FILE",
        help="Secret variable: its value is shown as *** (@FILE: read it from FILE, here).",
    ),
]


WaitTimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="Give up waiting after this long."),
]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`.

    The message may quote the master or a worker, so control characters other
    than newlines are shown escaped (see `corral.text`).
    """
    typer.echo(f"error: {visible(message, keep=chr(10))}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print `warning: message` on stderr (escaped like `fail`) and carry on."""
    typer.echo(f"warning: {visible(message, keep=chr(10))}", err=True)


def usage_error(message: str) -> NoReturn:
    """A problem with the command line itself: exit 2, like click's own usage errors."""
    fail(message, code=2)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can fix into `error: ...` and exit 1, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (CorralError, JobFileError) as exc:
            fail(str(exc))

    return wrapper


def parse_pairs(values: Iterable[str] | None, option: str) -> dict[str, str]:
    """`["a=1", "b=x=y"]` -> {"a": "1", "b": "x=y"}; BadParameter naming `option` otherwise."""
    pairs: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        pairs[key.strip()] = value
    return pairs


def parse_size_option(value: str | None, option: str) -> int | None:
    """A byte size such as 512m or 2g; BadParameter naming `option` otherwise."""
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if size <= 0:
        raise typer.BadParameter(f"must be more than 0, got {value!r}", param_hint=option)
    return size


def setup_logging(level: str) -> None:
    """Daemon logging: timestamped lines on stderr."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)
    if level != LogLevel.debug:
        # pika narrates every channel, and logs each failed connect with a traceback; the
        # bus reports the same problems once, in a line an operator can act on.
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def installed_version() -> str:
    """Corral's version as installed (pyproject's `version`), or "unknown" from a bare
    source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("corral")
    except PackageNotFoundError:
        return "unknown"


def print_version(value: bool) -> None:
    """The eager `--version` option: print `corral <version>` and exit."""
    if value:
        typer.echo(f"corral {installed_version()}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option(
        "--version", callback=print_version, is_eager=True, help="Print the version and exit."
    ),
]
