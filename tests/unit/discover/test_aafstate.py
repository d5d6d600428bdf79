"""The AAF chain: Complets and Deltas on the last applied state (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from etl.discover.aaf import group_documents, parse_aaf_name
from etl.discover.aafstate import (
    COMPLET,
    DELTA,
    DocKey,
    Marker,
    Problem,
    Rec,
    apply_document,
    freshest,
    school_chain,
    stale_persons,
    stamp,
    state_diff,
)
from etl.discover.landing import Discovered


@dataclass(frozen=True)
class Req:
    category: str
    op: str
    identifier: str
    attrs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    file: str = "f.xml"
    line: int = 1


def pupil(i: str, cls: str = "3A", **more: tuple[str, ...]) -> Req:
    return Req("Eleve", "add", i, {"ENTPersonJointure": (i,), "ENTEleveClasses": (f"1${cls}",),
                                   **more})


def test_names_say_mode_date_type_and_part() -> None:
    n = parse_aaf_name("FULL_ENTTSSERVICES_Complet_20130117_PersEducNat_0003.xml")
    assert n is not None
    assert (n.prefix, n.mode, n.date, n.type, n.part) == (
        "FULL_ENTTSSERVICES", COMPLET, "2013-01-17", "PersEducNat", 3)
    d = parse_aaf_name("sub/ENT_delta_20200102_eleve_0000.XML")
    assert d is not None and (d.mode, d.type) == (DELTA, "Eleve")
    assert parse_aaf_name("ENT_Complet_20201301_Eleve_0000.xml") is None  # no such day
    assert parse_aaf_name("ExportXML_ElevesSansAdresses.xml") is None
    assert parse_aaf_name("ENT_Complet_20200101_Eleve.xml") is None  # no part number


def _part(name: str, sha: str = "x", status: str = "discovered") -> Discovered:
    n = parse_aaf_name(name)
    assert n is not None
    return Discovered(path=str(Path("/l") / name), member=None, kind="AAF", sha256=sha,
                      status=status,
                      extra={"aaf": {"prefix": n.prefix, "mode": n.mode, "date": n.date,
                                     "type": n.type, "part": n.part}})


def test_parts_make_one_document_in_stamp_order() -> None:
    docs, aside = group_documents([
        _part("ENT_Delta_20200102_Eleve_0000.xml"),
        _part("ENT_Complet_20200101_Eleve_0001.xml", "b"),
        _part("ENT_Complet_20200101_Eleve_0000.xml", "a"),
        _part("ENT_Complet_20200101_EtabEducNat_0000.xml"),
        _part("ENT_Complet_20200101_MefEducNat_0000.xml"),
    ])
    assert [(d.key.label, [p.source.short_name for p in d.parts]) for d in docs] == [
        ("EtabEducNat Complet 2020-01-01", ["ENT_Complet_20200101_EtabEducNat_0000.xml"]),
        ("Eleve Complet 2020-01-01", ["ENT_Complet_20200101_Eleve_0000.xml",
                                      "ENT_Complet_20200101_Eleve_0001.xml"]),
        ("Eleve Delta 2020-01-02", ["ENT_Delta_20200102_Eleve_0000.xml"]),
    ]
    assert all(d.bad is None for d in docs)
    assert [(d.source.short_name, "not a type" in why) for d, why in aside] == [
        ("ENT_Complet_20200101_MefEducNat_0000.xml", True)]


def test_a_missing_or_refused_part_makes_the_document_bad() -> None:
    docs, _ = group_documents([_part("ENT_Complet_20200101_Eleve_0000.xml"),
                               _part("ENT_Complet_20200101_Eleve_0002.xml")])
    assert docs[0].bad and "0001 missing" in docs[0].bad and docs[0].incomplete
    bad = _part("ENT_Delta_20200102_Eleve_0000.xml", status="rejected")
    bad.reason = "document has a DOCTYPE/ENTITY declaration (refused by design)"
    docs, _ = group_documents([bad])
    assert docs[0].bad and "DOCTYPE" in docs[0].bad and not docs[0].incomplete


def test_delta_requests_apply_on_the_view_once() -> None:
    view = {}
    problems: list[Problem] = []
    c = DocKey(COMPLET, "2020-01-01", "Eleve")
    ids = apply_document(view, c, [pupil("1"), pupil("2"), pupil("3")], problems)
    assert ids == {"1", "2", "3"} and not problems
    d = DocKey(DELTA, "2020-01-02", "Eleve")
    reqs = [pupil("4"), Req("Eleve", "modify", "2", {"ENTEleveClasses": ("1$3B",)}),
            Req("Eleve", "delete", "3"), Req("Eleve", "modify", "9", {"sn": ("X",)})]
    apply_document(view, d, reqs, problems)
    assert sorted(i for _c, i in view) == ["1", "2", "4"]
    two = view[("Eleve", "2")]
    assert two.attrs == {"ENTPersonJointure": ("2",), "ENTEleveClasses": ("1$3B",)}
    assert two.stamp == stamp("2020-01-02", DELTA) == "2020-01-02/D"
    assert [p.rule for p in problems] == ["modify_unknown"]
    # replaying what a record already has changes nothing: a Complet older than it included
    before = {k: (r.attrs, r.stamp) for k, r in view.items()}
    apply_document(view, d, reqs, [])
    apply_document(view, c, [pupil("2")], [])
    assert {k: (r.attrs, r.stamp) for k, r in view.items()} == before


def test_a_complet_holds_adds_only() -> None:
    problems: list[Problem] = []
    apply_document({}, DocKey(COMPLET, "2020-01-01", "Eleve"),
                   [Req("Eleve", "delete", "1"), Req("PersEducNat", "add", "2")], problems)
    assert [p.rule for p in problems] == ["complet_request", "category"]


def test_freshest_copy_of_a_record_across_schools() -> None:
    old = Rec("PersEducNat", "7", {"sn": ("A",)}, "2020-01-01/C")
    new = Rec("PersEducNat", "7", {"sn": ("B",)}, "2020-01-03/D")
    assert freshest([new, old])[("PersEducNat", "7")] is new


CHAIN = [DocKey(COMPLET, "2020-01-01", "Eleve"), DocKey(DELTA, "2020-01-02", "Eleve"),
         DocKey(DELTA, "2020-01-03", "Eleve")]


def test_a_school_gets_what_is_new_to_it() -> None:
    ch = school_chain({}, CHAIN, {})
    assert ch.new == CHAIN and not ch.gaps and ch.covers == ["Eleve"]
    assert ch.complets == {"Eleve": "2020-01-01/C"}
    assert ch.markers["Eleve"] == Marker("2020-01-01", "2020-01-03/D")
    behind = school_chain({"Eleve": Marker("2020-01-01", "2020-01-02/D")}, CHAIN, {})
    assert behind.new == CHAIN[2:] and not behind.complets and behind.covers == ["Eleve"]
    done = school_chain({"Eleve": Marker("2020-01-01", "2020-01-03/D")}, CHAIN, {})
    assert not done.new


def test_a_delta_without_base_is_a_gap_unless_the_academy_has_a_complet() -> None:
    gap = school_chain({}, CHAIN[1:], {})
    assert list(gap.gaps) == ["Eleve"] and "no base" in gap.gaps["Eleve"]
    assert gap.covers == []  # nothing judged absent on a guessed base
    assert gap.markers["Eleve"] == Marker(None, "2020-01-03/D")  # approved: goes on from it
    new_school = school_chain({}, CHAIN[1:], {"Eleve": "2020-01-01"})
    assert not new_school.gaps and new_school.covers == ["Eleve"]
    # an academy Complet later than the Delta is no base for it
    assert school_chain({}, CHAIN[1:2], {"Eleve": "2020-01-05"}).gaps


def test_a_named_school_loses_what_its_complet_left_out() -> None:
    recs = [Rec("Eleve", "1", {}, "2020-01-05/C"), Rec("Eleve", "2", {}, "2020-01-01/C"),
            Rec("Eleve", "3", {}, "2020-01-06/D")]
    ids = {"Eleve": {"1"}}
    stamps = {"Eleve": "2020-01-05/C"}
    assert stale_persons(recs, ids, stamps, {"Eleve": "2020-01-05/C"}) == {"2"}
    # the Complet names none of the school's pupils: the school is not judged by it
    assert stale_persons(recs[1:], ids, stamps, {"Eleve": "2020-01-05/C"}) == set()
    # no Complet new to the school: nothing stale
    assert stale_persons(recs, ids, stamps, {}) == set()


def test_state_diff_writes_only_what_changed() -> None:
    a = Rec("Eleve", "1", {"sn": ("A",)}, "2020-01-01/C")
    b = Rec("Eleve", "2", {"sn": ("B",)}, "2020-01-01/C")
    b2 = Rec("Eleve", "2", {"sn": ("C",)}, "2020-01-02/D")
    c = Rec("Eleve", "3", {}, "2020-01-02/D")
    d = state_diff({("Eleve", "1"): a, ("Eleve", "2"): b},
                   {("Eleve", "2"): b2, ("Eleve", "3"): c}, {})
    assert [r.identifier for r in d.upsert] == ["2", "3"] and d.delete == [("Eleve", "1")]
    assert state_diff({("Eleve", "1"): a}, {("Eleve", "1"): a}, {}).empty
    back = type(d).from_json(d.to_json())
    assert back.upsert == d.upsert and back.delete == d.delete
