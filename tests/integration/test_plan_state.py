"""Planning against the state DB (``reconcile_mod._plan_against_state``): hash first, stored
attributes only where the hash differs; the same plan as against every stored entry loaded
whole. And a held plan's bytes: hashed as copied aside, applied from the copy."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from etl.approve import decide as approve_mod
from etl.config import Settings
from etl.plan import files as plan_files
from etl.plan import reconcile as reconcile_mod
from etl.plan.desired import DesiredEntry, content_hash
from etl.plan.diff import Change, plan_changes, read_plan
from etl.plan.stored import StoredView
from etl.store.db import get_engine, session_factory
from etl.store.models import Entry

BASE = "dc=ent,dc=x"


def _person(i: int, cn: str) -> DesiredEntry:
    return DesiredEntry(f"uid=u{i:04d},ou=people,{BASE}", "person", "0671234X",
                        {"objectClass": ["top", "ENTPerson"], "uid": [f"u{i:04d}"],
                         "cn": [cn]}, uid=f"u{i:04d}")


def test_hash_first_planning_gives_the_plan_of_the_whole_state(state_url: str) -> None:
    Session = session_factory(state_url)
    desired = {e.dn: e for e in (_person(i, f"P{i}") for i in range(1200))}
    stored: dict[str, dict[str, list[str]]] = {}
    for i, (dn, e) in enumerate(desired.items()):
        if i % 10 == 0:
            continue  # never written: an add
        attrs = {k: list(v) for k, v in e.attrs.items()}
        if i % 7 == 0:
            attrs["cn"] = ["before"]  # changed: a modify
        stored[dn] = attrs
    with Session() as s, s.begin():
        s.add_all(Entry(dn=dn, academy="ac-x", uai="0671234X", kind="person", uid=None,
                        content_hash=content_hash(a), attrs=a) for dn, a in stored.items())
    selects: list[str] = []

    def seen(_conn: object, _cur: object, statement: str, *_a: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    engine = get_engine(state_url)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with Session() as s:
            lazy = reconcile_mod._plan_against_state(StoredView(s, "ac-x"), desired)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    with Session() as s:
        whole = {dn: (h, a) for dn, h, a in s.execute(
            select(Entry.dn, Entry.content_hash, Entry.attrs))}
    assert lazy == plan_changes(desired, whole)
    assert {c.op for c in lazy} == {"add", "modify"}
    assert sum(c.op == "modify" for c in lazy) == sum(1 for a in stored.values()
                                                      if a["cn"] == ["before"])
    # attributes were read only for the entries whose hash differs, a batch at a time
    attr_reads = [q for q in selects if "attrs" in q.split("FROM")[0]]
    assert len(attr_reads) == 3  # 1200 DNs in batches of 500, each with a changed one
    assert len(selects) == 6


def test_a_held_plan_is_applied_from_the_very_bytes_that_were_hashed(tmp_path: Path) -> None:
    st = Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path / "w"),
                            "ENTSYNC_LANDING": str(tmp_path / "l")})
    attrs = {"cn": ["A"]}
    changes = [Change("add", f"uid=u{i},ou=people,{BASE}", "person", "X", "create",
                      attrs=attrs, after=attrs, uid=f"u{i}") for i in range(3)]
    digest = plan_files._write_plan(st, "r/held/X.json", {"run_id": "r", "uai": "X"}, changes)
    spool = io.BytesIO()
    assert approve_mod._spool(st, "r/held/X.json", spool) == digest
    assert spool.tell() == 0
    header, back = read_plan(spool)
    assert header["uai"] == "X" and list(back) == changes
    # a missing plan hashes as no bytes (never as the plan shown)
    assert approve_mod._spool(st, "r/held/Y.json", io.BytesIO()) == hashlib.sha256().hexdigest()


def test_school_accounts_counts_what_is_not_exactly_disabled(state_url: str) -> None:
    """The guards' denominator, counted in SQL from the stored JSON: the same answer as
    reading ``attrs["entSyncStatus"]`` in Python, on SQLite and on PostgreSQL."""


    statuses: list[list[str] | None] = [["ACTIVE"], ["DISABLED"], None, [], ["DISABLED", "X"],
                                        ["ACTIVE"], ["DISABLED"], ["OTHER"]]
    rows = []
    for i, st in enumerate(statuses * 3):
        uai = ("0671234X", "0681234Y", "0691234Z")[i % 3]
        attrs: dict[str, list[str]] = {"uid": [f"u{i}"]}
        if st is not None:
            attrs["entSyncStatus"] = st
        rows.append((f"uid=u{i},ou=people,{BASE}", uai, "person", attrs))
    rows.append((f"cn=c1,ou=groups,{BASE}", "0671234X", "class", {"cn": ["c1"]}))
    rows.append((f"uid=other,ou=people,{BASE}", "0671234X", "person", {"uid": ["other"]}))
    Session = session_factory(state_url)
    with Session() as s, s.begin():
        for dn, uai, kind, attrs in rows:
            s.add(Entry(dn=dn, academy="ac-x" if "other" not in dn else "ac-y", uai=uai,
                        kind=kind, uid=None, content_hash=content_hash(attrs), attrs=attrs))
    expected: dict[str, int] = {}
    for dn, uai, kind, attrs in rows:
        if kind == "person" and "other" not in dn and attrs.get("entSyncStatus") != ["DISABLED"]:
            expected[uai] = expected.get(uai, 0) + 1
    with Session() as s:
        view = StoredView(s, "ac-x")
        got = view.school_accounts(["0671234X", "0681234Y", "0691234Z", "0000000A"])
        assert got == expected
        assert sum(got.values()) == 18  # 24 accounts, 6 exactly disabled
        assert view.school_accounts(["0671234X"]) == {"0671234X": expected["0671234X"]}


def store_and_read_back(Session: Any, attrs: dict[str, Any]) -> dict[str, Any]:
    """An entry with ``attrs`` stored in the state DB, then its attributes read back."""
    with Session() as s, s.begin():
        s.add(Entry(dn="uid=a", academy="ac-x", uai=None, kind="person", uid="a",
                    content_hash="h", attrs=attrs))
    with Session() as s:
        row = s.get(Entry, "uid=a")
        assert row is not None
        return row.attrs


def test_json_columns_round_trip_any_script_and_older_text(state_url: str) -> None:
    """The JSON columns are written by msgspec (UTF-8) on a UTF-8 database and read back as
    written, whatever the script; text an older ``json.dumps`` wrote (``\\u`` escapes, NaN)
    still reads."""
    import json

    from sqlalchemy import text

    from etl.store.db import json_dumps_utf8, json_loads

    attrs = {"cn": ["Łukasz Nguyễn Thị", "Zoë O'Brien"], "sn": ["日本", "\\\"x\""],
             "empty": [], "n": [1, 2.5, None, True]}
    assert json_loads(json_dumps_utf8(attrs)) == attrs == json_loads(json.dumps(attrs))
    assert not json_dumps_utf8(attrs).isascii()
    assert json.loads(json_dumps_utf8(attrs)) == attrs
    import numpy as np

    assert json_loads(json_dumps_utf8({"share": np.float64(0.25), "n": np.int64(3)})) == {
        "share": 0.25, "n": 3}
    nan = json_loads(json.dumps({"x": float("nan")}))["x"]
    assert nan != nan
    Session = session_factory(state_url)
    with Session() as s:
        assert store_and_read_back(Session, attrs) == attrs
        raw = s.execute(text("SELECT CAST(attrs AS TEXT) FROM entries")).scalar()
        assert "Łukasz" in str(raw)  # UTF-8 as such (SQLite, PostgreSQL in UTF8)
        s.execute(text("UPDATE entries SET attrs = :t WHERE dn = 'uid=a'"),
                  {"t": json.dumps(attrs)})  # as an older version wrote it
        s.commit()
    with Session() as s:
        assert s.get(Entry, "uid=a").attrs == attrs  # type: ignore[union-attr]


@pytest.mark.parametrize("indexed", [True, False])
def test_the_state_db_is_read_by_key_range_as_a_scan_would_read_it(
        state_url: str, indexed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed night's groups read only their own part of the state DB (a source key
    range per school and source, logins by base, match keys by kind), on SQLite and on
    PostgreSQL: the same rows as reading the academy's whole table and filtering. Where a
    range cannot use the index (PostgreSQL in another collation than C), one scan instead:
    the same rows."""
    from etl.plan import stored as stored_mod
    from etl.plan.scope import SCOPED_SOURCES
    from etl.store.models import Account, Identity, Login, MatchKey

    keys = {
        "AC-X$SIECLE$0671234X$1": "a1", "AC-X$SIECLE$0671234X$2": "a2",
        "AC-X$SIECLE-RESP$0671234X$9": "a3", "AC-X$STS$0671234X$7": "a4",
        "AC-X$SIECLE$0671234Y$1": "a5",  # another school
        "AC-X$INE$0671234X1": "a1",  # an INE names no school
        "AC-XY$SIECLE$0671234X$1": "a6",  # an academy whose prefix starts the same
        "AC-X$SIECLE$0671234X": "a7",  # no id: not a key of the school's range
    }
    logins = ["lea.martin", "lea.martin2", "lea.martin22", "lea.martinez", "lea.martin-roux",
              "lea.marti", "lea.martin.b", "zoe.roux"]
    Session = session_factory(state_url)
    with Session() as s, s.begin():
        for i, uid in enumerate(sorted(set(keys.values()))):
            s.add(Account(uid=uid, academy="ac-x", profile="ELV", login=f"l{i}"))
        s.flush()
        s.add_all(Identity(jointure=j, uid=u) for j, u in keys.items())
        s.add_all(Login(login=x, uid="a1") for x in logins)
        s.add_all(MatchKey(academy=a, kind=k, key=key, uid=u, strong=[u])
                  for a, k, key, u in [("ac-x", "staff", "k1", "a4"),
                                       ("ac-x", "guardian", "k1", "a3"),
                                       ("ac-x", "guardian", "k2", "a3"),
                                       ("ac-y", "staff", "k1", "a6")])
    with Session() as s:
        assert stored_mod.ranges_indexed(s)  # SQLite, and the tests' C.UTF-8 PostgreSQL
        if not indexed:
            monkeypatch.setattr(stored_mod, "ranges_indexed", lambda session: False)
        view = StoredView(s, "ac-x")
        got = sorted(view.school_identities("AC-X", SCOPED_SOURCES, ["0671234X"]))
        assert got == sorted((j, u) for j, u in view.academy_identities("AC-X")
                             if j.split("$")[2:3] == ["0671234X"] and j.count("$") == 3
                             and j.split("$")[1] in SCOPED_SOURCES)
        assert {j for j, _ in got} == {"AC-X$SIECLE$0671234X$1", "AC-X$SIECLE$0671234X$2",
                                       "AC-X$SIECLE-RESP$0671234X$9", "AC-X$STS$0671234X$7"}
        assert view.logins_of_base("lea.martin") == {"lea.martin", "lea.martin2",
                                                     "lea.martin22"}
        assert view.logins_of_base("lea.martin2") == {"lea.martin2", "lea.martin22"}
        assert view.logins_of_base("zoe.roux") == {"zoe.roux"}
        assert view.logins_of_base("ana.roux") == set()
        assert view.match_key_rows([("staff", "k1"), ("guardian", "k2"), ("staff", "k9")]) == {
            ("staff", "k1", "a4"): ["a4"], ("guardian", "k2", "a3"): ["a3"]}
