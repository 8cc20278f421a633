"""The master's settings, built once at the edge (the CLI) and passed down."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class MasterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amqp_url: str
    name: str = "master"
    heartbeat_interval: Annotated[float, Field(gt=0)] = 1.0
    suspect_after: Annotated[float, Field(gt=0)] = 2.0
    dead_after: Annotated[float, Field(gt=0)] = 3.0
    tick: Annotated[float, Field(gt=0)] = 0.25
    # If more than this share of ready nodes go silent at once, hold: it is the
    # broker or our own link failing, not the fleet.
    partition_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
