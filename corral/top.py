"""`corral top`: a live full-screen summary of the cluster, like htop.

The picture is `corral.live.LiveCluster`'s (listings kept current by status
events) drawn by `corral.live_screen.screen`; a frame is drawn only when the
view or the terminal's size changed, at most `FRAMES_PER_SECOND` times a
second. `q` or Ctrl-C quits and gives the terminal back as it was (the
alternate screen left, the cursor shown, the keyboard's mode restored).
`--once` prints one frame and exits (also what happens when stdout is not a
terminal).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.live import Live

from corral.clitools import DEFAULT_URLS, AmqpUrls, Connect, connector, fail, friendly_errors
from corral.live import LiveCluster, View
from corral.live_screen import screen

FRAMES_PER_SECOND = 4
# How long --once waits for the first picture of the cluster.
ONCE_TIMEOUT = 60.0
QUIT_KEYS = frozenset("qQ\x03")  # \x03: Ctrl-C, should the terminal pass it as a key


def register_top_command(app: typer.Typer, connect: Connect) -> None:
    """Add `corral top` to `app`; `connect(amqp)` makes its client."""

    @app.command()
    @friendly_errors
    def top(
        once: Annotated[
            bool, typer.Option("--once", help="Print one frame and exit (for scripts).")
        ] = False,
        amqp: AmqpUrls = DEFAULT_URLS,
    ) -> None:
        """Show the cluster live, full screen: masters, nodes (CPU and memory booked), jobs
        (healthy replicas, rollouts) and the newest events. q or Ctrl-C quits."""
        # The bus and the live model log to stderr, which would scribble on the screen.
        logging.getLogger().addHandler(logging.NullHandler())
        live = LiveCluster(connector(connect, amqp))
        live.start()
        try:
            if once or not sys.stdout.isatty():
                print_once(live, Console())
            else:
                run(live, Console())
        finally:
            live.stop(timeout=2.0)


def print_once(live: LiveCluster, console: Console) -> None:
    """Print the first complete picture; exit 1 if the cluster cannot be reached."""
    view = live.wait(0, ONCE_TIMEOUT)
    if not view.connected:
        fail(f"cannot show the cluster: {view.problem or 'no answer'}")
    width, height = console.size
    lines = int(os.environ.get("LINES") or 0) or (height if console.is_terminal else 50)
    console.print(screen(view, width, lines))


def run(live: LiveCluster, console: Console) -> None:
    """Draw frames until q or Ctrl-C; the terminal is restored however it ends."""
    shown: tuple[int, tuple[int, int]] | None = None
    last_frame = 0.0
    with keyboard() as keys, Live(console=console, screen=True, auto_refresh=False) as frame:
        try:
            while True:
                view = live.view()
                drawn = (view.version, (console.size.width, console.size.height))
                due = last_frame + 1 / FRAMES_PER_SECOND - time.monotonic()
                if drawn != shown and due <= 0:
                    frame.update(draw(view, console), refresh=True)
                    shown, last_frame = drawn, time.monotonic()
                    due = 1 / FRAMES_PER_SECOND
                if QUIT_KEYS & set(keys.read(max(due, 0.05) if drawn != shown else 0.25)):
                    return
        except KeyboardInterrupt:
            return


def draw(view: View, console: Console) -> RenderableType:
    width, height = console.size
    return screen(view, width, height)


class Keys:
    """The keys typed, read without waiting for Enter (none when stdin is no terminal)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def read(self, timeout: float) -> str:
        """What was typed within `timeout` s ("" if nothing)."""
        if self.fd is None:
            time.sleep(timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        return os.read(self.fd, 64).decode(errors="replace")


@contextlib.contextmanager
def keyboard() -> Iterator[Keys]:
    """Keys as they are typed (cbreak mode: Ctrl-C still interrupts); the terminal's
    mode is restored on the way out."""
    if not sys.stdin.isatty():
        yield Keys(None)
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield Keys(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
