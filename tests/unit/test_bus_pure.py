"""Pure parts of the bus: reply_to checks, URL checks, the sender's user, timers, the
outbox's poison guard."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pika
import pytest
from pika.spec import Basic

from bus import topology
from bus.errors import InvalidUrl
from bus.params import check_url
from bus.publisher import MAX_CHANNEL_FAILURES, ConfirmingPublisher, Outgoing
from bus.replies import direct_reply_node, is_reply_queue, usable_reply_queue
from bus.sending import broker_user
from bus.timers import Timers

REAL = "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5NTAyNjUzAAAn1gAAAABrCZRx.BTGNapQ6ZMQOC+VvyGnoLA=="


def test_a_direct_reply_name_yields_its_broker_node() -> None:
    assert direct_reply_node(REAL) == b"reply@9502653"
    assert is_reply_queue(REAL)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "corral.api",
        "corral.dead",
        "amq.rabbitmq.reply-to",
        "amq.rabbitmq.reply-to.abc",
        "amq.rabbitmq.reply-to.!!!.x",
        "amq.rabbitmq.reply-to." + base64.b64encode(b"\x83Xv\x00\x05reply").decode() + ".AAAA",
        REAL + "\n",
        "amq.gen-",
        "amq.gen-abc def",
    ],
)
def test_names_that_are_not_reply_queues_get_no_reply(name: str) -> None:
    assert not is_reply_queue(name)


def test_server_named_queues_are_reply_queues() -> None:
    assert is_reply_queue("amq.gen-JzTY20BRgKO-HjmUJj0wLg")


def test_streams_go_to_private_queues_only_never_to_direct_reply_names() -> None:
    # Streams go through corral.replies, keyed by the queue's name: a direct reply-to
    # name is no queue bound there.
    assert usable_reply_queue("amq.gen-JzTY20BRgKO-HjmUJj0wLg")
    assert is_reply_queue(REAL) and not usable_reply_queue(REAL)
    assert not usable_reply_queue(None) and not usable_reply_queue(topology.API_QUEUE)


@pytest.mark.parametrize(
    ("url", "user"),
    [
        ("amqp://alice:pw@host:5672/v", "alice"),
        ("amqp://worker-n1:pw@h1/,amqp://worker-n1:pw@h2/", "worker-n1"),
        ("amqp://a%40b:pw@host/", "a@b"),
        ("amqp://host/", "guest"),  # pika's default user
    ],
)
def test_every_message_names_the_urls_user(url: str, user: str) -> None:
    assert broker_user(url) == user


@pytest.mark.parametrize(
    "url",
    ["localhost:5672", "127.0.0.1", "amqp://h:notaport/", "http://h/", "amqp:///", "amqp://h /"],
)
def test_malformed_urls_are_refused_with_the_expected_form(url: str) -> None:
    with pytest.raises(InvalidUrl, match="expected amqp://USER:PASSWORD@HOST:PORT/VHOST"):
        check_url(url)


def test_a_password_never_shows_in_a_url_error() -> None:
    with pytest.raises(InvalidUrl) as caught:
        check_url("amqp://user:s3cret@host:99999/")
    assert "s3cret" not in str(caught.value)


def test_timers_run_due_calls_and_survive_a_failing_one() -> None:
    timers = Timers()
    ran: list[str] = []
    failures: list[str] = []

    def guard(fn: Any) -> None:
        try:
            fn()
        except RuntimeError as exc:
            failures.append(str(exc))

    def boom() -> None:
        raise RuntimeError("boom")

    timers.call_soon(boom)
    timers.call_soon(lambda: ran.append("soon"))
    timers.call_later(0, lambda: ran.append("later"))
    cancelled = timers.call_later(0, lambda: ran.append("cancelled"))
    cancelled.cancel()
    assert timers.idle_time() == 0
    timers.run_due(guard)
    assert ran == ["soon", "later"] and failures == ["boom"]


class _Channel:
    """Records publishes; never confirms."""

    def __init__(self) -> None:
        self.published: list[str] = []

    def add_on_return_callback(self, _callback: Any) -> None:
        pass

    def basic_publish(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> None:
        self.published.append(routing_key)


def test_a_message_in_flight_at_each_channel_close_is_dropped_in_the_end() -> None:
    publisher = ConfirmingPublisher()
    poison = Outgoing("corral.status", "poison", b"{}", pika.BasicProperties())
    publisher.publish(poison)
    for _ in range(MAX_CHANNEL_FAILURES):
        channel = _Channel()
        publisher.attach(channel)
        assert channel.published == ["poison"]
        publisher.detach(channel_error=True)
    publisher.attach(channel := _Channel())
    assert channel.published == [] and publisher.pending == 0


def test_a_refused_message_alone_in_flight_is_dropped_at_once() -> None:
    # 403 ACCESS_REFUSED: this user may not publish that; sending it again after the
    # reconnect would only break the next channel too.
    publisher = ConfirmingPublisher()
    publisher.publish(Outgoing("corral.requests", "admin.api.logs", b"{}", pika.BasicProperties()))
    publisher.attach(_Channel())
    publisher.detach(channel_error=True, refused=True)
    assert publisher.pending == 0
    # With others in flight, which one was refused is unknown: each counts a failure.
    for key in ("a", "b"):
        publisher.publish(Outgoing("corral.status", key, b"{}", pika.BasicProperties()))
    publisher.attach(_Channel())
    publisher.detach(channel_error=True, refused=True)
    assert publisher.pending == 2


def test_a_lost_connection_never_drops_a_message() -> None:
    publisher = ConfirmingPublisher()
    publisher.publish(Outgoing(topology.ASSIGN_EXCHANGE, "n1", b"{}", pika.BasicProperties()))
    for _ in range(MAX_CHANNEL_FAILURES + 2):
        publisher.attach(_Channel())
        publisher.detach()
    assert publisher.pending == 1


def test_a_stall_is_no_confirm_at_all_not_a_slow_one(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("bus.publisher.time.monotonic", lambda: clock[0])
    publisher = ConfirmingPublisher()
    publisher.attach(_Channel())
    assert publisher.stalled_for() == 0.0  # nothing in flight
    for key in ("a", "b", "c"):
        publisher.publish(Outgoing("corral.status", key, b"{}", pika.BasicProperties()))
    clock[0] = 102.0
    assert publisher.stalled_for() == 2.0
    # The broker confirms the first: progress, though two still wait.
    publisher.on_confirm(SimpleNamespace(method=Basic.Ack(delivery_tag=1, multiple=False)))
    clock[0] = 104.5
    assert publisher.pending == 2 and publisher.stalled_for() == 2.5
    publisher.on_confirm(SimpleNamespace(method=Basic.Ack(delivery_tag=3, multiple=True)))
    assert publisher.stalled_for() == 0.0
