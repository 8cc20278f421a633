"""The SDK's streams: status events from corral.status, and a task's logs from its worker.

Both read a private queue through a `Session`, which skips messages that do
not decode: whoever can publish to the status exchange (or to a reply queue)
can waste a reader's time, not stop it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from bus.subscription import Subscription
from corral.errors import ApiFailure, CorralError
from corral.session import Session
from schemas.api import Reply
from schemas.envelope import Message
from schemas.messages import LogChunk, Payload


@dataclass(frozen=True)
class Event:
    """One status event: `payload` is a TaskStatus, JobEvent or NodeEvent."""

    routing_key: str
    payload: Payload
    sent_at: datetime


def event_stream(
    session: Session, subscription: Subscription, timeout: float | None
) -> Iterator[Event]:
    """Events from `subscription` until `timeout` s pass without one (None: forever).

    Closes the subscription when the iteration ends or is abandoned.
    """
    try:
        while True:
            got = session.receive(subscription, 1.0 if timeout is None else timeout)
            if got is None:
                if timeout is not None:
                    return
                continue
            key, message = got
            yield Event(key, message.payload, message.envelope.sent_at)
    finally:
        subscription.close()


def log_stream(
    session: Session, subscription: Subscription, node: str, follow: bool
) -> Iterator[str]:
    """The data of the LogChunks a worker sends to `subscription`, until the last one.

    The first chunk must come within the session's timeout; while following,
    a quiet container may then say nothing for as long as it likes. A worker's
    refusal (a chunk with `error`, or an `api.reply` with ok=false) raises
    CorralError with the worker's words. Closes the subscription at the end.
    """
    first = True
    try:
        while True:
            got = session.receive(subscription, session.timeout)
            if got is None:
                if first or not follow:
                    raise CorralError(
                        f"worker {node} did not send logs within {session.timeout:g} s"
                    )
                continue
            first = False
            chunk = _chunk(got[1], node)
            if chunk.error:
                raise CorralError(f"worker {node}: {chunk.error}")
            if chunk.data:
                yield chunk.data
            if chunk.end:
                return
    finally:
        subscription.close()


def retried_as_admin(stream: Iterator[str], again: Callable[[], Iterator[str]]) -> Iterator[str]:
    """`stream`; but if the master refuses it as not the caller's (`forbidden`) before any
    output, the stream `again()` gives (the request sent as admin). If that one is
    refused too (the broker, when the user is no admin), the first refusal stands."""
    try:
        first = next(stream)
    except StopIteration:
        return
    except ApiFailure as refusal:
        if refusal.code != "forbidden":
            raise
        try:
            retried = again()
            first = next(retried)
        except StopIteration:
            return
        except CorralError:
            raise refusal from None
        stream = retried
    yield first
    yield from stream


def _chunk(message: Message, node: str) -> LogChunk:
    payload = message.payload
    if isinstance(payload, LogChunk):
        return payload
    if isinstance(payload, Reply) and not payload.ok:
        # The master refused the request (no such task, not yours, the worker is not
        # connected), or the worker could not read it: either says why.
        error = payload.error
        why = error.message if error else "the request was refused"
        code = error.code if error else "refused"
        raise ApiFailure(code, f"logs of a task on {node}: {why}", error.field if error else None)
    raise CorralError(
        f"worker {node} sent an unexpected answer: a {message.envelope.type!r} message, not logs"
    )
