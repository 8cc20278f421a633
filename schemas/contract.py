"""The machine-readable contract of Corral's protocol, generated from the models.

    python -m schemas.contract           # (re)writes docs/schema/*.json and docs/asyncapi.yaml
    python -m schemas.contract --check   # exits 1, naming the files, if they are out of date

`docs/schema/<type>.json` is a JSON Schema (draft 2020-12) of one message type: the
envelope with that type's payload (`heartbeat.json`, `api.submit.json`, ...). Beside
them, `JobSpec.json` and the models an `api.reply` result carries (`JobInfo.json`,
`TaskInfo.json`, `NodeInfo.json`, `Page.json`). `docs/asyncapi.yaml` (AsyncAPI 3.0)
names every exchange and queue of bus/topology.py as a channel with its routing keys,
who publishes and who consumes there, and the messages, whose schemas are the same.

The schemas describe what a receiver accepts (pydantic's validation mode), so they say
what a sender must send; docs/protocol.md gives the meaning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from schemas.asyncapi import asyncapi
from schemas.jsonschemas import GENERATED, json_schemas

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = Path("docs/schema")
ASYNCAPI = Path("docs/asyncapi.yaml")


class _Dumper(yaml.SafeDumper):
    """Writes a shared value out in full each time: no YAML anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> dict[Path, str]:
    """Every generated file (path relative to the repository root) and its text."""
    files = {
        SCHEMA_DIR / name: json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
        for name, schema in json_schemas().items()
    }
    text = yaml.dump(asyncapi(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    files[ASYNCAPI] = f"# {GENERATED}\n{text}"
    return files


def stale_files(root: Path = ROOT) -> list[str]:
    """The generated files under `root` that are missing, differ, or are left over."""
    expected = render()
    problems = [
        f"{path} is out of date" if (root / path).exists() else f"{path} is missing"
        for path, text in expected.items()
        if not (root / path).exists() or (root / path).read_text() != text
    ]
    if (root / SCHEMA_DIR).is_dir():
        for path in sorted((root / SCHEMA_DIR).iterdir()):
            if path.relative_to(root) not in expected:
                problems.append(f"{path.relative_to(root)} is not generated any more")
    return problems


def write(root: Path = ROOT) -> None:
    """Write every generated file under `root`, and remove schema files no longer made."""
    expected = render()
    (root / SCHEMA_DIR).mkdir(parents=True, exist_ok=True)
    for path in (root / SCHEMA_DIR).iterdir():
        if path.relative_to(root) not in expected:
            path.unlink()
    for path, text in expected.items():
        (root / path).write_text(text)


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print("usage: python -m schemas.contract [--check]", file=sys.stderr)
        return 2
    if argv == ["--check"]:
        problems = stale_files()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m schemas.contract` and commit the result", file=sys.stderr)
            return 1
        return 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
