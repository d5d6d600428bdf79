"""The applier's writes on the wire (etl.apply.wire's hand-encoded requests), against the test's
own slapd, and the RFC 5805 transaction framing (off by default: slapd 2.5.13 crashes under
transactions, see bench/txn_stress.py).
"""

from __future__ import annotations

from typing import Any

import ldap3
import pytest

from etl.apply import wire as ldapwire
from etl.apply.stage import ldap_target_from_settings
from etl.apply.writer import DirectoryWriter, LdapTarget, txn_end_value
from etl.config import Settings
from etl.devtools.slapd import LdapServer
from etl.errors import ConfigError
from etl.plan.diff import Change
from tests.ldap_fixture import admin_connection

pytestmark = pytest.mark.ldap


def _target(server: LdapServer, transactions: str, size: int = 25) -> LdapTarget:
    return LdapTarget(url=server.url, bind_dn=server.bind_dn, password=server.password,
                      base=server.base, transactions=transactions, txn_size=size)


def _changes(server: LdapServer, n: int) -> list[Change]:
    """n parent OUs under ou=people, each with one child: two waves, parents first."""
    out = []
    for i in range(n):
        parent = f"ou=t{i:03d},ou=people,{server.base}"
        out.append(Change(op="add", dn=parent, kind="ou", uai=None, category="create",
                          attrs={"objectClass": ["organizationalUnit"], "ou": [f"t{i:03d}"],
                                 "description": [f"parent {i}"]}))
        out.append(Change(op="add", dn=f"ou=c,{parent}", kind="ou", uai=None,
                          category="create",
                          attrs={"objectClass": ["organizationalUnit"], "ou": ["c"]}))
    return out


def _descriptions(server: LdapServer) -> dict[str, list[str]]:
    c = admin_connection(server)
    c.search(f"ou=people,{server.base}", "(ou=*)", ldap3.SUBTREE, attributes=["description"])
    out = {e.entry_dn: [str(v) for v in e.description.values] for e in c.entries}
    c.unbind()
    return out


def test_txn_end_value_is_ber() -> None:
    assert txn_end_value(b"") == b"\x30\x02\x04\x00"
    assert txn_end_value(b"ab", commit=False) == b"\x30\x07\x01\x01\x00\x04\x02ab"
    long_id = b"x" * 200  # long form lengths: 203 = 1 + 2 + 200
    v = txn_end_value(long_id)
    assert v[:6] == b"\x30\x81\xcb\x04\x81\xc8" and v[6:] == long_id


def test_transactions_are_off_by_default_and_writes_go_one_by_one(server: LdapServer) -> None:
    """Debian 12's slapd 2.5.13 segfaults under RFC 5805 transactions (bench/txn_stress.py):
    the default writes one change per request, hand-encoded, several connections at once."""
    target = LdapTarget(url=server.url, bind_dn=server.bind_dn, password=server.password,
                        base=server.base)
    assert target.transactions == "off"
    writer = DirectoryWriter(target, workers=3)
    assert not writer.supports_transactions()
    changes = _changes(server, 60)
    done: list[str] = []
    res = writer.apply(changes, on_applied=lambda ch: done.append(ch.dn))
    assert (res.applied, res.failed, res.transactions, res.reconciled) == (120, 0, 0, 0)
    assert sorted(done) == sorted(ch.dn for ch in changes)
    found = _descriptions(server)
    assert len(found) == 121  # ou=people itself + 120
    assert found[f"ou=t007,ou=people,{server.base}"] == ["parent 7"]


def test_transactions_are_settings_read_from_the_environment() -> None:
    """ENTSYNC_LDAP_TRANSACTIONS and ENTSYNC_LDAP_TXN_SIZE reach the writer through Settings
    (off and 500 when unset, a size below 1 taken for 1)."""
    env = {"ENTSYNC_LDAP_URL": "ldap://127.0.0.1:1", "ENTSYNC_LDAP_BIND_DN": "cn=x",
           "ENTSYNC_LDAP_PASSWORD": "x"}
    target = ldap_target_from_settings(Settings.from_env(env))
    assert (target.transactions, target.txn_size) == ("off", 500)
    st = Settings.from_env({**env, "ENTSYNC_LDAP_TRANSACTIONS": " Auto ",
                            "ENTSYNC_LDAP_TXN_SIZE": "50"})
    target = ldap_target_from_settings(st)
    assert (target.transactions, target.txn_size) == ("auto", 50)
    assert Settings.from_env({**env, "ENTSYNC_LDAP_TXN_SIZE": "0"}).ldap.txn_size == 1
    with pytest.raises(ConfigError, match="ENTSYNC_LDAP_TXN_SIZE"):
        Settings.from_env({**env, "ENTSYNC_LDAP_TXN_SIZE": "many"})


def test_the_server_announces_transactions(server: LdapServer) -> None:
    assert DirectoryWriter(_target(server, "auto")).supports_transactions()


def test_an_entry_already_there_is_reconciled(server: LdapServer) -> None:
    """An entry the state DB does not know about (a crash after the write, before the
    journal): the add finds it, the entry is read back and corrected."""
    c = admin_connection(server)
    stale = f"ou=t004,ou=people,{server.base}"
    assert c.add(stale, ["organizationalUnit"], {"ou": "t004", "description": "stale"})
    c.unbind()
    res = DirectoryWriter(_target(server, "off"), workers=2).apply(_changes(server, 20))
    assert (res.applied, res.failed, res.reconciled) == (40, 0, 1)
    found = _descriptions(server)
    assert found[stale] == ["parent 4"]
    assert len(found) == 41


def test_modify_and_delete_on_the_wire(server: LdapServer) -> None:
    base = f"ou=people,{server.base}"
    writer = DirectoryWriter(_target(server, "off"), workers=2)
    assert writer.apply(_changes(server, 3)).applied == 6
    mods = [Change(op="modify", dn=f"ou=t000,{base}", kind="ou", uai=None, category="update",
                   mods={"description": {"replace": ["é" * 200]}}),
            Change(op="modify", dn=f"ou=t001,{base}", kind="ou", uai=None, category="update",
                   mods={"description": {"delete": []}, "seeAlso": {"add": [base]}}),
            Change(op="delete", dn=f"ou=c,ou=t002,{base}", kind="ou", uai=None,
                   category="delete"),
            # gone already: a delete is idempotent; a modify of a missing value reconciles
            Change(op="delete", dn=f"ou=nobody,{base}", kind="ou", uai=None, category="delete"),
            Change(op="modify", dn=f"ou=t002,{base}", kind="ou", uai=None, category="update",
                   mods={"description": {"delete": ["no such value"]}},
                   after={"objectClass": ["organizationalUnit"], "ou": ["t002"]})]
    res = DirectoryWriter(_target(server, "off"), workers=2).apply(mods)
    assert (res.applied, res.failed, res.reconciled) == (5, 0, 1)
    found = _descriptions(server)
    assert found[f"ou=t000,{base}"] == ["é" * 200]
    assert found[f"ou=t001,{base}"] == [] and found[f"ou=t002,{base}"] == []
    assert f"ou=c,ou=t002,{base}" not in found and f"ou=c,ou=t001,{base}" in found


def test_one_refused_change_fails_alone(server: LdapServer) -> None:
    changes = _changes(server, 8)
    bad = changes[6]  # a parent: its child fails too (no parent), nothing else
    bad.attrs = {**bad.attrs, "noSuchAttribute": ["x"]}
    failed: list[tuple[str, str]] = []
    res = DirectoryWriter(_target(server, "off"), workers=2).apply(
        changes, on_failed=lambda ch, r: failed.append((ch.dn, r["description"])))
    assert res.failed == 2 and res.applied == 14
    assert sorted(failed) == sorted([(bad.dn, "undefinedAttributeType"),
                                     (f"ou=c,{bad.dn}", "noSuchObject")])
    assert len(_descriptions(server)) == 15


# -- the hand-encoded requests, decoded by ldap3's own ASN.1 definitions (pyasn1) -----------
def _decode(data: bytes) -> Any:
    from ldap3.protocol.rfc4511 import LDAPMessage
    from pyasn1.codec.ber import decoder

    msg, rest = decoder.decode(data, asn1Spec=LDAPMessage())
    assert rest == b""
    return msg


def test_add_request_decodes_as_ldap3_reads_it() -> None:
    from ldap3.operation.add import add_request_to_dict

    long_value = "é" * 300  # multi-byte, long-form lengths
    ctl = ldapwire.control("1.3.6.1.1.21.2", True, b"")
    msg = _decode(ldapwire.message(70000, ldapwire.add_request(
        "uid=a,ou=people,dc=x", {"objectClass": ["top", "entPerson"], "cn": [long_value]}),
        [ctl]))
    assert int(msg["messageID"]) == 70000
    op = msg["protocolOp"].getComponent()
    d = add_request_to_dict(op)
    assert d["entry"] == "uid=a,ou=people,dc=x"
    assert d["attributes"] == {"objectClass": ["top", "entPerson"], "cn": [long_value]}
    (c,) = msg["controls"]
    assert str(c["controlType"]) == "1.3.6.1.1.21.2" and bool(c["criticality"])
    assert bytes(c["controlValue"]) == b""


def test_modify_and_delete_requests_decode() -> None:
    msg = _decode(ldapwire.message(5, ldapwire.modify_request(
        "cn=6A,ou=groups,dc=x",
        {"member": {"add": ["uid=b"], "delete": ["uid=c", "uid=d"]}, "description": {
            "replace": ["x"]}, "mail": {"delete": []}})))
    op = msg["protocolOp"].getComponent()
    assert str(op["object"]) == "cn=6A,ou=groups,dc=x"
    got = [(int(ch["operation"]), str(ch["modification"]["type"]),
            [str(v) for v in ch["modification"]["vals"]]) for ch in op["changes"]]
    assert got == [(1, "member", ["uid=c", "uid=d"]), (0, "member", ["uid=b"]),
                   (2, "description", ["x"]), (1, "mail", [])]
    assert msg["controls"] is None or not msg["controls"].hasValue()
    msg = _decode(ldapwire.message(2**31 - 2, ldapwire.delete_request("uid=é,dc=x")))
    assert str(msg["protocolOp"].getComponent()) == "uid=é,dc=x"
    assert int(msg["messageID"]) == 2**31 - 2


class _Chunks:
    """A socket whose answers arrive in arbitrary pieces."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    def recv(self, _n: int) -> bytes:
        out, self.data = self.data[:self.size], self.data[self.size:]
        return out


def _response(mid: int, tag: int, code: int, diag: str = "") -> bytes:
    body = b"\x0a\x01" + bytes([code]) + b"\x04\x00" + b"\x04" + bytes([len(diag)]) + diag.encode()
    op = bytes([tag, len(body)]) + body
    inner = b"\x02\x01" + bytes([mid]) + op
    return bytes([0x30, len(inner)]) + inner


def test_results_are_read_across_partial_reads() -> None:
    data = _response(1, 0x69, 0) + _response(2, 0x67, 68, "already") + _response(3, 0x6B, 32)
    for size in (1, 3, 7, 1000):
        got = ldapwire.read_results(_Chunks(data, size), 3)
        assert [(r.message_id, r.op, r.code) for r in got] == [
            (1, "add", 0), (2, "modify", 68), (3, "delete", 32)]
        assert got[1].message == "already"
    with pytest.raises(ldapwire.WireError, match="closed"):
        ldapwire.read_results(_Chunks(data[:-2], 4), 3)
    notice = bytes([0x30, 12, 0x02, 0x01, 0x00, 0x78, 7]) + b"\x0a\x01\x34\x04\x00\x04\x00"
    with pytest.raises(ldapwire.WireError, match="closed the connection"):
        ldapwire.read_results(_Chunks(notice, 100), 1)


class _DroppingWriter(DirectoryWriter):
    """Its connections are cut (the socket shut down under the pipeline) once, after
    ``after`` requests: what a slapd restart or a network cut does mid-window."""

    def __init__(self, target: LdapTarget, after: int) -> None:
        super().__init__(target, workers=2, window=8)
        self.after = after
        self.sent = 0
        self.cuts = 0

    def _request(self, ch: Change) -> bytes:  # type: ignore[override]
        import socket

        self.sent += 1
        if self.sent == self.after:
            for c in list(self._conns):
                c.socket.shutdown(socket.SHUT_RDWR)
                self.cuts += 1
        return DirectoryWriter._request(ch)


def test_a_connection_cut_mid_window_loses_nothing(server: LdapServer) -> None:
    """Requests in flight when the connection goes: each is written again (reconciled when
    the server had done it already), and the rest of the thread's share goes one by one."""
    changes = _changes(server, 60)
    writer = _DroppingWriter(_target(server, "off"), after=30)
    done: list[str] = []
    res = writer.apply(changes, on_applied=lambda ch: done.append(ch.dn))
    assert writer.cuts >= 1
    assert (res.applied, res.failed) == (120, 0)
    assert sorted(done) == sorted(ch.dn for ch in changes)  # each reported once
    found = _descriptions(server)
    assert len(found) == 121 and found[f"ou=t059,ou=people,{server.base}"] == ["parent 59"]


def test_many_requests_in_flight_per_connection(server: LdapServer) -> None:
    """One connection, a window of 32: answers come out of order and each finds its change."""
    changes = _changes(server, 150)
    for i, ch in enumerate(changes):
        if ch.kind == "ou" and i % 2 == 0:
            ch.attrs = {**ch.attrs, "description": [f"parent {i // 2}", "x" * (1 + i % 7 * 300)]}
    writer = DirectoryWriter(_target(server, "off"), workers=1, window=32)
    res = writer.apply(changes)
    assert (res.applied, res.failed, res.reconciled) == (300, 0, 0)
    found = _descriptions(server)
    assert len(found) == 301
    assert found[f"ou=t149,ou=people,{server.base}"] == sorted(
        ["parent 149", "x" * (1 + 298 % 7 * 300)])
