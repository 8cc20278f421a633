"""`corral masters` and `corral status`: rendering, broker URLs and their probe, the CLI."""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from typer.testing import CliRunner

from corral import brokers, cli, output
from corral.brokers import BrokerNode
from corral.client import DEFAULT_URL
from corral.errors import CorralError, NoMaster
from schemas.api import (
    ClusterStatus,
    MasterInfo,
    MastersInfo,
    PendingStatus,
    ReasonCount,
    Totals,
    WorkersStatus,
)

GiB = 1024**3


def master(name: str, role: str = "standby", **fields: Any) -> MasterInfo:
    values: dict[str, Any] = {
        "name": name,
        "instance": f"{name}-1",
        "role": role,
        "epoch": 7,
        "applied": 120,
        "lag": 0,
        "last_seen_ago": 0.42,
        **fields,
    }
    return MasterInfo.model_validate(values)


def status(**fields: Any) -> ClusterStatus:
    values: dict[str, Any] = {
        "masters": [master("m1", "active", broker="rabbit@b1"), master("m2", lag=3)],
        "epoch": 7,
        "workers": WorkersStatus(
            states={"ready": 3, "suspect": 1},
            capacity=Totals(cpus=12, memory=24 * GiB),
            free=Totals(cpus=4.5, memory=10 * GiB + 300 * 1024**2),
        ),
        "jobs": {"running": 2, "failed": 1, "pending": 1},
        "pending": PendingStatus(
            count=9,
            reasons=[
                ReasonCount(reason="no node has 8 free CPUs", count=5),
                ReasonCount(reason="", count=2),
            ],
        ),
        "dead_letters": 4,
        **fields,
    }
    return ClusterStatus.model_validate(values)


NODES = [
    BrokerNode("amqp://u:secret@10.0.0.1:5672/", "10.0.0.1:5672", True),
    BrokerNode("amqp://u:secret@10.0.0.2:5672/", "10.0.0.2:5672", False),
]


# -- rendering --


def test_masters_table_puts_the_active_one_first_and_shows_unknowns_as_dashes() -> None:
    info = MastersInfo(
        masters=[
            master("m2", lag=None, applied=-1, epoch=None, last_seen_ago=75),
            master("m1", "active", broker="rabbit@b1"),
        ],
        omitted=2,
    )
    lines = output.masters_table(info).split("\n")
    assert lines[0].split() == list(output.MASTER_HEADERS)
    assert lines[1].split() == ["m1", "active", "7", "120", "0", "0.4s", "rabbit@b1"]
    assert lines[2].split() == ["m2", "standby", "-", "-", "-", "1m", "-"]
    assert lines[3] == "(2 more masters not shown)"


def test_status_shows_every_section_in_order() -> None:
    text = output.status_text(status(), NODES)
    assert text.split("\n") == [
        "masters: 2 (epoch 7)",
        "  NAME  ROLE     EPOCH  APPLIED  LAG  SEEN  BROKER",
        "  m1    active   7      120      0    0.4s  rabbit@b1",
        "  m2    standby  7      120      3    0.4s  -",
        "brokers:",
        "  BROKER         REACHABLE",
        "  10.0.0.1:5672  yes",
        "  10.0.0.2:5672  no",
        "workers: 3 ready, 1 suspect, 0 down",
        "  cpu 4.5 free of 12, memory 10.3Gi free of 24Gi (ready nodes)",
        "jobs: 1 pending, 2 running, 1 failed",
        "pending tasks: 9",
        "       5  no node has 8 free CPUs",
        "       2  (not looked at by the scheduler yet)",
        "       2  (other reasons)",
        "dead letters: 4",
    ]
    assert "secret" not in text


def test_status_of_a_quiet_cluster_and_without_the_master() -> None:
    quiet = status(masters=[], epoch=None, jobs={}, pending=PendingStatus(), dead_letters=None)
    text = output.status_text(quiet, [])
    assert "masters: none reported" in text and "brokers: none given" in text
    assert "jobs: none" in text and "pending tasks: 0\ndead letters: unknown" in text
    assert output.status_text(None, NODES).split("\n")[0] == "brokers:"


def test_status_escapes_what_came_from_the_wire() -> None:
    hostile = status(
        masters=[master("m1", "active", broker="b\x1b[2J")],
        jobs={"running": 1, "odd-state": 2},
        pending=PendingStatus(count=1, reasons=[ReasonCount(reason="x\ny\x07", count=1)]),
    )
    text = output.status_text(hostile, NODES)
    assert "\x1b" not in text and "\x07" not in text
    assert "b\\x1b[2J" in text and "x\\ny\\x07" in text
    assert "jobs: 1 running, 2 odd-state" in text


def test_status_json_has_the_brokers_without_credentials_and_the_masters_answer() -> None:
    document = json.loads(output.status_json(status(), NODES))
    assert document["brokers"] == [
        {"address": "10.0.0.1:5672", "reachable": True},
        {"address": "10.0.0.2:5672", "reachable": False},
    ]
    assert ClusterStatus.model_validate({k: v for k, v in document.items() if k != "brokers"})
    assert document["pending"]["reasons"][0] == {"reason": "no node has 8 free CPUs", "count": 5}
    assert json.loads(output.status_json(None, NODES)).keys() == {"brokers"}


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0"), (512, "512"), (24 * GiB, "24Gi"), (GiB + GiB // 10, "1.1Gi"), (1536, "1.5Ki")],
)
def test_approximate_size(size: int, shown: str) -> None:
    assert output.approximate_size(size) == shown


@pytest.mark.parametrize(("seconds", "shown"), [(0.04, "0.0s"), (9.96, "10.0s"), (42, "42s")])
def test_seconds_ago(seconds: float, shown: str) -> None:
    assert output.seconds_ago(seconds) == shown


# -- broker URLs --


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("amqp://guest:pw@Host.example:5673/vh", "host.example:5673"),
        ("amqp://h/", "h:5672"),
        ("amqps://u:p@h", "h:5671"),
        ("amqp://[::1]:5999/", "[::1]:5999"),
    ],
)
def test_a_broker_is_shown_as_host_and_port_only(url: str, address: str) -> None:
    assert brokers.address(url) == address


def test_probe_tries_each_node_and_those_that_answer_come_first() -> None:
    tried: list[tuple[tuple[str, int], float]] = []

    def connect(where: tuple[str, int], timeout: float) -> socket.socket:
        tried.append((where, timeout))
        if where[0] != "up":
            raise ConnectionRefusedError(111, "refused")
        return socket.socket()

    urls = ["amqp://down1/", "amqp://up:5673/", "amqp://down2/"]
    nodes = brokers.probe(urls, connect=connect)
    assert [(n.address, n.reachable) for n in nodes] == [
        ("down1:5672", False),
        ("up:5673", True),
        ("down2:5672", False),
    ]
    assert sorted(tried) == [(("down1", 5672), 1.0), (("down2", 5672), 1.0), (("up", 5673), 1.0)]
    assert brokers.reachable_first(nodes) == "amqp://up:5673/,amqp://down1/,amqp://down2/"
    assert brokers.reachable_first(nodes[::2]) == "amqp://down1/,amqp://down2/"


# -- the commands --


@dataclass
class Seen:
    urls: list[str] = field(default_factory=list)
    error: CorralError | None = None


class FakeClient:
    def __init__(self, seen: Seen, url: str | None = None, **_: Any) -> None:
        self.seen = seen
        seen.urls.append(url or "")

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def masters(self) -> MastersInfo:
        if self.seen.error is not None:
            raise self.seen.error
        return MastersInfo(masters=status().masters)

    def status(self) -> ClusterStatus:
        if self.seen.error is not None:
            raise self.seen.error
        return status()


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    record = Seen()
    monkeypatch.setattr(cli, "Client", functools.partial(FakeClient, record))

    def probe(urls: list[str]) -> list[BrokerNode]:
        return [BrokerNode(url, brokers.address(url), "down" not in url) for url in urls]

    monkeypatch.setattr(brokers, "probe", probe)
    yield record


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.app, list(args), prog_name="corral", env=env)


def test_status_takes_several_urls_and_connects_to_those_that_answer_first(seen: Seen) -> None:
    result = invoke(
        "status", "--amqp", "amqp://u:pw@down:5672/,amqp://u:pw@up1:5672/", "--amqp", "amqp://up2/"
    )
    assert result.exit_code == 0, result.output
    assert seen.urls == ["amqp://u:pw@up1:5672/,amqp://up2/,amqp://u:pw@down:5672/"]
    assert "  down:5672  no" in result.stdout and "  up2:5672   yes" in result.stdout
    assert "pw" not in result.stdout


def test_status_urls_from_the_environment(seen: Seen) -> None:
    result = invoke("status", env={"CORRAL_AMQP_URL": "amqp://a/,amqp://b/"})
    assert result.exit_code == 0, result.output
    assert "a:5672" in result.stdout and "b:5672" in result.stdout


def test_status_without_a_master_shows_the_brokers_then_fails(seen: Seen) -> None:
    seen.error = NoMaster("amqp://guest:secret@h:5672/", 2)
    result = invoke("status", "--amqp", "amqp://guest:secret@h:5672/", "-o", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"brokers": [{"address": "h:5672", "reachable": True}]}
    assert result.stderr.startswith("error: no master answered") and "secret" not in result.output


def test_status_refuses_a_malformed_url_among_several(seen: Seen) -> None:
    result = invoke("status", "--amqp", "amqp://ok/", "--amqp", "localhost:5672")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid --amqp URL") and "localhost" in result.stderr
    assert seen.urls == []


@pytest.mark.parametrize("command", ["masters", "status"])
def test_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "--output" in result.stdout and "--amqp" in result.stdout


def test_masters_asks_through_every_node_given(seen: Seen) -> None:
    result = invoke("masters", "--amqp", "amqp://a/", "--amqp", "amqp://b/,amqp://c/")
    assert result.exit_code == 0, result.output
    assert seen.urls == ["amqp://a/,amqp://b/,amqp://c/"]


def test_masters_table_and_json(seen: Seen) -> None:
    table = invoke("masters")
    assert table.exit_code == 0, table.output
    assert table.stdout.split("\n")[1].split()[:2] == ["m1", "active"]
    assert seen.urls == [DEFAULT_URL]
    as_json = json.loads(invoke("masters", "-o", "json").stdout)
    assert [m["name"] for m in as_json] == ["m1", "m2"] and as_json[1]["lag"] == 3
