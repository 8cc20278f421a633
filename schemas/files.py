"""Reading job files (YAML or JSON) into a validated JobSpec.

A job file is validated as strictly as a spec on the wire, with one courtesy:
YAML reads `PORT: 8080` as a number, so numeric env values become strings
("8080"). A boolean never becomes anything else: `DEBUG: yes` must be quoted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.envelope import describe_errors
from schemas.job import JobSpec
from schemas.limits import MAX_JOB_FILE_BYTES


class JobFileError(ValueError):
    """A job file that cannot be used; the text names the file and the field."""


def parse_job_text(text: str, source: str = "<job>") -> JobSpec:
    """Parse YAML or JSON text (JSON is YAML; for broken JSON, json explains it better)."""
    size = len(text.encode(errors="replace"))
    if size > MAX_JOB_FILE_BYTES:
        raise JobFileError(
            f"{source}: {size} bytes, more than the {MAX_JOB_FILE_BYTES} a job file may have"
        )
    data: Any
    try:
        data, env_text = _load_yaml(text)
    except yaml.YAMLError as exc:
        if text.lstrip().startswith("{"):  # meant as JSON: json's message is the clearer one
            try:
                json.loads(text)
            except json.JSONDecodeError as json_error:
                raise JobFileError(f"{source}: not valid YAML or JSON: {json_error}") from None
            except RecursionError:
                pass
        raise JobFileError(f"{source}: not valid YAML or JSON: {exc}") from None
    except RecursionError:  # PyYAML's composer recurses once per level of nesting
        raise JobFileError(f"{source}: nested too deeply to be a job file") from None
    if not isinstance(data, dict):
        raise JobFileError(f"{source}: expected a mapping of job fields (name, image, ...)")
    if isinstance(data.get("env"), dict):
        data["env"] = _env_as_text(data["env"], env_text, source)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise JobFileError(f"{source}: {describe_errors(exc)}") from None


def _load_yaml(text: str) -> tuple[Any, dict[str, str]]:
    """The document, and the text of each env value that YAML resolved to a number."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    numbers = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "env" and isinstance(value, yaml.MappingNode):
                for name, item in value.value:
                    if isinstance(item, yaml.ScalarNode) and item.tag in _NUMBER_TAGS:
                        numbers[str(name.value)] = str(item.value)
    return data, numbers


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _env_as_text(env: dict[Any, Any], numbers: dict[str, str], source: str) -> dict[Any, Any]:
    """Numeric env values as the text they were written as (`UMASK: 0022` stays "0022")."""
    converted = {}
    for key, value in env.items():
        if isinstance(value, bool):
            raise JobFileError(
                f"{source}: env.{key}: YAML read this as a boolean; quote it "
                f'(e.g. {key}: "{str(value).lower()}") to pass it as text'
            )
        if isinstance(value, int | float) and isinstance(key, str):
            value = numbers.get(key, str(value))
        converted[key] = value
    return converted


def read_job_text(path: Path) -> str:
    """A job file's text; JobFileError naming it if it cannot be read."""
    try:
        return path.read_text()
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise JobFileError(f"{path}: not UTF-8 text") from None


def load_job_file(path: str | Path) -> JobSpec:
    path = Path(path)
    return parse_job_text(read_job_text(path), str(path))
