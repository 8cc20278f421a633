"""`corral dashboard`'s options and login: where it listens and what that exposes, the
credentials a browser sends, the verdicts kept, and the command's refusals."""

from __future__ import annotations

import base64

import pytest
from typer.testing import CliRunner

from bus.params import certificate_login
from bus.tls import Tls
from corral.cli import app
from corral.dashboard import login as login_module
from corral.dashboard.listen import Listen, exposure_warnings
from corral.dashboard.login import BrokerLogin, Verdict, as_user, basic_credentials


def header(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_credentials_are_read_and_anything_else_is_none() -> None:
    assert basic_credentials(header("ann:pa:ss word")) == ("ann", "pa:ss word")
    assert basic_credentials("basic " + header("ann:x")[6:]) == ("ann", "x")
    assert basic_credentials(header("ánn:sécret")) == ("ánn", "sécret")
    for bad in ["", "Bearer abc", "Basic", "Basic !!!", header("no-colon"), header(":pw")]:
        assert basic_credentials(bad) is None, bad
    latin1 = "Basic " + base64.b64encode("ann:\xe9".encode("latin-1")).decode()
    assert basic_credentials(latin1) is None


def test_an_empty_password_is_no_credentials() -> None:
    """With a client certificate, a URL without a password logs in by that certificate:
    `mallory:` must never reach the broker as the dashboard's own identity."""
    assert basic_credentials(header("mallory:")) is None
    assert basic_credentials(header(":")) is None


def test_a_login_check_shows_the_broker_no_client_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown: list[Tls | None] = []

    def verdict(url: str, tls: Tls | None) -> Verdict:
        shown.append(tls)
        assert not certificate_login(url, tls)
        return Verdict.DENIED

    monkeypatch.setattr(login_module, "broker_verdict", verdict)
    mine = Tls(ca_file="ca.pem", cert_file="dash.pem", key_file="dash.key")
    BrokerLogin("amqps://h/", tls=mine).verify("mallory", "x")
    BrokerLogin("amqps://h/", tls=Tls(cert_file="dash.pem")).verify("mallory", "x")
    assert shown == [Tls(ca_file="ca.pem"), None]


def test_the_users_url_is_the_dashboards_with_other_credentials() -> None:
    url = "amqp://dash:pw@10.0.0.1:5672/prod?heartbeat=30,amqps://dash:pw@10.0.0.2/prod"
    assert as_user(url, "a@b", "p/w:%") == (
        "amqp://a%40b:p%2Fw%3A%25@10.0.0.1:5672/prod?heartbeat=30,"
        "amqps://a%40b:p%2Fw%3A%25@10.0.0.2/prod"
    )
    assert as_user("amqp://127.0.0.1/", "ann", "x") == "amqp://ann:x@127.0.0.1/"


def test_verdicts_are_kept_for_a_while_and_a_broker_away_is_not_kept() -> None:
    now = [0.0]
    answers = {"amqp://ann:ok@h/": Verdict.OK, "amqp://ann:no@h/": Verdict.DENIED}
    asked: list[str] = []

    def check(url: str) -> Verdict:
        asked.append(url)
        return answers.get(url, Verdict.UNAVAILABLE)

    login = BrokerLogin("amqp://h/", check=check, ttl=60, denied_ttl=5, clock=lambda: now[0])
    assert login.cached("ann", "ok") is None
    assert login.verify("ann", "ok") is Verdict.OK
    assert login.verify("ann", "no") is Verdict.DENIED
    assert login.verify("bob", "x") is Verdict.UNAVAILABLE
    now[0] = 4.0
    assert login.cached("ann", "ok") is Verdict.OK and login.cached("ann", "no") is Verdict.DENIED
    assert login.cached("bob", "x") is None
    now[0] = 6.0
    assert login.cached("ann", "no") is None  # a denial is kept 5 s: ask again
    assert login.verify("ann", "ok") is Verdict.OK
    now[0] = 61.0
    assert login.verify("ann", "ok") is Verdict.OK
    assert asked == [
        "amqp://ann:ok@h/",
        "amqp://ann:no@h/",
        "amqp://bob:x@h/",
        "amqp://ann:ok@h/",
    ]


def test_guesses_never_push_out_a_good_login_and_good_logins_are_kept_by_use() -> None:
    def check(url: str) -> Verdict:
        return Verdict.OK if ":ok" in url else Verdict.DENIED

    login = BrokerLogin("amqp://h/", check=check, max_ok=2, max_denied=3)
    assert login.verify("ann", "ok") is Verdict.OK
    for guess in range(10):
        assert login.verify("ann", f"guess{guess}") is Verdict.DENIED
    assert login.cached("ann", "ok") is Verdict.OK
    assert login.cached("ann", "guess0") is None and login.cached("ann", "guess9") is Verdict.DENIED
    login.verify("bob", "ok")
    assert login.cached("ann", "ok") is Verdict.OK  # used: now the most recent
    login.verify("cy", "ok")  # pushes out bob, the least recently used
    assert login.cached("bob", "ok") is None
    assert login.cached("ann", "ok") is Verdict.OK and login.cached("cy", "ok") is Verdict.OK


@pytest.mark.parametrize(
    ("text", "host", "port", "loopback"),
    [
        ("127.0.0.1:8700", "127.0.0.1", 8700, True),
        ("localhost:80", "localhost", 80, True),
        ("[::1]:8700", "[::1]", 8700, True),
        ("0.0.0.0:8700", "0.0.0.0", 8700, False),
        ("[::]:9000", "[::]", 9000, False),
        ("192.168.1.5:8700", "192.168.1.5", 8700, False),
        ("dash.example:8700", "dash.example", 8700, False),
    ],
)
def test_listen_addresses(text: str, host: str, port: int, loopback: bool) -> None:
    listen = Listen.parse(text)
    assert (listen.host, listen.port, listen.loopback) == (host, port, loopback)
    if loopback:
        assert listen.hosts() == frozenset({"localhost", "127.0.0.1", "[::1]", host})
    else:
        assert listen.hosts() is None


@pytest.mark.parametrize("text", ["8700", "127.0.0.1", "127.0.0.1:0", "h:70000", ":8700", "[::1:8"])
def test_a_listen_address_that_is_not_host_and_port_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|brackets"):
        Listen.parse(text)


def test_listening_beyond_this_machine_is_warned_about() -> None:
    local, wide = Listen.parse("127.0.0.1:8700"), Listen.parse("0.0.0.0:8700")
    assert exposure_warnings(local, login=False, https=False) == []
    (loud,) = exposure_warnings(wide, login=False, https=False)
    assert "WITHOUT A LOGIN" in loud and "--login" in loud
    (clear,) = exposure_warnings(wide, login=True, https=False)
    assert "in clear" in clear
    assert exposure_warnings(wide, login=True, https=True) == []
    assert wide.url(https=False) == "http://127.0.0.1:8700/"


def test_the_command_refuses_bad_options_before_connecting() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["dashboard", "--listen", "nowhere"])
    assert result.exit_code == 2 and "--listen: expected HOST:PORT" in result.output
    result = runner.invoke(app, ["dashboard", "--https-cert", "c.pem"])
    assert result.exit_code == 2 and "go together" in result.output
    result = runner.invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0 and "--login" in result.output
