"""What a bus sends: confirmed publishes, replies, and the outbox handed between buses.

`Sending` is the publishing half of `bus.connection.Bus`; the bus attaches its
publisher to the publishing channel of each new connection and pumps the I/O
that settles confirms (`Bus.flush`). Nothing here blocks on the broker.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import pika

from bus import topology
from bus.delivery import Delivery
from bus.errors import CONNECTION_ERRORS, MessageTooLarge, check_size
from bus.params import certificate_login, probe_parameters, split_urls
from bus.publisher import ConfirmingPublisher, Outgoing
from bus.replies import ReplyGuard, is_direct_reply
from bus.tls import InvalidTls, Tls, tls_user
from schemas.api import ApiError, Reply
from schemas.envelope import encode
from schemas.messages import Payload

log = logging.getLogger("corral.bus")


def broker_user(url: str, tls: Tls | None = None) -> str:
    """The broker user a URL setting logs in as: the certificate's CN for a certificate
    login, else the first URL's user (pika's default: guest). Every URL of one setting
    is meant to name the same user."""
    if tls is not None and certificate_login(url, tls):
        user = tls_user(tls)
        if user is None:
            raise InvalidTls(f"the certificate {tls.cert_file} names no CN to log in as")
        return user
    parts = urlsplit(split_urls(url)[0])
    return unquote(parts.username) if parts.username else "guest"


class Sending:
    """Publishing for the bus named `name` on `url`, with up to `window` unconfirmed."""

    def __init__(
        self, url: str, name: str, window: int, tls: Tls | None = None, answers: bool = True
    ) -> None:
        self.name = name
        # Whether to answer a request on its reply_to (through the default exchange): not a
        # worker, whose user may not write there (the broker would close the channel).
        self.answers = answers
        # Every message carries it as user_id, which the broker checks.
        self.user = broker_user(url, tls)
        self._publisher = ConfirmingPublisher(window)
        self._reply_guard = ReplyGuard(probe_parameters(url, name=f"{name} (reply)", tls=tls))

    def publish(
        self,
        exchange: str,
        routing_key: str,
        payload: Payload,
        *,
        epoch: int | None = None,
        mandatory: bool = False,
        transient: bool = False,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        on_returned: Callable[[], None] | None = None,
    ) -> None:
        """Queue a confirmed publish of `payload` in an envelope. Never blocks on the broker.

        The message is kept until the broker confirms it, across reconnects,
        unless `transient` (best effort: dropped while disconnected).
        `on_returned` is called (on the bus thread) if a `mandatory` message
        could not be routed to any queue. Raises MessageTooLarge (nothing sent)
        for a body over MAX_MESSAGE_BYTES.
        """
        body = encode(payload, sender=self.name, epoch=epoch)
        self.publish_raw(
            exchange,
            routing_key,
            body,
            mandatory=mandatory,
            transient=transient,
            reply_to=reply_to,
            correlation_id=correlation_id,
            on_returned=on_returned,
        )

    def publish_raw(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: dict[str, Any] | None = None,
        mandatory: bool = False,
        transient: bool = False,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        on_returned: Callable[[], None] | None = None,
    ) -> None:
        """`publish` for a body already encoded. Direct reply-to names the bus has not yet
        seen work are sent through `bus.replies.ReplyGuard`, never on this connection."""
        check_size(body, f"a message to {exchange or 'the default exchange'} ({routing_key[:100]})")
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=1 if transient else 2,
            message_id=uuid.uuid4().hex,
            headers=headers,
            reply_to=reply_to,
            correlation_id=correlation_id,
            user_id=self.user,
        )
        direct = exchange == topology.DEFAULT_EXCHANGE and is_direct_reply(routing_key)
        if direct and not self._reply_guard.trusted(routing_key):
            self._reply_guard.send_untrusted(routing_key, body, properties)
            return
        out = Outgoing(exchange, routing_key, body, properties, mandatory, transient, on_returned)
        try:
            self._publisher.publish(out)
        except CONNECTION_ERRORS:
            # The outbox kept it; run() notices the dead channel or connection and reconnects.
            log.debug("publish deferred: connection is down")

    def reply(self, delivery: Delivery, payload: Payload) -> None:
        """Answer a request on its reply_to, best effort (a gone client just misses it).

        An answer too large to send becomes an error reply with code `too_large`.
        """
        if not delivery.reply_to or not self.answers:
            return
        try:
            self._send_reply(delivery, payload)
        except MessageTooLarge as exc:
            log.warning("a reply to %s was too large: %s", delivery.queue, exc)
            error = ApiError(
                code="too_large",
                message=f"the answer does not fit in one message ({exc}); ask for less, "
                "e.g. a smaller page (limit)",
            )
            self._send_reply(delivery, Reply(ok=False, error=error))

    def _send_reply(self, delivery: Delivery, payload: Payload) -> None:
        assert delivery.reply_to is not None
        self.publish(
            topology.DEFAULT_EXCHANGE,
            delivery.reply_to,
            payload,
            transient=True,
            correlation_id=delivery.correlation_id,
        )

    def leftovers(self) -> list[Outgoing]:
        """Take every publish not yet confirmed (the bus should be closed): a daemon that
        replaces its bus hands them to the next one with `requeue`."""
        return self._publisher.take_all()

    def requeue(self, messages: list[Outgoing]) -> None:
        """Publish another bus's `leftovers` before anything else, once connected."""
        self._publisher.requeue(messages)

    @property
    def unconfirmed(self) -> int:
        return self._publisher.pending

    def confirms_stalled_for(self) -> float:
        """How long publishes have been in flight without any confirm (0: none in flight)."""
        return self._publisher.stalled_for()
