"""Helpers of the cluster network tests: ask from inside a container, and a stub resolver.

A container is reached through a function that runs a command in it and returns
its output (`docker exec`, on whichever engine runs it), so the same helpers serve
the shared-engine tests and the multi-host rig.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSServer

from tests.conftest import TEST_IMAGE

Exec = Callable[[str], str]  # runs `sh -c SCRIPT` in a container, returns its output

# A web replica answers with its hostname (its container id's first 12 characters).
WEB_COMMAND = [
    "sh",
    "-c",
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
]
# The name the tests' stub upstream resolver answers, and its answer.
UPSTREAM_NAME = "upstream.example.test"
UPSTREAM_ADDRESS = "10.99.0.7"
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


def service(name: str, replicas: int, command: list[str], *constraints: str) -> dict[str, object]:
    """A job spec: a service of `replicas` running `command` on the test image."""
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": command,
        "kind": "service",
        "replicas": replicas,
        "restart": {"backoff_initial": 0.5},
        "stop_grace": 1,
        "constraints": list(constraints),
    }


def http_get(run: Exec, name: str, port: int = 80) -> str:
    """The body `name`:`port` answers to GET / (busybox nc; its wget crashes there)."""
    output = run(f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {name} {port}")
    return output.split("\r\n\r\n", 1)[-1].strip()


def resolve(run: Exec, name: str) -> list[str]:
    """The IPv4 addresses `name` resolves to in the container ([]: none), by busybox
    nslookup through the container's resolver (Docker's, which forwards to the worker)."""
    output = run(f"nslookup -type=a {name} 2>&1 || true")
    answers = output.split("Name:", 1)[-1] if "Name:" in output else ""
    return [address for address in _IPV4.findall(answers) if not address.startswith("127.")]


def wait_resolves(run: Exec, name: str, address: str, timeout: float = 10.0) -> float:
    """Poll until `name` resolves to `address`; the time.time() it first did."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        last = resolve(run, name)
        if address in last:
            return time.time()
        time.sleep(0.02)
    raise AssertionError(f"{name} did not resolve to {address} in {timeout:g} s: last {last}")


def started_at(docker_time: str) -> float:
    """A container's State.StartedAt (RFC 3339, nanoseconds, UTC) as time.time()."""
    return datetime.fromisoformat(docker_time[:26].rstrip("Z") + "+00:00").timestamp()


def running_since(docker: Any, container_id: str) -> float:
    """When the container began to run unpaused, as time.time(): its start, or, for a
    warm standby (started paused while a node was suspect, master/standby.py), its
    last unpause, from the engine's own events."""
    attrs = docker.api.inspect_container(container_id)
    since = started_at(attrs["State"]["StartedAt"])
    unpauses = docker.api.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"container": container_id, "event": "unpause"},
    )
    times = [event["timeNano"] / 1e9 for event in unpauses]
    return max(times, default=since)


class StubResolver:
    """An upstream resolver the test runs itself on 127.0.0.1 (UDP): it answers every A
    query from `records`, and NXDOMAIN otherwise, and counts what it was asked."""

    def __init__(self, records: dict[str, str], address: str = "127.0.0.1") -> None:
        self.records = {name.rstrip(".").lower(): ip for name, ip in records.items()}
        self.asked: list[str] = []
        self._lock = threading.Lock()
        stub = self

        class Resolver(BaseResolver):  # type: ignore[misc]
            def resolve(self, request: Any, handler: Any) -> Any:
                reply = request.reply()
                name = str(request.q.qname).rstrip(".").lower()
                with stub._lock:
                    stub.asked.append(name)
                if request.q.qtype == QTYPE.A and name in stub.records:
                    reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(stub.records[name])))
                elif name not in stub.records:
                    reply.header.rcode = 3  # NXDOMAIN
                return reply

        self._server = DNSServer(Resolver(), port=0, address=address, logger=_Quiet())
        self._server.start_thread()
        self.port: int = self._server.server.server_address[1]
        self.address = address

    def close(self) -> None:
        self._server.stop()
        self._server.server.server_close()


class _Quiet:
    """dnslib's server logs every request to stdout unless given a logger."""

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None
