"""`corral top`: a live full-screen summary of the cluster (being built)."""

from __future__ import annotations

import typer

from corral.clitools import Connect


def register_top_command(app: typer.Typer, connect: Connect) -> None:
    """Add `corral top` to `app`; `connect(amqp)` makes its client."""
