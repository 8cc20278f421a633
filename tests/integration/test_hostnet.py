"""worker.hostnet against this host's real `ip` and `iptables` (needs root and Docker).

Everything these tests add lives in 10.250.0.0/16 and is removed when a test
ends, passed or failed: the veth link (its routes go with it), any route left
in the range, the iptables rules for the range and the Docker network.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import docker
import pytest

from tests.integration.conftest import RUN_ID, RUN_LABEL
from worker.hostnet import (
    COMMENT,
    Firewall,
    Routes,
    default_advertise_addr,
    local_addresses,
)

# One host, one link name, one address range: under xdist run as one group (--dist loadgroup).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostnet")]

TEST_RANGE = "10.250.0.0/16"
LINK, PEER_LINK = "crltest0", "crltest1"
LINK_ADDR = "10.250.0.1"  # on LINK, so 10.250.0.0/24 is connected
NEXT_HOP = "10.250.0.2"  # on the connected subnet: a valid gateway
PEERS = {"10.250.5.0/24": NEXT_HOP, "10.250.6.0/24": NEXT_HOP}


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture(scope="module", autouse=True)
def host_network() -> None:
    if os.geteuid() != 0:
        pytest.skip("changing routes and iptables needs root")
    listed = sh("iptables", "-S", "DOCKER-USER")
    if listed.returncode != 0:
        pytest.skip(f"no DOCKER-USER chain (is Docker running?): {listed.stderr.strip()}")


def routes_in_range() -> list[dict[str, Any]]:
    out = sh("ip", "-j", "route", "show", "root", TEST_RANGE).stdout.strip()
    return list(json.loads(out)) if out else []


def gateways() -> dict[str, str]:
    """Destination -> next hop of the gateway routes in the test range."""
    return {r["dst"]: r["gateway"] for r in routes_in_range() if "gateway" in r}


def delete_test_routes() -> None:
    for route in routes_in_range():
        if "gateway" in route:
            sh("ip", "route", "del", route["dst"], "via", route["gateway"])


@pytest.fixture
def link() -> Iterator[str]:
    """A throwaway link holding 10.250.0.1/24, deleted afterwards with every test route.

    A veth pair rather than a dummy link: the dummy driver is a module that not
    every kernel has (this kind of VM has none).
    """
    sh("ip", "link", "del", LINK)  # a leftover of an interrupted run
    delete_test_routes()
    try:
        for argv in (
            ("ip", "link", "add", LINK, "type", "veth", "peer", "name", PEER_LINK),
            ("ip", "addr", "add", f"{LINK_ADDR}/24", "dev", LINK),
            ("ip", "link", "set", PEER_LINK, "up"),
            ("ip", "link", "set", LINK, "up"),
        ):
            done = sh(*argv)
            assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}"
        yield LINK
    finally:
        sh("ip", "link", "del", LINK)  # takes its peer and the routes through it along
        delete_test_routes()
        assert routes_in_range() == []


@pytest.fixture
def routes(link: str) -> Iterator[Routes]:
    table = Routes(own_subnet="10.250.1.0/24")
    yield table
    table.remove_all()


# -- addresses -----------------------------------------------------------------


def test_local_addresses_are_this_hosts_ipv4_addresses() -> None:
    addresses = local_addresses()
    parsed = {ipaddress.IPv4Address(a) for a in addresses}
    assert any(a.is_loopback for a in parsed)
    listed = sh("hostname", "-I")
    if listed.returncode == 0:
        shown = {a for a in listed.stdout.split() if ":" not in a}
        assert shown <= addresses


def test_default_advertise_addr_is_a_local_non_loopback_address() -> None:
    address = default_advertise_addr()
    assert not ipaddress.IPv4Address(address).is_loopback
    assert address in local_addresses()


# -- routes ----------------------------------------------------------------------


def test_sync_adds_a_route_per_peer(routes: Routes, link: str) -> None:
    changes = routes.sync(PEERS)

    assert sorted(changes) == [
        f"route 10.250.5.0/24 via {NEXT_HOP} added",
        f"route 10.250.6.0/24 via {NEXT_HOP} added",
    ]
    shown = {r["dst"]: r for r in routes_in_range()}
    for subnet in PEERS:
        assert shown[subnet]["gateway"] == NEXT_HOP
        assert shown[subnet]["dev"] == link


def test_sync_is_idempotent(routes: Routes) -> None:
    routes.sync(PEERS)

    assert routes.sync(PEERS) == []
    assert gateways() == {"10.250.5.0/24": NEXT_HOP, "10.250.6.0/24": NEXT_HOP}


def test_sync_removes_routes_of_peers_gone(routes: Routes) -> None:
    routes.sync(PEERS)

    changes = routes.sync({"10.250.5.0/24": NEXT_HOP})

    assert changes == [f"route 10.250.6.0/24 via {NEXT_HOP} removed"]
    assert gateways() == {"10.250.5.0/24": NEXT_HOP}


def test_sync_replaces_a_route_whose_next_hop_changed(routes: Routes) -> None:
    routes.sync(PEERS)

    changes = routes.sync({**PEERS, "10.250.6.0/24": "10.250.0.3"})

    assert changes == [f"route 10.250.6.0/24 via 10.250.0.3 replaced (was via {NEXT_HOP})"]
    assert gateways() == {"10.250.5.0/24": NEXT_HOP, "10.250.6.0/24": "10.250.0.3"}


def test_sync_skips_a_peer_whose_address_is_local(routes: Routes) -> None:
    assert routes.sync({"10.250.8.0/24": LINK_ADDR}) == []
    assert gateways() == {}


def test_sync_skips_a_connected_subnet_and_keeps_its_route(routes: Routes, link: str) -> None:
    assert routes.sync({"10.250.0.0/24": NEXT_HOP}) == []

    assert gateways() == {}
    [connected] = [r for r in routes_in_range() if r["dst"] == "10.250.0.0/24"]
    assert connected["dev"] == link
    assert "gateway" not in connected


def test_sync_skips_its_own_subnet(routes: Routes) -> None:
    assert routes.sync({"10.250.1.0/24": NEXT_HOP}) == []
    assert gateways() == {}


def test_a_failing_peer_is_logged_and_the_others_are_routed(
    routes: Routes, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = {"10.250.9.0/24": "10.250.77.2", "10.250.10.0/24": "not-an-address"}

    with caplog.at_level(logging.WARNING, logger="worker.hostnet"):
        changes = routes.sync({**unreachable, **PEERS})

    assert len(changes) == 2
    assert gateways() == {"10.250.5.0/24": NEXT_HOP, "10.250.6.0/24": NEXT_HOP}
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert "ip route replace 10.250.9.0/24 via 10.250.77.2" in warnings  # names the command
    assert "not-an-address" in warnings


def test_remove_all_deletes_only_its_routes(routes: Routes, link: str) -> None:
    routes.sync(PEERS)

    routes.remove_all()
    routes.remove_all()  # nothing left: no error

    assert gateways() == {}
    assert [r["dst"] for r in routes_in_range()] == ["10.250.0.0/24"]  # the connected one
    assert routes.sync(PEERS) != []  # and it can add them again


# -- firewall --------------------------------------------------------------------


def chain_rules(*table_and_chain: str) -> list[str]:
    done = sh("iptables", *table_and_chain)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("-A ")]


def forward_rules() -> list[str]:
    return chain_rules("-S", "DOCKER-USER")


def nat_rules() -> list[str]:
    return chain_rules("-t", "nat", "-S", "POSTROUTING")


def ours(rules: list[str]) -> list[int]:
    return [i for i, rule in enumerate(rules) if COMMENT in rule and TEST_RANGE in rule]


def first_masquerade(rules: list[str]) -> int:
    return next((i for i, rule in enumerate(rules) if "-j MASQUERADE" in rule), len(rules))


@pytest.fixture
def firewall() -> Iterator[Firewall]:
    rules = Firewall(TEST_RANGE)
    rules.remove()  # a leftover of an interrupted run
    try:
        yield rules
    finally:
        rules.remove()
        assert ours(forward_rules()) == []
        assert ours(nat_rules()) == []


def test_ensure_adds_each_rule_once(firewall: Firewall) -> None:
    firewall.ensure()
    firewall.ensure()

    forward, nat = forward_rules(), nat_rules()
    expected = f"-s {TEST_RANGE} -d {TEST_RANGE} -m comment --comment {COMMENT}"
    assert [forward[i] for i in ours(forward)] == [f"-A DOCKER-USER {expected} -j ACCEPT"]
    assert [nat[i] for i in ours(nat)] == [f"-A POSTROUTING {expected} -j RETURN"]
    assert ours(forward) == [0]  # ahead of Docker's `-j RETURN`
    assert ours(nat)[0] < first_masquerade(nat)
    with open("/proc/sys/net/ipv4/ip_forward") as flag:
        assert flag.read().strip() == "1"


def test_remove_deletes_every_copy(firewall: Firewall) -> None:
    firewall.ensure()
    spec = ["-s", TEST_RANGE, "-d", TEST_RANGE, "-m", "comment", "--comment", COMMENT]
    # A second copy, as two workers racing without the lock would leave.
    assert sh("iptables", "-A", "DOCKER-USER", *spec, "-j", "ACCEPT").returncode == 0
    assert len(ours(forward_rules())) == 2

    firewall.remove()
    firewall.remove()  # nothing left: no error

    assert ours(forward_rules()) == []
    assert ours(nat_rules()) == []


def test_ensure_moves_the_nat_rule_back_ahead_of_a_new_networks_masquerade(
    firewall: Firewall,
) -> None:
    firewall.ensure()
    engine = docker.from_env()
    network = engine.networks.create(
        f"crltest-{uuid.uuid4().hex[:8]}",
        driver="bridge",
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.250.7.0/24")]),
        labels={RUN_LABEL: RUN_ID},
    )
    try:
        # Docker inserts a new network's MASQUERADE at the top of POSTROUTING.
        assert first_masquerade(nat_rules()) < ours(nat_rules())[0]

        firewall.ensure()

        nat = nat_rules()
        assert len(ours(nat)) == 1
        assert ours(nat)[0] < first_masquerade(nat)
    finally:
        with suppress(docker.errors.APIError):
            network.remove()
        engine.close()
