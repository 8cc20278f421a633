"""The dashboard's HTTP side with Starlette's TestClient: the page and its static files, the
JSON and SSE endpoints, the security headers, the Host check and the login."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from corral.dashboard.app import (
    MAX_WAITING_CHECKS,
    MAX_WAITING_PER_CLIENT,
    STATIC,
    EventStream,
    Guard,
    create_app,
    host_name,
)
from corral.dashboard.hub import MAX_STREAMS, Hub
from corral.dashboard.login import BrokerLogin, Verdict
from corral.dashboard.serve import server_config
from tests.unit.test_dashboard_board import small_view
from tests.unit.test_dashboard_hub import FakeSource, parse

LOCAL = frozenset({"127.0.0.1", "localhost", "[::1]"})
BASE = "http://127.0.0.1:8700"


@pytest.fixture
def hub() -> Hub:
    return Hub(FakeSource(small_view()), tick=0.01, wait=0.05)


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub, hosts=LOCAL), base_url=BASE) as test_client:
        yield test_client


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def loaded(client: TestClient) -> dict[str, Any]:
    """/api/state once the hub has taken the first view."""
    deadline = time.monotonic() + 5
    while True:
        state: dict[str, Any] = client.get("/api/state").json()
        if state["version"] == 1 or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


def test_the_page_loads_its_modules_with_no_inline_script_under_a_strict_policy(
    client: TestClient,
) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="/static/' in attrs and not body for attrs, body in scripts)
    assert "style=" not in page.text
    module = client.get("/static/app.js")
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert module.headers["content-security-policy"] == policy


def test_no_static_file_writes_markup_from_data() -> None:
    """Text from the cluster goes in with textContent: no innerHTML, no document.write."""
    for path in STATIC.glob("*.js"):
        code = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, f"{path.name} uses {sink}"


def test_the_state_is_the_whole_picture_as_json(client: TestClient) -> None:
    state = loaded(client)
    assert state["type"] == "snapshot" and state["version"] == 1
    assert [row[0] for row in state["nodes"]] == ["w1", "w2"]
    assert [row[0] for row in state["tasks"]] == ["web-1-0-0", "web-1-1-0"]
    assert state["columns"]["tasks"][0] == "id"
    assert client.get("/api/state").headers["cache-control"] == "no-store"


def test_the_stream_sends_the_snapshot_first(client: TestClient, hub: Hub) -> None:
    loaded(client)
    got: dict[str, Any] = {}

    def read() -> None:
        got["response"] = client.get("/api/stream")

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 5
    while hub.clients == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    client.portal.call(hub.close)  # type: ignore[union-attr]  # ends the stream
    reader.join(5)
    response = got["response"]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    assert "content-security-policy" in response.headers
    chunks = response.text.split("\n\n")
    assert chunks[0] == "retry: 2000"
    name, snapshot = parse(chunks[1])
    assert name == "snapshot" and len(snapshot["nodes"]) == 2


def test_a_request_naming_another_host_is_refused(client: TestClient) -> None:
    assert client.get("/", headers={"host": "127.0.0.1:8700"}).status_code == 200
    assert client.get("/", headers={"host": "[::1]:8700"}).status_code == 200
    rebound = client.get("/api/state", headers={"host": "attacker.example:8700"})
    assert rebound.status_code == 400
    assert "content-security-policy" in rebound.headers
    assert host_name("LocalHost:80") == "localhost" and host_name("[::1]") == "[::1]"


def test_any_host_is_taken_when_not_restricted(hub: Hub) -> None:
    with TestClient(create_app(hub, hosts=None), base_url="http://dash.example") as client:
        assert client.get("/").status_code == 200


class Checks:
    """A broker that knows one viewer, counting how often it is asked."""

    def __init__(self, verdict: Verdict | None = None) -> None:
        self.urls: list[str] = []
        self.verdict = verdict

    def __call__(self, url: str) -> Verdict:
        self.urls.append(url)
        if self.verdict is not None:
            return self.verdict
        return Verdict.OK if url.startswith("amqp://ann:s%C3%A9cret@") else Verdict.DENIED


def test_with_a_login_the_broker_judges_the_credentials_once_a_while(hub: Hub) -> None:
    checks = Checks()
    login = BrokerLogin("amqp://dash:pw@127.0.0.1:5672/v1", check=checks)
    with TestClient(create_app(hub, login=login, hosts=LOCAL), base_url=BASE) as client:
        anonymous = client.get("/")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith('Basic realm="corral dashboard"')
        assert checks.urls == []  # nothing to ask the broker
        assert client.get("/", headers=basic("ann", "wrong")).status_code == 401
        for _ in range(3):
            assert client.get("/api/state", headers=basic("ann", "sécret")).status_code == 200
        assert client.get("/", headers={"Authorization": "Basic !!"}).status_code == 401
    assert checks.urls == [
        "amqp://ann:wrong@127.0.0.1:5672/v1",
        "amqp://ann:s%C3%A9cret@127.0.0.1:5672/v1",
    ]


def test_with_a_login_and_the_broker_away_the_page_says_try_again(hub: Hub) -> None:
    checks = Checks(Verdict.UNAVAILABLE)
    login = BrokerLogin("amqp://127.0.0.1/", check=checks)
    with TestClient(create_app(hub, login=login, hosts=LOCAL), base_url=BASE) as client:
        for _ in range(2):
            response = client.get("/", headers=basic("ann", "x"))
            assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert len(checks.urls) == 2  # not cached: the next try asks again


def test_a_flood_of_unknown_credentials_is_answered_503_without_waiting() -> None:
    release = threading.Event()

    def slow(url: str) -> Verdict:
        release.wait(5)
        return Verdict.DENIED

    guard = Guard(create_app(Hub(FakeSource())), login=BrokerLogin("amqp://h/", check=slow))

    async def flood() -> tuple[list[Verdict], list[Verdict]]:
        checks = [
            asyncio.create_task(
                guard._verdict(basic("ann", f"guess{i}")["Authorization"], f"10.0.1.{i}")
            )
            for i in range(MAX_WAITING_CHECKS + 1)
        ]
        done, _ = await asyncio.wait(checks, timeout=2, return_when=asyncio.FIRST_COMPLETED)
        early = [task.result() for task in done]
        release.set()
        return early, list(await asyncio.gather(*checks))

    early, verdicts = asyncio.run(flood())
    assert early == [Verdict.UNAVAILABLE]  # the one past the limit, at once
    assert verdicts.count(Verdict.DENIED) == MAX_WAITING_CHECKS


def test_one_address_may_keep_only_a_few_logins_waiting() -> None:
    release = threading.Event()

    def slow(url: str) -> Verdict:
        release.wait(5)
        return Verdict.OK if url.startswith("amqp://ann:") else Verdict.DENIED

    guard = Guard(create_app(Hub(FakeSource())), login=BrokerLogin("amqp://h/", check=slow))

    async def guesses() -> tuple[list[Verdict], list[Verdict]]:
        def check(user: str, password: str, client: str) -> asyncio.Task[Verdict]:
            header = basic(user, password)["Authorization"]
            return asyncio.create_task(guard._verdict(header, client))

        tries = [check("eve", f"guess{i}", "10.0.0.9") for i in range(MAX_WAITING_PER_CLIENT + 1)]
        real = check("ann", "pw", "10.0.0.1")
        done, _ = await asyncio.wait(tries, timeout=2, return_when=asyncio.FIRST_COMPLETED)
        early = [task.result() for task in done]
        release.set()
        return early, list(await asyncio.gather(real, *tries))

    early, verdicts = asyncio.run(guesses())
    assert early == [Verdict.UNAVAILABLE]  # eve's third guess, at once
    assert verdicts[0] is Verdict.OK  # ann, from elsewhere, waited her turn
    assert verdicts[1:].count(Verdict.DENIED) == MAX_WAITING_PER_CLIENT


def test_a_websocket_is_closed_at_once_even_where_a_page_would_need_a_login(hub: Hub) -> None:
    login = BrokerLogin("amqp://h/", check=Checks())
    with TestClient(create_app(hub, login=login, hosts=LOCAL), base_url=BASE) as client:
        for path in ["/", "/static/app.js", "/api/stream"]:
            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(path):
                pass
            assert closed.value.code == 1008, path


def read_stream(client: TestClient, hub: Hub, **headers: str) -> threading.Thread:
    """A thread reading /api/stream into `got`, started once the hub counts its stream."""
    got: dict[str, Any] = {}
    before = hub.clients

    def read() -> None:
        got["response"] = client.get("/api/stream", headers=headers)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 5
    while hub.clients == before and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.got = got  # type: ignore[attr-defined]
    return reader


def test_streams_beyond_the_limit_are_answered_503() -> None:
    hub = Hub(FakeSource(small_view()), tick=0.01, wait=0.05, max_streams=1)
    with TestClient(create_app(hub, hosts=LOCAL), base_url=BASE) as client:
        reader = read_stream(client, hub)
        assert hub.clients == 1
        refused = client.get("/api/stream")
        assert refused.status_code == 503 and "too many" in refused.text
        assert "retry-after" in refused.headers
        client.portal.call(hub.close)  # type: ignore[union-attr]
        reader.join(5)
    assert reader.got["response"].status_code == 200  # type: ignore[attr-defined]


def test_with_a_login_a_stream_ends_when_its_verdict_would_be_asked_again(hub: Hub) -> None:
    login = BrokerLogin("amqp://h/", check=Checks(), ttl=0.3)
    with TestClient(create_app(hub, login=login, hosts=LOCAL), base_url=BASE) as client:
        reader = read_stream(client, hub, **basic("ann", "sécret"))
        reader.join(5)  # no close: the stream ends by itself
        assert not reader.is_alive()
    response = reader.got["response"]  # type: ignore[attr-defined]
    assert response.status_code == 200 and "event: snapshot" in response.text


def test_a_client_that_stops_reading_is_cut_off_and_its_stream_closed() -> None:
    closed = asyncio.Event()
    sent: list[bytes] = []

    async def events() -> AsyncGenerator[str, None]:
        try:
            while True:
                yield "data: x\n\n"
        finally:
            closed.set()

    async def send(message: Message) -> None:
        if len(sent) >= 2:  # the socket's buffer is full: never drains
            await asyncio.Event().wait()
        sent.append(message.get("body", b""))

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client never says it left
        return {"type": "http.disconnect"}

    async def scenario() -> None:
        response = EventStream(events(), send_timeout=0.1)
        scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
        await asyncio.wait_for(response(scope, receive, send), 2)
        await asyncio.wait_for(closed.wait(), 2)

    asyncio.run(scenario())
    assert sent[1] == b"data: x\n\n"


def test_the_server_limits_connections_beyond_the_streams(hub: Hub) -> None:
    config = server_config(create_app(hub))
    assert config.limit_concurrency is not None
    assert MAX_STREAMS < config.limit_concurrency <= MAX_STREAMS + 100
