"""Reading job files (YAML or JSON) into a validated JobSpec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.envelope import describe_errors
from schemas.job import JobSpec


class JobFileError(ValueError):
    """A job file that cannot be used; the text names the file and the field."""


def parse_job_text(text: str, source: str = "<job>") -> JobSpec:
    """Parse YAML or JSON text (JSON is YAML; for broken JSON, json explains it better)."""
    data: Any
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if text.lstrip().startswith("{"):  # meant as JSON: json's message is the clearer one
            try:
                json.loads(text)
            except json.JSONDecodeError as json_error:
                raise JobFileError(f"{source}: not valid YAML or JSON: {json_error}") from None
        raise JobFileError(f"{source}: not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise JobFileError(f"{source}: expected a mapping of job fields (name, image, ...)")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise JobFileError(f"{source}: {describe_errors(exc)}") from None


def load_job_file(path: str | Path) -> JobSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_job_text(text, str(path))
