"""The worker's DNS server: its name table, and a real server on 127.0.0.1 over UDP and TCP.

Forwarding is checked against a stub upstream resolver that the tests run on 127.0.0.1
(`_Upstream`, dnslib on the wire): nothing leaves the machine.
"""

from __future__ import annotations

import functools
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSBuffer, DNSHeader, DNSQuestion, DNSRecord

from worker.dns import MAX_TCP_CONNECTIONS, DnsServer, system_upstreams
from worker.names import Endpoints, NameTable

WEB = Endpoints(
    serving=("10.0.0.1", "10.0.0.2", "10.0.0.3"),
    slots={0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3"},
)
IDLE = Endpoints(serving=(), slots={})
# A name only the stub upstream knows.
EXTERNAL = "example.test"
EXTERNAL_ADDRESS = "192.0.2.7"


# The name table.


@pytest.fixture
def table() -> NameTable:
    table = NameTable()
    table.replace({"web": WEB, "idle": IDLE})
    return table


@pytest.mark.parametrize("name", ["web", "web.", "web.corral", "WEB.Corral.", "Web.CORRAL"])
def test_a_job_resolves_to_its_serving_addresses_under_either_suffix(
    table: NameTable, name: str
) -> None:
    assert sorted(table.lookup(name) or []) == list(WEB.serving)


def test_a_job_rotates_its_addresses_on_every_lookup(table: NameTable) -> None:
    rotations = [table.lookup(name) for name in ["web", "web.corral", "WEB.", "web"]]

    assert rotations == [
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        ["10.0.0.2", "10.0.0.3", "10.0.0.1"],
        ["10.0.0.3", "10.0.0.1", "10.0.0.2"],
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    ]


def test_a_slot_resolves_to_its_one_address(table: NameTable) -> None:
    assert table.lookup("0.web") == ["10.0.0.1"]
    assert table.lookup("2.WEB.corral.") == ["10.0.0.3"]
    assert table.lookup("1.web") == table.lookup("1.web") == ["10.0.0.2"]


def test_a_job_without_addresses_is_known_and_empty(table: NameTable) -> None:
    assert table.lookup("idle") == []
    assert table.lookup("idle.corral") == []


@pytest.mark.parametrize("name", ["db", "example.com", "9.web", "01.web", "x.web", "", "."])
def test_a_bare_name_not_in_the_table_is_forwarded(table: NameTable, name: str) -> None:
    assert table.lookup(name) is None


@pytest.mark.parametrize(
    "name", ["db.corral", "9.web.corral", "01.web.corral", "a.0.web.corral", "corral", "corral."]
)
def test_a_name_under_the_suffix_is_never_forwarded(table: NameTable, name: str) -> None:
    assert table.lookup(name) == []


def test_apply_changes_some_jobs_and_replace_sets_them_all(table: NameTable) -> None:
    db = Endpoints(serving=("10.0.1.1",), slots={0: "10.0.1.1"})

    table.apply({"db": db, "idle": None})
    assert (len(table), table.lookup("db"), table.lookup("0.db"), table.lookup("idle")) == (
        2,
        ["10.0.1.1"],
        ["10.0.1.1"],
        None,
    )

    table.replace({"db": db})
    assert (len(table), table.lookup("web"), table.lookup("web.corral")) == (1, None, [])


def test_system_upstreams_reads_the_nameserver_lines(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "# written by hand\n"
        "search example.com\n"
        "nameserver 127.0.0.53\n"
        "nameserver  ::1   # inline comment\n"
        "nameserver dns.example.com\n"
        ";nameserver 10.0.0.9\n"
        "options edns0\n"
    )

    assert system_upstreams(str(resolv)) == [("127.0.0.53", 53), ("::1", 53)]
    assert system_upstreams(str(tmp_path / "missing")) == []


# A real server on 127.0.0.1.


class _Upstream:
    """A resolver on 127.0.0.1 (UDP and TCP, one port) that knows `names` (name -> address).

    `truncate_udp` answers UDP queries with the TC flag and no records, as a server does
    when the answer is too long. `asked` records the transport of every query.
    """

    def __init__(self, names: Mapping[str, str], *, truncate_udp: bool = False) -> None:
        self.names = {f"{name.lower()}.": address for name, address in names.items()}
        self.truncate_udp = truncate_udp
        self.asked: list[str] = []
        self._udp, self._tcp = self._bind()
        for server in (self._udp, self._tcp):
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            ).start()

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", int(self._udp.socket.getsockname()[1])

    def answer(self, packet: bytes, transport: str) -> bytes:
        query = DNSRecord.parse(packet)
        self.asked.append(transport)
        reply = query.reply()
        address = self.names.get(str(query.q.qname).lower())
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif transport == "udp" and self.truncate_udp:
            reply.header.tc = 1
        else:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=60))
        return bytes(reply.pack())

    def close(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()

    def _bind(self) -> tuple[socketserver.UDPServer, socketserver.TCPServer]:
        for _ in range(5):
            udp = socketserver.ThreadingUDPServer(
                ("127.0.0.1", 0), functools.partial(_UdpHandler, self)
            )
            try:
                tcp = socketserver.ThreadingTCPServer(
                    ("127.0.0.1", udp.socket.getsockname()[1]), functools.partial(_TcpHandler, self)
                )
            except OSError:  # that port is taken for TCP: pick another
                udp.server_close()
                continue
            udp.daemon_threads = tcp.daemon_threads = True
            return udp, tcp
        raise OSError("no port free for both UDP and TCP")


class _UdpHandler(socketserver.BaseRequestHandler):
    def __init__(self, upstream: _Upstream, *args: Any) -> None:
        self.upstream = upstream
        super().__init__(*args)

    def handle(self) -> None:
        packet, sock = self.request
        sock.sendto(self.upstream.answer(packet, "udp"), self.client_address)


class _TcpHandler(socketserver.StreamRequestHandler):
    def __init__(self, upstream: _Upstream, *args: Any) -> None:
        self.upstream = upstream
        super().__init__(*args)

    def handle(self) -> None:
        size = int.from_bytes(self.rfile.read(2), "big")
        answer = self.upstream.answer(self.rfile.read(size), "tcp")
        self.wfile.write(len(answer).to_bytes(2, "big") + answer)


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    stub = _Upstream({EXTERNAL: EXTERNAL_ADDRESS})
    yield stub
    stub.close()


@pytest.fixture
def silent() -> Iterator[tuple[str, int]]:
    """An upstream that takes UDP queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield "127.0.0.1", sock.getsockname()[1]


@pytest.fixture
def refusing() -> tuple[str, int]:
    """An address nothing listens on: UDP queries to it are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return "127.0.0.1", sock.getsockname()[1]


@pytest.fixture
def serve(table: NameTable) -> Iterator[Callable[..., DnsServer]]:
    """Starts a DnsServer for `table` on 127.0.0.1 and a free port; closes it after the test."""
    servers: list[DnsServer] = []

    def serve(**options: Any) -> DnsServer:
        server = DnsServer(table, "127.0.0.1", 0, **options)
        server.start()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.close()


def _ask(server: DnsServer, name: str, qtype: str = "A", *, tcp: bool = False) -> Any:
    query = DNSRecord.question(name, qtype)
    reply = DNSRecord.parse(query.send("127.0.0.1", server.port, tcp=tcp, timeout=2.0))
    assert reply.header.id == query.header.id
    return reply


def _addresses(reply: Any) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_cluster_names_are_answered_with_a_records(
    serve: Callable[..., DnsServer], tcp: bool
) -> None:
    server = serve(ttl=3)

    job = _ask(server, "web.corral", tcp=tcp)
    slot = _ask(server, "1.Web", tcp=tcp)
    any_type = _ask(server, "web", "ANY", tcp=tcp)

    assert job.header.rcode == RCODE.NOERROR
    assert sorted(_addresses(job)) == list(WEB.serving)
    assert {rr.ttl for rr in job.rr} == {3}
    assert str(slot.q.qname) == "1.Web."  # the client's spelling, for 0x20 checks
    assert _addresses(slot) == ["10.0.0.2"]
    assert sorted(_addresses(any_type)) == list(WEB.serving)


def test_other_types_for_cluster_names_get_no_records_and_do_not_rotate(
    serve: Callable[..., DnsServer],
) -> None:
    server = serve()

    first = _ask(server, "web")
    aaaa = _ask(server, "web", "AAAA")
    mx = _ask(server, "0.web.corral", "MX")
    second = _ask(server, "web")

    for reply in (aaaa, mx):
        assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])
    assert _addresses(second) == [*_addresses(first)[1:], _addresses(first)[0]]


def test_unknown_names_under_the_suffix_do_not_exist_and_empty_jobs_have_no_records(
    serve: Callable[..., DnsServer],
) -> None:
    server = serve()

    unknown = _ask(server, "db.corral")
    empty = _ask(server, "idle")

    assert (unknown.header.rcode, unknown.rr) == (RCODE.NXDOMAIN, [])
    assert (empty.header.rcode, empty.rr) == (RCODE.NOERROR, [])


def test_a_long_answer_is_truncated_over_udp_and_whole_over_tcp(
    table: NameTable, serve: Callable[..., DnsServer]
) -> None:
    addresses = tuple(f"10.0.2.{n}" for n in range(1, 61))
    table.apply({"big": Endpoints(serving=addresses, slots={})})
    server = serve()

    query = DNSRecord.question("big.corral")
    over_udp = query.send("127.0.0.1", server.port, timeout=2.0)
    udp = DNSRecord.parse(over_udp)
    tcp = _ask(server, "big.corral", tcp=True)

    assert len(over_udp) <= 512
    assert udp.header.tc == 1
    assert 20 < len(udp.rr) < len(addresses)
    assert set(_addresses(udp)) < set(addresses)
    assert tcp.header.tc == 0
    assert sorted(_addresses(tcp)) == sorted(addresses)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_other_names_are_forwarded_to_the_upstream(
    serve: Callable[..., DnsServer], upstream: _Upstream, tcp: bool
) -> None:
    server = serve(upstreams=[upstream.address])

    known = _ask(server, EXTERNAL, tcp=tcp)
    unknown = _ask(server, "9.web", tcp=tcp)  # a bare name not in the table

    assert _addresses(known) == [EXTERNAL_ADDRESS]
    assert unknown.header.rcode == RCODE.NXDOMAIN
    assert upstream.asked == ["tcp" if tcp else "udp"] * 2


def test_a_truncated_upstream_answer_is_asked_again_over_tcp(
    serve: Callable[..., DnsServer],
) -> None:
    upstream = _Upstream({EXTERNAL: EXTERNAL_ADDRESS}, truncate_udp=True)
    try:
        server = serve(upstreams=[upstream.address])
        reply = _ask(server, EXTERNAL)
    finally:
        upstream.close()

    assert (reply.header.tc, _addresses(reply)) == (0, [EXTERNAL_ADDRESS])
    assert upstream.asked == ["udp", "tcp"]


def test_an_upstream_that_refuses_is_skipped(
    serve: Callable[..., DnsServer], refusing: tuple[str, int], upstream: _Upstream
) -> None:
    server = serve(upstreams=[refusing, upstream.address])

    assert _addresses(_ask(server, EXTERNAL)) == [EXTERNAL_ADDRESS]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_servfail_when_no_upstream_answers(
    serve: Callable[..., DnsServer], silent: tuple[str, int], tcp: bool
) -> None:
    unanswered = serve(upstreams=[silent], forward_timeout=0.2)
    unconfigured = serve()

    for server in (unanswered, unconfigured):
        reply = _ask(server, EXTERNAL, tcp=tcp)
        assert (reply.header.rcode, str(reply.q.qname)) == (RCODE.SERVFAIL, f"{EXTERNAL}.")


def test_a_slow_forward_does_not_delay_cluster_names(
    serve: Callable[..., DnsServer], silent: tuple[str, int]
) -> None:
    server = serve(upstreams=[silent], forward_timeout=0.5)
    forwarded = DNSRecord.question(EXTERNAL)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2.0)
        client.sendto(forwarded.pack(), ("127.0.0.1", server.port))
        started = time.monotonic()
        assert _addresses(_ask(server, "0.web")) == ["10.0.0.1"]
        assert time.monotonic() - started < 0.4
        assert DNSRecord.parse(client.recv(4096)).header.rcode == RCODE.SERVFAIL


def test_malformed_datagrams_are_ignored_or_refused_and_the_server_goes_on(
    serve: Callable[..., DnsServer],
) -> None:
    server = serve()
    header_only = DNSBuffer()
    DNSHeader(id=0x1234, q=1).pack(header_only)  # says one question, has none
    two_questions = DNSRecord(DNSHeader(id=0x4321), questions=[DNSQuestion("web")] * 2)
    a_response = DNSRecord.question("web").reply()
    garbled_response = b"\x00\x01\x80" + b"\xff" * 40
    ignored = [b"", b"\x01", b"\xff" * 11, bytes(a_response.pack()), garbled_response]
    good = DNSRecord.question("web.corral")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2.0)
        for packet in [*ignored, bytes(header_only.data), two_questions.pack(), good.pack()]:
            client.sendto(packet, ("127.0.0.1", server.port))
        replies = [DNSRecord.parse(client.recv(4096)) for _ in range(3)]

    assert [(r.header.id, r.header.rcode) for r in replies[:2]] == [
        (0x1234, RCODE.FORMERR),
        (0x4321, RCODE.FORMERR),
    ]
    assert replies[2].header.id == good.header.id
    assert sorted(_addresses(replies[2])) == list(WEB.serving)


def test_idle_or_malformed_tcp_clients_do_not_block_others(
    serve: Callable[..., DnsServer],
) -> None:
    server = serve()

    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as idle,
        socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as garbage,
    ):
        idle.sendall(b"\x00")  # half a length, then nothing
        garbage.sendall(b"\x00\x05hello")
        assert garbage.recv(4096) == b""  # closed by the server
        assert _addresses(_ask(server, "2.web", tcp=True)) == ["10.0.0.3"]
        assert _addresses(_ask(server, "2.web")) == ["10.0.0.3"]


def test_connections_beyond_the_limit_are_closed_at_once(
    serve: Callable[..., DnsServer],
) -> None:
    server = serve()
    address = ("127.0.0.1", server.port)
    held = [socket.create_connection(address, timeout=2.0) for _ in range(MAX_TCP_CONNECTIONS)]
    try:
        with socket.create_connection(address, timeout=2.0) as extra:
            assert extra.recv(4096) == b""
    finally:
        for sock in held:
            sock.close()


def test_close_is_prompt_ends_connections_and_frees_the_port(table: NameTable) -> None:
    server = DnsServer(table, "127.0.0.1", 0)
    server.start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=2.0)

    started = time.monotonic()
    server.close()
    elapsed = time.monotonic() - started

    with idle:
        assert idle.recv(4096) == b""
    assert elapsed < 1.0
    again = DnsServer(table, "127.0.0.1", server.port)
    again.start()
    try:
        assert _addresses(_ask(again, "0.web")) == ["10.0.0.1"]
    finally:
        again.close()


def test_start_raises_when_the_port_is_taken(table: NameTable) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        server = DnsServer(table, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError):
            server.start()
