"""The applier's RFC 5805 transactions, against the test's own slapd (which announces them).

A batch is one transaction; a batch the server refuses to commit is replayed change by
change, so an entry the state DB did not know about or one bad change costs speed, never
correctness.
"""

from __future__ import annotations

import ldap3
import pytest

from etl.apply import DirectoryWriter, LdapTarget, txn_end_value
from etl.ldapserver import LdapServer
from etl.plan import Change
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


def test_the_server_announces_transactions_and_batches_use_them(server: LdapServer) -> None:
    changes = _changes(server, 60)
    writer = DirectoryWriter(_target(server, "auto"), workers=2)
    assert writer.supports_transactions()
    done: list[str] = []
    res = writer.apply(changes, on_applied=lambda ch: done.append(ch.dn))
    assert (res.applied, res.failed, res.txn_fallbacks) == (120, 0, 0)
    # two waves of 60 changes over 2 connections, at most 25 per transaction: 3 + 3
    assert res.transactions == 6
    assert sorted(done) == sorted(ch.dn for ch in changes)
    found = _descriptions(server)
    assert len(found) == 121  # ou=people itself + 120
    assert found[f"ou=t007,ou=people,{server.base}"] == ["parent 7"]


def test_transactions_off_writes_one_by_one(server: LdapServer) -> None:
    res = DirectoryWriter(_target(server, "off"), workers=2).apply(_changes(server, 10))
    assert (res.applied, res.failed, res.transactions) == (20, 0, 0)


def test_a_batch_that_does_not_commit_is_replayed_and_reconciled(server: LdapServer) -> None:
    """An entry already there (a crash after the commit, before the journal) makes the commit
    fail: nothing of that batch was written, the replay adds the others and corrects it."""
    c = admin_connection(server)
    stale = f"ou=t004,ou=people,{server.base}"
    assert c.add(stale, ["organizationalUnit"], {"ou": "t004", "description": "stale"})
    c.unbind()
    res = DirectoryWriter(_target(server, "on", size=10), workers=1).apply(
        _changes(server, 20))
    assert (res.applied, res.failed) == (40, 0)
    assert res.txn_fallbacks == 1 and res.reconciled == 1
    assert res.transactions == 3  # parents 10..19, children 0..9 and 10..19
    found = _descriptions(server)
    assert found[stale] == ["parent 4"]
    assert len(found) == 41


def test_one_refused_change_fails_alone(server: LdapServer) -> None:
    changes = _changes(server, 8)
    bad = changes[6]  # a parent: its child fails too (no parent), nothing else
    bad.attrs = {**bad.attrs, "noSuchAttribute": ["x"]}
    failed: list[str] = []
    res = DirectoryWriter(_target(server, "on", size=50), workers=1).apply(
        changes, on_failed=lambda ch, _r: failed.append(ch.dn))
    assert res.failed == 2 and res.applied == 14
    assert sorted(failed) == sorted([bad.dn, f"ou=c,{bad.dn}"])
    assert res.txn_fallbacks == 2  # the parents' batch, then the children's
    assert len(_descriptions(server)) == 15
