"""The base models of Corral's messages and the field types they share.

Every model that travels on the wire is *strict*: a value must already have the
JSON type its field declares (no `true` for a number, no `"yes"` for a boolean, no
`"0.5"` for a number). Only date-times are read from ISO 8601 strings, since JSON
has no date type. NaN and Infinity are refused. Models are frozen.

Two rules for fields a model does not know (docs/protocol.md, "Compatibility"):

- `Closed`: an unknown field is an error. Requests to the master, assignments,
  logs.request and the job spec with everything in it: a typo, or a feature the
  receiver lacks, must fail loudly instead of being dropped.
- `Open`: unknown fields are ignored. What a Corral peer emits (events, heartbeats,
  replies and what they carry), so a newer sender may add optional fields.

A closed model validated with the context `{ECHOED: True}` drops unknown fields
instead: that is how a job spec echoed back inside a reply (JobInfo.spec) is read,
so a client older than its master can still read what the master says.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from schemas.limits import (
    MAX_CURSOR_LENGTH,
    MAX_ID_LENGTH,
    MAX_INT,
    MAX_LABEL_KEY_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS,
    MAX_SENDER_LENGTH,
    MAX_TASK_ID_LENGTH,
    MAX_TEXT_LENGTH,
)

ECHOED = "corral.echoed"

# A job's id is its name; DNS-label-like, so it is safe in routing keys and container names.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# `<job>-<token>-<slot>-<attempt>`; only the alphabet and the length are checked.
TASK_ID_PATTERN = rf"^[a-z0-9]([a-z0-9-]{{0,{MAX_TASK_ID_LENGTH - 2}}}[a-z0-9])?$"
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
# Opaque ids (message, boot and container ids): printable ASCII without spaces.
TOKEN_PATTERN = rf"^[\x21-\x7e]{{0,{MAX_ID_LENGTH}}}$"
CURSOR_PATTERN = rf"^[\x20-\x7e]{{1,{MAX_CURSOR_LENGTH}}}$"
# Label keys use the alphabet of constraint keys, so any label can be constrained on.
LABEL_KEY_PATTERN = rf"^[A-Za-z0-9_.\-/]{{1,{MAX_LABEL_KEY_LENGTH}}}$"
NO_NUL_PATTERN = r"^[^\x00]*$"


class Strict(BaseModel):
    """Models that never cross the wire (e.g. master.events): unknown fields are an
    error and values are frozen; types are not strict, since Python code builds them."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Closed(BaseModel):
    """A wire model whose unknown fields are an error (see the module docstring)."""

    model_config = ConfigDict(strict=True, frozen=True, allow_inf_nan=False, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_when_echoed(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get(ECHOED) and isinstance(data, dict):
            return {key: value for key, value in data.items() if key in cls.model_fields}
        return data


class Open(BaseModel):
    """A wire model whose unknown fields are ignored (see the module docstring)."""

    model_config = ConfigDict(strict=True, frozen=True, allow_inf_nan=False, extra="ignore")


def _clip(limit: int, value: object) -> object:
    # Free text often quotes a foreign error its sender cannot bound, so a receiver
    # cuts it rather than refusing the whole message.
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_date_time(value: object) -> object:
    # Lax datetime parsing alone would also take 1700000000 or "1700000000" as a time.
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value) <= 64 and _ISO_DATE_TIME.match(value):
        return value
    raise ValueError("expected an ISO 8601 date-time string, e.g. 2026-11-27T10:32:14Z")


Text = Annotated[
    str, Field(max_length=MAX_TEXT_LENGTH), BeforeValidator(partial(_clip, MAX_TEXT_LENGTH))
]
"""Free text for humans (reasons, errors); longer text is cut, not refused."""

Sender = Annotated[
    str, Field(max_length=MAX_SENDER_LENGTH), BeforeValidator(partial(_clip, MAX_SENDER_LENGTH))
]

Timestamp = Annotated[datetime, Field(strict=False), BeforeValidator(_iso_date_time)]
"""A date-time: a datetime in Python, an ISO 8601 string in JSON."""

JobId = Annotated[str, Field(pattern=NAME_PATTERN)]
TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN)]
NodeId = Annotated[str, Field(pattern=NODE_ID_PATTERN)]
Token = Annotated[str, Field(pattern=TOKEN_PATTERN)]
Cursor = Annotated[str, Field(pattern=CURSOR_PATTERN)]

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"^({_OCTET}\.){{3}}{_OCTET}$"
Ipv4 = Annotated[str, Field(pattern=IPV4_PATTERN)]
"""A dotted-quad IPv4 address, e.g. 10.210.3.7 (no leading zeros)."""
IPV4_NET_PATTERN = IPV4_PATTERN[:-1] + r"/([0-9]|[12][0-9]|3[0-2])$"
Ipv4Net = Annotated[str, Field(pattern=IPV4_NET_PATTERN)]
"""An IPv4 network in CIDR form, e.g. 10.210.3.0/24."""

Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Int64 = Annotated[int, Field(ge=-MAX_INT - 1, le=MAX_INT)]

LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE_LENGTH, pattern=NO_NUL_PATTERN)]
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(max_length=MAX_LABELS, json_schema_extra={"additionalProperties": False}),
]
"""Node labels and job labels: at most MAX_LABELS, keys as LABEL_KEY_PATTERN."""


def show(value: str, limit: int = 60) -> str:
    """`value` quoted for an error message, cut so that no error quotes a huge input."""
    return repr(value if len(value) <= limit else value[:limit] + "…")
