"""The dashboard's hub: changes coalesced per tick, fanned out to bounded queues, and each
browser's event stream (a snapshot, then changes)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from corral.dashboard.hub import Hub
from tests.unit.test_dashboard_board import FakeView, node, small_view, task


class FakeSource:
    """A live model the test moves by hand: `push` a view, `wait` returns it."""

    def __init__(self, view: FakeView | None = None) -> None:
        self._view = view or FakeView(version=0)
        self._changed = threading.Condition()
        self.waits = 0

    def push(self, view: FakeView) -> None:
        with self._changed:
            self._view = view
            self._changed.notify_all()

    def view(self) -> FakeView:
        with self._changed:
            return self._view

    def wait(self, after: int, timeout: float) -> FakeView:
        with self._changed:
            self.waits += 1
            self._changed.wait_for(lambda: self._view.version > after, timeout)
            return self._view


def parse(chunk: str) -> tuple[str, dict[str, Any]]:
    """(event name, data) of one Server-Sent Event."""
    fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
    return fields["event"], json.loads(fields["data"])


async def next_event(stream: AsyncIterator[str]) -> tuple[str, dict[str, Any]]:
    while True:
        chunk = await asyncio.wait_for(anext(stream), 5)
        if chunk.startswith("event:"):
            return parse(chunk)


def test_a_burst_of_changes_reaches_a_browser_as_few_messages_ending_in_the_last_state() -> None:
    source = FakeSource()
    hub = Hub(source, tick=0.2, wait=0.05)

    async def scenario() -> list[dict[str, Any]]:
        runner = asyncio.create_task(hub.run())
        stream = hub.stream()
        assert (await next_event(stream))[0] == "snapshot"
        view = small_view()
        for version in range(1, 201):  # 200 changes in about half a second
            tasks = {"t": task("t", restarts=version)}
            source.push(view.next(version=version, tasks=tasks))
            await asyncio.sleep(0.0025)
        received = []
        while True:
            _, message = await next_event(stream)
            received.append(message)
            if message["version"] == 200:
                break
        hub.close()
        await runner
        return received

    received = asyncio.run(scenario())
    assert len(received) <= 8, [message["version"] for message in received]
    last_restarts = received[-1]["upsert"]["tasks"][0][8]
    assert last_restarts == 200


def test_a_browser_that_does_not_read_is_dropped_and_the_others_are_not() -> None:
    source = FakeSource()
    hub = Hub(source, tick=0.01, queue_size=2)

    async def scenario() -> tuple[int, list[str]]:
        slow, fast = hub.stream(), hub.stream()
        await next_event(slow)  # both subscribed, each with its snapshot
        await next_event(fast)
        names = []
        for seq in range(1, 6):
            hub.broadcast(seq, json.dumps({"seq": seq}))
            names.append((await next_event(fast))[0])
        clients = hub.clients
        rest = [chunk async for chunk in slow]  # what the slow one still gets: nothing
        return clients, names + rest

    clients, received = asyncio.run(scenario())
    assert clients == 1
    assert received == ["change"] * 5


def test_a_browser_gets_the_snapshot_then_only_changes_after_it() -> None:
    view = small_view()
    source = FakeSource(view)
    hub = Hub(source)

    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        hub.broadcast(*_advance(hub, view))  # before anyone listens: in the snapshot only
        stream = hub.stream()
        assert await anext(stream) == "retry: 2000\n\n"
        first = await next_event(stream)
        nodes = {**view.nodes, "w2": node("w2", "down")}
        hub.broadcast(*_advance(hub, view.next(nodes=nodes)))
        second = await next_event(stream)
        hub.close()
        assert [chunk async for chunk in stream] == []
        return [first, second]

    (first, snapshot), (second, change) = asyncio.run(scenario())
    assert first == "snapshot" and [row[0] for row in snapshot["nodes"]] == ["w1", "w2"]
    assert second == "change" and change["upsert"] == {"nodes": [change["upsert"]["nodes"][0]]}
    assert change["upsert"]["nodes"][0][:2] == ["w2", "down"]


def test_a_closed_hub_streams_nothing_and_its_loop_ends() -> None:
    source = FakeSource()
    hub = Hub(source, tick=0.01, wait=0.01)

    async def scenario() -> list[str]:
        runner = asyncio.create_task(hub.run())
        await asyncio.sleep(0.05)
        hub.close()
        await asyncio.wait_for(runner, 2)
        return [chunk async for chunk in hub.stream()]

    assert asyncio.run(scenario()) == []
    assert source.waits >= 1


def test_a_failing_live_model_does_not_end_the_loop() -> None:
    class Broken(FakeSource):
        def wait(self, after: int, timeout: float) -> FakeView:
            self.waits += 1
            if self.waits == 1:
                raise RuntimeError("bug")
            return super().wait(after, timeout)

    source = Broken(small_view())
    hub = Hub(source, tick=0.01, wait=0.01)

    async def scenario() -> str:
        stream = hub.stream()
        await next_event(stream)
        runner = asyncio.create_task(hub.run())
        name, _ = await next_event(stream)
        hub.close()
        await runner
        return name

    assert asyncio.run(scenario()) == "change"


def _advance(hub: Hub, view: FakeView) -> tuple[int, str]:
    message = hub.board.advance(view)
    assert message is not None
    return hub.board.seq, json.dumps(message)


def test_a_full_hub_ends_a_new_stream_at_once_and_a_stream_may_have_a_lifetime() -> None:
    hub = Hub(FakeSource(small_view()), max_streams=1, ping=0.02)

    async def scenario() -> tuple[list[str], list[str]]:
        first = hub.stream(lifetime=0.2)
        await next_event(first)
        refused = [chunk async for chunk in hub.stream()]
        rest = await asyncio.wait_for(_all(first), 2)  # ends by itself
        return refused, rest

    refused, rest = asyncio.run(scenario())
    assert refused == [] and rest[-1] == "retry: 100\n\n"
    assert len(rest) > 1 and set(rest[:-1]) == {": ping\n\n"}
    assert hub.clients == 0


def test_a_dropped_browsers_queue_is_emptied_at_once() -> None:
    hub = Hub(FakeSource(), queue_size=2)

    async def scenario() -> int:
        slow = hub.stream()
        await next_event(slow)
        (subscriber,) = hub._subscribers
        for seq in range(1, 4):
            hub.broadcast(seq, "x" * 1000)
        assert subscriber.dropped
        return subscriber.queue.qsize()

    assert asyncio.run(scenario()) == 1  # only the end marker


async def _all(stream: AsyncIterator[str]) -> list[str]:
    return [chunk async for chunk in stream]
