"""Printing a listing (`jobs`, `ps`, `nodes`, `masters`): once, page by page as the
master sends them, or on watch (`corral.watching`): redrawn on a terminal, else
each changed item as it changes.

- table, wide: aligned columns (`corral.rows`), state cells painted when `colour`;
- json: one JSON array, streamed a model at a time; on watch, one object per line;
- yaml: the same data, a YAML list; on watch, one document (`---`) per item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import typer
from pydantic import BaseModel

from corral import colour
from corral.clitools import ListFormat
from corral.formats import json_line, stream_json, stream_yaml, yaml_document
from corral.rows import Columns
from corral.tables import Painters, TableStream, flatten, rows_by_page, stream_table, table

M = TypeVar("M", bound=BaseModel)

# Cursor home, then erase the screen: a redraw starts from a blank terminal.
CLEAR = "\x1b[H\x1b[2J"


def echo(text: str, nl: bool = True) -> None:
    """Print on stdout. Colour codes are only ever in `text` when they are wanted
    (`corral.colour.enabled`), so click is told not to strip them."""
    typer.echo(text, nl=nl, color=True)


@dataclass(frozen=True)
class View(Generic[M]):
    """How one run of a listing command shows its items."""

    columns: Columns[M]
    fmt: ListFormat = ListFormat.table
    headers_shown: bool = True
    colour: bool = False

    @property
    def tabular(self) -> bool:
        return self.fmt in (ListFormat.table, ListFormat.wide)

    @property
    def wide(self) -> bool:
        return self.fmt == ListFormat.wide

    @property
    def headers(self) -> tuple[str, ...]:
        return self.columns.heads(self.wide)

    @property
    def cells(self) -> Callable[[M], list[str]]:
        return self.columns.cells(self.wide)

    @property
    def paint(self) -> Painters | None:
        return self.columns.painters(self.wide, colour.paint_state) if self.colour else None

    def table_stream(self) -> TableStream:
        return TableStream(self.headers, headers_shown=self.headers_shown, paint=self.paint)


def print_listing(view: View[M], pages: Iterable[Sequence[M]]) -> None:
    """Print every page as it comes: a table, or one JSON array or YAML list."""
    if view.fmt == ListFormat.json:
        for piece in stream_json(flatten(pages)):
            echo(piece, nl=False)
        echo("")
    elif view.fmt == ListFormat.yaml:
        for piece in stream_yaml(flatten(pages)):
            echo(piece, nl=False)
    else:
        rows = rows_by_page(pages, view.cells)
        for line in stream_table(
            view.headers, rows, headers_shown=view.headers_shown, paint=view.paint
        ):
            echo(line)


def filtered(pages: Iterable[Sequence[M]], keep: Callable[[M], bool]) -> Iterable[list[M]]:
    """Each page with only the items `keep` takes (pages may come out empty)."""
    for page in pages:
        yield [item for item in page if keep(item)]


class ChangedItems(Generic[M]):
    """A watch's display off a terminal (or as json/yaml): the listing, then each
    changed item as a row (aligned with the rows before it), a JSON line or a YAML
    document."""

    def __init__(self, view: View[M]) -> None:
        self.view = view
        self._table = view.table_stream()

    def first(self, items: Sequence[M]) -> None:
        self._show(items)
        if self.view.tabular:
            for line in self._table.end():  # the header alone, for an empty listing
                echo(line)

    def update(self, changed: Sequence[M], items: Sequence[M]) -> None:
        self._show(changed)

    def _show(self, items: Sequence[M]) -> None:
        if self.view.fmt == ListFormat.json:
            for item in items:
                echo(json_line(item))
        elif self.view.fmt == ListFormat.yaml:
            for item in items:
                echo(yaml_document(item), nl=False)
        else:
            for line in self._table.lines([self.view.cells(item) for item in items]):
                echo(line)


class Redraw(Generic[M]):
    """A watch's display on a terminal: the whole table again after each change (at most
    every `corral.watching.GAP` s), under the time it was read."""

    def __init__(self, view: View[M], clock: Callable[[], datetime] = datetime.now) -> None:
        self.view = view
        self.clock = clock

    def first(self, items: Sequence[M]) -> None:
        self._draw(items)

    def update(self, changed: Sequence[M], items: Sequence[M]) -> None:
        self._draw(items)

    def _draw(self, items: Sequence[M]) -> None:
        rows = [self.view.cells(item) for item in items]
        text = table(
            self.view.headers, rows, headers_shown=self.view.headers_shown, paint=self.view.paint
        )
        echo(f"{CLEAR}as of {self.clock():%H:%M:%S} (Ctrl-C ends)\n{text}")
