"""The permission table (`bus.access`), read the way RabbitMQ reads it, and the pure parts
of `corral.admin` (accounts, URLs, credentials files)."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from bus import access, topology
from bus.params import check_url
from corral import admin


def allows(pattern: str, name: str) -> bool:
    """What RabbitMQ does with a permission: re:run, unanchored (PCRE's `$` reads as
    Python's for these patterns)."""
    return re.search(pattern, name) is not None


def topic(permissions: access.Permissions, exchange: str, action: str, key: str) -> bool:
    """Whether `permissions` let `action` (write: publish, read: bind) use `key` on `exchange`.
    An exchange without topic permissions takes every key."""
    if exchange not in permissions.topics:
        return True
    write, read = permissions.topics[exchange]
    return allows(write if action == "write" else read, key)


# -- users --


def test_worker_users_are_named_after_their_node() -> None:
    assert access.worker_user("n1") == "worker-n1"
    assert access.node_of_worker_user("worker-n1") == "n1"
    assert access.node_of_worker_user("worker-n-1_x") == "n-1_x"


@pytest.mark.parametrize(
    "user", ["corral-master", "worker-", "worker-a.b", "worker-n1\n", "n1", "Worker-n1"]
)
def test_other_names_are_not_workers(user: str) -> None:
    assert access.node_of_worker_user(user) is None


@pytest.mark.parametrize(
    "node_id",
    ["", "a.b", "n1\n", "n*", "n#", "a|b", ".*", "n1$", "(n1)", "-n1", "n 1", "é", "x" * 64],
)
def test_a_node_id_the_table_cannot_hold_is_refused(node_id: str) -> None:
    with pytest.raises(ValueError, match="invalid node id"):
        access.worker_permissions(node_id)
    with pytest.raises(ValueError):
        access.worker_user(node_id)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        access.client_permissions("root")


# -- the master --


def test_the_master_may_do_anything_on_its_vhost() -> None:
    grants = access.master_grants("corral")
    master = grants["corral"]
    for name in ("amq.default", "corral.api", "corral.journal", "anything"):
        assert allows(master.write, name) and allows(master.read, name)
        assert allows(master.configure, name)
    assert master.topics == {}


def test_on_the_events_vhost_the_master_only_reads_the_broker_events() -> None:
    events = access.master_grants("corral")[topology.EVENTS_VHOST]
    assert allows(events.read, topology.EVENT_EXCHANGE)
    assert allows(events.configure, "amq.gen-abc") and allows(events.write, "amq.gen-abc")
    assert allows(events.read, "amq.gen-abc")
    for name in ("amq.default", "corral.api", "amq.rabbitmq.event-x", "xamq.gen-a"):
        assert not allows(events.read, name)
        assert not allows(events.write, name)
        assert not allows(events.configure, name)


def test_a_cluster_on_the_events_vhost_gets_one_grant() -> None:
    assert access.master_grants(topology.EVENTS_VHOST) == {"/": access.FULL}


# -- a worker --

N1 = access.worker_permissions("n1")


@pytest.mark.parametrize(
    ("key", "allowed"),
    [("n1", True), ("n2", False), ("n1.x", False), ("xn1", False), ("n10", False), ("#", False)],
)
def test_a_worker_beats_only_under_its_own_id(key: str, allowed: bool) -> None:
    assert topic(N1, topology.HEARTBEAT_EXCHANGE, "write", key) is allowed


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        (topology.task_key("j", "t", "running", "n1"), True),
        (topology.refused_key("n1"), True),
        (topology.task_key("j", "t", "running", "n2"), False),
        (topology.task_key("j", "t", "running", "n10"), False),
        (topology.refused_key("n2"), False),
        ("task.j.t.running.x.n1", False),
        ("task.j.running.n1", False),
        ("task.j.t.running.n1.n2", False),
        (topology.job_key("j", "failed"), False),
        (topology.node_key("n1", "down"), False),
        (topology.leader_key("m1"), False),
    ],
)
def test_a_worker_reports_status_only_under_its_own_id(key: str, allowed: bool) -> None:
    assert topic(N1, topology.STATUS_EXCHANGE, "write", key) is allowed


@pytest.mark.parametrize("exchange", [topology.ASSIGN_EXCHANGE, topology.RPC_EXCHANGE])
def test_a_worker_binds_only_under_its_own_id(exchange: str) -> None:
    assert topic(N1, exchange, "read", "n1")
    for key in ("n2", "#", "*", "n1.#", "n10", ""):
        assert not topic(N1, exchange, "read", key)
    assert not topic(N1, exchange, "write", "n1")


def test_a_worker_binds_nothing_to_beats_nor_status() -> None:
    for exchange in (topology.HEARTBEAT_EXCHANGE, topology.STATUS_EXCHANGE):
        for key in ("#", "n1", "task.#"):
            assert not topic(N1, exchange, "read", key)


def test_a_worker_touches_its_own_queues_only() -> None:
    own = (topology.node_queue_name("n1"), topology.node_rpc_queue("n1").name, "amq.gen-XyZ")
    for name in own:
        assert allows(N1.configure, name) and allows(N1.write, name) and allows(N1.read, name)
    others = (
        topology.node_queue_name("n2"),
        topology.node_rpc_queue("n2").name,
        "corral.node.n1.rpc.x",
        "corral.node.n10",
        topology.API_QUEUE,
        topology.JOURNAL_STREAM,
        topology.DEAD_QUEUE,
        topology.LEADER_QUEUE,
    )
    for name in others:
        assert not allows(N1.configure, name)
        assert not allows(N1.write, name)
        assert not allows(N1.read, name)


def test_a_worker_publishes_where_it_reports_and_reads_what_it_is_sent() -> None:
    for exchange in ("corral.heartbeats", "corral.status", "corral.replies", "corral.dlx"):
        assert allows(N1.write, exchange)
        assert not allows(N1.configure, exchange)
    for exchange in ("amq.default", "corral.assignments", "corral.requests", "corral.masters"):
        assert not allows(N1.write, exchange)
    for exchange in ("corral.assignments", "corral.node-rpc", "corral.control"):
        assert allows(N1.read, exchange)
    for exchange in ("corral.status", "corral.heartbeats", "corral.requests", "corral.masters"):
        assert not allows(N1.read, exchange)


def test_node_ids_are_escaped() -> None:
    # '-' and '_' are the only characters of a node id a regex could read otherwise.
    worker = access.worker_permissions("a-b_c")
    assert topic(worker, topology.HEARTBEAT_EXCHANGE, "write", "a-b_c")
    assert not allows(worker.configure, "corral.node.aXb_c")
    assert "corral\\.node\\.a\\-b_c" in worker.configure


# -- clients --


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("viewer", {"viewer"}),
        ("submitter", {"viewer", "submitter"}),
        ("admin", {"viewer", "submitter", "admin"}),
    ],
)
def test_a_client_asks_as_its_role_or_a_lesser_one(role: str, allowed: set[str]) -> None:
    client = access.client_permissions(role)
    for as_role in topology.ROLES:
        key = topology.api_key(as_role, "api.submit")
        assert topic(client, topology.API_EXCHANGE, "write", key) is (as_role in allowed)
    for key in ("adminx.api.submit", "viewerx.api.get", "x.viewer.api", "api.submit", "#"):
        assert not topic(client, topology.API_EXCHANGE, "write", key)


def test_a_viewer_may_not_submit() -> None:
    viewer = access.client_permissions("viewer")
    assert not topic(viewer, topology.API_EXCHANGE, "write", "submitter.api.submit")
    assert topic(viewer, topology.API_EXCHANGE, "write", "viewer.api.get_job")


@pytest.mark.parametrize("role", topology.ROLES)
def test_a_client_reads_status_and_replies_and_publishes_requests(role: str) -> None:
    client = access.client_permissions(role)
    assert allows(client.configure, "amq.gen-abc")
    for name in ("corral.api", "corral.status", "corral.node.n1", "amq.default"):
        assert not allows(client.configure, name)
    for name in ("corral.requests", "corral.dlx", "amq.gen-abc"):
        assert allows(client.write, name)
    for name in ("amq.default", "corral.assignments", "corral.status", "corral.api"):
        assert not allows(client.write, name)
    for name in ("corral.status", "corral.replies", "amq.gen-abc"):
        assert allows(client.read, name)
    for name in ("corral.api", "corral.heartbeats", "corral.assignments", "corral.node.n1"):
        assert not allows(client.read, name)
    assert topic(client, topology.STATUS_EXCHANGE, "read", "#")
    assert not topic(client, topology.STATUS_EXCHANGE, "write", "job.j.failed")
    assert not topic(client, topology.API_EXCHANGE, "read", "#")


def test_every_pattern_is_anchored() -> None:
    tables = [access.worker_permissions("n1"), access.master_events_permissions()]
    tables += [access.client_permissions(role) for role in topology.ROLES]
    for table in tables:
        for pattern in (table.configure, table.write, table.read):
            assert pattern.startswith("^") and pattern.endswith("$")
        for write, read in table.topics.values():
            for pattern in (write, read):
                assert pattern.startswith("^") or pattern == access.ANY


def test_a_trailing_newline_passes_dollar_as_in_pcre() -> None:
    # Documented in bus.access: harmless (the same node's id), but worth knowing.
    assert topic(N1, topology.HEARTBEAT_EXCHANGE, "write", "n1\n")


# -- corral.admin's pure parts --


def test_bootstrap_makes_the_master_an_admin_client_each_worker_and_a_broker_admin() -> None:
    accounts = admin.bootstrap_accounts(["n1", "n2", "n1"])
    assert [(a.user, a.role) for a in accounts] == [
        ("corral-master", "master"),
        ("corral-admin", "admin"),
        ("worker-n1", "worker"),
        ("worker-n2", "worker"),
        ("corral-broker-admin", "broker-admin"),
    ]
    assert accounts[-1].tags == ("administrator",)
    assert all(a.tags == () for a in accounts[:-1])


def test_each_account_gets_its_roles_table() -> None:
    master, client, worker, broker_admin = admin.bootstrap_accounts(["n1"])
    assert master.grants("c") == access.master_grants("c")
    assert client.grants("c") == {"c": access.client_permissions("admin")}
    assert worker.grants("c") == {"c": access.worker_permissions("n1")}
    assert broker_admin.grants("c") == {"c": access.FULL}


@pytest.mark.parametrize(
    ("workers", "admin_name", "problem"),
    [
        (["a.b"], "corral-admin", "invalid node id"),
        ([], "worker-n1", "worker's name"),
        ([], "corral-master", "Corral's own users"),
        ([], "../x", "invalid user name"),
        ([], "", "invalid user name"),
    ],
)
def test_bootstrap_refuses_unusable_names(
    workers: list[str], admin_name: str, problem: str
) -> None:
    with pytest.raises(admin.AdminError, match=problem):
        admin.bootstrap_accounts(workers, admin_name=admin_name)


def test_a_client_may_not_take_a_workers_or_corrals_name() -> None:
    for name in ("worker-n1", "corral-broker-admin", "corral-bootstrap-1234"):
        with pytest.raises(admin.AdminError):
            admin.client_account(name, "viewer")
    with pytest.raises(admin.AdminError, match="unknown role"):
        admin.client_account("alice", "root")


@pytest.mark.parametrize(
    ("base", "vhost", "expected"),
    [
        ("amqp://127.0.0.1:5672", "/", "amqp://alice:p%2Fw@127.0.0.1:5672/%2F"),
        ("amqp://rabbit/", "corral", "amqp://alice:p%2Fw@rabbit/corral"),
        (
            "amqps://old:pw@rabbit:5671?heartbeat=30",
            "a b",
            "amqps://alice:p%2Fw@rabbit:5671/a%20b?heartbeat=30",
        ),
        ("amqp://[::1]:5672", "c", "amqp://alice:p%2Fw@[::1]:5672/c"),
    ],
)
def test_a_credential_url_logs_in_on_the_vhost(base: str, vhost: str, expected: str) -> None:
    url = admin.credential_url(base, vhost, "alice", "p/w")
    assert url == expected
    check_url(url)
    parts = urlsplit(url)
    assert unquote(parts.path[1:]) == vhost
    assert unquote(parts.password or "") == "p/w"


@pytest.mark.parametrize("base", ["http://rabbit:5672", "amqp://rabbit/vhost", "rabbit:5672"])
def test_a_credential_url_needs_a_broker_address(base: str) -> None:
    with pytest.raises(admin.AdminError):
        admin.credential_url(base, "/", "alice", "pw")


def test_a_credential_hides_its_password() -> None:
    credential = admin.Credential("alice", "viewer", "s3cret-pw", "amqp://alice:s3cret-pw@h/")
    assert "s3cret" not in repr(credential)


def test_credentials_files_are_private_and_hold_the_url_then_a_clients_role(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "credentials"
    client = admin.Credential("alice", "submitter", "pw", "amqp://alice:pw@h:5672/%2F")
    worker = admin.Credential("worker-n1", "worker", "pw2", "amqp://worker-n1:pw2@h:5672/%2F")
    old = directory / "alice.url"
    directory.mkdir(mode=0o755)
    old.write_text("old\n")
    old.chmod(0o644)
    paths = admin.write_credentials(directory, [client, worker])
    assert paths == [directory / "alice.url", directory / "worker-n1.url"]
    assert paths[0].read_text() == "amqp://alice:pw@h:5672/%2F\nsubmitter\n"
    assert paths[1].read_text() == "amqp://worker-n1:pw2@h:5672/%2F\n"
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["alice.url", "worker-n1.url"]


def test_a_new_credentials_directory_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    admin.write_credentials(directory, [])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.parametrize("url", ["127.0.0.1:15672", "amqp://127.0.0.1:5672", "http://"])
def test_the_management_api_needs_an_http_url(url: str) -> None:
    with pytest.raises(admin.AdminError, match="management API"):
        admin.Management(url, "guest", "guest")
