"""Broker users of a Corral cluster, made through RabbitMQ's management HTTP API.

One user per role (`bus.access` says what each may do), so that the broker itself
refuses what a role may not do::

    bootstrap ──▶ vhost ──▶ exchanges and core queues ──▶ corral-master, corral-admin,
                  worker-<node> each, corral-broker-admin ──▶ [Credential] ──▶ <dir>/<user>.url

Passwords are made here (`secrets.token_urlsafe`), handed back once in a `Credential`
and never shown: not in an error, not in a repr. A user that already exists keeps its
password (and gets no Credential) unless `rotate=True`; its permissions are set again
either way, so running an operation twice is harmless.

Every call blocks on HTTP (up to `Management.timeout` s each), and `bootstrap` on one
short AMQP connection too. Failures raise `AdminError` (a CorralError) naming the call,
the HTTP status and the broker's reason.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from bus import Bus, BusError, access, topology
from corral.errors import CorralError, scrub

BROKER_ADMIN_USER = "corral-broker-admin"
ADMIN_CLIENT_USER = "corral-admin"
MASTER_ROLE = "master"
WORKER_ROLE = "worker"
BROKER_ADMIN_ROLE = "broker-admin"  # the management API's administrator, in place of guest
ADMINISTRATOR_TAG = "administrator"
BOOTSTRAP_PREFIX = "corral-bootstrap-"  # a user that lives while bootstrap declares the topology

# User names other than workers': safe as file names and in logs.
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")


class AdminError(CorralError):
    """A management API call failed, or a name or URL is not usable. `status` is the HTTP
    status when the API answered one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class Management:
    """A client of RabbitMQ's management HTTP API (`url` such as http://127.0.0.1:15672),
    logged in as `user`. Each call blocks up to `timeout` s; no state is kept between
    calls. Raises AdminError."""

    def __init__(self, url: str, user: str, password: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AdminError(f"expected http://HOST:PORT for the management API, got {url!r}")
        self.url = url.rstrip("/")
        self.user = user
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._authorization = f"Basic {token}"
        self._password = password

    def call(self, method: str, path: str, body: Any = None, *, secret: str = "") -> Any:
        """`method /api/<path>` with `body` as JSON; the decoded answer (None if empty).

        `secret` (a password in `body`) is kept out of any error text."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/api/{path}", data=data, method=method)
        request.add_header("Authorization", self._authorization)
        request.add_header("Content-Type", "application/json")
        what = f"{method} /api/{path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise self._refused(what, exc, secret) from None
        except OSError as exc:  # URLError, a refused or reset socket, a timeout
            reason = getattr(exc, "reason", exc)
            raise AdminError(
                f"cannot reach the RabbitMQ management API at {self.url} ({what}): {reason}"
            ) from None
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise AdminError(
                f"{self.url} answered {what} with something other than JSON: is it RabbitMQ's "
                "management API (port 15672)?"
            ) from None

    def _refused(self, what: str, exc: urllib.error.HTTPError, secret: str) -> AdminError:
        try:
            answer = json.loads(exc.read() or b"{}")
        except ValueError:
            answer = {}
        reason = answer.get("reason", exc.reason) if isinstance(answer, dict) else exc.reason
        text = reason if isinstance(reason, str) else json.dumps(reason)
        for hidden in (secret, self._password):
            if len(hidden) > 2:
                text = text.replace(hidden, "***")
        hint = ""
        if exc.code == 401:
            hint = f"; check the management user ({self.user!r}) and its password"
        elif exc.code == 403:
            hint = f"; the management user {self.user!r} needs the administrator tag"
        return AdminError(
            f"the RabbitMQ management API refused {what} (HTTP {exc.code}: {text}){hint}",
            status=exc.code,
        )

    def _exists(self, path: str) -> bool:
        try:
            self.call("GET", path)
        except AdminError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _delete(self, path: str) -> bool:
        try:
            self.call("DELETE", path)
        except AdminError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- vhosts --

    def vhost_exists(self, vhost: str) -> bool:
        return self._exists(f"vhosts/{_q(vhost)}")

    def create_vhost(self, vhost: str) -> bool:
        """Create `vhost` if missing; whether it was created."""
        if self.vhost_exists(vhost):
            return False
        self.call("PUT", f"vhosts/{_q(vhost)}", {})
        return True

    def delete_vhost(self, vhost: str) -> bool:
        """Delete `vhost` and everything in it; False if there was none."""
        return self._delete(f"vhosts/{_q(vhost)}")

    # -- users --

    def users(self) -> list[str]:
        """The names of every user of the broker."""
        return [str(user["name"]) for user in self.call("GET", "users")]

    def user_exists(self, name: str) -> bool:
        return self._exists(f"users/{_q(name)}")

    def put_user(self, name: str, password: str, tags: Sequence[str] = ()) -> None:
        """Create user `name`, or replace its password and tags."""
        body = {"password": password, "tags": ",".join(tags)}
        self.call("PUT", f"users/{_q(name)}", body, secret=password)

    def delete_user(self, name: str) -> bool:
        """Delete user `name` (its permissions go with it); False if there was none."""
        return self._delete(f"users/{_q(name)}")

    # -- permissions --

    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        body = {"configure": configure, "write": write, "read": read}
        self.call("PUT", f"permissions/{_q(vhost)}/{_q(user)}", body)

    def set_topic_permissions(
        self, vhost: str, user: str, exchange: str, write: str, read: str
    ) -> None:
        body = {"exchange": exchange, "write": write, "read": read}
        self.call("PUT", f"topic-permissions/{_q(vhost)}/{_q(user)}", body)

    def topic_permissions(self, vhost: str, user: str) -> dict[str, tuple[str, str]]:
        """Exchange -> (write, read) of `user` on `vhost`."""
        try:
            found = self.call("GET", f"topic-permissions/{_q(vhost)}/{_q(user)}")
        except AdminError as exc:
            if exc.status == 404:  # RabbitMQ's answer when there are none
                return {}
            raise
        return {str(p["exchange"]): (str(p["write"]), str(p["read"])) for p in found}

    def clear_topic_permissions(self, vhost: str, user: str, exchange: str) -> None:
        self._delete(f"topic-permissions/{_q(vhost)}/{_q(user)}/{_q(exchange)}")

    def grant(self, vhost: str, user: str, permissions: access.Permissions) -> None:
        """Give `user` exactly `permissions` on `vhost` (the user must exist).

        Topic permissions first: a topic exchange without any is open to every key, so
        the user gets access to the vhost only once its keys are held."""
        for exchange, (write, read) in permissions.topics.items():
            self.set_topic_permissions(vhost, user, exchange, write, read)
        for exchange in self.topic_permissions(vhost, user).keys() - permissions.topics.keys():
            self.clear_topic_permissions(vhost, user, exchange)
        self.set_permissions(
            vhost, user, permissions.configure, permissions.write, permissions.read
        )


def _q(name: str) -> str:
    return quote(name, safe="")


@dataclass(frozen=True)
class Account:
    """A broker user Corral needs, and its role: master, worker, broker-admin, or a client
    role (`topology.ROLES`)."""

    user: str
    role: str

    @property
    def tags(self) -> tuple[str, ...]:
        return (ADMINISTRATOR_TAG,) if self.role == BROKER_ADMIN_ROLE else ()

    def grants(self, vhost: str) -> dict[str, access.Permissions]:
        """Vhost -> this account's permissions there, for a cluster on `vhost`."""
        if self.role == MASTER_ROLE:
            return access.master_grants(vhost)
        if self.role == WORKER_ROLE:
            node_id = access.node_of_worker_user(self.user)
            assert node_id is not None, self.user  # made by worker_account
            return {vhost: access.worker_permissions(node_id)}
        if self.role == BROKER_ADMIN_ROLE:
            return {vhost: access.FULL}
        return {vhost: access.client_permissions(self.role)}


@dataclass(frozen=True)
class Credential:
    """A user's new password, and the AMQP URL that logs in with it (both kept out of the
    repr)."""

    user: str
    role: str
    password: str = field(repr=False)
    url: str = field(repr=False)


def worker_account(node_id: str) -> Account:
    """AdminError for a node id the permission table cannot hold."""
    try:
        return Account(access.worker_user(node_id), WORKER_ROLE)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def client_account(name: str, role: str) -> Account:
    """AdminError for an unknown role, or a name that is not usable for a client: one
    that is not a plain word (it names a file), or that a worker or Corral's own users
    go by."""
    try:
        access.check_role(role)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    check_user_name(name)
    if name in (access.MASTER_USER, BROKER_ADMIN_USER) or name.startswith(BOOTSTRAP_PREFIX):
        raise AdminError(f"{name!r} is the name of one of Corral's own users")
    return Account(name, role)


def check_user_name(name: str) -> str:
    """`name` unchanged if it is usable for a user that is not a worker (and as a file
    name); else AdminError. `worker-…` names are the workers' own."""
    if _USER_NAME.fullmatch(name) is None:
        raise AdminError(
            f"invalid user name {name!r}: up to 128 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    if name.startswith(access.WORKER_PREFIX):
        raise AdminError(f"{name!r} is a worker's name: workers are added by node id")
    return name


def bootstrap_accounts(
    workers: Iterable[str] = (),
    *,
    admin_name: str = ADMIN_CLIENT_USER,
    master_user: str = access.MASTER_USER,
    broker_admin: str = BROKER_ADMIN_USER,
) -> list[Account]:
    """The users `bootstrap` makes, in order: master, admin client, workers, broker
    administrator. AdminError if a name is unusable or two are the same."""
    accounts = [
        Account(check_user_name(master_user), MASTER_ROLE),
        client_account(admin_name, "admin"),
        *(worker_account(node_id) for node_id in dict.fromkeys(workers)),
        Account(check_user_name(broker_admin), BROKER_ADMIN_ROLE),
    ]
    users = [account.user for account in accounts]
    for user in users:
        if users.count(user) > 1:
            raise AdminError(f"the user name {user!r} is given to two roles")
    return accounts


def credential_url(amqp_url_base: str, vhost: str, user: str, password: str) -> str:
    """The AMQP URL for `user` on `vhost` at the broker `amqp_url_base` (amqp://HOST:PORT,
    or amqps://, with ?options kept). AdminError if the base is not such a URL."""
    parts = urlsplit(amqp_url_base)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise AdminError(f"expected amqp://HOST:PORT for the broker, got {amqp_url_base!r}")
    if parts.path not in ("", "/"):
        raise AdminError(f"give the broker's address without a vhost, not {amqp_url_base!r}")
    host_port = parts.netloc.rpartition("@")[2]
    netloc = f"{_q(user)}:{_q(password)}@{host_port}"
    return urlunsplit((parts.scheme, netloc, "/" + _q(vhost), parts.query, ""))


def ensure(
    api: Management, vhost: str, account: Account, *, amqp_url_base: str, rotate: bool = False
) -> Credential | None:
    """Make `account`'s user (a new password if it is new, or `rotate`) and set its
    permissions; its Credential, or None if it existed and keeps its password."""
    if not api.vhost_exists(vhost):
        raise AdminError(f"there is no vhost {vhost!r}: run bootstrap for it first")
    grants = account.grants(vhost)
    new = not api.user_exists(account.user)
    credential = None
    if new or rotate:
        password = secrets.token_urlsafe(24)
        url = credential_url(amqp_url_base, vhost, account.user, password)
        api.put_user(account.user, password, account.tags)
        credential = Credential(account.user, account.role, password, url)
    try:
        for where, permissions in grants.items():
            api.grant(where, account.user, permissions)
    except AdminError:
        if new:  # else a second run would keep a user whose password nobody has
            with contextlib.suppress(AdminError):
                api.delete_user(account.user)
        raise
    return credential


def bootstrap(
    api: Management,
    vhost: str,
    *,
    amqp_url_base: str,
    workers: Iterable[str] = (),
    admin_name: str = ADMIN_CLIENT_USER,
    master_user: str = access.MASTER_USER,
    broker_admin: str = BROKER_ADMIN_USER,
    rotate: bool = False,
) -> list[Credential]:
    """Make a cluster's vhost, topology and users; the credentials of the users made (or,
    with `rotate`, given a new password), in `bootstrap_accounts` order.

    Creates `vhost` if missing and declares Corral's exchanges and core queues in it
    (over AMQP, as a user that lives only for it), so that workers and clients, which
    declare only passively, may start before the master. Then the users: the master,
    one admin client `admin_name`, one per worker node id, and `broker_admin`, an
    administrator of the management API with every permission on `vhost`, so that
    guest is no longer needed. Every name is checked before anything changes.
    """
    accounts = bootstrap_accounts(
        workers, admin_name=admin_name, master_user=master_user, broker_admin=broker_admin
    )
    credential_url(amqp_url_base, vhost, "user", "password")  # AdminError before any change
    api.create_vhost(vhost)
    declare_topology(api, vhost, amqp_url_base=amqp_url_base)
    made = [
        ensure(api, vhost, account, amqp_url_base=amqp_url_base, rotate=rotate)
        for account in accounts
    ]
    return [credential for credential in made if credential is not None]


def declare_topology(api: Management, vhost: str, *, amqp_url_base: str) -> None:
    """Declare Corral's exchanges and core queues on `vhost` (which must exist), as a
    user made for this and deleted after. Blocks for one AMQP connection (a few s at most
    when the broker does not answer). AdminError if the broker refuses or cannot be reached."""
    user = BOOTSTRAP_PREFIX + secrets.token_hex(4)
    password = secrets.token_urlsafe(24)
    url = credential_url(amqp_url_base, vhost, user, password)
    api.put_user(user, password)
    bus: Bus | None = None
    try:
        api.grant(vhost, user, access.FULL)
        bus = Bus(url, name=f"corral admin ({user})", max_backoff=1.0)
        bus.connect(attempts=3)
    except BusError as exc:
        detail = scrub(str(exc), url)
        if ":" not in detail:  # pika's AMQPConnectionError says nothing more
            detail += " (nothing answers there, or it is not RabbitMQ: check the AMQP port)"
        raise AdminError(
            f"could not declare Corral's exchanges and queues on vhost {vhost!r} "
            f"at {amqp_url_base}: {detail}"
        ) from None
    finally:
        if bus is not None:
            bus.close()
        api.delete_user(user)


def add_worker(
    api: Management, vhost: str, node_id: str, *, amqp_url_base: str, rotate: bool = False
) -> Credential | None:
    """Make worker `node_id`'s user; its Credential, or None if it existed (and keeps its
    password). AdminError for a node id the permission table cannot hold."""
    return ensure(api, vhost, worker_account(node_id), amqp_url_base=amqp_url_base, rotate=rotate)


def add_user(
    api: Management,
    vhost: str,
    name: str,
    role: str,
    *,
    amqp_url_base: str,
    rotate: bool = False,
) -> Credential | None:
    """Make client user `name` of `role` (viewer, submitter, admin), or give an existing
    one that role; its Credential, or None if it existed (and keeps its password)."""
    account = client_account(name, role)
    return ensure(api, vhost, account, amqp_url_base=amqp_url_base, rotate=rotate)


def remove_user(api: Management, name: str) -> None:
    """Delete user `name` and its permissions on every vhost. AdminError if there is no
    such user, or it is the one `api` logs in as."""
    if name == api.user:
        raise AdminError(f"refusing to remove {name!r}: the management API is used as that user")
    if not api.delete_user(name):
        raise AdminError(f"there is no user {name!r} on the broker")


def credential_text(credential: Credential) -> str:
    """What a credentials file holds: the URL, then the role for a client."""
    role = f"{credential.role}\n" if credential.role in topology.ROLES else ""
    return f"{credential.url}\n{role}"


def write_credentials(directory: Path, credentials: Iterable[Credential]) -> list[Path]:
    """Write each credential to `<directory>/<user>.url` (mode 0600, replacing the file),
    making `directory` (mode 0700) if missing; the paths written, in order."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for credential in credentials:
        path = directory / f"{_file_name(credential.user)}.url"
        _write_private(path, credential_text(credential))
        written.append(path)
    return written


def _file_name(user: str) -> str:
    if access.node_of_worker_user(user) is None:
        check_user_name(user)
    return user


def _write_private(path: Path, text: str) -> None:
    # mkstemp makes the file 0600 from the start; the rename replaces any older file whole.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
