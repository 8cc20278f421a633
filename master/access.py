"""Who asks: the caller of an API request, as the broker vouches for it.

The broker checks the AMQP `user_id` of every message against the connection's
own user, and lets each client user publish on `corral.requests` only under the
roles it was given (topic permissions on the routing key `<role>.<type>`, see
`bus.access`). So the master reads the caller from the delivery and trusts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["viewer", "submitter", "admin"]


@dataclass(frozen=True)
class Caller:
    user: str
    role: Role
