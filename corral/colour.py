"""Colour in listings: state cells in green, yellow or red, only where it helps.

Colour is on when stdout is a terminal, TERM is not `dumb` and NO_COLOR is unset
or empty (https://no-color.org); `corral --color always|never` overrides all
three. A cell is painted after it was made `visible` and measured (see
`corral.tables`), so an escape code never comes from the broker and never
shifts a column.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, TextIO

import typer

RESET = "\x1b[0m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
RED = "\x1b[31m"

# A state cell's first word -> its colour. Words not here (exited, stopped, cancelled,
# standby, -) stay plain: nothing is wrong, and nothing is happening.
STATE_COLOURS: Mapping[str, str] = {
    **dict.fromkeys(("running", "ready", "healthy", "complete", "active", "done"), GREEN),
    **dict.fromkeys(
        (
            "pending",
            "assigned",
            "starting",
            "suspect",
            "disconnected",
            "degraded",
            "updating",
            "rolling-back",
            "retiring",
            "claiming",
            "paused",
        ),
        YELLOW,
    ),
    **dict.fromkeys(("failed", "down", "lost", "unhealthy", "rolled-back"), RED),
}


class ColourMode(StrEnum):
    auto = "auto"
    always = "always"
    never = "never"


# The app's global option (`corral --color never ps`); read back by `enabled`.
COLOUR_PARAM = "color"
ColourOpt = Annotated[
    ColourMode,
    typer.Option(
        "--color",
        help="Colour the state columns: auto (on a terminal, unless NO_COLOR is set),"
        " always or never.",
    ),
]


def wanted(mode: ColourMode, stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether output to `stream` gets colour under `mode` (see the module docstring)."""
    if mode != ColourMode.auto:
        return mode == ColourMode.always
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def mode_given(ctx: typer.Context) -> ColourMode:
    """The `--color` given to the app that runs the command of `ctx` (default auto)."""
    value = ctx.find_root().params.get(COLOUR_PARAM)
    return ColourMode(value) if value else ColourMode.auto


def enabled(ctx: typer.Context, stream: TextIO | None = None) -> bool:
    """Whether the command of `ctx` colours what it prints on `stream` (default stdout)."""
    return wanted(mode_given(ctx), stream or sys.stdout)


def paint_state(cell: str) -> str:
    """`cell` in the colour of its first word (`ready,cordoned` is ready's green)."""
    word = cell.replace(",", " ").split(" ", 1)[0]
    colour = STATE_COLOURS.get(word)
    return f"{colour}{cell}{RESET}" if colour else cell
