"""What docker, kubectl and nomad users reach for first: `--version`, `-h` beside
`--help` (on every command), shell completion scripts, and the options every listing
shares (docs/cli.md).

Each of the CLI's conventions (issue 11, item 4) has its tests:

- `--version`, `-h`, completion: here;
- `-o table|wide|json|yaml`, `--no-headers`, `ps -a/--state/--node`, `jobs --state`,
  `--watch` on jobs, ps and nodes (against a scripted client): test_cli_listings.py;
- `--watch`'s parts (which events, what changed, when to read again, the event
  thread, redraw or changed rows): test_cli_watching.py;
- colour only on a terminal, NO_COLOR, `--color`: test_cli_colour.py;
- the progress line while `--wait` runs: test_cli_progress.py;
- named contexts (`corral context`, `--context`, the file, precedence):
  test_cli_contexts.py;
- every listing's JSON shape, documented and stable: test_cli_json_shapes.py;
- against a real cluster (`ps --watch`, colour on a pseudo-terminal, a context):
  tests/integration/test_cli_conventions.py.
"""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from corral import cli

runner = CliRunner()


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(cli.app, ["--version"], prog_name="corral")
    assert result.exit_code == 0
    assert result.output.strip() == f"corral {version('corral')}"
    assert re.fullmatch(r"corral \d+\.\d+\.\d+\S*", result.output.strip())


@pytest.mark.parametrize("args", [["-h"], ["run", "-h"], ["jobs", "-h"], ["worker", "-h"]])
def test_h_is_help_everywhere(args: list[str]) -> None:
    short = runner.invoke(cli.app, args, prog_name="corral")
    long = runner.invoke(cli.app, [*args[:-1], "--help"], prog_name="corral")
    assert short.exit_code == 0 and short.output == long.output
    assert short.output.startswith("Usage: corral")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_offered(shell: str) -> None:
    result = runner.invoke(cli.app, ["--show-completion", shell], prog_name="corral")
    assert result.exit_code == 0, result.output
    assert "_CORRAL_COMPLETE" in result.output


def test_completion_completes_command_names() -> None:
    result = runner.invoke(
        cli.app,
        [],
        prog_name="corral",
        env={"_CORRAL_COMPLETE": "complete_bash", "COMP_WORDS": "corral ca", "COMP_CWORD": "1"},
    )
    assert "cancel" in result.output.split()


def test_the_global_options_are_offered() -> None:
    result = runner.invoke(cli.app, ["-h"], prog_name="corral")
    for option in ("--context NAME", "CORRAL_CONTEXT", "--color", "auto|always|never"):
        assert option in result.output
    assert "context" in result.output.split()  # the `corral context` commands


@pytest.mark.parametrize("command", ["jobs", "ps", "nodes", "masters"])
def test_every_listing_takes_the_output_options(command: str) -> None:
    result = runner.invoke(cli.app, [command, "-h"], prog_name="corral")
    assert result.exit_code == 0
    assert "-o, --output" in result.output and "wide" in result.output
    assert "--no-headers" in result.output
    assert ("-w, --watch" in result.output) is (command != "masters")


@pytest.mark.parametrize(("command", "filters"), [("ps", ["-a,", "--state", "--node"]),
                                                   ("jobs", ["--state"])])  # fmt: skip
def test_the_filters_are_offered(command: str, filters: list[str]) -> None:
    result = runner.invoke(cli.app, [command, "-h"], prog_name="corral")
    assert all(option in result.output for option in filters)
