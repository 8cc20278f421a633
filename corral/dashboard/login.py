"""`corral dashboard --login`: a browser logs in as a broker user that may read the cluster's
status, checked by the broker itself.

The browser sends HTTP basic credentials; the dashboard opens a connection to its
own broker and vhost as that user and binds a private queue to `corral.status`.
The broker refuses a wrong password, and refuses the binding to a user that may
not read status (a worker's user); the client roles (viewer, submitter, admin)
and the masters' user may. The dashboard keeps no list of users and never stores
a password: verdicts are cached for a short while under a keyed hash of the pair.

A check never logs in by certificate: an empty password is no credentials, and the
check's TLS has the CA only, never the dashboard's client certificate (with one and
no password, the bus would log in as the certificate's user, SASL EXTERNAL, whatever
user name the browser sent).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from urllib.parse import quote, urlsplit, urlunsplit

from bus import topology
from bus.connection import Bus
from bus.errors import BusError, TopologyError
from bus.tls import Tls
from corral.urls import join_urls, split_urls

# A routing key no event has: the binding is what is checked, no event is wanted.
CHECK_PATTERN = "dashboard.login-check"
MAX_CACHED = 1024  # good logins kept, the least recently used dropped first
MAX_DENIED = 256  # refusals kept apart, the oldest dropped first: guesses never push out a login


class Verdict(Enum):
    OK = "ok"
    DENIED = "denied"  # wrong user or password, or a user that may not read status
    UNAVAILABLE = "unavailable"  # the broker could not say


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic ...` header; None if it is not one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        return None  # no password: the bus would log in by certificate, if it has one
    return user, password


def as_user(url: str, user: str, password: str) -> str:
    """`url` (one AMQP URL or several) with `user` and `password` instead of its own."""
    urls = []
    for one in split_urls(url):
        parts = urlsplit(one)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        urls.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))
    return join_urls(urls)


def broker_verdict(url: str, tls: Tls | None) -> Verdict:
    """Whether the user of `url` may log in and read the status topic, as the broker says."""
    try:
        bus = Bus(url, name="corral dashboard login", declare_topology=False, tls=tls)
    except BusError:
        return Verdict.DENIED  # a user name or password that makes no URL
    try:
        try:
            bus.connect(attempts=1)
        except TopologyError:  # AccessRefused included: the user, password or vhost
            return Verdict.DENIED
        except BusError:
            return Verdict.UNAVAILABLE
        try:
            bus.subscribe(topology.status_queue((CHECK_PATTERN,)))
        except BusError:
            # On a connection just opened, the broker refusing the binding: this user
            # may not read corral.status.
            return Verdict.DENIED
        return Verdict.OK
    finally:
        bus.close()


def check_tls(tls: Tls | None) -> Tls | None:
    """What of `tls` a login check uses: the CA that vouches for the broker, nothing else."""
    return Tls(ca_file=tls.ca_file) if tls is not None and tls.ca_file else None


class BrokerLogin:
    """Checks (user, password) pairs against the broker of `url`, one check at a time.

    A good login is kept `ttl` s (at most `max_ok`, the least recently used dropped
    first); a denial `denied_ttl` s (at most `max_denied`, kept apart, so that guesses
    never push out a good login; it also slows guessing to one try per pair per
    `denied_ttl`). An unavailable broker is not cached. Only the CA of `tls` is used.
    """

    def __init__(
        self,
        url: str,
        *,
        tls: Tls | None = None,
        ttl: float = 60.0,
        denied_ttl: float = 5.0,
        check: Callable[[str], Verdict] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_ok: int = MAX_CACHED,
        max_denied: int = MAX_DENIED,
    ) -> None:
        self._url = url
        self.ttl = ttl
        self._ttl = {Verdict.OK: ttl, Verdict.DENIED: denied_ttl}
        ca_only = check_tls(tls)
        self._check = check or (lambda user_url: broker_verdict(user_url, ca_only))
        self._clock = clock
        self._key = secrets.token_bytes(32)
        # Each: keyed hash of the pair -> when its verdict expires.
        self._kept: dict[Verdict, OrderedDict[bytes, float]] = {
            Verdict.OK: OrderedDict(),
            Verdict.DENIED: OrderedDict(),
        }
        self._limit = {Verdict.OK: max_ok, Verdict.DENIED: max_denied}
        self._lock = threading.Lock()  # the verdicts: held briefly, `cached` never waits long
        self._checking = threading.Lock()  # held during a check with the broker

    def cached(self, user: str, password: str) -> Verdict | None:
        """The verdict on this pair if one is still fresh; cheap, never blocks long."""
        key = self._digest(user, password)
        with self._lock:
            return self._fresh(key)

    def verify(self, user: str, password: str) -> Verdict:
        """The cached verdict, else the broker's (blocks up to a few seconds)."""
        key = self._digest(user, password)
        with self._checking:  # one check at a time: a burst of guesses queues up here
            with self._lock:
                verdict = self._fresh(key)
            if verdict is not None:
                return verdict
            verdict = self._check(as_user(self._url, user, password))
            if verdict in self._kept:
                with self._lock:
                    kept = self._kept[verdict]
                    kept[key] = self._clock() + self._ttl[verdict]
                    while len(kept) > self._limit[verdict]:
                        kept.popitem(last=False)
            return verdict

    def _fresh(self, key: bytes) -> Verdict | None:
        for verdict, kept in self._kept.items():
            until = kept.get(key)
            if until is None:
                continue
            if self._clock() >= until:
                del kept[key]
                return None
            if verdict is Verdict.OK:
                kept.move_to_end(key)  # used: the last to go
            return verdict
        return None

    def _digest(self, user: str, password: str) -> bytes:
        pair = user.encode() + b"\0" + password.encode()
        return hmac.new(self._key, pair, hashlib.sha256).digest()
