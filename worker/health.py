"""Health checks: what a job's `HealthCheck` asks of Docker, and what Docker answers.

Corral runs no probes of its own. Docker runs the check inside the container
(`docker_healthcheck` builds it), reports each change of verdict as a container
event whose action is `health_status: healthy` or `health_status: unhealthy`
(`health_event` reads it), shows the verdict in `State.Health.Status` of an
inspect and in the `Status` text of a list entry (`container_health`), and keeps
the output of the last checks (`unhealthy_reason` quotes the newest). Pure: no
Docker calls here.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from typing import Any

from schemas.job import HealthCheck
from schemas.messages import Health

NANOSECONDS = 1_000_000_000
# How much of a failed check's output a task's reason quotes.
MAX_OUTPUT_CHARS = 300
# The events filter value that selects health changes: the engine matches it as a
# prefix of the action (`health_status: healthy`), as it does only for a few actions.
HEALTH_EVENT = "health_status"

_EVENT_PREFIX = f"{HEALTH_EVENT}: "
_VERDICTS: dict[str, Health] = {
    "starting": "starting",
    "healthy": "healthy",
    "unhealthy": "unhealthy",
}
# A list entry's `Status`: "Up 3 seconds (healthy)", "Up 1 second (health: starting)".
_LISTED = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def docker_healthcheck(check: HealthCheck) -> dict[str, Any]:
    """docker-py's `healthcheck` argument for `check` (times in nanoseconds, as ints).

    `command` is run as is (`CMD`). `tcp` and `http` are `CMD-SHELL` scripts, so the
    image needs `sh` and `nc` (busybox has both; its nc has no `-z`, hence scripts):
    `tcp` succeeds iff 127.0.0.1:PORT inside the container accepts a connection;
    `http` sends `GET <path> HTTP/1.0` to 127.0.0.1:PORT and succeeds iff the status
    line says 2xx or 3xx. A failing script prints why (nc's error, or the status
    line), which Docker keeps as the check's output. Images without `nc` need a
    `command` check.
    """
    return {
        "test": _test(check),
        "interval": _nanoseconds(check.interval),
        "timeout": _nanoseconds(check.timeout),
        "retries": check.retries,
        "start_period": _nanoseconds(check.start_period),
    }


def _nanoseconds(seconds: float) -> int:
    return round(seconds * NANOSECONDS)


def _test(check: HealthCheck) -> list[str]:
    # nc's -w bounds the connect; Docker's own timeout bounds the whole check.
    wait = max(1, math.ceil(check.timeout))
    if check.command is not None:
        return ["CMD", *check.command]
    if check.tcp is not None:
        return ["CMD-SHELL", f"nc -w {wait} 127.0.0.1 {check.tcp} </dev/null >/dev/null"]
    assert check.http is not None  # HealthCheck holds exactly one of the three
    port, path = check.http.port, shlex.quote(check.http.path)
    # nc half-closes after the request and prints the answer; the first line decides.
    script = (
        rf"printf 'GET %s HTTP/1.0\r\n\r\n' {path}"
        f" | nc -w {wait} 127.0.0.1 {port} 2>&1"
        ' | { read -r status; case "$status" in "HTTP/"*" "[23][0-9][0-9]*) exit 0;; esac;'
        rf" printf 'GET %s on port {port}: %s\n' {path}"
        ' "${status:-no answer}"; exit 1; }'
    )
    return ["CMD-SHELL", script]


def health_event(action: str) -> Health | None:
    """The verdict a container event's action reports, or None if it reports none."""
    if not action.startswith(_EVENT_PREFIX):
        return None
    return _VERDICTS.get(action[len(_EVENT_PREFIX) :].strip())


def container_health(attrs: Mapping[str, Any]) -> Health:
    """Docker's verdict on a container's health check, from a full inspect
    (`State.Health.Status`) or a sparse list entry (its `Status` text); "" when the
    container has no check."""
    state = attrs.get("State")
    if isinstance(state, dict):
        return _VERDICTS.get(str((state.get("Health") or {}).get("Status")), "")
    listed = _LISTED.search(str(attrs.get("Status") or ""))
    if listed is None:
        return ""
    return "starting" if listed.group(1) == "health: starting" else _VERDICTS[listed.group(1)]


def configured_health(attrs: Mapping[str, Any]) -> Health:
    """A just started container's verdict: "starting" if its inspected config (which
    includes the image's own HEALTHCHECK) has a check, else ""."""
    check = (attrs.get("Config") or {}).get("Healthcheck") or {}
    test = check.get("Test") or []
    return "starting" if test and test[0] != "NONE" else ""


def unhealthy_reason(health: Mapping[str, Any]) -> str:
    """Why a container is unhealthy, on one line, from its inspected `State.Health`:
    how many checks failed in a row and what the last one printed (cut to
    MAX_OUTPUT_CHARS), or its exit code if it printed nothing."""
    streak = health.get("FailingStreak")
    if isinstance(streak, int) and streak > 1:
        head = f"health check failed {streak} times in a row"
    else:
        head = "health check failed"
    log = health.get("Log") or []
    last: Mapping[str, Any] = log[-1] if log and isinstance(log[-1], Mapping) else {}
    output = " ".join(str(last.get("Output") or "").split())
    if len(output) > MAX_OUTPUT_CHARS:
        output = output[: MAX_OUTPUT_CHARS - 1] + "…"
    if output:
        return f"{head}: {output}"
    exit_code = last.get("ExitCode")
    return f"{head} (exit code {exit_code})" if exit_code is not None else head
