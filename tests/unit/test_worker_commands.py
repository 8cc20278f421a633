"""Which assignments a worker carries out, and which epoch it then believes."""

from __future__ import annotations

import pytest

from schemas.envelope import InvalidMessage, Message, decode, encode
from schemas.messages import LogsRequest, Payload, StartTask, StopTask
from tests.unit.factories import heartbeat, job_spec
from worker.commands import Refused, accept

NODE = "n1"
HUGE = 2**62


def message(payload: Payload, epoch: int | None) -> Message:
    return decode(encode(payload, sender="test", epoch=epoch))


def start(node_id: str = NODE) -> StartTask:
    return StartTask(task_id="web-0-0", job_id="web", slot=0, node_id=node_id, spec=job_spec())


def stop(node_id: str = NODE) -> StopTask:
    return StopTask(task_id="web-0-0", job_id="web", node_id=node_id, grace=1)


@pytest.mark.parametrize("command", [start(), stop()])
def test_a_command_for_this_node_is_accepted_with_its_epoch(command: Payload) -> None:
    assert accept(message(command, 7), NODE, 5) == (command, 7)
    assert accept(message(command, 7), NODE, 7) == (command, 7)


@pytest.mark.parametrize(
    "payload",
    [heartbeat(NODE), LogsRequest(task_id="web-0-0", follow=True)],
    ids=["heartbeat", "logs.request"],
)
def test_another_message_type_is_invalid_whatever_its_epoch(payload: Payload) -> None:
    with pytest.raises(InvalidMessage, match="is not an assignment"):
        accept(message(payload, HUGE), NODE, 5)


@pytest.mark.parametrize("command", [start("n2"), stop("n2")])
def test_a_command_for_another_node_is_refused_whatever_its_epoch(command: Payload) -> None:
    with pytest.raises(Refused, match="addressed to node n2, not n1"):
        accept(message(command, HUGE), NODE, 5)


def test_an_older_epoch_is_refused_as_stale() -> None:
    with pytest.raises(Refused, match="stale command: epoch 4 is older than 5"):
        accept(message(start(), 4), NODE, 5)


def test_a_command_without_an_epoch_is_refused() -> None:
    with pytest.raises(Refused, match="no epoch"):
        accept(message(stop(), None), NODE, 0)
