"""decode() against hostile bodies: size, nesting, odd JSON. Only InvalidMessage escapes it."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import InvalidMessage, TaskStatus, decode, encode
from schemas.envelope import nesting_problem
from schemas.limits import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES, MiB
from tests.unit.factories import heartbeat, running


def refusal(body: bytes) -> str:
    with pytest.raises(InvalidMessage) as caught:
        decode(body)
    return str(caught.value)


def nested(depth: int, inner: str = "1") -> bytes:
    """A valid job.status envelope that nests `depth` levels in all.

    The envelope and its payload are 2 levels; the rest nest in an unknown payload field
    (which an open payload ignores)."""
    extra = "[" * (depth - 2) + inner + "]" * (depth - 2)
    body = {"type": "job.status", "payload": {"job_id": "web", "state": "running"}}
    text = json.dumps(body)
    return text.replace('"state"', f'"x": {extra}, "state"', 1).encode()


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


# -- size --


def test_a_body_over_the_size_limit_is_refused_unread() -> None:
    body = b'{"type": "heartbeat", "pad": "' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    assert "more than the 4194304 a message may have" in refusal(body)


def test_a_body_at_the_size_limit_is_read() -> None:
    body = encode(TaskStatus(task_id="web-0-0", job_id="web", node_id="n1", state="running"))
    padded = body[:-1] + b', "pad": "' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    padded = padded[: -(len(padded) - MAX_MESSAGE_BYTES) - 2] + b'"}'
    assert len(padded) == MAX_MESSAGE_BYTES
    assert decode(padded).payload.TYPE == "task.status"


# -- nesting --


def test_nesting_at_the_limit_is_accepted_and_one_more_level_is_refused() -> None:
    assert depth_of(json.loads(nested(MAX_JSON_DEPTH))) == MAX_JSON_DEPTH
    assert decode(nested(MAX_JSON_DEPTH)).payload.TYPE == "job.status"
    assert f"deeper than {MAX_JSON_DEPTH} levels" in refusal(nested(MAX_JSON_DEPTH + 1))


@pytest.mark.parametrize("depth", [1000, 100_000, 600_000])
def test_very_deep_bodies_are_refused_quickly_without_recursion(depth: int) -> None:
    started = time.perf_counter()
    assert "deeper than" in refusal(b'{"a":' * depth + b"1" + b"}" * depth)
    assert "deeper than" in refusal(b"[" * depth)  # never closed
    assert time.perf_counter() - started < 1.0


def test_brackets_inside_strings_do_not_count() -> None:
    reason = "[[[{{{" * 1000 + "]]]}}}" * 10 + '\\"]' * 50
    body = encode(TaskStatus(task_id="web-0-0", job_id="web", node_id="n", state="failed"))
    body = body.replace(b'"reason":""', b'"reason":' + json.dumps(reason).encode())
    assert nesting_problem(body) is None
    assert decode(body).payload.TYPE == "task.status"


def test_strings_cannot_hide_depth() -> None:
    # Unbalanced brackets in strings would cancel real ones in a scan that ignored strings.
    deep = b'["]",' * 40 + b"1" + b',"["]' * 40
    assert json.loads(deep) is not None
    assert nesting_problem(deep) is not None


DEEP = "[" * 40 + "]" * 40


@pytest.mark.parametrize(
    ("value", "deep"),
    [
        (["\\", json.loads(DEEP)], True),  # an escaped backslash, then the string ends
        (['"' + DEEP], False),  # an escaped quote does not end the string
        (['\\"' + DEEP], False),  # \\ then \" : still inside the string
        (["\\" * 3 + '"' + DEEP, json.loads(DEEP)], True),
    ],
)
def test_escapes_are_read_as_json_reads_them(value: list[Any], deep: bool) -> None:
    body = json.dumps(value).encode()
    assert (depth_of(json.loads(body)) > MAX_JSON_DEPTH) == deep
    assert (nesting_problem(body) is not None) == deep


def test_the_scan_of_a_small_body_takes_about_a_microsecond() -> None:
    body = encode(heartbeat("n1", tasks=[running("web-0-0")]))
    started = time.perf_counter()
    for _ in range(1000):
        nesting_problem(body)
    assert time.perf_counter() - started < 0.1  # about a microsecond each


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n\u00e9', max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), children, max_size=3)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None, database=None)
@given(json_values, st.integers(min_value=0, max_value=MAX_JSON_DEPTH + 3))
def test_the_scan_agrees_with_the_parser_on_valid_json(value: Any, wrap: int) -> None:
    body = ("[" * wrap + json.dumps(value) + "]" * wrap).encode()
    too_deep = depth_of(json.loads(body)) > MAX_JSON_DEPTH
    assert (nesting_problem(body) is not None) == too_deep


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(alphabet='[]{}",:\\ 1a', max_size=120))
def test_the_scan_never_lets_the_parser_nest_deeper_than_the_limit(text: str) -> None:
    body = text.encode()
    if nesting_problem(body) is not None:
        return
    try:
        value = json.loads(body)
    except ValueError:
        return
    assert depth_of(value) <= MAX_JSON_DEPTH


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_decode_raises_nothing_but_invalid_message(body: bytes) -> None:
    with contextlib.suppress(InvalidMessage):
        decode(body)


# -- odd JSON --


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"type": "api.nodes", "payload": {}, "x": NaN}', "NaN is not a JSON number"),
        (b'{"type": "api.nodes", "x": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"type": "api.nodes", "x": ' + b"9" * 5000 + b"}", "body is not JSON"),
        (b'\xef\xbb\xbf{"type": "api.nodes"}', "body is not JSON"),
        (b'{"type": "api.nodes"}'.decode().encode("utf-16"), "not UTF-8"),
        (b"]" * 40 + b"[]" * 40, "brackets do not balance"),
    ],
)
def test_odd_json_is_refused_with_a_reason(body: bytes, problem: str) -> None:
    assert problem in refusal(body)


def test_a_huge_integer_in_a_field_is_refused() -> None:
    body = json.dumps(
        {"type": "heartbeat", "payload": json.loads(encode(heartbeat("n1")))["payload"]}
    )
    body = body.replace('"seq": 0', '"seq": ' + "9" * 100)
    assert "payload.seq: Input should be less than or equal to" in refusal(body.encode())


def test_many_problems_are_summarised() -> None:
    tasks = [{"task_id": "BAD ID", "job_id": "web"} for _ in range(100)]
    body = json.dumps({"type": "heartbeat", "payload": {"tasks": tasks}}).encode()
    text = refusal(body)
    assert text.count(";") == 10 and text.endswith("more problems")
    assert len(text) < 3000


def test_a_large_valid_heartbeat_decodes() -> None:
    tasks = [running(f"web-abcdef-{i}-0") for i in range(2000)]
    body = encode(heartbeat("n1", tasks=tasks))
    assert len(body) < 1 * MiB
    assert len(decode(body).payload.tasks) == 2000  # type: ignore[attr-defined]
