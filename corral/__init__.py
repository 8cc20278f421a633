"""Corral's user-facing side: the Python SDK (`Client`, `Job`) and the `corral` CLI.

Importing this package opens no connection; a `Client` connects on first use.
"""

from corral.client import Client, Event
from corral.errors import (
    ApiFailure,
    BrokerUnreachable,
    CorralError,
    InvalidSpec,
    InvalidUrl,
    NoCluster,
    NoMaster,
    WaitTimeout,
)
from corral.job import Job

__all__ = [
    "ApiFailure",
    "BrokerUnreachable",
    "Client",
    "CorralError",
    "Event",
    "InvalidSpec",
    "InvalidUrl",
    "Job",
    "NoCluster",
    "NoMaster",
    "WaitTimeout",
]
