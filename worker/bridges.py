"""The node's bridge on the cluster network: a Docker network with the node's subnet.

With `worker.runtime`, the only module that imports `docker`; it borrows the
runtime's client. Every method blocks on the engine: callers run them off the bus
thread. The bridge is named `corral-<node>`, its Linux device `crl-<hash>`, and it
is labelled like the node's containers, so that a later run (or a test) finds it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import docker
from docker.errors import APIError, NotFound

from worker.containers import MANAGED, NODE, StartError
from worker.engine_events import TRANSPORT_ERRORS as _TRANSPORT_ERRORS
from worker.engine_events import explain as _explain
from worker.runtime import DockerRuntime, _engine_errors

log = logging.getLogger(__name__)


def network_name(node_id: str) -> str:
    return f"corral-{node_id}"


class Bridges:
    def __init__(self, runtime: DockerRuntime, extra_labels: dict[str, str] | None = None) -> None:
        self._client = runtime.client
        self._node_id = runtime.node_id
        self._labels = {**(extra_labels or {}), MANAGED: "true", NODE: runtime.node_id}

    def ensure_network(self, name: str, subnet: str, gateway: str) -> None:
        """A bridge network `name` with `subnet` and `gateway` (the node's share of the
        cluster network). One of that name with another subnet is replaced if no container
        uses it; another Corral network of this engine that holds the subnet and has no
        container (left by a node that is gone) is removed. Raises `RuntimeUnavailable`
        if the engine fails, `StartError` if the network cannot be made."""
        with _engine_errors(f"creating network {name} failed"):
            existing = self._network(name)
            if existing is not None:
                if _subnets(existing.attrs) == [subnet]:
                    return
                self._remove_network(existing, why=f"its subnet is now {subnet}")
            for other in self._client.networks.list(
                filters={"label": [f"{MANAGED}=true"]}, greedy=True
            ):
                if other.name != name and subnet in _subnets(other.attrs):
                    self._remove_network(other, why=f"{subnet} is now {name}'s")
            ipam = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)]
            )
            try:
                self._client.networks.create(
                    name,
                    driver="bridge",
                    ipam=ipam,
                    labels=self._labels,
                    options={"com.docker.network.bridge.name": _bridge_name(name)},
                )
            except APIError as error:
                raise StartError(
                    f"cannot create the cluster network {name} ({subnet}): {_explain(error)}",
                    retryable=True,
                ) from error

    def subnet_of(self, name: str) -> str | None:
        """The subnet of network `name` (None: there is none, or the engine failed)."""
        try:
            existing = self._network(name)
        except (APIError, *_TRANSPORT_ERRORS):
            return None
        subnets = _subnets(existing.attrs) if existing is not None else []
        return subnets[0] if len(subnets) == 1 else None

    def remove_network(self, name: str) -> bool:
        """Remove network `name` if no container is attached; False if one is (or it is
        gone). Raises `RuntimeUnavailable` if the engine fails."""
        with _engine_errors(f"removing network {name} failed"):
            existing = self._network(name)
            return existing is not None and self._remove_network(existing, why="cleanup")

    def _network(self, name: str) -> Any:
        found = [n for n in self._client.networks.list(names=[name]) if n.name == name]
        if not found:
            return None
        found[0].reload()  # a listed network has no container list
        return found[0]

    def _remove_network(self, network: Any, *, why: str) -> bool:
        if network.attrs.get("Containers"):
            log.warning("network %s is still in use: not removed (%s)", network.name, why)
            return False
        log.info("removing network %s: %s", network.name, why)
        try:
            network.remove()
        except NotFound:
            pass
        except APIError as error:
            log.warning("network %s not removed: %s", network.name, _explain(error))
            return False
        return True


def _subnets(attrs: dict[str, Any]) -> list[str]:
    return [pool.get("Subnet", "") for pool in ((attrs.get("IPAM") or {}).get("Config") or [])]


def _bridge_name(network: str) -> str:
    """The Linux bridge of a cluster network: `crl-` and a hash (names are at most 15
    characters), so that operators can find Corral's bridges in `ip link`."""
    return "crl-" + hashlib.sha1(network.encode()).hexdigest()[:10]
