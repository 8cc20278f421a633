"""Several broker URLs (the nodes of a RabbitMQ cluster): parsing, checks, rotation, redaction."""

from __future__ import annotations

import sys
import types
from typing import Annotated, Any

import pika.exceptions  # noqa: TID251 - the failures pika raises, to see how they are told
import pytest
import typer
from typer.testing import CliRunner

from bus import params
from bus.connection import Bus
from bus.errors import AccessRefused, ConnectionLost
from bus.errors import InvalidUrl as BusInvalidUrl
from corral import cli, daemons
from corral.client import Client
from corral.clitools import DEFAULT_URLS, AmqpUrls
from corral.errors import InvalidUrl, redact_url, scrub
from corral.urls import check_url, join_urls, url_problem

A = "amqp://guest:guest@rabbit1:5672/"
B = "amqp://guest:guest@rabbit2:5672/"
C = "amqps://admin:hunter22@rabbit3:5671/%2F"


# -- parsing --


@pytest.mark.parametrize(
    ("setting", "urls"),
    [
        (A, [A]),
        (f"{A},{B}", [A, B]),
        (f"{A},{B},{C}", [A, B, C]),
        (f"{A} , {B}", [A, B]),  # blanks around the comma
        ("amqp://u:pa,ss@h/", ["amqp://u:pa,ss@h/"]),  # a comma in a password stays
        ("amqp://h/ ", ["amqp://h/ "]),  # one URL is left exactly as it is
        ("", [""]),
    ],
)
def test_a_setting_splits_where_a_comma_starts_another_url(setting: str, urls: list[str]) -> None:
    assert params.split_urls(setting) == urls


def test_repeated_urls_join_into_one_setting() -> None:
    assert join_urls([A, f"{B},{C}"]) == f"{A},{B},{C}"
    assert params.split_urls(join_urls([A, B])) == [A, B]


# -- validation --


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        (f"{A},{B}", None),
        (f"{A},amqp://h:port/", "URL 2 of 2: the port 'port' is not a number"),
        (f"amqp:///,{A},{B}", "URL 1 of 3: it names no host"),
        (f"{A},http://h/", "URL 2 of 2: it does not start with amqp:// or amqps://"),
        (f"{A},amqp://h/?nosuchoption=1", "URL 2 of 2: its ?options are not valid"),
        # The second URL lost its scheme: not split, and not taken for a vhost either.
        (f"{A},localhost:5672", "holds a ',' outside the password"),
        ("amqp://h1,h2/", "give each broker node a URL of its own"),
        (f"{A},", "holds a ','"),
        ("amqp://u:pa,ss@h/", None),
    ],
)
def test_each_url_is_checked_and_the_bad_one_named(setting: str, problem: str | None) -> None:
    found = url_problem(setting)
    assert found == problem if problem is None else problem in (found or "")


def test_a_single_bad_url_is_reported_as_before() -> None:
    assert url_problem("amqp://h:port/") == "the port 'port' is not a number"
    with pytest.raises(BusInvalidUrl) as raised:
        params.check_url("amqp://h:port/")
    assert str(raised.value) == (
        "the AMQP URL is not valid: the port 'port' is not a number;"
        " expected amqp://USER:PASSWORD@HOST:PORT/VHOST"
    )


def test_the_bus_names_which_url_is_bad_and_never_its_password() -> None:
    with pytest.raises(BusInvalidUrl) as raised:
        params.check_url(f"{A},amqp://u:hunter22@h:99999/")
    text = str(raised.value)
    assert text.startswith("AMQP URL 2 of 2 is not valid: the port 99999 is not between")
    assert text.endswith("HOST:PORT/VHOST, several separated by commas")
    assert "hunter22" not in text


def test_the_client_error_shows_the_bad_url_only_with_its_password_hidden() -> None:
    with pytest.raises(InvalidUrl) as raised:
        check_url(f"{C},amqp://u:hunter22@h:port/", option="--amqp")
    assert str(raised.value) == (
        "invalid --amqp URL 'amqp://u:***@h:port/' (URL 2 of 2: the port 'port' is not a"
        " number): expected amqp://USER:PASSWORD@HOST:PORT/VHOST, several separated by commas"
    )
    with pytest.raises(InvalidUrl, match="URL 2 of 2"):
        Client([A, "amqp://h:port/"])


def test_a_client_takes_a_list_or_a_comma_separated_string() -> None:
    assert Client([A, B]).url == f"{A},{B}"
    assert Client(f"{A},{B}").url == f"{A},{B}"


# -- parameters and rotation --


def test_each_url_becomes_its_own_connection_parameters_in_order() -> None:
    found = params.connection_parameters(f"{A},{C}", name="t", heartbeat=7)
    assert [(p.host, p.port, p.heartbeat) for p in found] == [
        ("rabbit1", 5672, 7),
        ("rabbit3", 5671, 7),
    ]
    assert all(p.client_properties == {"connection_name": "t"} for p in found)
    probes = params.probe_parameters(f"{A},{B}", name="t")
    assert [(p.host, p.heartbeat, p.socket_timeout) for p in probes] == [
        ("rabbit1", 0, 2),
        ("rabbit2", 0, 2),
    ]


@pytest.mark.parametrize(
    ("start", "count", "order"),
    [(0, 1, [0]), (0, 3, [0, 1, 2]), (1, 3, [1, 2, 0]), (2, 3, [2, 0, 1])],
)
def test_rotation_starts_at_the_given_node_and_wraps(
    start: int, count: int, order: list[int]
) -> None:
    assert params.rotation(start, count) == order


class Nodes:
    """A fake `connect`: records the hosts tried, fails for those in `down`."""

    def __init__(self, **down: BaseException) -> None:
        self.down = down
        self.tried: list[str] = []

    def __call__(self, parameters: Any) -> str:
        self.tried.append(parameters.host)
        failure = self.down.get(parameters.host)
        if failure is not None:
            raise failure
        return f"connection to {parameters.host}"


def three_nodes() -> list[Any]:
    return params.connection_parameters("amqp://n0/,amqp://n1/,amqp://n2/", name="t", heartbeat=0)


def test_connect_first_tries_the_nodes_in_turn_from_the_start() -> None:
    nodes = Nodes(n1=pika.exceptions.AMQPConnectionError(), n2=OSError("reset"))
    assert params.connect_first(three_nodes(), 1, nodes) == (0, "connection to n0")
    assert nodes.tried == ["n1", "n2", "n0"]


def test_when_no_node_connects_the_error_names_each() -> None:
    refused = pika.exceptions.AMQPConnectionError()
    nodes = Nodes(n0=refused, n1=refused, n2=OSError("timed out"))
    with pytest.raises(ConnectionLost) as raised:
        params.connect_first(three_nodes(), 0, nodes)
    text = str(raised.value)
    assert text.startswith("no broker node accepts a connection (n0:5672: AMQPConnectionError")
    assert "n2:5672: OSError: timed out" in text


def test_a_refusal_of_the_credentials_wins_over_unreachable_nodes() -> None:
    nodes = Nodes(
        n0=pika.exceptions.AMQPConnectionError(),
        n1=pika.exceptions.ProbableAuthenticationError(),
        n2=pika.exceptions.AMQPConnectionError(),
    )
    with pytest.raises(AccessRefused, match="n1:5672: the broker refused the user name"):
        params.connect_first(three_nodes(), 0, nodes)


def test_a_single_node_fails_with_the_same_text_as_before() -> None:
    one = params.connection_parameters("amqp://n0/", name="t", heartbeat=0)
    with pytest.raises(AccessRefused) as raised:
        params.connect_first(one, 0, Nodes(n0=pika.exceptions.ProbableAuthenticationError()))
    assert str(raised.value) == "the broker refused the user name or password"
    with pytest.raises(ConnectionLost) as lost:
        params.connect_first(one, 0, Nodes(n0=pika.exceptions.AMQPConnectionError()))
    assert str(lost.value) == "AMQPConnectionError"


def test_each_connect_attempt_of_a_bus_starts_at_the_next_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts: list[int] = []

    def refuse_all(parameters: Any, start: int, connect: Any) -> Any:
        starts.append(start)
        raise ConnectionLost("down")

    monkeypatch.setattr("bus.connection.connect_first", refuse_all)
    bus = Bus("amqp://n0/,amqp://n1/,amqp://n2/", name="t")
    for _ in range(4):
        with pytest.raises(ConnectionLost):
            bus._connect_once()
    assert starts == [0, 1, 2, 0]
    assert bus.connected_url is None


# -- redaction --


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        (f"{A},{C}", "amqp://guest:***@rabbit1:5672/,amqps://admin:***@rabbit3:5671/%2F"),
        ("amqp://u:pa,ss@h/,amqp://v:p2@h2/", "amqp://u:***@h/,amqp://v:***@h2/"),
        ("amqp://h1/, amqp://w:secret@h2/", "amqp://h1/,amqp://w:***@h2/"),
    ],
)
def test_redact_url_hides_every_password_of_a_list(setting: str, shown: str) -> None:
    assert redact_url(setting) == shown


def test_scrub_hides_the_passwords_of_every_url() -> None:
    setting = f"{A},{C}"
    text = scrub(f"refused {C!r}: password hunter22 for {setting}", setting)
    assert "hunter22" not in text
    assert "amqps://admin:***@rabbit3:5671/%2F" in text


def test_the_connected_url_hides_the_password() -> None:
    assert params.redacted(C) == "amqps://admin:***@rabbit3:5671/%2F"
    assert params.redacted("amqp://h:5672/") == "amqp://h:5672/"
    assert params.redacted("amqp://user@h/") == "amqp://user@h/"


# -- the command line --

app = typer.Typer()


@app.command()
def show(amqp: AmqpUrls = DEFAULT_URLS) -> None:
    typer.echo(repr(amqp))


@app.command()
def other(flag: Annotated[bool, typer.Option()] = False) -> None:
    """A second command, so that `show` must be named."""


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "env", "urls"),
    [
        ([], {}, DEFAULT_URLS),
        (["--amqp", A, "--amqp", B], {}, [A, B]),
        (["--amqp", f"{A},{B}", "--amqp", C], {}, [A, B, C]),
        ([], {"CORRAL_AMQP_URL": f"{A},{B}"}, [A, B]),
        ([], {"CORRAL_AMQP_URL": f"{A}, {B}"}, [A, B]),
        ([], {"CORRAL_AMQP_URL": A}, [A]),
        (["--amqp", C], {"CORRAL_AMQP_URL": f"{A},{B}"}, [C]),  # the option wins
    ],
)
def test_amqp_is_repeatable_and_the_environment_a_comma_separated_list(
    args: list[str], env: dict[str, str], urls: list[str]
) -> None:
    result = runner.invoke(app, ["show", *args], env={"CORRAL_AMQP_URL": "", **env})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == repr(urls)


def test_a_bad_repeated_url_is_a_usage_error_naming_it() -> None:
    result = runner.invoke(app, ["show", "--amqp", A, "--amqp", "amqp://u:hunter22@h:port/"])
    assert result.exit_code == 2
    assert "invalid --amqp URL 'amqp://u:***@h:port/' (URL 2 of 2:" in result.output
    assert "hunter22" not in result.output


def test_a_bad_url_in_the_environment_says_where_it_came_from() -> None:
    result = runner.invoke(app, ["show"], env={"CORRAL_AMQP_URL": f"{A},amqp://h:0/"})
    assert result.exit_code == 2
    assert "(URL 2 of 2: the port 0 is not between 1 and 65535)" in result.output
    assert result.output.rstrip().endswith("(it came from CORRAL_AMQP_URL)")


def test_the_master_command_joins_repeated_urls_into_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    fake = types.ModuleType("master.daemon")
    fake.serve = lambda settings: seen.append(settings.amqp_url)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "master.daemon", fake)
    monkeypatch.setattr(daemons, "setup_logging", lambda level: None)
    result = runner.invoke(
        cli.app, ["master", "--amqp", A, "--amqp", B], env={"CORRAL_AMQP_URL": ""}
    )
    assert result.exit_code == 0, result.output
    assert seen == [f"{A},{B}"]
