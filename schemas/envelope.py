"""The versioned envelope every Corral message travels in, and its codec.

    {"type": "api.submit", "version": 1, "message_id": "...", "sent_at": "...",
     "sender": "cli@host", "epoch": null, "payload": {...}}

`decode` turns bytes into a typed payload or raises `InvalidMessage` whose text
names the offending field; the bus dead-letters such messages with that text
as the reason. Every body is untrusted: `decode` refuses one that is too large
or too deeply nested before parsing it, and nothing else escapes it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import Field, ValidationError

from schemas.api import API_REQUESTS, Reply
from schemas.base import Count, Int64, Open, Sender, Strict, Timestamp, Token
from schemas.limits import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES
from schemas.messages import (
    CommandRefused,
    Heartbeat,
    JobEvent,
    LeaderAnnounced,
    LogChunk,
    LogsRequest,
    MasterBeat,
    NetUpdate,
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
    LeaderAnnounced,
    CommandRefused,
    MasterBeat,
    NetUpdate,
    Reply,
    *API_REQUESTS,
)
PAYLOAD_TYPES: dict[str, type[Payload]] = {cls.TYPE: cls for cls in _ALL_PAYLOADS}

P = TypeVar("P", bound=Payload)

# How many problems an InvalidMessage lists, and how much of each location it quotes.
_MAX_PROBLEMS = 10
_MAX_WHERE = 200


class InvalidMessage(ValueError):
    """A message that cannot be understood. The text says what is wrong, for a human."""


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


class Envelope(Open):
    """Open: a field added to the envelope by a newer sender is ignored."""

    type: Annotated[str, Field(min_length=1, max_length=64)]
    version: Int64 = PROTOCOL_VERSION
    message_id: Token = Field(default_factory=_new_id)
    sent_at: Timestamp = Field(default_factory=_now)
    sender: Sender = ""
    epoch: Count | None = None
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
    """The envelope of `payload` as compact UTF-8 JSON. It does not check the size:
    the bus refuses to publish a body over MAX_MESSAGE_BYTES."""
    envelope = Envelope(
        type=payload.TYPE,
        sender=sender,
        epoch=epoch,
        payload=payload.model_dump(mode="json"),
    )
    return envelope.model_dump_json().encode()


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: "payload.spec.cpu: Input should be greater than 0".

    At most _MAX_PROBLEMS problems are listed, then how many more there are.
    """
    lines = []
    problems = error.errors(include_url=False, include_input=False)
    for item in problems[:_MAX_PROBLEMS]:
        where = ".".join(str(part) for part in item["loc"])
        if prefix:
            where = f"{prefix}.{where}" if where else prefix
        if len(where) > _MAX_WHERE:
            where = where[:_MAX_WHERE] + "…"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (remove it, or check its spelling)"
        elif item["type"] == "missing":
            message = "required field is missing"
        lines.append(f"{where}: {message}" if where else message)
    if len(problems) > _MAX_PROBLEMS:
        lines.append(f"and {len(problems) - _MAX_PROBLEMS} more problems")
    return "; ".join(lines)


# What the nesting scan keeps of a body: quotes, and brackets as [ and ] (a mismatched
# pair such as [} is the parser's to refuse, once it gets there).
_SKELETON = bytes.maketrans(b"{}", b"[]")
_NOT_SKELETON = bytes(set(range(256)) - set(b'"[]{}'))
_TOO_DEEP = b"[" * (MAX_JSON_DEPTH + 1)


def nesting_problem(body: bytes) -> str | None:
    """Why `body` nests too deeply for Corral to parse, or None if it does not.

    Every step is one pass of a C-speed bytes method, so the cost is linear and small
    (about a microsecond for a small body): escaped backslashes and quotes go, then
    everything but quotes and brackets; with at most MAX_JSON_DEPTH opening brackets
    left, that is all. Otherwise the strings go (with the brackets inside them), and
    innermost bracket pairs are removed once per level. For JSON the parser accepts,
    what remains is exactly the parser's nesting; for JSON it refuses, the parser stops
    at its first error, and up to that point this scan sees what the parser sees.
    """
    if b"\\" in body:
        # Backslashes pair from the left, as JSON reads escapes; then \" is a quote
        # inside a string. Outside strings a backslash is an error anyway.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = body.translate(_SKELETON, _NOT_SKELETON)
    if skeleton.count(b"[") <= MAX_JSON_DEPTH:
        return None
    # Quotes now alternate open, close. Two adjacent quotes are an empty string or the
    # gap between two strings: dropping them keeps that order and drops no bracket.
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:  # strings that hold brackets: keep what lies between them
        skeleton = b"".join(skeleton.split(b'"')[::2])
    for _ in range(MAX_JSON_DEPTH):
        if not skeleton:
            return None
        if _TOO_DEEP in skeleton:
            break
        inner_removed = skeleton.replace(b"[]", b"")
        if len(inner_removed) == len(skeleton):
            return "body is not JSON: its brackets do not balance"
        skeleton = inner_removed
    if not skeleton:
        return None
    return f"body nests JSON objects and arrays deeper than {MAX_JSON_DEPTH} levels"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode(body: bytes) -> Message:
    """Parse and validate a message body. Raises InvalidMessage naming the problem.

    A body over MAX_MESSAGE_BYTES or nested deeper than MAX_JSON_DEPTH is refused
    before it is parsed; InvalidMessage is the only exception this raises.
    """
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            f"body is {len(body)} bytes, more than the {MAX_MESSAGE_BYTES} a message may have"
        )
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise InvalidMessage(f"body is not JSON: not UTF-8 ({exc.reason})") from None
    problem = nesting_problem(body)
    if problem is not None:
        raise InvalidMessage(problem)
    try:
        return _validate(json.loads(text, parse_constant=_refuse_constant))
    except ValueError as exc:  # JSONDecodeError, NaN, an integer of thousands of digits
        if isinstance(exc, InvalidMessage):
            raise
        raise InvalidMessage(f"body is not JSON: {exc}") from None
    except RecursionError:  # the scan above should make this impossible; never crash
        raise InvalidMessage("body nests too deeply to be parsed") from None


def _validate(raw: object) -> Message:
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
