"""The audit's comparison (pure): directory entries against what the state DB says was
written; and the one list of what the sync owns."""

from __future__ import annotations

import datetime as dt

from etl.audit.compare import Stored, compare_entry, kind_of, orphans, tally, uai_of
from etl.audit.read import DirEntry
from etl.audit.repair import foreign_change
from etl.plan.desired import EntryStrings, PersonLinks, Shared, _person_entry
from etl.plan.owned import foreign_names, owned_view

BASE = "dc=ent,dc=grandest,dc=fr"
SDN = f"ENTStructureUAI=0510001A,ou=structures,{BASE}"
PDN = f"uid=e1,ou=people,{BASE}"
CDN = f"cn=3A,ou=groups,{SDN}"
PERSON = {"objectClass": ["top", "inetOrgPerson", "ENTPerson", "ENTEleve", "entSyncAccount"],
          "uid": ["e1"], "ENTPersonLogin": ["zoe.martin"], "sn": ["MARTIN"], "cn": ["MARTIN Zoé"],
          "ENTPersonStructRattach": [SDN], "entSyncStatus": ["ACTIVE"]}
CLASS = {"objectClass": ["top", "ENTClasse", "entSyncObject"], "cn": ["3A"],
         "member": [PDN, f"uid=e2,ou=people,{BASE}"]}


def stored(attrs: dict[str, list[str]], kind: str = "person") -> Stored:
    return Stored(kind, "0510001A", "e1" if kind == "person" else None, attrs)


def test_an_entry_as_written_with_foreign_attributes_is_no_difference() -> None:
    actual = {**PERSON, "userPassword": ["{SSHA}x"], "preferredLanguage": ["fr"],
              "objectClass": [*PERSON["objectClass"], "ExtraAuxiliary"],
              "SN": ["MARTIN"]}  # attribute names compare case-insensitively
    del actual["sn"]
    assert compare_entry(PDN, actual, stored(PERSON)) == ([], None)


def test_missing_entry_is_recreated_as_written() -> None:
    diffs, change = compare_entry(PDN, None, stored(PERSON))
    assert [(d.kind, d.dn, d.attributes) for d in diffs] == [("missing", PDN, ())]
    assert change is not None and change.op == "add" and change.attrs == PERSON
    assert change.uid == "e1" and change.uai == "0510001A"


def test_owned_attribute_changed_is_put_back_without_touching_foreign_ones() -> None:
    actual = {**PERSON, "sn": ["CHANGED"], "mail": ["x@example.org"], "preferredLanguage": ["fr"]}
    diffs, change = compare_entry(PDN, actual, stored(PERSON))
    assert [(d.kind, d.attributes, d.values) for d in diffs] == [
        ("attribute", ("mail", "sn"), None)]
    assert change is not None and change.op == "modify" and change.category == "update"
    assert change.mods == {"mail": {"replace": []}, "sn": {"replace": ["MARTIN"]}}
    assert "preferredLanguage" not in change.before  # never written, never journaled
    with_values = compare_entry(PDN, actual, stored(PERSON), values=True)[0]
    assert with_values[0].values == {"mail": {"directory": ["x@example.org"], "state": []},
                                     "sn": {"directory": ["CHANGED"], "state": ["MARTIN"]}}


def test_stray_and_lost_members_of_a_class() -> None:
    stray = f"uid=intrus,ou=people,{BASE}"
    diffs, change = compare_entry(CDN, {**CLASS, "member": [*CLASS["member"], stray]},
                                  stored(CLASS, "class"))
    assert [(d.kind, d.attributes) for d in diffs] == [("member", ("member",))]
    assert change is not None and change.category == "membership"
    assert change.mods == {"member": {"delete": [stray]}}
    # a member the sync put there removed by hand: an attribute difference, added back
    diffs, change = compare_entry(CDN, {**CLASS, "member": [PDN]}, stored(CLASS, "class"))
    assert [(d.kind, d.attributes) for d in diffs] == [("attribute", ("member",))]
    assert change is not None and change.mods == {"member": {"add": [f"uid=e2,ou=people,{BASE}"]}}
    # both at once: both kinds, one change
    diffs, change = compare_entry(CDN, {**CLASS, "member": [PDN, stray]},
                                  stored(CLASS, "class"))
    assert sorted(d.kind for d in diffs) == ["attribute", "member"]
    assert change is not None and change.mods == {
        "member": {"add": [f"uid=e2,ou=people,{BASE}"], "delete": [stray]}}


def test_foreign_entries_and_orphans() -> None:
    actual = {"objectClass": ["top", "inetOrgPerson"], "uid": ["x"],
              "ENTPersonStructRattach": [SDN]}
    diffs, change = compare_entry(f"uid=x,ou=people,{BASE}", actual, None)
    assert [(d.kind, d.entry_kind, d.uai) for d in diffs] == [("foreign", "person", "0510001A")]
    assert change is None  # only a policy acts on it
    assert foreign_change(DirEntry(f"uid=x,ou=people,{BASE}", actual), "keep",
                          dt.datetime(2026, 1, 1)) is None
    assert compare_entry(PDN, None, None) == ([], None)
    found = orphans(["e1", "e9"], {"e1"}, BASE)
    assert [(d.kind, d.dn) for d in found] == [("orphan", f"uid=e9,ou=people,{BASE}")]


def test_foreign_policies() -> None:
    e = DirEntry(f"uid=x,ou=people,{BASE}", {"objectClass": ["top", "inetOrgPerson",
                                                              "ENTPerson"], "uid": ["x"],
                                             "userPassword": ["{SSHA}y"]})
    now = dt.datetime(2026, 3, 1, 12, 0, 0)
    gone = foreign_change(e, "delete", now)
    assert gone is not None and gone.op == "delete" and gone.before == e.attrs
    off = foreign_change(e, "disable", now)
    assert off is not None and off.op == "modify" and off.uid == "x"
    assert off.mods == {"objectClass": {"add": ["entSyncAccount"]},
                        "entSyncStatus": {"replace": ["DISABLED"]},
                        "entSyncDisabledAt": {"replace": ["20260301120000Z"]}}
    assert "userPassword" not in (off.after or {})
    school = DirEntry(f"cn=x,ou=groups,{SDN}", {"objectClass": ["groupOfNames"]})
    assert foreign_change(school, "disable", now) is None  # only accounts are disabled


def test_kinds_schools_and_counts() -> None:
    assert kind_of(CDN, CLASS) == "class" and kind_of(SDN, {"objectClass": [
        "ENTEtablissement"]}) == "school"
    assert uai_of(CDN) == "0510001A" and uai_of(PDN, PERSON) == "0510001A"
    diffs = compare_entry(PDN, None, stored(PERSON))[0] + orphans(["e9"], set(), BASE)
    t = tally(diffs)
    assert t["differences"] == 2 and t["total"]["missing"] == 1 and t["total"]["orphan"] == 1
    assert t["per_school"] == {"-": {"missing": 0, "attribute": 0, "member": 0, "foreign": 0,
                                     "orphan": 1},
                               "0510001A": {"missing": 1, "attribute": 0, "member": 0,
                                            "foreign": 0, "orphan": 0}}


def test_every_attribute_of_a_desired_person_is_owned() -> None:
    """The one list: whatever the planner writes, the writer and the audit count as the
    sync's (else a reconciled write would add it again, an audit miss it)."""
    rows = [{"person_key": "AC-REIMS$SIECLE$0510001A$1", "uai": "0510001A", "profile": p,
             "ine": "070876696HA", "last_name": "MARTIN", "first_name": "Zoé",
             "birth_date": "2012-02-01", "sex": "F", "email": "z@example.org", "mef": "1031",
             "function": "ENS"} for p in ("ELV", "ENS", "TUT")]
    links = PersonLinks({}, {}, {})
    for r in rows:
        e = _person_entry("e1", "zoe.martin", [r], links, EntryStrings(BASE, Shared()))
        assert owned_view(e.attrs) == e.attrs, foreign_names(e.attrs)
    disabled = {**PERSON, "entSyncStatus": ["DISABLED"], "entSyncDisabledAt": ["20260101Z"]}
    assert owned_view(disabled) == disabled
