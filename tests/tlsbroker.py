"""A RabbitMQ node of its own, with a TLS listener and certificate login, for the TLS tests.

The shared broker (5672) is left alone: `tls_broker()` starts another node beside it,
the way shared/recipes/rabbitmq-cluster.sh starts its cluster nodes (as the rabbitmq
user, which shares the Erlang cookie with rabbitmqctl), with::

    listeners.ssl.default       the TLS port; ssl_options verify_peer, no cert required
    auth_mechanisms             PLAIN, AMQPLAIN, EXTERNAL (rabbitmq_auth_mechanism_ssl)
    ssl_cert_login_from         common_name: a certificate logs in as its subject CN

A CA of its own (`Certificates`, made with the openssl command) signs the node's
certificate (localhost, 127.0.0.1) and any client certificate a test asks for. The
users exist from the start (a definitions file the node loads as it boots: no
rabbitmqctl round trips), each with permissions on "/".

Ports come in slots, one node per slot, claimed with a file lock so that xdist
workers never share one: slot k is AMQP 5781+10k, TLS 5782+10k, distribution
25781+10k (clear of 5672/15672/25672 and the recipe's 5701-5703, 15701-15703,
25701-25703). The node's files all live in one temporary directory, deleted with it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from bus.tls import Tls

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "rabbitmqctl"
SLOTS = 10
START_TIMEOUT = 90  # seconds for the node to boot
HOST = "127.0.0.1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

RABBITMQ_CONF = """\
listeners.tcp.default = {amqp}
listeners.ssl.default = {tls}
ssl_options.cacertfile = {ca}
ssl_options.certfile = {cert}
ssl_options.keyfile = {key}
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
load_definitions = {definitions}
log.file.level = info
"""


class Unavailable(Exception):
    """This machine cannot run a node of its own (not root, no RabbitMQ, no openssl)."""


def unavailable() -> str | None:
    """Why `tls_broker` cannot work here, or None."""
    if os.geteuid() != 0:
        return "starting a RabbitMQ node as the rabbitmq user needs root"
    if not Path(RABBITMQ_SERVER).exists() or shutil.which(RABBITMQCTL) is None:
        return f"no RabbitMQ server at {RABBITMQ_SERVER}"
    if shutil.which("openssl") is None:
        return "no openssl command to make the certificates with"
    return None


class Certificates:
    """A CA of its own in `directory`, and the certificates it signs (EC P-256, 2 days)."""

    def __init__(self, directory: Path, name: str = "corral-test-ca") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._config = directory / "openssl.cnf"
        self._config.write_text(OPENSSL_CONFIG)
        self.ca_file = directory / f"{name}.pem"
        self._ca_key = directory / f"{name}.key"
        self._openssl(
            "req", "-x509", "-extensions", "ca", *self._new_key(self._ca_key, name),
            "-days", "2", "-out", str(self.ca_file),
        )  # fmt: skip

    def server(self, name: str = "server") -> tuple[Path, Path]:
        """A server certificate for localhost and 127.0.0.1, and its key."""
        return self._sign(name, "server")

    def client(self, common_name: str) -> Tls:
        """A client certificate with subject CN `common_name`, as Tls with this CA."""
        cert, key = self._sign(common_name, "client")
        return Tls(ca_file=str(self.ca_file), cert_file=str(cert), key_file=str(key))

    def _sign(self, common_name: str, kind: str) -> tuple[Path, Path]:
        if not _NAME.fullmatch(common_name):
            raise ValueError(f"not a plain name: {common_name!r}")
        cert = self.directory / f"{kind}-{common_name}.pem"
        key = self.directory / f"{kind}-{common_name}.key"
        request = self.directory / f"{kind}-{common_name}.csr"
        self._openssl(
            "req", "-new", *self._new_key(key, common_name), "-out", str(request)
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.ca_file),
            "-CAkey", str(self._ca_key), "-set_serial", f"0x{uuid.uuid4().hex}", "-days", "2",
            "-extfile", str(self._config), "-extensions", kind, "-out", str(cert),
        )  # fmt: skip
        return cert, key

    def _new_key(self, key: Path, common_name: str) -> list[str]:
        return [
            "-config", str(self._config), "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-subj", f"/CN={common_name}",
        ]  # fmt: skip

    def _openssl(self, *args: str) -> None:
        done = subprocess.run(
            ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


@dataclass(frozen=True)
class Ports:
    amqp: int
    tls: int
    dist: int


class TlsBroker:
    """A running node (see the module docstring). Its users have permissions on "/"."""

    def __init__(self, node: str, directory: Path, ports: Ports, certs: Certificates) -> None:
        self.node = node
        self.directory = directory
        self.ports = ports
        self.certs = certs

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """An amqps:// URL of the TLS listener; with no user, one for certificate login."""
        if user is None:
            return f"amqps://{HOST}:{self.ports.tls}/"
        login = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"amqps://{login}@{HOST}:{self.ports.tls}/"

    def plain_url(self, user: str, password: str) -> str:
        """An amqp:// URL of the plain listener."""
        return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{HOST}:{self.ports.amqp}/"

    @property
    def ca(self) -> Tls:
        """Tls that trusts this node's CA, with no client certificate."""
        return Tls(ca_file=str(self.certs.ca_file))

    def rabbitmqctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl against this node; its output. Raises RuntimeError if it fails."""
        done = subprocess.run(
            [RABBITMQCTL, "-n", self.node, "-q", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {args[0]} failed: {(done.stderr or done.stdout)[-2000:]}"
            )
        return done.stdout

    def log(self) -> str:
        """The tail of the node's log, for failure messages."""
        logs = sorted((self.directory / "log").glob("*.log"))
        return "".join(path.read_text(errors="replace")[-4000:] for path in logs)


@contextlib.contextmanager
def tls_broker(users: Mapping[str, str | None]) -> Iterator[TlsBroker]:
    """Start a node (about 5-10 s) with `users` (name: password, or None for a user that
    only logs in by certificate); stop it and delete its files afterwards.

    Raises Unavailable if this machine cannot run one, RuntimeError if it does not start.
    """
    why = unavailable()
    if why is not None:
        raise Unavailable(why)
    with _claimed_slot() as ports:
        directory = Path(tempfile.mkdtemp(prefix="corral-tls-"))
        broker = TlsBroker(
            f"corral-tls-{uuid.uuid4().hex[:8]}@localhost",
            directory,
            ports,
            Certificates(directory / "certs"),
        )
        try:
            _configure(broker, users)
            _start(broker)
            yield broker
        finally:
            _stop(broker)
            shutil.rmtree(directory, ignore_errors=True)


def password_hash(password: str) -> str:
    """A password as RabbitMQ's definitions hold it (rabbit_password_hashing_sha256)."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _configure(broker: TlsBroker, users: Mapping[str, str | None]) -> None:
    directory = broker.directory
    cert, key = broker.certs.server()
    definitions = {
        "vhosts": [{"name": "/"}],
        "users": [
            {
                "name": name,
                # No hash: that user cannot log in by password, only by certificate.
                "password_hash": password_hash(password) if password else "",
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
            for name, password in users.items()
        ],
        "permissions": [
            {"user": name, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
            for name in users
        ],
    }
    (directory / "definitions.json").write_text(json.dumps(definitions))
    (directory / "rabbitmq.conf").write_text(
        RABBITMQ_CONF.format(
            amqp=broker.ports.amqp,
            tls=broker.ports.tls,
            ca=broker.certs.ca_file,
            cert=cert,
            key=key,
            definitions=directory / "definitions.json",
        )
    )
    (directory / "enabled_plugins").write_text("[rabbitmq_auth_mechanism_ssl].\n")
    subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(directory)], check=True, timeout=30)


def _start(broker: TlsBroker) -> None:
    directory = broker.directory
    env = {
        "RABBITMQ_NODENAME": broker.node,
        "RABBITMQ_DIST_PORT": str(broker.ports.dist),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),  # none
        "RABBITMQ_PID_FILE": str(directory / "pid"),
    }
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    command = f"exec env {assignments} {RABBITMQ_SERVER} -detached"
    subprocess.run(
        ["su", "rabbitmq", "-s", "/bin/sh", "-c", command],
        check=True,
        timeout=60,
        capture_output=True,
    )
    try:
        # Waits for the pid file, then for the node to finish booting.
        broker.rabbitmqctl(
            "wait", str(directory / "pid"), "--timeout", str(START_TIMEOUT * 1000),
            timeout=START_TIMEOUT + 10,
        )  # fmt: skip
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"the TLS node did not start: {exc}\n{broker.log()}") from None


def _stop(broker: TlsBroker) -> None:
    pid_file = broker.directory / "pid"
    try:
        broker.rabbitmqctl("stop", str(pid_file), timeout=60)  # returns once the node is gone
        return
    except (RuntimeError, subprocess.TimeoutExpired):
        pass
    # It did not stop (or never started properly): kill the one we launched, by its pid.
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


@contextlib.contextmanager
def _claimed_slot() -> Iterator[Ports]:
    """The ports of a free slot, held (file lock) until the block ends."""
    for slot in range(SLOTS):
        lock = _lock(Path(tempfile.gettempdir()) / f"corral-tlsbroker-slot{slot}.lock")
        if lock is None:
            continue
        ports = Ports(amqp=5781 + 10 * slot, tls=5782 + 10 * slot, dist=25781 + 10 * slot)
        if not all(_free(port) for port in (ports.amqp, ports.tls, ports.dist)):
            lock.close()
            continue
        try:
            yield ports
        finally:
            lock.close()
        return
    raise RuntimeError(f"all {SLOTS} TLS node slots are taken (ports 5781-{5781 + 10 * SLOTS})")


def _lock(path: Path) -> IO[bytes] | None:
    file = path.open("ab")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    return file


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the node binds
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
