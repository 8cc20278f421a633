"""`corral dashboard`: a read-only web view of the cluster (being built)."""

from __future__ import annotations

import typer

from corral.clitools import Connect


def register_dashboard_command(app: typer.Typer, connect: Connect) -> None:
    """Add `corral dashboard` to `app`; `connect(amqp)` makes its client."""
