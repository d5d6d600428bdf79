"""LDAP write requests encoded by hand, for the applier's transactions.

Why: profiling the initial load showed the sync's own CPU, not slapd, bounding the writes once
they go in RFC 5805 transactions: ldap3 builds every request as a pyasn1 object tree, and
waits for each answer before sending the next. Inside a transaction the server only queues the
operations and answers each at once, so the applier encodes a whole batch here (plain BER,
RFC 4511 section 4.6-4.8 and 4.1.11; figures in docs/performance.md),
writes it on the ldap3 connection's socket in one go and reads the batch's answers back. Bind,
StartTLS, Start/End Transaction and every write outside a transaction stay ldap3's.

Only what the applier writes is covered: AddRequest, ModifyRequest and DelRequest with
controls, and the LDAPResult of their responses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: modify operations (RFC 4511 4.6)
MOD_ADD, MOD_DELETE, MOD_REPLACE = 0, 1, 2
_MOD_ORDER = (("replace", MOD_REPLACE), ("delete", MOD_DELETE), ("add", MOD_ADD))

#: response protocolOp tags: AddResponse [APPLICATION 9], ModifyResponse [7], DelResponse [11]
RESPONSE_TAGS = {0x69: "add", 0x67: "modify", 0x6B: "delete"}
_EXTENDED_RESPONSE = 0x78  # Notice of Disconnection arrives as one (messageID 0)


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _len(len(body)) + body


def _octets(v: str | bytes) -> bytes:
    b = v.encode("utf-8") if isinstance(v, str) else v
    return b"\x04" + _len(len(b)) + b


def _integer(tag: int, n: int) -> bytes:
    return _tlv(tag, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def _attribute(name: str, values: Iterable[str | bytes]) -> bytes:
    return _tlv(0x30, _octets(name) + _tlv(0x31, b"".join(_octets(v) for v in values)))


def add_request(dn: str, attrs: Mapping[str, Sequence[str | bytes]]) -> bytes:
    """AddRequest ::= [APPLICATION 8] SEQUENCE { entry LDAPDN, attributes AttributeList }."""
    attributes = b"".join(_attribute(a, vs) for a, vs in attrs.items())
    return _tlv(0x68, _octets(dn) + _tlv(0x30, attributes))


def modify_request(dn: str, mods: Mapping[str, Mapping[str, Sequence[str | bytes]]]) -> bytes:
    """ModifyRequest ::= [APPLICATION 6] SEQUENCE { object LDAPDN, changes SEQUENCE OF change
    SEQUENCE { operation ENUMERATED, modification PartialAttribute } }; per attribute in the
    applier's order: replace, delete, add (as ``etl.apply.writer`` hands them to ldap3)."""
    changes = []
    for attr, m in mods.items():
        for key, op in _MOD_ORDER:
            if key in m:
                changes.append(_tlv(0x30, _integer(0x0A, op) + _attribute(attr, m[key])))
    return _tlv(0x66, _octets(dn) + _tlv(0x30, b"".join(changes)))


def delete_request(dn: str) -> bytes:
    """DelRequest ::= [APPLICATION 10] LDAPDN (primitive)."""
    b = dn.encode("utf-8")
    return b"\x4a" + _len(len(b)) + b


def control(oid: str, critical: bool, value: bytes | None) -> bytes:
    body = _octets(oid) + (b"\x01\x01\xff" if critical else b"")
    if value is not None:
        body += _octets(value)
    return _tlv(0x30, body)


def message(message_id: int, op: bytes, controls: Sequence[bytes] = ()) -> bytes:
    """LDAPMessage ::= SEQUENCE { messageID, protocolOp, controls [0] Controls OPTIONAL }."""
    body = _integer(0x02, message_id) + op
    if controls:
        body += _tlv(0xA0, b"".join(controls))
    return _tlv(0x30, body)


@dataclass(frozen=True)
class Result:
    message_id: int
    op: str  # add, modify, delete, or "notice" (the server is closing the connection)
    code: int
    matched_dn: str
    message: str


class WireError(OSError):
    """The server's answer cannot be read as LDAP (or the connection closed mid-batch)."""


def _header(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int, int]:
    """(tag, length, position of the value) of the TLV at ``pos``; IndexError if incomplete."""
    tag = buf[pos]
    first = buf[pos + 1]
    if first < 0x80:
        return tag, first, pos + 2
    n = first & 0x7F
    if n == 0 or n > 4:
        raise WireError("unsupported BER length")
    if pos + 2 + n > len(buf):
        raise IndexError
    return tag, int.from_bytes(bytes(buf[pos + 2:pos + 2 + n]), "big"), pos + 2 + n


def parse_result(msg: bytes) -> Result:
    """One response LDAPMessage (a complete SEQUENCE) into its LDAPResult."""
    tag, _length, p = _header(msg, 0)
    if tag != 0x30:
        raise WireError(f"not an LDAPMessage (tag {tag:#x})")
    t, n, q = _header(msg, p)
    if t != 0x02:
        raise WireError("LDAPMessage without messageID")
    mid = int.from_bytes(msg[q:q + n], "big", signed=True)
    p = q + n
    op_tag, n, p = _header(msg, p)
    if op_tag in RESPONSE_TAGS:
        op = RESPONSE_TAGS[op_tag]
    elif op_tag == _EXTENDED_RESPONSE:
        op = "notice"
    else:
        raise WireError(f"unexpected response (tag {op_tag:#x})")
    fields: list[bytes] = []
    for _ in range(3):  # resultCode, matchedDN, diagnosticMessage
        _t, n, q = _header(msg, p)
        fields.append(bytes(msg[q:q + n]))
        p = q + n
    return Result(mid, op, int.from_bytes(fields[0], "big"),
                  fields[1].decode("utf-8", "replace"), fields[2].decode("utf-8", "replace"))


class ResultReader:
    """Response messages from one connection's socket (ldap3's, plain or TLS), read as they
    arrive: what the applier needs to keep many requests in flight on a connection and take
    each answer as it comes (slapd may answer them out of order)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buf = bytearray()

    def pending(self) -> bool:
        """Bytes received and not yet handed out as a result."""
        return bool(self.buf)

    def _complete(self) -> list[Result]:
        out: list[Result] = []
        pos = 0
        buf = self.buf
        while pos < len(buf):
            try:
                _tag, length, start = _header(buf, pos)
            except IndexError:
                break
            end = start + length
            if end > len(buf):
                break
            res = parse_result(bytes(buf[pos:end]))
            if res.op == "notice":
                raise WireError(f"server closed the connection: {res.message}")
            out.append(res)
            pos = end
        if pos:
            del buf[:pos]
        return out

    def read(self) -> list[Result]:
        """At least one result: every complete one received so far, waiting for the socket
        only when none is complete."""
        while True:
            out = self._complete()
            if out:
                return out
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WireError("connection closed by the server")
            self.buf += chunk


def read_results(sock: Any, count: int) -> list[Result]:
    """Read ``count`` response messages from the socket (ldap3's, plain or TLS)."""
    reader = ResultReader(sock)
    out: list[Result] = []
    while len(out) < count:
        out += reader.read()
    if len(out) > count or reader.pending():
        raise WireError("unexpected data after the batch's responses")
    return out
