"""Who may send what: the master's checks of senders and callers (master/senders.py), the
worker's (worker/commands.py, worker/identity.py), and the client's choice of role and
its retry as admin (corral/session.py, corral/streams.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bus import topology
from corral.errors import ApiFailure, BrokerUnreachable
from corral.session import least_role
from corral.streams import retried_as_admin
from master.access import Caller
from master.senders import caller_of, node_sender_refusal
from worker.commands import trusted_sender
from worker.identity import IdentityError, check_user

MASTER = "corral-master"


def test_a_report_about_a_node_comes_from_its_worker_user_or_the_masters() -> None:
    assert node_sender_refusal("worker-n1", "n1", MASTER) is None
    assert node_sender_refusal(MASTER, "n1", MASTER) is None  # the single-user setup
    for user in ("worker-n2", "alice", None, "", "worker-n1x"):
        refusal = node_sender_refusal(user, "n1", MASTER)
        assert refusal is not None and "worker-n1" in refusal


def test_the_caller_is_the_user_id_and_the_role_its_routing_key_names() -> None:
    key = topology.api_key("submitter", "api.cancel")
    assert caller_of("bob", topology.API_EXCHANGE, key, MASTER) == Caller("bob", "submitter")
    assert caller_of("ann", topology.API_EXCHANGE, "viewer.api.jobs", MASTER) == Caller(
        "ann", "viewer"
    )
    # The master's own user is trusted as an admin, whatever the path.
    assert caller_of(MASTER, "", topology.API_QUEUE, MASTER) == Caller(MASTER, "admin")


@pytest.mark.parametrize(
    ("user", "exchange", "key", "says"),
    [
        ("bob", "", topology.API_QUEUE, "corral.requests"),  # the default exchange
        ("bob", topology.API_EXCHANGE, "root.api.cancel", "names no role"),
        ("bob", topology.API_EXCHANGE, "api.cancel", "names no role"),
        (None, topology.API_EXCHANGE, "admin.api.cancel", "no user_id"),
    ],
)
def test_a_request_that_names_no_caller_is_refused(
    user: str | None, exchange: str, key: str, says: str
) -> None:
    refusal = caller_of(user, exchange, key, MASTER)
    assert isinstance(refusal, str) and says in refusal


def test_a_worker_takes_commands_from_the_master_or_itself_only() -> None:
    trusted = (MASTER, "worker-n1")
    assert trusted_sender(MASTER, trusted) is None
    assert trusted_sender("worker-n1", trusted) is None
    for user in ("worker-n2", "alice", None):
        refusal = trusted_sender(user, trusted)
        assert refusal is not None and MASTER in refusal


def test_a_worker_user_must_match_the_node_id() -> None:
    check_user("worker-n1", "n1")
    check_user("guest", "n1")  # not a worker's user: the single-user setup
    with pytest.raises(IdentityError, match="--node-id n2"):
        check_user("worker-n2", "n1")


def test_each_request_goes_under_the_least_role_that_may_send_it() -> None:
    assert least_role("api.jobs") == least_role("api.status") == "viewer"
    assert least_role("api.submit") == least_role("api.logs") == "submitter"
    assert least_role("api.node") == "admin"


def _refused(code: str) -> Iterator[str]:
    raise ApiFailure(code, f"refused: {code}")
    yield ""  # a generator


def test_logs_refused_as_not_ours_are_asked_again_as_admin() -> None:
    assert list(retried_as_admin(_refused("forbidden"), lambda: iter(["a", "b"]))) == ["a", "b"]
    assert list(retried_as_admin(iter(["x"]), lambda: iter(["never"]))) == ["x"]
    # Another refusal is not retried; a refusal of the retry keeps the first one.
    with pytest.raises(ApiFailure, match="not_found"):
        list(retried_as_admin(_refused("not_found"), lambda: iter(["never"])))

    def broker_refuses() -> Iterator[str]:
        raise BrokerUnreachable("amqp://u:p@h/", "ACCESS_REFUSED", lost=True)

    with pytest.raises(ApiFailure, match="forbidden"):
        list(retried_as_admin(_refused("forbidden"), broker_refuses))
