"""`corral context`: name brokers once, then pick one (`corral.contexts` stores them).

    corral context add prod --amqp amqps://alice:pw@rabbit1:5671/ --tls-ca ca.pem
    corral context use prod        # every later command talks to prod
    corral context list            # * marks the current one
    corral context show            # the broker a command would talk to now, and why
    corral context remove prod

Passwords are shown as *** by every command here; only the file holds them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.client import DEFAULT_URL, URL_ENV
from corral.clitools import CONTEXT_PARAM, OutputFormat, context_in_effect, fail, usage_error
from corral.contexts import (
    CONTEXT_ENV,
    DEFAULT_CONTEXT,
    Context,
    ContextError,
    Contexts,
    check_name,
    contexts_path,
    load,
    locked,
    save,
)
from corral.errors import InvalidUrl, redact_url
from corral.formats import yaml_text
from corral.tables import NONE, table
from corral.text import visible
from corral.urls import check_url, join_urls, split_urls

context_app = typer.Typer(
    help="Named brokers: add one, use it, list them. Stored in"
    " $XDG_CONFIG_HOME/corral/contexts.yaml (~/.config/corral/ by default), mode 0600.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The context's name.")]


def _tls_file(value: str | None, option: str) -> str | None:
    """The file's absolute path (a context is used from any directory); exit 2 if absent."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        usage_error(f"{option} {value!r}: no such file")
    return str(path.resolve())


def _load() -> tuple[Path, Contexts]:
    path = contexts_path()
    try:
        return path, load(path)
    except ContextError as exc:
        fail(str(exc))


@contextmanager
def _editing() -> Iterator[tuple[Path, Contexts]]:
    """The contexts file and what it holds, under its lock until the block ends (after
    `_save`): two commands that change it at once are applied one after the other."""
    path = contexts_path()
    try:
        with locked(path):
            yield _load()
    except OSError as exc:
        fail(f"could not lock {path}: {exc.strerror or exc}")


def _save(path: Path, contexts: Contexts) -> None:
    try:
        save(path, contexts)
    except OSError as exc:
        fail(f"could not write {path}: {exc.strerror or exc}")


def _get(contexts: Contexts, name: str, path: Path) -> Context:
    try:
        return contexts.get(name, path, usage=False)
    except ContextError as exc:
        fail(str(exc))


def shown_urls(urls: tuple[str, ...] | list[str]) -> str:
    """The URLs, passwords as ***, safe to print."""
    return visible(", ".join(redact_url(url) for url in urls))


def _row(context: Context, current: str | None) -> list[str]:
    tls = "yes" if context.tls_ca or context.tls_cert else NONE
    return ["*" if context.name == current else "", context.name, shown_urls(context.urls), tls]


def _data(context: Context, current: str | None) -> dict[str, Any]:
    return {
        "name": context.name,
        "current": context.name == current,
        "amqp": [redact_url(url) for url in context.urls],
        "tls_ca": context.tls_ca,
        "tls_cert": context.tls_cert,
        "tls_key": context.tls_key,
    }


@context_app.command(no_args_is_help=True)
def add(
    name: NameArg,
    amqp: Annotated[
        list[str],
        typer.Option(
            "--amqp",
            metavar="URL",
            help="The broker's URL; repeat it (or separate with commas) for a broker cluster.",
            show_default=False,
        ),
    ],
    tls_ca: Annotated[
        str | None, typer.Option("--tls-ca", metavar="FILE", help="CA for amqps:// URLs.")
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", metavar="FILE", help="Client certificate.")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", metavar="FILE", help="The certificate's key.")
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Make it the current context too.")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a context of that name.")
    ] = False,
) -> None:
    """Save a broker under NAME (then `corral context use NAME`)."""
    problem = check_name(name)
    if problem:
        usage_error(f"context name {name!r}: {problem}")
    try:
        url = check_url(join_urls(item.strip(",") for item in amqp), option="--amqp")
    except InvalidUrl as exc:
        usage_error(str(exc))
    context = Context(
        name,
        tuple(split_urls(url)),
        _tls_file(tls_ca, "--tls-ca"),
        _tls_file(tls_cert, "--tls-cert"),
        _tls_file(tls_key, "--tls-key"),
    )
    with _editing() as (path, contexts):
        if name in contexts.contexts and not replace:
            usage_error(f"context {name!r} exists: add --replace to replace it")
        contexts = contexts.with_context(context)
        if use:
            contexts.current = name
        _save(path, contexts)
    verb = "replaced" if replace else "added"
    hint = "; it is the current context" if use else f" (`corral context use {name}` uses it)"
    typer.echo(f"context {name} {verb}: {shown_urls(context.urls)}{hint}")


@context_app.command(no_args_is_help=True)
def use(name: NameArg) -> None:
    """Talk to NAME's broker from now on (`default`: no context)."""
    with _editing() as (path, contexts):
        if name == DEFAULT_CONTEXT:
            contexts.current = None
            _save(path, contexts)
            typer.echo(f"no current context: commands talk to {redact_url(DEFAULT_URL)}")
            return
        context = _get(contexts, name, path)
        contexts.current = name
        _save(path, contexts)
    typer.echo(f"current context: {name} ({shown_urls(context.urls)})")
    _warn_overridden()


@context_app.command("list")
def list_contexts(
    fmt: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="table, json or yaml.")
    ] = OutputFormat.table,
) -> None:
    """List the contexts; * marks the current one."""
    _, contexts = _load()
    ordered = [contexts.contexts[name] for name in sorted(contexts.contexts)]
    if fmt == OutputFormat.table:
        if not ordered:
            typer.echo("no contexts yet: `corral context add NAME --amqp URL` adds one", err=True)
        rows = [_row(context, contexts.current) for context in ordered]
        typer.echo(table(("CURRENT", "NAME", "BROKER", "TLS"), rows))
        return
    items = [_data(context, contexts.current) for context in ordered]
    typer.echo(json.dumps(items, indent=2) if fmt == OutputFormat.json else yaml_text(items))


@context_app.command(no_args_is_help=True)
def remove(name: NameArg) -> None:
    """Forget the context NAME (if it is the current one, no context is current after)."""
    with _editing() as (path, contexts):
        _get(contexts, name, path)
        del contexts.contexts[name]
        note = ""
        if contexts.current == name:
            contexts.current = None
            note = f"; no context is current now (commands talk to {redact_url(DEFAULT_URL)})"
        _save(path, contexts)
    typer.echo(f"context {name} removed{note}")


@context_app.command()
def show(ctx: typer.Context) -> None:
    """Which broker a command would talk to now, and why."""
    if os.environ.get(URL_ENV):
        typer.echo(f"broker: {shown_urls([os.environ[URL_ENV]])} (from {URL_ENV})")
        typer.echo(f"({URL_ENV} wins over any context; --amqp wins over both)")
        return
    name = ctx.find_root().params.get(CONTEXT_PARAM) or os.environ.get(CONTEXT_ENV) or None
    context, path = context_in_effect(ctx)
    if context is None:
        typer.echo(f"context: none (file: {path})")
        typer.echo(f"broker: {redact_url(DEFAULT_URL)} (the default)")
        return
    why = "the current context" if not name else f"from --context or {CONTEXT_ENV}"
    typer.echo(f"context: {context.name} ({why}; file: {path})")
    typer.echo(f"broker: {shown_urls(context.urls)}")
    files = (("ca", context.tls_ca), ("cert", context.tls_cert), ("key", context.tls_key))
    for label, value in files:
        if value:
            typer.echo(f"tls {label}: {visible(value)}")


def _warn_overridden() -> None:
    if os.environ.get(URL_ENV):
        typer.echo(f"note: {URL_ENV} is set in this shell, and wins over any context", err=True)
