"""What the Docker engine itself saw: every container of a test run, when it started and died.

`ContainerAudit` follows the engine's event stream (not Corral's state) for the
containers labelled with a test run, so a test can check that no task ever ran
as two containers at the same time, and that containers were never restarted.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

RUN_LABEL = "corral-test-run"
# The engine's actions recorded, and the `Life` list each goes to.
_ACTIONS = {"start": "starts", "die": "deaths", "pause": "pauses", "unpause": "unpauses"}


@dataclass
class Life:
    container_id: str
    task_id: str
    job_id: str
    node_id: str
    starts: list[float] = field(default_factory=list)
    deaths: list[float] = field(default_factory=list)
    # A warm standby (master/standby.py) is paused right after its start, and unpaused
    # when it is needed.
    pauses: list[float] = field(default_factory=list)
    unpauses: list[float] = field(default_factory=list)

    @property
    def serving_since(self) -> float | None:
        """When it first ran unpaused: its first start, or its last unpause if it was
        paused (None if it never started, or is paused still)."""
        if not self.starts or len(self.unpauses) < len(self.pauses):
            return None
        return max(self.unpauses) if self.unpauses else min(self.starts)

    def intervals(self, now: float) -> list[tuple[float, float]]:
        """(started, died) spans; a container still running ends at `now`."""
        ends = sorted(self.deaths)
        spans = []
        for start in sorted(self.starts):
            end = next((d for d in ends if d >= start), now)
            if end in ends:
                ends.remove(end)
            spans.append((start, end))
        return spans


class ContainerAudit:
    def __init__(self, docker: Any, run_id: str) -> None:
        self.docker = docker
        self.run_id = run_id
        self.lives: dict[str, Life] = {}
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._follow, daemon=True, name="audit")

    def start(self) -> ContainerAudit:
        self._stream = self.docker.events(
            decode=True,
            since=int(time.time()) - 1,
            filters={"type": "container", "label": f"{RUN_LABEL}={self.run_id}"},
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def _follow(self) -> None:
        try:
            for event in self._stream:
                self._record(event)
        except Exception:  # the stream closes under us at the end
            return

    def _record(self, event: dict[str, Any]) -> None:
        action = event.get("Action") or event.get("status")
        if action not in _ACTIONS:
            return
        actor = event.get("Actor", {})
        attributes = actor.get("Attributes", {})
        container_id = actor.get("ID") or event.get("id", "")
        at = event.get("timeNano", 0) / 1e9 or float(event.get("time", 0))
        with self._lock:
            life = self.lives.setdefault(
                container_id,
                Life(
                    container_id,
                    attributes.get("corral.task", ""),
                    attributes.get("corral.job", ""),
                    attributes.get("corral.node", ""),
                ),
            )
            getattr(life, _ACTIONS[action]).append(at)

    def snapshot(self) -> list[Life]:
        with self._lock:
            return [
                Life(
                    life.container_id,
                    life.task_id,
                    life.job_id,
                    life.node_id,
                    list(life.starts),
                    list(life.deaths),
                    list(life.pauses),
                    list(life.unpauses),
                )
                for life in self.lives.values()
            ]

    def overlaps(self) -> list[str]:
        """Tasks that ran as two containers at the same time (should be none)."""
        now = time.time()
        by_task: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for life in self.snapshot():
            for start, end in life.intervals(now):
                by_task[life.task_id].append((start, end, life.container_id))
        problems = []
        for task_id, spans in by_task.items():
            spans.sort()
            for (_s1, e1, c1), (s2, _e2, c2) in itertools.pairwise(spans):
                if c1 != c2 and s2 < e1:
                    problems.append(f"{task_id}: {c1[:12]} and {c2[:12]} overlap at {s2:.3f}")
        return problems

    def restarted(self) -> list[str]:
        """Containers that started more than once (Corral never restarts one in place)."""
        return [life.container_id[:12] for life in self.snapshot() if len(life.starts) > 1]
