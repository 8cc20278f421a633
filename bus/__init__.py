"""The only package that imports pika: topology, connections, publishing, consuming, RPC.

Transport errors are translated here into `bus.errors`; nothing outside this
package mentions pika.
"""

from bus.connection import Bus, Delivery, Subscription
from bus.errors import BusError, ConnectionLost, RequestTimeout, TopologyError

__all__ = [
    "Bus",
    "BusError",
    "ConnectionLost",
    "Delivery",
    "RequestTimeout",
    "Subscription",
    "TopologyError",
]
