"""A client's connection to the broker, and the one place its transport errors become
CorralErrors.

A `Session` declares none of Corral's topology: a client that points at the
wrong vhost must not create `corral.api` there and then wait for a master that
will never come. Instead it asks the broker whether `corral.api` exists and has
a consumer before its first request (and again after a request timed out), so
"no cluster here" and "no master running" are told apart at once.
"""

from __future__ import annotations

from typing import Any

from bus import errors as bus_errors
from bus import topology
from bus.connection import Bus
from bus.errors import (
    AccessRefused,
    BusError,
    ConnectionLost,
    MessageTooLarge,
    NoRoute,
    RequestTimeout,
    TopologyError,
)
from bus.subscription import Subscription
from bus.tls import Tls
from corral.errors import (
    ApiFailure,
    BrokerUnreachable,
    CorralError,
    InvalidUrl,
    NoCluster,
    NoMaster,
)
from corral.urls import check_url
from schemas.api import Reply
from schemas.envelope import InvalidMessage, Message
from schemas.messages import Payload


class Session:
    """One AMQP connection, opened on first use, owned by one thread.

    Every method raises CorralErrors only: BrokerUnreachable when the broker
    cannot be reached or the connection drops, NoCluster / NoMaster when no
    master takes requests, ApiFailure when the master refuses one.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        name: str,
        role: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        """`role`: the role requests are sent as (viewer, submitter or admin: the broker
        lets a user send only under the roles it was given). None: each request goes
        under the least role that may send it (`least_role`), and a request the
        master refuses as not the caller's own is tried once more as admin."""
        self.url = check_url(url)
        self.timeout = timeout
        self.name = name
        self.role = role
        self.tls = tls
        self._bus: Bus | None = None
        # Whether corral.api was last seen with a consumer; cleared by a timeout.
        self._master_seen = False

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        bus, self._bus = self._bus, None
        self._master_seen = False
        if bus is not None:
            bus.close()

    def bus(self) -> Bus:
        """The connected bus; connecting makes 3 attempts, then raises BrokerUnreachable."""
        if self._bus is None:
            try:
                self._bus = Bus(self.url, name=self.name, declare_topology=False, tls=self.tls)
            except bus_errors.InvalidUrl as exc:
                raise InvalidUrl(self.url, str(exc)) from None
        if not self._bus.connected:
            try:
                self._bus.connect(attempts=3)
            except AccessRefused as exc:
                raise BrokerUnreachable(self.url, str(exc), refused=True) from None
            except TopologyError as exc:
                raise BrokerUnreachable(self.url, str(exc), refused=True) from None
            except BusError as exc:
                raise BrokerUnreachable(self.url, str(exc)) from None
        return self._bus

    # -- is there a master? --

    def api_consumers(self) -> int | None:
        """How many processes consume corral.api (masters), or None if it does not exist."""
        bus = self.bus()
        try:
            return bus.consumer_count(topology.API_QUEUE)
        except BusError as exc:
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None

    def check_master(self) -> None:
        """Return if a master consumes corral.api; else raise NoCluster or NoMaster at once."""
        consumers = self.api_consumers()
        if consumers is None:
            raise NoCluster(self.url)
        if consumers == 0:
            raise NoMaster(self.url)
        self._master_seen = True

    # -- requests --

    def request(self, payload: Payload) -> Any:
        """Send an api.* request to the master; its `result`, or ApiFailure if it refused.

        Blocks up to `timeout` s for the reply. Fails at once with NoCluster or
        NoMaster when nothing consumes corral.api (checked before the first
        request and after every timeout); after a timeout with a master
        present, NoMaster names the timeout.
        """
        if not self._master_seen:
            self.check_master()
        role = self.role or least_role(payload.TYPE)
        try:
            return _result(self._send(payload, role))
        except ApiFailure as failure:
            if self.role is not None or role == "admin" or failure.code != "forbidden":
                raise
            try:  # perhaps this user is an admin: the broker says whether it may ask as one
                return _result(self._send(payload, "admin"))
            except CorralError:
                raise failure from None

    def _send(self, payload: Payload, role: str) -> Message:
        bus = self.bus()
        try:
            return bus.request(
                payload,
                exchange=topology.API_EXCHANGE,
                routing_key=topology.api_key(role, payload.TYPE),
                timeout=self.timeout,
            )
        except AccessRefused as exc:
            raise CorralError(
                f"the broker refused to pass on your {payload.TYPE} request as {role}: your "
                f"broker user was not given that role ({exc}). Ask an admin for it, or set "
                "CORRAL_ROLE to the role you have"
            ) from None
        except NoRoute:
            self._master_seen = False
            raise NoCluster(self.url) from None
        except RequestTimeout:
            self._master_seen = False
            self.check_master()  # a master that went away says so more clearly than a timeout
            raise NoMaster(self.url, self.timeout) from None
        except MessageTooLarge as exc:
            raise CorralError(f"cannot send the request: {exc}") from None
        except BusError as exc:
            self._master_seen = False
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None
        except InvalidMessage as exc:
            raise CorralError(f"the master sent an unreadable answer: {exc}") from None

    # -- private queues --

    def subscribe(self, queue: topology.Queue) -> Subscription:
        """Declare a private queue (with its bindings) and return a reader of it."""
        bus = self.bus()
        try:
            return bus.subscribe(queue)
        except ConnectionLost as exc:
            # Binding to an exchange that does not exist fails like a lost channel.
            if queue.bindings and self._cluster_missing():
                raise NoCluster(self.url) from None
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None

    def _cluster_missing(self) -> bool:
        try:
            return self.api_consumers() is None
        except CorralError:
            return False

    def receive(self, subscription: Subscription, timeout: float) -> tuple[str, Message] | None:
        """The next (routing key, message), or None after `timeout` s.

        Invalid messages are skipped by the subscription, so a reader survives garbage.
        """
        try:
            return subscription.get(timeout)
        except ConnectionLost as exc:
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None

    def send_routed(self, exchange: str, routing_key: str, payload: Payload, reply_to: str) -> bool:
        """Publish `payload` mandatory and wait for the broker's confirm.

        True if a queue took it; False if the broker returned it as unroutable
        or did not confirm it within `timeout` s.
        """
        bus = self.bus()
        unroutable: list[bool] = []
        try:
            bus.publish(
                exchange,
                routing_key,
                payload,
                reply_to=reply_to,
                mandatory=True,
                transient=True,
                on_returned=lambda: unroutable.append(True),
            )
            confirmed = bus.flush(self.timeout)
        except bus_errors.CONNECTION_ERRORS as exc:
            bus.lost(exc)  # a closed channel leaves the connection up: start afresh next time
            raise BrokerUnreachable(self.url, str(exc), lost=True) from None
        return confirmed and not unroutable


# Requests a viewer may send (reads of status); logs are read by their job's owner, and
# a node's scheduling is changed by admins only.
_READS = frozenset(
    {"api.jobs", "api.job", "api.tasks", "api.task", "api.nodes", "api.masters", "api.status"}
)


def least_role(message_type: str) -> str:
    """The least role that may send a request of `message_type`."""
    if message_type in _READS:
        return "viewer"
    if message_type == "api.node":
        return "admin"
    return "submitter"


def _result(message: Message) -> Any:
    try:
        reply = message.expect(Reply)
    except InvalidMessage as exc:
        raise CorralError(f"the master sent an unexpected answer: {exc}") from None
    if not reply.ok:
        error = reply.error
        if error is None:
            raise ApiFailure("internal", "the master refused the request without a reason")
        raise ApiFailure(error.code, error.message, error.field)
    return reply.result
