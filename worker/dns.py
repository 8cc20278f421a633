"""The DNS server each worker runs for its containers: cluster names answered, the rest forwarded.

Every container of a job sits on the cluster network. Docker's embedded resolver
(127.0.0.11 in the container) answers container names itself and forwards every other
query to this server, which listens on the network's bridge gateway address, port 53,
over UDP and TCP.

What names resolve to (case-insensitive, with or without a trailing dot):

- `<job>` and `<job>.corral`: the job's serving addresses (its healthy replicas, or its
  running ones when none is healthy), one A record each. The list is rotated by one on
  every A or ANY query, so clients that take the first address spread over the replicas.
- `<slot>.<job>` and `<slot>.<job>.corral`: the address of that one slot (`0.web`).
- `corral` itself: NOERROR with no records. (A job with no replica running with an
  address is not in the table at all: the master leaves it out of the view.)
- Any other name under `.corral`: NXDOMAIN, never forwarded (the suffix is ours).
- A bare name that is not in the table is forwarded: it may be a real name (`1.com`).

A cluster name asked for another type than A or ANY (AAAA, MX, ...) gets NOERROR with no
records (NODATA), so a resolver asking A and AAAA at once does not wait for an upstream.
Records carry TTL `ttl` (1 s by default): replicas come and go, and containers should ask
again rather than keep a stale address. A UDP answer holds what fits in 512 bytes (about
28 addresses); when some are left out the TC flag is set, and the client may ask again
over TCP for all of them.

Forwarding: any other query is sent as received, under a fresh random id (the client's is
put back on the answer), to the upstreams in order, each given `forward_timeout` seconds;
the first answer is passed back. A query that came over TCP is forwarded over TCP. A UDP
answer with the TC flag is asked again over TCP, and the full answer is passed back if the
client can take it over UDP (512 bytes, or the size its EDNS record offers); otherwise the
truncated answer is, and the client retries over TCP itself. When no upstream answers (or
none is configured) the client gets SERVFAIL.

A packet that does not parse is ignored, or answered FORMERR if its header parses and it
is a query; responses sent to the server are ignored. Each kind of problem is logged as a
warning the first time and at debug level after that.

Threads (all daemon threads; `close` stops them or leaves them to end on their own):

- one listener selects on the UDP socket, the TCP listening socket and a wake-up socket.
  It answers cluster names itself (a table lookup under a lock, then a send), queues UDP
  forwards, and hands each TCP connection to a thread of its own;
- `FORWARD_THREADS` forwarders take UDP forwards from a queue of at most
  `MAX_QUEUED_FORWARDS`; a query beyond that is dropped (the client will ask again), so
  a slow upstream never delays an answer for a cluster name;
- one thread per TCP connection, at most `MAX_TCP_CONNECTIONS` at once (one more is
  closed as soon as it is accepted). Each query must arrive within `TCP_IDLE_TIMEOUT`
  seconds, or the connection is closed. A TCP query to forward is forwarded on the
  connection's own thread.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import queue
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dnslib import RCODE

from worker.dnsanswer import (
    UDP_LIMIT,
    Forward,
    Malformed,
    answer_query,
    parse_header,
    refusal,
)
from worker.names import NameTable

log = logging.getLogger("corral.worker.dns")

FORWARD_THREADS = 8
MAX_QUEUED_FORWARDS = 256
MAX_TCP_CONNECTIONS = 16
TCP_IDLE_TIMEOUT = 5.0

# The largest UDP message a client takes without EDNS (RFC 1035 4.2.1), and any TCP one.
_TCP_LIMIT = 65535
_RECEIVE_SIZE = 65535
# With port 0, how many times to pick a port free for UDP that turns out taken for TCP.
_BIND_ATTEMPTS = 5

# A peer's socket address, as recvfrom gives it and sendto takes it.
_Peer = tuple[Any, ...]


def system_upstreams(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The `nameserver` addresses of a resolv.conf, in order, each on port 53.

    Entries that are not a numeric address are skipped; a file that cannot be read gives [].
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return []
    upstreams: list[tuple[str, int]] = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and _is_address(fields[1]):
            upstreams.append((fields[1], 53))
    return upstreams


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class _Complaints:
    """Logs the first problem of each kind as a warning, and the rest at debug level."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def __call__(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        with self._lock:
            first = kind not in self._seen
            self._seen.add(kind)
        if first:
            message += " (more of these are logged at debug level)"
        log.log(logging.WARNING if first else logging.DEBUG, message, *args, exc_info=exc_info)


@dataclass(frozen=True)
class _Sockets:
    udp: socket.socket
    tcp: socket.socket  # listening
    wake_reader: socket.socket
    wake_writer: socket.socket

    def close(self) -> None:
        for sock in (self.udp, self.tcp, self.wake_reader, self.wake_writer):
            sock.close()


class DnsServer:
    """Serves a `NameTable` over UDP and TCP on one address; see the module docstring.

    `start` once, then `close`.
    """

    def __init__(
        self,
        table: NameTable,
        address: str,
        port: int = 53,
        *,
        upstreams: Sequence[tuple[str, int]] = (),
        ttl: int = 1,
        forward_timeout: float = 2.0,
    ) -> None:
        self._table = table
        self._address = address
        self._port = port
        self._upstreams = tuple(upstreams)
        self._ttl = ttl
        self._forward_timeout = forward_timeout
        self._complain = _Complaints()
        # None tells a forwarder to stop.
        self._forwards: queue.Queue[tuple[Forward, _Peer] | None] = queue.Queue(MAX_QUEUED_FORWARDS)
        self._tcp_slots = threading.BoundedSemaphore(MAX_TCP_CONNECTIONS)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._sockets: _Sockets | None = None
        self._listener: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the one asked for before)."""
        return self._port

    def start(self) -> None:
        """Binds UDP and TCP on (address, port) and serves; raises OSError if it cannot bind."""
        udp, tcp = _bind(self._address, self._port)
        wake_reader, wake_writer = socket.socketpair()
        self._sockets = sockets = _Sockets(udp, tcp, wake_reader, wake_writer)
        self._port = int(udp.getsockname()[1])
        # Forwarding to ourselves would go round until the queue is full.
        self._upstreams = tuple(u for u in self._upstreams if u != (self._address, self._port))
        for number in range(FORWARD_THREADS):
            threading.Thread(
                target=self._forward_loop, args=(udp,), name=f"dns-forward-{number}", daemon=True
            ).start()
        self._listener = threading.Thread(
            target=self._listen, args=(sockets,), name="dns-listener", daemon=True
        )
        self._listener.start()

    def close(self) -> None:
        """Stops serving, closes the sockets and the TCP connections; returns within ~1 s.

        Forwards under way end within their timeouts, and their answers are dropped.
        """
        sockets, self._sockets = self._sockets, None
        if sockets is None:
            return
        sockets.wake_writer.send(b"\0")
        if self._listener is not None:
            self._listener.join(timeout=1.0)
        sockets.close()
        with contextlib.suppress(queue.Empty):
            while True:
                self._forwards.get_nowait()
        for _ in range(FORWARD_THREADS):
            self._forwards.put_nowait(None)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _listen(self, sockets: _Sockets) -> None:
        on_datagram = functools.partial(self._on_datagram, sockets.udp)
        on_connection = functools.partial(self._on_connection, sockets.tcp)
        with selectors.DefaultSelector() as selector:
            selector.register(sockets.udp, selectors.EVENT_READ, on_datagram)
            selector.register(sockets.tcp, selectors.EVENT_READ, on_connection)
            selector.register(sockets.wake_reader, selectors.EVENT_READ, None)
            while True:
                for key, _ in selector.select():
                    if key.data is None:
                        return  # woken by close
                    try:
                        key.data()
                    except Exception:
                        # A bug answering one packet must not stop the server.
                        self._complain("bug", "DNS server failed on a packet", exc_info=True)

    def _on_datagram(self, udp: socket.socket) -> None:
        try:
            packet, peer = udp.recvfrom(_RECEIVE_SIZE)
        except OSError as error:  # e.g. an ICMP error for an earlier answer
            log.debug("DNS receive failed: %s", error)
            return
        result = self._dispatch(packet, peer, UDP_LIMIT)
        if isinstance(result, Forward):
            try:
                self._forwards.put_nowait((result, peer))
            except queue.Full:
                self._complain(
                    "busy", "DNS query from %s dropped: too many forwards waiting", peer[0]
                )
        elif result is not None:
            _send(udp, result, peer)

    def _dispatch(self, packet: bytes, peer: _Peer, limit: int) -> bytes | Forward | None:
        result = answer_query(self._table, packet, ttl=self._ttl, limit=limit)
        if isinstance(result, Malformed):
            self._complain("malformed", "malformed DNS packet from %s: %s", peer[0], result.why)
            return result.reply
        return result

    def _forward_loop(self, udp: socket.socket) -> None:
        while (item := self._forwards.get()) is not None:
            forward, peer = item
            _send(udp, self._forwarded(forward, tcp=False), peer)

    def _forwarded(self, forward: Forward, *, tcp: bool) -> bytes:
        """The upstreams' answer to `forward` under the client's id, or SERVFAIL."""
        answer = self._ask_upstreams(forward, tcp=tcp)
        if answer is None:
            self._complain(
                "upstream", "no upstream DNS server answered for %s", forward.query.q.qname
            )
            return refusal(forward.query, RCODE.SERVFAIL)
        return _with_id(answer, int(forward.query.header.id))

    def _ask_upstreams(self, forward: Forward, *, tcp: bool) -> bytes | None:
        timeout = self._forward_timeout
        for upstream in self._upstreams:
            try:
                if tcp:
                    return _ask_tcp(upstream, forward.packet, timeout)
                answer = _ask_udp(upstream, forward.packet, timeout)
            except OSError as error:
                log.debug("DNS upstream %s:%d: %r", *upstream, error)
                continue
            if parse_header(answer).tc:
                with contextlib.suppress(OSError):
                    full = _ask_tcp(upstream, forward.packet, timeout)
                    if len(full) <= forward.udp_limit:
                        answer = full
            return answer
        return None

    def _on_connection(self, listener: socket.socket) -> None:
        try:
            connection, peer = listener.accept()
        except OSError as error:  # the client gave up before we took it
            log.debug("DNS accept failed: %s", error)
            return
        if not self._tcp_slots.acquire(blocking=False):
            connection.close()
            self._complain("tcp", "DNS connection from %s closed: too many open", peer[0])
            return
        with self._lock:
            self._connections.add(connection)
        threading.Thread(
            target=self._serve_connection, args=(connection, peer), name="dns-tcp", daemon=True
        ).start()

    def _serve_connection(self, connection: socket.socket, peer: _Peer) -> None:
        """Answers queries on `connection` until the client closes it, idles or misbehaves."""
        try:
            with connection:
                while (packet := _read_framed(connection, _deadline(TCP_IDLE_TIMEOUT))) is not None:
                    result = self._dispatch(packet, peer, _TCP_LIMIT)
                    if isinstance(result, Forward):
                        result = self._forwarded(result, tcp=True)
                    if result is None:
                        return
                    connection.settimeout(TCP_IDLE_TIMEOUT)
                    connection.sendall(_framed(result))
        except OSError as error:
            log.debug("DNS connection from %s ended: %r", peer[0], error)
        finally:
            with self._lock:
                self._connections.discard(connection)
            self._tcp_slots.release()


# Sockets.


def _bind(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on (address, port), both non-blocking.

    Port 0 picks a port free for both. Raises OSError if they cannot be bound.
    """
    for _ in range(_BIND_ATTEMPTS - 1 if port == 0 else 0):
        with contextlib.suppress(OSError):
            return _bind_once(address, port)
    return _bind_once(address, port)


def _bind_once(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    udp = socket.socket(_family(address), socket.SOCK_DGRAM)
    tcp = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        udp.bind((address, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((address, udp.getsockname()[1]))
        tcp.listen()
    except OSError:
        udp.close()
        tcp.close()
        raise
    udp.setblocking(False)
    tcp.setblocking(False)
    return udp, tcp


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _send(udp: socket.socket, packet: bytes, peer: _Peer) -> None:
    try:
        udp.sendto(packet, peer)
    except OSError as error:  # a full buffer, or the server was closed meanwhile
        log.debug("DNS answer to %s dropped: %s", peer[0], error)


def _ask_udp(upstream: tuple[str, int], packet: bytes, timeout: float) -> bytes:
    """The upstream's answer to `packet` over UDP; raises OSError (TimeoutError: no answer)."""
    ident = secrets.randbits(16)
    deadline = _deadline(timeout)
    with socket.socket(_family(upstream[0]), socket.SOCK_DGRAM) as sock:
        # Connected, so the kernel drops datagrams from anyone else.
        sock.connect(upstream)
        sock.send(_with_id(packet, ident))
        while True:
            sock.settimeout(_remaining(deadline))
            answer = sock.recv(_RECEIVE_SIZE)
            if _answers(answer, ident):
                return answer


def _ask_tcp(upstream: tuple[str, int], packet: bytes, timeout: float) -> bytes:
    """The upstream's answer to `packet` over TCP; raises OSError (TimeoutError: no answer)."""
    ident = secrets.randbits(16)
    deadline = _deadline(timeout)
    with socket.create_connection(upstream, timeout=timeout) as sock:
        sock.settimeout(_remaining(deadline))
        sock.sendall(_framed(_with_id(packet, ident)))
        answer = _read_framed(sock, deadline)
    if answer is None or not _answers(answer, ident):
        raise ConnectionError("no answer before the connection closed")
    return answer


def _answers(packet: bytes, ident: int) -> bool:
    header = parse_header(packet)
    return header is not None and bool(header.qr) and header.id == ident


def _with_id(packet: bytes, ident: int) -> bytes:
    # A message's id is its first two bytes (RFC 1035 4.1.1); the rest is passed on as is.
    return ident.to_bytes(2, "big") + packet[2:]


def _framed(packet: bytes) -> bytes:
    """`packet` as sent over TCP: after its length in two bytes (RFC 1035 4.2.2)."""
    return len(packet).to_bytes(2, "big") + packet


def _read_framed(sock: socket.socket, deadline: float) -> bytes | None:
    """One message read by `deadline` (else TimeoutError); None if the peer closes first."""
    prefix = _read_exactly(sock, 2, deadline)
    if prefix is None:
        return None
    return _read_exactly(sock, int.from_bytes(prefix, "big"), deadline)


def _read_exactly(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left
