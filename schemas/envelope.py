"""The versioned envelope every Corral message travels in, and its codec.

    {"type": "api.submit", "version": 1, "message_id": "...", "sent_at": "...",
     "sender": "cli@host", "epoch": null, "payload": {...}}

`decode` turns bytes into a typed payload or raises `InvalidMessage` whose text
names the offending field; the bus dead-letters such messages with that text
as the reason.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import Field, ValidationError

from schemas.api import API_REQUESTS, Reply
from schemas.job import Strict
from schemas.messages import (
    Heartbeat,
    JobEvent,
    LogChunk,
    LogsRequest,
    NodeEvent,
    Payload,
    StartTask,
    StopTask,
    TaskStatus,
)

PROTOCOL_VERSION = 1

_ALL_PAYLOADS: tuple[type[Payload], ...] = (
    Heartbeat,
    StartTask,
    StopTask,
    TaskStatus,
    JobEvent,
    NodeEvent,
    LogsRequest,
    LogChunk,
    Reply,
    *API_REQUESTS,
)
PAYLOAD_TYPES: dict[str, type[Payload]] = {cls.TYPE: cls for cls in _ALL_PAYLOADS}

P = TypeVar("P", bound=Payload)


class InvalidMessage(ValueError):
    """A message that cannot be understood. The text says what is wrong, for a human."""


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


class Envelope(Strict):
    type: str
    version: int = PROTOCOL_VERSION
    message_id: str = Field(default_factory=_new_id)
    sent_at: datetime = Field(default_factory=_now)
    sender: str = ""
    epoch: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class Message(Strict):
    """A decoded envelope with its typed payload."""

    envelope: Envelope
    payload: Payload

    def expect(self, cls: type[P]) -> P:
        """The payload as `cls`, or InvalidMessage if it is another type."""
        if not isinstance(self.payload, cls):
            raise InvalidMessage(f"expected a {cls.TYPE!r} message, got {self.envelope.type!r}")
        return self.payload


def encode(payload: Payload, *, sender: str = "", epoch: int | None = None) -> bytes:
    envelope = Envelope(
        type=payload.TYPE,
        sender=sender,
        epoch=epoch,
        payload=payload.model_dump(mode="json"),
    )
    return envelope.model_dump_json().encode()


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: "payload.spec.cpu: Input should be greater than 0"."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(message)"
        if prefix:
            where = f"{prefix}.{where}" if item["loc"] else prefix
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (remove it, or check its spelling)"
        elif item["type"] == "missing":
            message = "required field is missing"
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def decode(body: bytes) -> Message:
    """Parse and validate a message body. Raises InvalidMessage naming the problem."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidMessage("body must be a JSON object (an envelope)")
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise InvalidMessage(describe_errors(exc)) from None
    if envelope.version != PROTOCOL_VERSION:
        raise InvalidMessage(
            f"version: this node speaks protocol version {PROTOCOL_VERSION}, got {envelope.version}"
        )
    cls = PAYLOAD_TYPES.get(envelope.type)
    if cls is None:
        known = ", ".join(sorted(PAYLOAD_TYPES))
        raise InvalidMessage(f"type: unknown message type {envelope.type!r}; known: {known}")
    try:
        payload = cls.model_validate(envelope.payload)
    except ValidationError as exc:
        raise InvalidMessage(describe_errors(exc, prefix="payload")) from None
    return Message(envelope=envelope, payload=payload)
