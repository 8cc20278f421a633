"""`corral status` and `corral masters` on one screen each. Pure functions.

Text from the master goes through `corral.text.visible` (via `corral.tables`
for the table cells), as everywhere in the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from corral.brokers import BrokerNode
from corral.formats import yaml_text
from corral.rows import MASTER_HEADERS, by_role, master_row
from corral.tables import NONE, cpus, table
from corral.text import visible
from schemas.api import ClusterStatus, MastersInfo
from schemas.job import format_size

JOB_STATES = ("pending", "running", "degraded", "complete", "failed", "cancelled")
# Shown even when none; a node in another state (disconnected) is listed when some are.
NODE_STATES = ("ready", "suspect", "down")
INDENT = "  "


def masters_table(info: MastersInfo) -> str:
    """`corral masters`: one row per master, the active one first."""
    text = table(MASTER_HEADERS, [master_row(m) for m in by_role(info.masters)])
    if info.omitted:
        text += f"\n({info.omitted} more masters not shown)"
    return text


def _counts(counts: dict[str, int], known: Sequence[str], *, zeros: bool = False) -> str:
    """`2 running, 1 failed`: the known states in their order (with zeros if asked),
    then any others by name."""
    order = [*known, *sorted(set(counts) - set(known))]
    parts = [f"{counts.get(s, 0)} {s}" for s in order if (zeros and s in known) or counts.get(s)]
    return visible(", ".join(parts)) or "none"


def approximate_size(size: int) -> str:
    """A byte size to one decimal in its largest unit (15.7Gi); exact if it is exact."""
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size >= factor:
            exact = format_size(size)
            return exact if exact.endswith(unit) else f"{size / factor:.1f}{unit}"
    return str(size)


def _brokers_lines(brokers: Sequence[BrokerNode]) -> list[str]:
    if not brokers:
        return ["brokers: none given"]
    rows = [
        [node.address, {True: "yes", False: "no", None: NONE}[node.reachable]] for node in brokers
    ]
    return [
        "brokers:",
        *(INDENT + line for line in table(("BROKER", "REACHABLE"), rows).split("\n")),
    ]


def _status_body(status: ClusterStatus) -> tuple[list[str], list[str]]:
    """The lines before the brokers (masters) and after them (the rest)."""
    epoch = "" if status.epoch is None else f" (epoch {status.epoch})"
    if status.masters:
        rows = [master_row(m) for m in by_role(status.masters)]
        head = [f"masters: {len(status.masters)}{epoch}"]
        head += [INDENT + line for line in table(MASTER_HEADERS, rows).split("\n")]
    else:
        head = [f"masters: none reported{epoch}"]
    workers = status.workers
    capacity, free = workers.capacity, workers.free
    tail = [
        f"workers: {_counts(workers.states, NODE_STATES, zeros=True)}",
        f"{INDENT}cpu {cpus(free.cpus)} free of {cpus(capacity.cpus)}, memory"
        f" {approximate_size(free.memory)} free of {approximate_size(capacity.memory)}"
        " (ready nodes)",
        f"jobs: {_counts(status.jobs, JOB_STATES)}",
        f"pending tasks: {status.pending.count}",
    ]
    shown = 0
    for item in status.pending.reasons:
        reason = visible(item.reason) if item.reason else "(not looked at by the scheduler yet)"
        tail.append(f"{INDENT}{item.count:>6}  {reason}")
        shown += item.count
    if status.pending.reasons and status.pending.count > shown:
        tail.append(f"{INDENT}{status.pending.count - shown:>6}  (other reasons)")
    letters = "unknown" if status.dead_letters is None else str(status.dead_letters)
    tail.append(f"dead letters: {letters}")
    return head, tail


def status_text(status: ClusterStatus | None, brokers: Sequence[BrokerNode]) -> str:
    """`corral status` on one screen: masters, broker nodes, workers, jobs, pending
    tasks, dead letters; only the broker nodes if the master could not be asked."""
    if status is None:
        return "\n".join(_brokers_lines(brokers))
    head, tail = _status_body(status)
    return "\n".join([*head, *_brokers_lines(brokers), *tail])


def status_data(status: ClusterStatus | None, brokers: Sequence[BrokerNode]) -> dict[str, Any]:
    """What `status -o json` / `-o yaml` show: the broker nodes (address and reachable,
    never the URL), then the master's ClusterStatus fields if it answered."""
    document: dict[str, Any] = {
        "brokers": [{"address": n.address, "reachable": n.reachable} for n in brokers]
    }
    if status is not None:
        document.update(status.model_dump(mode="json"))
    return document


def status_json(status: ClusterStatus | None, brokers: Sequence[BrokerNode]) -> str:
    return json.dumps(status_data(status, brokers), indent=2)


def status_yaml(status: ClusterStatus | None, brokers: Sequence[BrokerNode]) -> str:
    return yaml_text(status_data(status, brokers)).rstrip("\n")
