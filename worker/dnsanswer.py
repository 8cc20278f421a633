"""How the worker's DNS server answers one query (`worker.dns`): bytes in, a decision out.

No sockets and no threads: a cluster name is answered from the `NameTable`, any other
query becomes a `Forward` for the server to send upstream, and a packet that does not
parse is `Malformed` (FORMERR if its header parses, else nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSBuffer, DNSError, DNSHeader, DNSRecord

from worker.names import NameTable

# The largest UDP message a client takes without EDNS (RFC 1035 4.2.1).
UDP_LIMIT = 512
_OPCODE_QUERY = 0
_ADDRESS_TYPES = frozenset({QTYPE.A, QTYPE.ANY})


@dataclass(frozen=True)
class Forward:
    """A query for a name that is not a cluster name: to be asked upstream."""

    query: Any  # the parsed DNSRecord
    packet: bytes  # as received

    @property
    def udp_limit(self) -> int:
        """How large an answer the client takes over UDP: 512 bytes, or what its EDNS offers."""
        offered = [int(rr.rclass) for rr in self.query.ar if rr.rtype == QTYPE.OPT]
        return max([UDP_LIMIT, *offered])


@dataclass(frozen=True)
class Malformed:
    """A packet that is not a query this server can read; `reply` is FORMERR, or None."""

    why: str
    reply: bytes | None


def answer_query(
    table: NameTable, packet: bytes, *, ttl: int, limit: int
) -> bytes | Forward | Malformed:
    """The reply to `packet` (at most `limit` bytes), or what to do with it instead."""
    try:
        query = DNSRecord.parse(packet)
    except DNSError as error:
        return Malformed(str(error), format_error(packet))
    if query.header.qr:
        # Answering a response could start an endless exchange with another server.
        return Malformed("a response, not a query", None)
    if query.header.opcode != _OPCODE_QUERY:
        return refusal(query, RCODE.NOTIMP)
    if len(query.questions) != 1:
        return Malformed(f"{len(query.questions)} questions", _bare(query.header, RCODE.FORMERR))
    question = query.q
    asks_addresses = question.qtype in _ADDRESS_TYPES
    resolved = table.resolve(str(question.qname), rotate=asks_addresses)
    if resolved is None:
        return Forward(query, packet)
    reply = query.reply()
    if not resolved.exists:
        reply.header.rcode = RCODE.NXDOMAIN
    elif asks_addresses:
        for address in resolved.addresses:
            reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=ttl))
    return _packed(reply, limit)


def _packed(reply: Any, limit: int) -> bytes:
    """`reply` in at most `limit` bytes: if need be, answers are left out and TC is set."""
    packet = bytes(reply.pack())
    if len(packet) <= limit:
        return packet
    # Only a long list of A records for the one name can be too long; all are the same size.
    answers = reply.rr
    reply.rr = []
    bare = len(reply.pack())
    each = (len(packet) - bare) // len(answers)
    reply.rr = answers[: (limit - bare) // each]
    reply.header.tc = 1
    return bytes(reply.pack())


def refusal(query: Any, rcode: int) -> bytes:
    reply = query.reply()
    reply.header.rcode = rcode
    return bytes(reply.pack())


def _bare(header: Any, rcode: int) -> bytes:
    """A reply with `rcode`, the query's id and flags, and no question."""
    return bytes(DNSRecord(DNSHeader(id=header.id, bitmap=header.bitmap, qr=1, rcode=rcode)).pack())


def format_error(packet: bytes) -> bytes | None:
    """FORMERR for a query whose header parses; None for anything else."""
    header = parse_header(packet)
    if header is None or header.qr:
        return None
    return _bare(header, RCODE.FORMERR)


def parse_header(packet: bytes) -> Any:
    """The parsed header of `packet`, or None if it is shorter than one."""
    try:
        return DNSHeader.parse(DNSBuffer(packet))
    except DNSError:
        return None
