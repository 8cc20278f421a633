"""The only package that imports pika: topology, connections, publishing, consuming, RPC.

Transport errors are translated here into `bus.errors`; nothing outside this
package mentions pika.
"""

from bus.connection import Bus
from bus.delivery import Delivery
from bus.errors import (
    AccessRefused,
    BusError,
    ConnectionLost,
    InvalidUrl,
    MessageTooLarge,
    NoRoute,
    RequestTimeout,
    TopologyError,
)
from bus.subscription import Subscription

__all__ = [
    "AccessRefused",
    "Bus",
    "BusError",
    "ConnectionLost",
    "Delivery",
    "InvalidUrl",
    "MessageTooLarge",
    "NoRoute",
    "RequestTimeout",
    "Subscription",
    "TopologyError",
]
