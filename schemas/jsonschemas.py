"""JSON Schemas of Corral's messages, generated from the models (see schemas.contract)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas.api import JobInfo, NodeInfo, Page, TaskInfo
from schemas.envelope import PAYLOAD_TYPES, PROTOCOL_VERSION, Envelope
from schemas.job import JobSpec
from schemas.messages import Payload

GENERATED = "Generated from schemas/ by `python -m schemas.contract`; do not edit."
DRAFT = "https://json-schema.org/draft/2020-12/schema"
RESULT_MODELS: tuple[type[BaseModel], ...] = (JobSpec, JobInfo, TaskInfo, NodeInfo, Page)
LOCAL_REFS = "#/$defs/{model}"


def envelope_schema(cls: type[Payload], ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema of an envelope of type `cls.TYPE`, and the definitions it refers to."""
    refs, top = models_json_schema(
        [(Envelope, "validation"), (cls, "validation")], ref_template=ref_template
    )
    defs: dict[str, Any] = top.get("$defs", {})
    schema = defs.pop(Envelope.__name__)
    properties = schema["properties"]
    properties["type"] = {"const": cls.TYPE, "title": "Type", "type": "string"}
    # Any other version is refused, so the schema of version N says exactly N.
    properties["version"] = {
        "const": PROTOCOL_VERSION,
        "default": PROTOCOL_VERSION,
        "title": "Version",
        "type": "integer",
    }
    properties["payload"] = refs[(cls, "validation")]
    if any(field.is_required() for field in cls.model_fields.values()):
        schema["required"] = [*schema.get("required", []), "payload"]
    schema["title"] = f"{cls.TYPE} message"
    schema["description"] = (
        f"An envelope of type {cls.TYPE!r} ({summary(cls)}). Unknown envelope fields are "
        "ignored; see docs/protocol.md."
    )
    return schema, defs


def summary(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, on one line (its name if it has none)."""
    doc = (model.__doc__ or model.__name__).strip()
    return doc.split("\n\n")[0].replace("\n", " ").rstrip(".")


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every message type and every result model."""
    files: dict[str, dict[str, Any]] = {}
    for message_type, cls in sorted(PAYLOAD_TYPES.items()):
        schema, defs = envelope_schema(cls, LOCAL_REFS)
        files[f"{message_type}.json"] = _document(schema, defs)
    for model in RESULT_MODELS:
        schema = model.model_json_schema(ref_template=LOCAL_REFS)
        defs = schema.pop("$defs", {})
        files[f"{model.__name__}.json"] = _document(schema, defs)
    return files


def _document(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    document = {"$schema": DRAFT, "$comment": GENERATED, **schema}
    if defs:
        document["$defs"] = dict(sorted(defs.items()))
    return document
