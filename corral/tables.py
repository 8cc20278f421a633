"""Aligned text tables, and the small cell formats they share. Pure functions.

Every cell goes through `corral.text.visible` before anything else: text from
the broker is untrusted, and a control character in an image name or a reason
shows as `\\n` or `\\x1b` instead of breaking the table or driving the terminal.
Colour (`paint`) is added after that, and columns are measured on the visible
text, never on the escape codes. They are measured in terminal cells (`width`),
not code points: a CJK character takes two, a combining accent none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from rich.cells import cell_len

from corral.text import visible

T = TypeVar("T")

NONE = "-"
# Column index -> what wraps a cell of that column (in colour) once it is measured.
Painters = Mapping[int, Callable[[str], str]]


def width(text: str) -> int:
    """The terminal cells `text` takes (2 per East Asian wide character, 0 per combining
    one). For `visible` text, without escape codes: measure before painting."""
    if text.isascii():
        return len(text)  # the common case; `visible` left no control characters
    return cell_len(text)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    headers_shown: bool = True,
    paint: Painters | None = None,
) -> str:
    """Plain columns separated by two spaces; the last column is not padded."""
    return "\n".join(stream_table(headers, [rows], headers_shown=headers_shown, paint=paint))


def stream_table(
    headers: Sequence[str],
    pages: Iterable[Sequence[Sequence[str]]],
    *,
    headers_shown: bool = True,
    paint: Painters | None = None,
) -> Iterator[str]:
    """The lines of a table whose rows come a page at a time: the header, then each row.

    Only one page is held at once. A column is as wide as its widest cell so
    far, so columns may widen at a page boundary but never narrow; with a
    single page this is `table`. The header waits for the first page with rows
    (a filtered listing may yield empty pages first). Cells are made `visible`,
    then painted. Without `headers_shown` there is no header line, and an empty
    table is no lines at all.
    """
    stream = TableStream(headers, headers_shown=headers_shown, paint=paint)
    for page in pages:
        yield from stream.lines(page)
    yield from stream.end()


class TableStream:
    """`stream_table` fed by hand: `lines(page)` for each page of rows as it comes (a
    watched listing's changed rows), then `end()`. The widths carry over between pages."""

    def __init__(
        self,
        headers: Sequence[str],
        *,
        headers_shown: bool = True,
        paint: Painters | None = None,
    ) -> None:
        self.headers = headers
        self.paint = paint
        self.widths = [width(header) if headers_shown else 0 for header in headers]
        self.header_done = not headers_shown

    def lines(self, page: Sequence[Sequence[str]]) -> list[str]:
        """The lines of `page`: the header first if it was not printed yet."""
        if not page:
            return []
        rows = [[visible(cell) for cell in row] for row in page]
        for row in rows:
            for i, cell in enumerate(row):
                self.widths[i] = max(self.widths[i], width(cell))
        lines = [] if self.header_done else [_line(self.headers, self.widths)]
        self.header_done = True
        return lines + [_line(row, self.widths, self.paint) for row in rows]

    def end(self) -> list[str]:
        """The header alone, if no row ever came (and headers are shown)."""
        if self.header_done:
            return []
        self.header_done = True
        return [_line(self.headers, self.widths)]


def _line(cells: Sequence[str], widths: Sequence[int], paint: Painters | None = None) -> str:
    parts = []
    for i, (cell, column) in enumerate(zip(cells, widths, strict=True)):
        painter = paint.get(i) if paint and cell else None
        parts.append((painter(cell) if painter else cell) + " " * (column - width(cell)))
    return "  ".join(parts).rstrip()


def flatten(pages: Iterable[Iterable[T]]) -> Iterator[T]:
    for page in pages:
        yield from page


def rows_by_page(
    pages: Iterable[Sequence[T]], row: Callable[[T], list[str]]
) -> Iterator[list[list[str]]]:
    """Each page of models as a page of table rows (for `stream_table`)."""
    for page in pages:
        yield [row(item) for item in page]


def age(when: datetime, now: datetime | None = None) -> str:
    """A short duration since `when`: 42s, 5m, 3h, 2d."""
    now = now or datetime.now(UTC)
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def seconds_ago(seconds: float) -> str:
    """A short time since: 0.4s under ten seconds, then as `age` (42s, 5m, 3h, 2d)."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    return age(datetime.fromtimestamp(0, UTC), datetime.fromtimestamp(seconds, UTC))


def cpus(value: float) -> str:
    return f"{value:g}"
