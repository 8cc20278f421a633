"""A worker's node id: given, or kept in its state directory across restarts."""

from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path

from bus.access import node_of_worker_user
from schemas.base import NODE_ID_PATTERN

NODE_ID_FILE = "node-id"
_VALID = re.compile(NODE_ID_PATTERN)  # the id heartbeats and assignments carry


class IdentityError(ValueError):
    """The node id cannot be used or kept; the text says what to do."""


def _fresh_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40].strip("-_") or "node"
    return f"{host}-{uuid.uuid4().hex[:6]}"


def resolve_node_id(given: str | None, state_dir: Path) -> str:
    """`given` if set (and saved), else the saved one, else a new id that is then saved."""
    path = state_dir / NODE_ID_FILE
    if given is not None:
        node_id = given
    elif path.exists():
        node_id = path.read_text().strip()
    else:
        node_id = _fresh_id()
    if not _VALID.match(node_id):
        raise IdentityError(
            f"node id {node_id!r} is not valid: use up to 63 letters, digits, '-' or '_'"
        )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text().strip() != node_id:
            path.write_text(node_id + "\n")
    except OSError as exc:
        if given is None:
            raise IdentityError(
                f"cannot keep the node id in {state_dir}: {exc.strerror}; "
                "pass --state-dir DIR or --node-id ID"
            ) from None
    return node_id


def check_user(user: str, node_id: str) -> None:
    """Raise IdentityError if `user` is a worker's broker user (`worker-<node id>`) but not
    node `node_id`'s: the broker would refuse everything it says as that node."""
    own = node_of_worker_user(user)
    if own is not None and own != node_id:
        raise IdentityError(
            f"this worker logs in as broker user {user!r}, which may act only as node "
            f"{own!r}, not {node_id!r}: start it with --node-id {own}, or give it the URL of "
            f"user worker-{node_id} (corral admin add-worker {node_id})"
        )
