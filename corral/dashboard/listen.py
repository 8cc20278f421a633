"""`--listen HOST:PORT`: where the dashboard listens, and what listening there exposes."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

DEFAULT_LISTEN = "127.0.0.1:8700"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


@dataclass(frozen=True)
class Listen:
    """A `--listen HOST:PORT` (an IPv6 host in brackets: `[::1]:8700`)."""

    host: str  # as given, brackets included
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        """ValueError, saying what is expected, if `text` is not HOST:PORT."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT (such as {DEFAULT_LISTEN}), got {text!r}")
        if host.startswith("[") != host.endswith("]"):
            raise ValueError(f"an IPv6 address goes in brackets ([::1]:8700), got {text!r}")
        return cls(host.lower(), int(port))

    @property
    def bind_host(self) -> str:
        return self.host.strip("[]")

    @property
    def wildcard(self) -> bool:
        return self.bind_host in ("", "0.0.0.0", "::")

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.bind_host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    def url(self, https: bool) -> str:
        host = "127.0.0.1" if self.wildcard else self.host
        return f"{'https' if https else 'http'}://{host}:{self.port}/"

    def hosts(self) -> frozenset[str] | None:
        """The Host names a request may carry: on loopback only loopback names (a page
        elsewhere cannot read it by DNS rebinding), else any (a login guards it)."""
        return LOOPBACK_NAMES | {self.host} if self.loopback else None


def exposure_warnings(listen: Listen, login: bool, https: bool) -> list[str]:
    """What an operator must hear about listening there (nothing on loopback)."""
    if listen.loopback:
        return []
    where = f"{listen.host}:{listen.port}"
    if not login:
        return [
            f"THE DASHBOARD LISTENS ON {where}, BEYOND THIS MACHINE, WITHOUT A LOGIN: anyone"
            " who can reach it sees every job, task, node and master of the cluster. Add"
            " --login (and --https-cert/--https-key), or listen on 127.0.0.1."
        ]
    if not https:
        return [
            f"the dashboard listens on {where} over plain HTTP: logins cross the network"
            " in clear. Give --https-cert and --https-key, or put it behind a TLS proxy."
        ]
    return []


def open_socket(listen: Listen) -> socket.socket:
    """A socket bound to `listen` (OSError if the address is taken or not ours)."""
    family = socket.AF_INET6 if ":" in listen.bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.bind_host, listen.port))
    except OSError:
        sock.close()
        raise
    return sock
