"""Listings as data: JSON and YAML, whole or streamed a model at a time. Pure functions.

Every format shows the same data: each model's `model_dump(mode="json")`, the
API's own shape (docs/cli.md lists the fields and what stays stable). Escaping
is the format's own: JSON escapes control characters, and YAML is written
ASCII-only, so a control character, a bidi override or any other non-ASCII
character comes out as an escape (`"\\e"`, `"\\u202E"`) rather than raw.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import yaml
from pydantic import BaseModel


def data(model: BaseModel) -> dict[str, Any]:
    """What every format shows of `model`."""
    return model.model_dump(mode="json")


def to_json(models: Sequence[BaseModel]) -> str:
    return json.dumps([data(model) for model in models], indent=2)


def stream_json(models: Iterable[BaseModel]) -> Iterator[str]:
    """`to_json` of `models` in pieces (joined, exactly the same text), one per model."""
    first = True
    for model in models:
        item = textwrap.indent(json.dumps(data(model), indent=2), "  ")
        yield ("[\n" if first else ",\n") + item
        first = False
    yield "[]" if first else "\n]"


def yaml_text(value: Any) -> str:
    """`value` (JSON-like data) as block YAML, keys in their order, ASCII only."""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=False)


def stream_yaml(models: Iterable[BaseModel]) -> Iterator[str]:
    """One YAML list of `models`, in pieces (one per model): the same data as JSON."""
    first = True
    for model in models:
        yield yaml_text([data(model)])
        first = False
    if first:
        yield yaml_text([])


def json_line(model: BaseModel) -> str:
    """One model as one line of JSON (`--watch -o json` prints one per change)."""
    return json.dumps(data(model))


def yaml_document(model: BaseModel) -> str:
    """One model as a YAML document of its own, `---` first (`--watch -o yaml`)."""
    return "---\n" + yaml_text(data(model))
