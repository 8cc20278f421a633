"""How `ClusterState.apply` finds its handler: one method per event class, registered with
`handles` (here so that the state's parts in other modules register theirs too)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from master import events as ev

E = TypeVar("E", bound=ev.Event)
Handler = Callable[[Any, Any], None]
HANDLERS: dict[type[ev.Event], Handler] = {}


def handles(kind: type[E]) -> Callable[[Callable[[Any, E], None]], Handler]:
    """Register a method as `apply`'s handler of one event class."""

    def register(method: Callable[[Any, E], None]) -> Handler:
        HANDLERS[kind] = method
        return method

    return register


def add(counter: Counter[Any], key: Any, amount: int) -> None:
    """Add to a count, dropping keys that reach zero (counters of gone things stay empty)."""
    counter[key] += amount
    if counter[key] == 0:
        del counter[key]
