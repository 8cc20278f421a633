"""The host side of Corral's cluster network: routes and firewall rules, no Docker SDK.

The master gives each worker node a /24 out of the cluster CIDR (default
10.210.0.0/16); the node's Docker bridge network holds that subnet (created
elsewhere). Containers on different hosts talk directly, host-gw style (as
flannel's host-gw backend does): no overlay, no NAT.

What is added to the host, with `ip` and `iptables` run as subprocesses:

- `Routes.sync`: one route per peer node, `ip route replace SUBNET via ADDR`,
  where ADDR is the address the peer advertises. Skipped: this node's own
  subnet; a peer whose address is one of this host's own (several workers on
  one host: a route would clobber the kernel's connected route to the local
  bridge); a subnet that is already directly connected here (a route without a
  gateway). Routes this object added and no longer wants are deleted.
- `Firewall.ensure`, two rules tagged `-m comment --comment corral-cluster`:

    filter DOCKER-USER  -s CIDR -d CIDR -j ACCEPT   # ahead of Docker's isolation
                                                    # chains, which drop traffic
                                                    # between bridges
    nat POSTROUTING     -s CIDR -d CIDR -j RETURN   # ahead of Docker's MASQUERADE

  Docker inserts each new network's MASQUERADE rule at the top of POSTROUTING,
  so `ensure` also moves the RETURN back ahead of them: call it again after a
  bridge network is created. It turns `net.ipv4.ip_forward` on if it is off.
  The rules are the same for every worker of a cluster, so workers sharing a
  host share one copy; a lock file serialises their changes.

Removing it all by hand (CIDR as configured)::

    iptables -S DOCKER-USER | grep corral-cluster
    iptables -D DOCKER-USER -s CIDR -d CIDR -m comment --comment corral-cluster -j ACCEPT
    iptables -t nat -S POSTROUTING | grep corral-cluster
    iptables -t nat -D POSTROUTING -s CIDR -d CIDR -m comment --comment corral-cluster -j RETURN
    ip route show | grep via      # then: ip route del SUBNET via ADDR

Every call blocks on subprocesses, each bounded by `COMMAND_TIMEOUT` seconds;
failures raise `HostNetError`. Needs root (CAP_NET_ADMIN). Neither class is
thread-safe.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import json
import logging
import shlex
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "COMMENT",
    "Firewall",
    "HostNetError",
    "Routes",
    "default_advertise_addr",
    "local_addresses",
]

log = logging.getLogger(__name__)

COMMENT = "corral-cluster"  # the tag on every iptables rule this module adds
COMMAND_TIMEOUT = 10.0  # seconds, per `ip` / `iptables` run

_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# Serialises Firewall changes of the workers that share a host (not /run/xtables.lock:
# legacy iptables takes that one itself and would wait for us forever).
_LOCK_FILE = Path("/run/corral-hostnet.lock")
_WAIT = ("-w", "5")  # iptables: wait for the xtables lock (legacy backend) instead of failing


class HostNetError(Exception):
    """A command failed, timed out or could not be run; the message names it and its stderr."""


def _run(*argv: str) -> str:
    """Run a command, return its stdout; any failure becomes `HostNetError`."""
    command = shlex.join(argv)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostNetError(f"{command}: {exc}") from exc
    if done.returncode != 0:
        raise HostNetError(f"{command}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = _run("ip", "-j", *args).strip()
    try:
        # `ip -j` prints nothing at all for some empty answers.
        parsed = json.loads(out) if out else []
    except json.JSONDecodeError as exc:
        raise HostNetError(f"ip -j {shlex.join(args)}: not JSON: {out[:200]!r}") from exc
    if not isinstance(parsed, list):
        raise HostNetError(f"ip -j {shlex.join(args)}: expected a list, got {out[:200]!r}")
    return [item for item in parsed if isinstance(item, dict)]


def _ipv4_addresses(links: list[dict[str, Any]]) -> list[str]:
    """The IPv4 addresses in an `ip -j -4 addr` answer, global scope first."""
    found = [
        (info.get("scope") != "global", str(info["local"]))
        for link in links
        for info in link.get("addr_info", [])
        if info.get("family") == "inet" and "local" in info
    ]
    return [address for _, address in sorted(found, key=lambda pair: pair[0])]


def default_advertise_addr() -> str:
    """The IPv4 address of the interface that holds the default route.

    Raises `HostNetError` if there is no default route through an interface, or
    that interface has no IPv4 address.
    """
    for route in _ip_json("route", "show", "default"):
        if "prefsrc" in route:
            return str(route["prefsrc"])
        if "dev" in route:
            addresses = _ipv4_addresses(_ip_json("-4", "addr", "show", "dev", str(route["dev"])))
            if addresses:
                return addresses[0]
    raise HostNetError("no IPv4 address on the interface of a default route")


def local_addresses() -> set[str]:
    """Every IPv4 address of this host, loopback included."""
    return set(_ipv4_addresses(_ip_json("-4", "addr")))


@contextmanager
def _host_lock() -> Iterator[None]:
    try:
        handle = _LOCK_FILE.open("a")
    except OSError as exc:
        raise HostNetError(f"{_LOCK_FILE}: {exc}") from exc
    with handle:
        # Released when the file is closed. Holders only run bounded commands.
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class _Rule:
    """One tagged rule at the top of a chain, ahead of every rule jumping to `ahead_of`."""

    def __init__(self, table: str, chain: str, spec: Sequence[str], ahead_of: str) -> None:
        self.table = table
        self.chain = chain
        self.spec = tuple(spec)
        self.ahead_of = ahead_of

    def __str__(self) -> str:
        return f"-t {self.table} {self.chain} {shlex.join(self.spec)}"

    def _iptables(self, *args: str) -> str:
        return _run("iptables", *_WAIT, "-t", self.table, *args)

    def _chain_rules(self) -> list[list[str]] | None:
        """The chain's rules as `-S` tokens, in order; None if the chain does not exist.

        The whole table is listed because `iptables -S CHAIN` and `-C` fail the
        same way for a missing chain as for other errors.
        """
        exists = False
        rules = []
        for line in self._iptables("-S").splitlines():
            tokens = _tokens(line)
            if len(tokens) >= 2 and tokens[1] == self.chain:
                exists = True
                if tokens[0] == "-A":
                    rules.append(tokens)
        return rules if exists else None

    def _is_ours(self, tokens: list[str]) -> bool:
        return tuple(tokens[2:]) == self.spec

    def ensure(self) -> bool:
        """Leave exactly one copy, ahead of the first `-j ahead_of` rule; True if changed."""
        rules = self._chain_rules()
        if rules is None:
            raise HostNetError(f"iptables chain {self.chain} (table {self.table}) does not exist")
        ours = [i for i, tokens in enumerate(rules) if self._is_ours(tokens)]
        blockers = [
            i
            for i, tokens in enumerate(rules)
            if not self._is_ours(tokens) and _jump(tokens) == self.ahead_of
        ]
        if len(ours) == 1 and (not blockers or ours[0] < blockers[0]):
            return False
        # Deleting first leaves a gap of milliseconds; inserting first would let a
        # rule-spec `-D` remove the new copy instead of the misplaced one.
        for _ in ours:
            self._iptables("-D", self.chain, *self.spec)
        self._iptables("-I", self.chain, "1", *self.spec)
        return True

    def remove(self) -> int:
        """Delete every copy; returns how many there were."""
        rules = self._chain_rules()
        count = sum(self._is_ours(tokens) for tokens in rules or [])
        for _ in range(count):
            self._iptables("-D", self.chain, *self.spec)
        return count


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # a stray quote in someone else's comment
        return line.split()


def _jump(tokens: list[str]) -> str | None:
    for flag, value in itertools.pairwise(tokens):
        if flag in ("-j", "--jump"):
            return value
    return None


class Firewall:
    """The cluster's two iptables rules for one cluster CIDR."""

    def __init__(self, cidr: str) -> None:
        """`cidr` is the cluster's IPv4 range; `ValueError` if it is not one."""
        self.cidr = str(ipaddress.IPv4Network(cidr, strict=False))
        match = ("-s", self.cidr, "-d", self.cidr, "-m", "comment", "--comment", COMMENT)
        self._rules = (
            _Rule("filter", "DOCKER-USER", (*match, "-j", "ACCEPT"), ahead_of="RETURN"),
            _Rule("nat", "POSTROUTING", (*match, "-j", "RETURN"), ahead_of="MASQUERADE"),
        )

    def ensure(self) -> None:
        """Add the rules (or move them back to the top), and turn IPv4 forwarding on.

        Idempotent; cheap when nothing changes (one `iptables -S` per table).
        Raises `HostNetError` if a command fails, e.g. DOCKER-USER is missing
        because Docker is not running.
        """
        _enable_forwarding()
        with _host_lock():
            for rule in self._rules:
                if rule.ensure():
                    log.info("iptables rule in place: %s", rule)

    def remove(self) -> None:
        """Delete every copy of both rules; no error if they (or DOCKER-USER) are absent."""
        with _host_lock():
            for rule in self._rules:
                if rule.remove():
                    log.info("iptables rule removed: %s", rule)


def _enable_forwarding() -> None:
    try:
        if _IP_FORWARD.read_text().strip() == "0":
            _IP_FORWARD.write_text("1\n")
            log.warning("net.ipv4.ip_forward was 0; set it to 1")
    except OSError as exc:
        raise HostNetError(f"{_IP_FORWARD}: {exc}") from exc


class Routes:
    """The routes to the other nodes' subnets that this node added (main table)."""

    def __init__(self, *, own_subnet: str | None = None) -> None:
        """`own_subnet` is this node's subnet, never routed; `ValueError` if malformed."""
        self._own = None if own_subnet is None else ipaddress.IPv4Network(own_subnet, strict=False)
        self._added: dict[str, str] = {}  # subnet -> next hop, as this object left them

    def sync(self, peers: Mapping[str, str]) -> list[str]:
        """Make the routes match `peers` (subnet -> the advertised address of its node).

        Returns one human-readable line per route added, replaced or removed.
        A peer that is invalid or whose route fails (e.g. unreachable next hop)
        is logged as a warning and skipped; the others go on. Raises
        `HostNetError` only if this host's addresses cannot be read.
        """
        changes: list[str] = []
        locals_ = local_addresses()
        wanted: set[str] = set()
        for subnet, via in peers.items():
            try:
                target = self._target(subnet, via, locals_)
                if target is None:
                    continue
                wanted.add(target[0])
                change = self._install(*target)
            except (HostNetError, ValueError) as exc:
                log.warning("no route to %s via %s: %s", subnet, via, exc)
                continue
            if change:
                changes.append(change)
        for subnet in sorted(set(self._added) - wanted):
            change = self._delete(subnet)
            if change:
                changes.append(change)
        return changes

    def remove_all(self) -> None:
        """Delete every route this object added; failures are logged, not raised."""
        for subnet in sorted(self._added):
            change = self._delete(subnet)
            if change:
                log.info("%s", change)

    def _target(self, subnet: str, via: str, locals_: set[str]) -> tuple[str, str] | None:
        """(subnet, next hop) normalised, or None if this peer needs no route here.

        Raises `ValueError` for a malformed subnet or address.
        """
        network = ipaddress.IPv4Network(subnet, strict=False)
        hop = str(ipaddress.IPv4Address(via))
        if network == self._own:
            return None
        if hop in locals_:
            log.debug("no route to %s: its node's address %s is local", network, hop)
            return None
        if any(_connected(route) for route in _routes_to(str(network))):
            log.debug("no route to %s: it is directly connected", network)
            return None
        return str(network), hop

    def _install(self, subnet: str, via: str) -> str | None:
        previous = self._added.get(subnet)
        if previous == via and _has_route(subnet, via):
            return None
        _run("ip", "route", "replace", subnet, "via", via)
        self._added[subnet] = via
        if previous is None or previous == via:
            return f"route {subnet} via {via} added"
        return f"route {subnet} via {via} replaced (was via {previous})"

    def _delete(self, subnet: str) -> str | None:
        """Delete this object's route to `subnet`; None if it was already gone or stays."""
        via = self._added[subnet]
        try:
            # `via` so that only this object's route goes, never a connected one.
            _run("ip", "route", "del", subnet, "via", via)
        except HostNetError as exc:
            if _has_route(subnet, via):
                log.warning("route %s via %s not removed: %s", subnet, via, exc)
                return None
            del self._added[subnet]  # gone already: link down, or removed by hand
            return None
        del self._added[subnet]
        return f"route {subnet} via {via} removed"


def _routes_to(subnet: str) -> list[dict[str, Any]]:
    return _ip_json("route", "show", subnet)  # exact prefix, main table


def _connected(route: Mapping[str, Any]) -> bool:
    return "gateway" not in route and "dev" in route


def _has_route(subnet: str, via: str) -> bool:
    return any(route.get("gateway") == via for route in _routes_to(subnet))
