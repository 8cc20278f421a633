"""What docker, kubectl and nomad users reach for first: `--version`, `-h` beside
`--help` (on every command), and shell completion scripts."""

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
