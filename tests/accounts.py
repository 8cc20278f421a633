"""The role users the tests run as: no test process uses guest.

Each test process (each pytest-xdist worker) makes, on first use, its own master user
and its own admin client user (names unique to the process, random passwords), and
grants them the permissions of `bus.access` on every vhost a test creates. Each
worker process a test cluster starts gets a user of its own, `worker-<node id>`,
made for it and deleted with the cluster. Everything is deleted at the end of the
session.

`tests.cluster.Cluster` looks up the accounts of the URL it is given (the master's,
as the `vhost_url` fixture makes it) with `accounts_of`, and starts each process as
its role; a URL of another user (a test's own guest broker) runs every process as
that user, the single-user setup.
"""

from __future__ import annotations

import contextlib
import secrets
import urllib.parse
import uuid

from bus import access
from corral.admin import (
    MASTER_ROLE,
    Account,
    AdminError,
    Management,
    credential_url,
    worker_account,
)

_REGISTRY: dict[str, Accounts] = {}  # master user -> its accounts


class Accounts:
    """The role users of one test process on one broker (its management API)."""

    def __init__(self, api: Management, amqp_base: str) -> None:
        self.api = api
        self.amqp_base = amqp_base  # amqp://HOST:PORT
        suffix = uuid.uuid4().hex[:8]
        self.master = Account(f"corral-master-t{suffix}", MASTER_ROLE)
        self.admin = Account(f"corral-admin-t{suffix}", "admin")
        self._passwords: dict[str, str] = {}
        for account in (self.master, self.admin):
            self._make(account)
        _REGISTRY[self.master.user] = self

    def _make(self, account: Account) -> str:
        password = secrets.token_urlsafe(18)
        self.api.put_user(account.user, password, account.tags)
        self._passwords[account.user] = password
        return password

    def _grant(self, vhost: str, account: Account) -> None:
        for where, permissions in account.grants(vhost).items():
            self.api.grant(where, account.user, permissions)

    def add_vhost(self, vhost: str) -> str:
        """Grant the master and admin users their permissions on `vhost` (which must
        exist); the master's URL there."""
        self._grant(vhost, self.master)
        self._grant(vhost, self.admin)
        user = self.master.user
        return credential_url(self.amqp_base, vhost, user, self._passwords[user])

    def master_login(self) -> tuple[str, str]:
        return self.master.user, self._passwords[self.master.user]

    def admin_login(self) -> tuple[str, str]:
        return self.admin.user, self._passwords[self.admin.user]

    def worker_login(self, vhost: str, node_id: str) -> tuple[str, str]:
        """Node `node_id`'s own user and password, granted its permissions on `vhost`
        (made now if it is new)."""
        account = worker_account(node_id)
        if account.user not in self._passwords:
            self._make(account)
        self._grant(vhost, account)
        return account.user, self._passwords[account.user]

    def remove_worker(self, node_id: str) -> None:
        user = access.worker_user(node_id)
        if self._passwords.pop(user, None) is not None:
            with contextlib.suppress(AdminError, OSError):
                self.api.delete_user(user)

    def close(self) -> None:
        """Delete every user made (the broker may be down: leftovers are only clutter)."""
        _REGISTRY.pop(self.master.user, None)
        for user in list(self._passwords):
            with contextlib.suppress(AdminError, OSError):
                self.api.delete_user(user)
        self._passwords.clear()


def as_user(url: str, user: str, password: str) -> str:
    """`url` (one AMQP URL or several, comma-separated) logging in as `user` instead."""
    login = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    rewritten = []
    for one in url.split(","):
        parts = urllib.parse.urlsplit(one.strip())
        host_port = parts.netloc.rpartition("@")[2]
        rewritten.append(urllib.parse.urlunsplit(parts._replace(netloc=f"{login}@{host_port}")))
    return ",".join(rewritten)


def accounts_of(url: str) -> tuple[Accounts, str] | None:
    """The accounts whose master user `url` logs in as, and the URL's vhost; None for a URL
    of any other user."""
    parts = urllib.parse.urlsplit(url.split(",")[0])
    user = urllib.parse.unquote(parts.username or "")
    accounts = _REGISTRY.get(user)
    if accounts is None:
        return None
    return accounts, urllib.parse.unquote(parts.path[1:]) or "/"
