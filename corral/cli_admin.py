"""`corral admin`: the broker users of a cluster and their permissions (`corral.admin`).

Each command logs in to RabbitMQ's management API (--management, as a user with the
administrator tag: guest at first, then the corral-broker-admin that bootstrap makes)
and prints one line per user: created or kept, its role, and the credentials file
written. A file holds the user's AMQP URL on its first line (`CORRAL_URL=$(head -1
FILE)`), and a client's role on the second. Passwords appear nowhere else.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bus import access
from corral.admin import (
    ADMIN_CLIENT_USER,
    BROKER_ADMIN_USER,
    AdminError,
    Credential,
    Management,
    add_user,
    add_worker,
    bootstrap,
    bootstrap_accounts,
    remove_user,
    write_credentials,
)
from corral.clitools import friendly_errors
from corral.text import visible

admin_app = typer.Typer(
    name="admin",
    help="Make the broker users of a Corral cluster: one per role, each with only the "
    "permissions its role needs.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class Role(StrEnum):
    viewer = "viewer"
    submitter = "submitter"
    admin = "admin"


def _node_id(value: str) -> str:
    try:
        return access.check_node_id(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


VhostOpt = Annotated[
    str, typer.Option("--vhost", metavar="VHOST", help="The cluster's RabbitMQ vhost.")
]
ManagementOpt = Annotated[
    str,
    typer.Option(
        "--management",
        envvar="CORRAL_MANAGEMENT_URL",
        metavar="URL",
        help="RabbitMQ's management API.",
    ),
]
ManagementUserOpt = Annotated[
    str,
    typer.Option(
        "--management-user",
        metavar="USER",
        envvar="CORRAL_MANAGEMENT_USER",
        help="A user of the management API with the administrator tag.",
    ),
]
ManagementPasswordOpt = Annotated[
    str,
    typer.Option(
        "--management-password",
        metavar="PASSWORD",
        envvar="CORRAL_MANAGEMENT_PASSWORD",
        show_default=False,
        help="Its password (default: guest).",
    ),
]
AmqpHostOpt = Annotated[
    str,
    typer.Option(
        "--amqp-host", metavar="HOST", help="The broker's host, in the AMQP URLs written."
    ),
]
AmqpPortOpt = Annotated[
    int,
    typer.Option(
        "--amqp-port", metavar="PORT", min=1, max=65535, help="Its AMQP port, in those URLs."
    ),
]
CredentialsOpt = Annotated[
    Path,
    typer.Option(
        "--credentials-dir",
        metavar="DIR",
        help="Where to write each new user's <user>.url file (mode 0600).",
    ),
]
RotateOpt = Annotated[
    bool,
    typer.Option("--rotate", help="Give users that already exist a new password (and write it)."),
]

DEFAULT_VHOST = "/"
DEFAULT_MANAGEMENT = "http://127.0.0.1:15672"
DEFAULT_CREDENTIALS = Path("~/.corral/credentials")


def amqp_base(host: str, port: int) -> str:
    """amqp://HOST:PORT, an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"amqp://{host}:{port}"


def _report(users: list[tuple[str, str]], made: list[Credential], directory: Path) -> None:
    """One line per user of `users` (name, role): created (and the file written) or kept."""
    try:
        paths = write_credentials(directory.expanduser(), made)
    except OSError as exc:
        raise AdminError(
            f"could not write the credentials to {directory}: {exc}; the users were made: "
            "run again with --rotate to give them passwords you can keep"
        ) from None
    written = dict(zip((c.user for c in made), paths, strict=True))
    for user, role in users:
        path = written.get(user)
        if path is None:
            line = f"kept {user} ({role}): password unchanged, no file written (--rotate)"
        else:
            line = f"created {user} ({role}): {path}"
        typer.echo(visible(line))


@admin_app.command("bootstrap")
@friendly_errors
def bootstrap_command(
    worker: Annotated[
        list[str] | None,
        typer.Option(
            "--worker",
            metavar="NODE",
            help="A worker's node id, to make its user (repeat for each).",
        ),
    ] = None,
    admin_name: Annotated[
        str, typer.Option("--admin-name", metavar="NAME", help="The admin client user to make.")
    ] = ADMIN_CLIENT_USER,
    master_user: Annotated[
        str, typer.Option("--master-user", metavar="NAME", help="The masters' user.")
    ] = access.MASTER_USER,
    broker_admin: Annotated[
        str,
        typer.Option(
            "--broker-admin", metavar="NAME", help="The management API administrator to make."
        ),
    ] = BROKER_ADMIN_USER,
    rotate: RotateOpt = False,
    vhost: VhostOpt = DEFAULT_VHOST,
    management: ManagementOpt = DEFAULT_MANAGEMENT,
    management_user: ManagementUserOpt = "guest",
    management_password: ManagementPasswordOpt = "guest",
    amqp_host: AmqpHostOpt = "127.0.0.1",
    amqp_port: AmqpPortOpt = 5672,
    credentials_dir: CredentialsOpt = DEFAULT_CREDENTIALS,
) -> None:
    """Make the vhost, Corral's exchanges and queues, and the users: corral-master, an
    admin client, one worker-NODE per --worker, and corral-broker-admin (administrator of
    the management API, in place of guest). Safe to run again: users that exist keep
    their passwords unless --rotate."""
    # The bus logs each failed connection attempt; the error raised says it all.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    nodes = [_node_id(node) for node in worker or ()]
    names = {"admin_name": admin_name, "master_user": master_user, "broker_admin": broker_admin}
    api = Management(management, management_user, management_password)
    base = amqp_base(amqp_host, amqp_port)
    made = bootstrap(api, vhost, amqp_url_base=base, workers=nodes, rotate=rotate, **names)
    users = [(a.user, a.role) for a in bootstrap_accounts(nodes, **names)]
    _report(users, made, credentials_dir)


@admin_app.command("add-worker", no_args_is_help=True)
@friendly_errors
def add_worker_command(
    node: Annotated[str, typer.Argument(metavar="NODE", help="The worker's node id.")],
    rotate: RotateOpt = False,
    vhost: VhostOpt = DEFAULT_VHOST,
    management: ManagementOpt = DEFAULT_MANAGEMENT,
    management_user: ManagementUserOpt = "guest",
    management_password: ManagementPasswordOpt = "guest",
    amqp_host: AmqpHostOpt = "127.0.0.1",
    amqp_port: AmqpPortOpt = 5672,
    credentials_dir: CredentialsOpt = DEFAULT_CREDENTIALS,
) -> None:
    """Make the user worker-NODE, which may act only as node NODE."""
    node = _node_id(node)
    api = Management(management, management_user, management_password)
    made = add_worker(
        api, vhost, node, amqp_url_base=amqp_base(amqp_host, amqp_port), rotate=rotate
    )
    _report([(access.worker_user(node), "worker")], [made] if made else [], credentials_dir)


@admin_app.command("add-user", no_args_is_help=True)
@friendly_errors
def add_user_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The client user's name.")],
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            help="What it may ask the master: each role can do what the ones before it can.",
        ),
    ] = Role.submitter,
    rotate: RotateOpt = False,
    vhost: VhostOpt = DEFAULT_VHOST,
    management: ManagementOpt = DEFAULT_MANAGEMENT,
    management_user: ManagementUserOpt = "guest",
    management_password: ManagementPasswordOpt = "guest",
    amqp_host: AmqpHostOpt = "127.0.0.1",
    amqp_port: AmqpPortOpt = 5672,
    credentials_dir: CredentialsOpt = DEFAULT_CREDENTIALS,
) -> None:
    """Make client user NAME with ROLE (viewer, submitter, admin; default submitter), or
    give an existing one that role (it keeps its password unless --rotate)."""
    api = Management(management, management_user, management_password)
    base = amqp_base(amqp_host, amqp_port)
    made = add_user(api, vhost, name, role.value, amqp_url_base=base, rotate=rotate)
    _report([(name, role.value)], [made] if made else [], credentials_dir)


@admin_app.command("remove-user", no_args_is_help=True)
@friendly_errors
def remove_user_command(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The user (worker-NODE for a worker).")
    ],
    management: ManagementOpt = DEFAULT_MANAGEMENT,
    management_user: ManagementUserOpt = "guest",
    management_password: ManagementPasswordOpt = "guest",
) -> None:
    """Delete user NAME and its permissions; the broker closes its open connections.
    Its credentials file, if any, is left for you to delete."""
    remove_user(Management(management, management_user, management_password), name)
    typer.echo(visible(f"removed {name}"))
