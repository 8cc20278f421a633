"""Colour only on a terminal, respecting NO_COLOR (https://no-color.org) and TERM=dumb,
with `--color always|never` over both; painted after escaping, measured without codes."""

from __future__ import annotations

import os
import pty
from collections.abc import Iterator
from typing import TextIO

import pytest

from corral.colour import GREEN, RED, RESET, YELLOW, ColourMode, paint_state, wanted
from corral.rows import NODE_COLUMNS, TASK_COLUMNS
from corral.tables import table


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    """The writing end of a pseudo-terminal."""
    parent, child = pty.openpty()
    with os.fdopen(child, "w") as stream:
        yield stream
    os.close(parent)


@pytest.fixture
def pipe() -> Iterator[TextIO]:
    reading, writing = os.pipe()
    with os.fdopen(writing, "w") as stream:
        yield stream
    os.close(reading)


def test_auto_is_colour_on_a_terminal_only(terminal: TextIO, pipe: TextIO) -> None:
    assert wanted(ColourMode.auto, terminal, {}) is True
    assert wanted(ColourMode.auto, pipe, {}) is False


@pytest.mark.parametrize(
    ("environ", "coloured"),
    [
        ({"NO_COLOR": "1"}, False),
        ({"NO_COLOR": "anything"}, False),
        ({"NO_COLOR": ""}, True),  # set but empty: as if unset (no-color.org)
        ({"TERM": "dumb"}, False),
        ({"TERM": "xterm-256color"}, True),
    ],
)
def test_no_color_and_a_dumb_terminal_turn_auto_off(
    terminal: TextIO, environ: dict[str, str], coloured: bool
) -> None:
    assert wanted(ColourMode.auto, terminal, environ) is coloured


def test_always_and_never_win_over_everything(terminal: TextIO, pipe: TextIO) -> None:
    assert wanted(ColourMode.always, pipe, {"NO_COLOR": "1"}) is True
    assert wanted(ColourMode.never, terminal, {}) is False


@pytest.mark.parametrize(
    ("cell", "code"),
    [
        ("running", GREEN),
        ("ready,cordoned", GREEN),
        ("healthy", GREEN),
        ("pending", YELLOW),
        ("suspect", YELLOW),
        ("updating 2/4 v2→v3", YELLOW),
        ("degraded 5/8", YELLOW),
        ("failed", RED),
        ("down,draining", RED),
        ("unhealthy", RED),
        ("lost", RED),
    ],
)
def test_state_cells_take_the_colour_of_their_first_word(cell: str, code: str) -> None:
    assert paint_state(cell) == f"{code}{cell}{RESET}"


@pytest.mark.parametrize("cell", ["exited", "stopped", "cancelled", "standby", "-", ""])
def test_quiet_states_stay_plain(cell: str) -> None:
    assert paint_state(cell) == cell


def test_columns_are_measured_on_the_visible_text_and_escapes_come_first() -> None:
    headers = TASK_COLUMNS.heads(False)[:6]
    rows = [
        ["t1", "web", "n1", "-", "running", "healthy"],
        ["t2", "web", "n2", "-", "x\x1b[31m", "-"],
    ]
    paint = TASK_COLUMNS.painters(False, paint_state)
    painted = table(headers, rows, paint=paint).split("\n")
    plain = table(headers, rows).split("\n")
    assert [line.replace(GREEN, "").replace(RESET, "") for line in painted] == plain
    assert painted[1].endswith(f"{GREEN}running{RESET}    {GREEN}healthy{RESET}")
    assert "x\\x1b[31m" in painted[2]  # the broker's escape, escaped, never painted over
    assert painted[2].count("\x1b") == 0


def test_the_state_columns_of_each_listing() -> None:
    assert set(TASK_COLUMNS.painters(False, paint_state)) == {4, 5}  # STATE, HEALTH
    wide = NODE_COLUMNS.heads(True)
    assert [wide[i] for i in NODE_COLUMNS.painters(True, paint_state)] == ["STATE"]
