"""Named contexts: `corral context add/use/list/remove/show`, the file they live in
(mode 0600, written atomically, under a temporary XDG_CONFIG_HOME here), and which
broker a command talks to: --amqp > CORRAL_AMQP_URL > --context / CORRAL_CONTEXT >
the current context > the default."""

from __future__ import annotations

import contextvars
import functools
import json
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bus.tls import Tls
from corral import cli, clitools, daemons
from corral.client import DEFAULT_URL
from corral.contexts import Context, ContextError, Contexts, contexts_path, load, parse, update

PROD = "amqp://alice:s3cret@rabbit1:5672/"
PROD_2 = "amqp://alice:s3cret@rabbit2:5672/"
STAGING = "amqp://bob:hunter22@staging:5672/"
runner = CliRunner()


@dataclass
class Seen:
    urls: list[str] = field(default_factory=list)
    tls: list[Tls | None] = field(default_factory=list)


class Recording:
    def __init__(self, seen: Seen, url: str | None = None, *, tls: Tls | None = None, **_: Any):
        seen.urls.append(url or "")
        seen.tls.append(tls)

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def iter_jobs(self) -> Iterator[list[Any]]:
        yield []

    def iter_nodes(self) -> Iterator[list[Any]]:
        yield []

    def events(self, pattern: str = "#") -> Iterator[Any]:
        return iter(())


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config directory of the test's own; no URL or context from the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in ("CORRAL_AMQP_URL", "CORRAL_CONTEXT", "CORRAL_TLS_CA", "CORRAL_TLS_CERT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "config" / "corral" / "contexts.yaml"


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Seen:
    recorded = Seen()
    monkeypatch.setattr(cli, "Client", functools.partial(Recording, recorded))
    return recorded


def corral(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(cli.app, list(args), prog_name="corral", env=env)


def add(name: str, *urls: str, more: tuple[str, ...] = ()) -> Any:
    result = corral(
        "context", "add", name, *(arg for url in urls for arg in ("--amqp", url)), *more
    )
    assert result.exit_code == 0, result.output
    return result


# -- the commands and the file --


def test_add_writes_a_private_file_and_never_shows_the_password(config: Path) -> None:
    added = add("prod", PROD, PROD_2)
    assert "s3cret" not in added.output
    assert "amqp://alice:***@rabbit1:5672/, amqp://alice:***@rabbit2:5672/" in added.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    saved = yaml.safe_load(config.read_text())
    assert saved == {"current": None, "contexts": {"prod": {"amqp": [PROD, PROD_2]}}}
    # No temporary left; the lock file is private too.
    assert sorted(p.name for p in config.parent.iterdir()) == [
        "contexts.yaml",
        "contexts.yaml.lock",
    ]
    assert stat.S_IMODE(config.with_name("contexts.yaml.lock").stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_file_as_it_was(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add("prod", PROD)
    before = config.read_text()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("corral.contexts.os.fsync", full_disk)
    result = corral("context", "add", "staging", "--amqp", STAGING)
    assert result.exit_code == 1
    assert result.stderr == f"error: could not write {config}: No space left on device\n"
    assert config.read_text() == before
    left = sorted(p.name for p in config.parent.iterdir())
    assert left in (["contexts.yaml"], ["contexts.yaml", "contexts.yaml.lock"])  # no temporary


def test_concurrent_updates_each_land(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("corral.contexts.os.fsync", lambda fd: None)  # speed, not durability
    rounds = 25

    def adder(prefix: str) -> None:
        for i in range(rounds):
            context = Context(f"{prefix}{i}", (f"amqp://{prefix}{i}/",))
            update(config, functools.partial(Contexts.with_context, context=context))

    threads = [threading.Thread(target=adder, args=(prefix,)) for prefix in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(load(config).contexts) == 2 * rounds  # no read-modify-write lost another's
    lock = config.parent / "contexts.yaml.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_an_update_that_raises_writes_nothing(config: Path) -> None:
    add("prod", PROD)
    before = config.read_text()

    def refuse(contexts: Contexts) -> Contexts:
        raise ContextError("no")

    with pytest.raises(ContextError):
        update(config, refuse)
    assert config.read_text() == before
    assert update(config, lambda contexts: contexts).contexts.keys() == {"prod"}


def test_use_list_show_and_remove(config: Path) -> None:
    add("prod", PROD)
    add("staging", STAGING)
    assert corral("context", "use", "staging").exit_code == 0
    listed = corral("context", "list").stdout.splitlines()
    assert [line.split()[:2] for line in listed[1:]] == [["prod", "amqp://alice:***@rabbit1:5672/"],
                                                         ["*", "staging"]]  # fmt: skip
    as_json = json.loads(corral("context", "list", "-o", "json").stdout)
    assert [(c["name"], c["current"]) for c in as_json] == [("prod", False), ("staging", True)]
    assert "hunter22" not in corral("context", "list", "-o", "yaml").stdout
    shown = corral("context", "show").stdout
    assert "context: staging (the current context" in shown
    assert "broker: amqp://bob:***@staging:5672/" in shown
    removed = corral("context", "remove", "staging")
    assert "no context is current now" in removed.stdout
    assert yaml.safe_load(config.read_text())["current"] is None
    assert (
        "broker: amqp://guest:***@127.0.0.1:5672/ (the default)" in corral("context", "show").stdout
    )


def test_use_default_forgets_the_current_context(config: Path) -> None:
    add("prod", PROD, more=("--use",))
    assert corral("context", "use", "default").exit_code == 0
    assert yaml.safe_load(config.read_text())["current"] is None


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["default", "--amqp", PROD], "'default' stands for no context"),
        (["a b", "--amqp", PROD], "use letters, digits"),
        (["prod", "--amqp", "rabbit1:5672"], "invalid --amqp URL 'rabbit1:5672'"),
        (["prod", "--amqp", PROD, "--tls-ca", "/no/such/ca.pem"], "--tls-ca '/no/such/ca.pem'"),
    ],
)
def test_add_refuses_bad_input_naming_the_option(
    config: Path, args: list[str], problem: str
) -> None:
    result = corral("context", "add", *args)
    assert result.exit_code == 2
    assert problem in result.stderr
    assert not config.exists()


def test_add_does_not_replace_unless_told(config: Path) -> None:
    add("prod", PROD)
    again = corral("context", "add", "prod", "--amqp", STAGING)
    assert again.exit_code == 2 and "--replace" in again.stderr
    add("prod", STAGING, more=("--replace",))
    assert yaml.safe_load(config.read_text())["contexts"]["prod"]["amqp"] == [STAGING]


def test_tls_files_are_kept_as_absolute_paths(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    monkeypatch.chdir(tmp_path)
    add("secure", "amqps://alice:pw@rabbit:5671/", more=("--tls-ca", "ca.pem"))
    entry = yaml.safe_load(config.read_text())["contexts"]["secure"]
    assert entry["tls_ca"] == str(tmp_path / "ca.pem")


def test_unknown_contexts_name_the_fix(config: Path, seen: Seen) -> None:
    add("prod", PROD)
    used = corral("context", "use", "prd")
    assert used.exit_code == 1
    assert "no context is called 'prd'" in used.stderr and "(contexts: prod)" in used.stderr
    assert "`corral context add prd --amqp URL`" in used.stderr
    flagged = corral("--context", "prd", "jobs")
    assert flagged.exit_code == 2 and "no context is called 'prd'" in flagged.stderr
    from_env = corral("jobs", env={"CORRAL_CONTEXT": "prd"})
    assert from_env.exit_code == 2
    assert corral("context", "show", env={"CORRAL_CONTEXT": "prd"}).exit_code == 2
    assert corral("context", "remove", "prd").exit_code == 1
    assert seen.urls == []


def test_a_current_context_that_is_gone_says_how_to_pick_another(config: Path, seen: Seen) -> None:
    add("prod", PROD, more=("--use",))
    config.write_text(config.read_text().replace("prod:", "other:"))
    result = corral("jobs")
    assert result.exit_code == 1
    assert "the current context 'prod' is not in" in result.stderr
    assert "`corral context use NAME`" in result.stderr


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("current: [\n", "line 2: not YAML"),
        ("contexts:\n  a: {amqp: []}\n", "contexts.a.amqp: List should have at least 1 item"),
        ("contexts:\n  a: {amqp: [u], colour: red}\n", "contexts.a.colour: Extra inputs"),
        ("- a\n- b\n", "the top level: Input should be a valid dictionary"),
    ],
)
def test_a_corrupt_file_is_an_error_naming_it_and_the_fix(
    config: Path, seen: Seen, text: str, problem: str
) -> None:
    config.parent.mkdir(parents=True)
    config.write_text(text)
    result = corral("jobs")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {config} is not a contexts file ({problem}")
    assert "move it away and add the contexts again" in result.stderr
    assert "Traceback" not in result.output
    with pytest.raises(ContextError):
        parse(text, config)
    # A URL given outright does not need the file.
    assert corral("jobs", "--amqp", PROD).exit_code == 0
    assert seen.urls == [PROD]


def test_a_bad_url_in_the_file_says_where_it_came_from(config: Path, seen: Seen) -> None:
    add("prod", PROD, more=("--use",))
    config.write_text(config.read_text().replace(PROD, "rabbit1:5672"))
    result = corral("jobs")
    assert result.exit_code == 1
    assert "invalid --amqp URL 'rabbit1:5672'" in result.stderr
    assert "(it came from context 'prod' in" in result.stderr


# -- which broker a command talks to --


def test_precedence_of_the_broker_url(config: Path, seen: Seen) -> None:
    env_url = "amqp://env:pw@from-env:5672/"
    flag_url = "amqp://flag:pw@from-flag:5672/"
    assert corral("jobs").exit_code == 0
    assert seen.urls == [DEFAULT_URL]  # nothing: the default
    add("prod", PROD, PROD_2, more=("--use",))
    add("staging", STAGING)
    cases = [
        ([], [], {}, f"{PROD},{PROD_2}"),  # the current context
        ([], [], {"CORRAL_CONTEXT": "staging"}, STAGING),
        (["--context", "prod"], [], {"CORRAL_CONTEXT": "staging"}, f"{PROD},{PROD_2}"),
        (["--context", "default"], [], {}, DEFAULT_URL),  # no context, this once
        (["--context", "staging"], [], {"CORRAL_AMQP_URL": env_url}, env_url),
        (["--context", "staging"], ["--amqp", flag_url], {"CORRAL_AMQP_URL": env_url}, flag_url),
    ]
    for before, after, env, expected in cases:
        result = corral(*before, "jobs", *after, env=env)
        assert result.exit_code == 0, result.output
        assert seen.urls[-1] == expected, (before, after, env)


def test_a_contexts_tls_files_reach_the_client(
    config: Path, seen: Seen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem", "other-ca.pem"):
        (tmp_path / name).write_text(name)
    files = ("--tls-ca", str(tmp_path / "ca.pem"), "--tls-cert", str(tmp_path / "cert.pem"),
             "--tls-key", str(tmp_path / "key.pem"))  # fmt: skip
    add("secure", "amqps://alice:pw@rabbit:5671/", more=(*files, "--use"))
    assert corral("jobs").exit_code == 0
    assert seen.tls[-1] == Tls(
        str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    )
    # A variable still wins over the context's file; without a context no TLS is passed.
    assert corral("jobs", env={"CORRAL_TLS_CA": str(tmp_path / "other-ca.pem")}).exit_code == 0
    assert seen.tls[-1] is not None and seen.tls[-1].ca_file == str(tmp_path / "other-ca.pem")
    assert corral("jobs", "--amqp", PROD).exit_code == 0
    assert seen.tls[-1] is None
    # --watch reads its events on a thread of its own, with a client made for it here.
    assert corral("nodes", "--watch").exit_code == 0
    assert [tls.ca_file if tls else None for tls in seen.tls[-2:]] == [str(tmp_path / "ca.pem")] * 2


def test_the_file_is_under_xdg_config_home_else_home(tmp_path: Path) -> None:
    assert contexts_path({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path("/x/corral/contexts.yaml")
    assert contexts_path({"HOME": "/h"}) == Path("/h/.config/corral/contexts.yaml")
    relative = {"XDG_CONFIG_HOME": "rel", "HOME": "/h"}  # the XDG spec: ignored
    assert contexts_path(relative) == Path("/h/.config/corral/contexts.yaml")


def test_the_daemons_ignore_contexts(
    config: Path, seen: Seen, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master or worker started without --amqp never follows the user's current context."""
    ran: list[str] = []
    monkeypatch.setattr(daemons, "_run_daemon", lambda _serve, url: ran.append(url))
    add("prod", PROD, more=("--use",))
    assert corral("master", "--name", "m1").exit_code == 0
    assert corral("--context", "prod", "master", "--name", "m1").exit_code == 0
    assert ran == [DEFAULT_URL, DEFAULT_URL]
    flag = corral("master", "--name", "m1", "--amqp", STAGING)
    assert flag.exit_code == 0
    assert ran[-1] == STAGING


def test_a_connector_called_on_another_thread_keeps_the_contexts_tls() -> None:
    """`corral top` and `corral dashboard` connect on their live model's thread: the
    context's TLS files, chosen on the command's thread, must reach that client too."""
    tls = Tls(ca_file="/etc/ca.pem")
    got: list[Any] = []

    def connect(amqp: list[str] | str) -> Any:
        return (amqp, clitools.context_tls())

    def command() -> None:
        clitools._context_tls.set(tls)
        later = clitools.connector(connect, PROD)
        other = threading.Thread(target=lambda: got.append(later()))
        other.start()
        other.join()

    contextvars.Context().run(command)
    assert got == [(PROD, tls)]
