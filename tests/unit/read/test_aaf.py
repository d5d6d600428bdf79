"""The AAF reader: ``ficAlimMENESR`` files into records, records into canonical tables.

Each case has a small hand-written fixture under ``fixtures/aaf`` (three schools of
ac-reims: structure jointures 100 -> 0510003B, 200 -> 0080001H, 300 -> 0100002Y); the public
samples of ``../shared/samples/aaf`` are read whole when present.
"""

from __future__ import annotations

import datetime as dt
import re
import tracemalloc
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import etl.read.aaf.records as records_mod
from etl.discover.xmlsafe import XmlSource
from etl.errors import FileRejected, RecordRejected
from etl.read.aaf import AafRecord, AafSchools, aaf_school_tables, iter_aaf_records
from etl.read.canonical import records
from etl.read.normalize import normalize_tables
from etl.validate.rules import validate_school
from tests.paths import FIXTURES, SAMPLES

AAF = FIXTURES / "aaf"
COMPLET = AAF / "complet"
TODAY = dt.date(2025, 9, 15)
LYCEE, COLLEGE, LAC = "0510003B", "0080001H", "0100002Y"


def read(path: Path, rejected: list[RecordRejected] | None = None) -> list[AafRecord]:
    return list(iter_aaf_records(XmlSource(path), rejected=rejected))


def complet() -> tuple[list[AafRecord], list[AafRecord]]:
    """(EtabEducNat records, person records) of the two-part Complet."""
    structures: list[AafRecord] = []
    persons: list[AafRecord] = []
    for f in sorted(COMPLET.glob("*.xml")):
        (structures if "_EtabEducNat_" in f.name else persons).extend(read(f))
    return structures, persons


def apply(state: dict[tuple[str, str], AafRecord], recs: Iterable[AafRecord]) -> None:
    """A Delta on a state, the simplest way (the pipeline's own lives elsewhere)."""
    for r in recs:
        k = (r.category, r.identifier)
        if r.op == "add":
            state[k] = r
        elif r.op == "delete":
            state.pop(k, None)
        else:
            old = state[k]
            state[k] = AafRecord(old.category, "add", old.identifier, {**old.attrs, **r.attrs},
                                 r.file, r.line)


def rows(out: AafSchools, uai: str, table: str) -> list[dict[str, Any]]:
    return records(out[uai].tables[table])


def by_key(out: AafSchools, uai: str) -> dict[str, dict[str, Any]]:
    return {r["person_key"]: r for r in rows(out, uai, "persons")}


# --- records -------------------------------------------------------------------------------


def test_plain_doctype_is_accepted_and_records_are_read() -> None:
    (r,) = read(AAF / "doctype_plain.xml")
    assert (r.category, r.op, r.identifier, r.attrs) == ("Eleve", "add", "1", {"sn": ("Test",)})
    assert r.file == "doctype_plain.xml" and r.line == 5


@pytest.mark.parametrize("name", ["doctype_internal_subset.xml", "entity_declaration.xml",
                                  "entity_after_doctype.xml"])
def test_dtd_other_than_the_plain_line_refuses_the_file(name: str) -> None:
    with pytest.raises(FileRejected) as e:
        read(AAF / name)
    assert e.value.file == name and e.value.line == 2
    assert "DOCTYPE/ENTITY declaration (refused by design)" in e.value.reason
    assert str(e.value).startswith(f"{name}:2: ") and "\n" not in str(e.value)


def test_dtd_past_the_first_chunk_names_its_line(tmp_path: Path) -> None:
    """A DOCTYPE after a long prolog is found in a later chunk: its line is still named."""
    p = tmp_path / "late_doctype.xml"
    p.write_bytes(b"<?xml version='1.0'?>\n" + b"<!-- padding -->\n" * 8_000
                  + b'<!DOCTYPE ficAlimMENESR [<!ENTITY a "b">]>\n<ficAlimMENESR/>\n')
    with pytest.raises(FileRejected) as e:
        read(p)
    assert e.value.line == 8_002 and "refused by design" in e.value.reason


def test_other_root_refuses_the_file() -> None:
    with pytest.raises(FileRejected) as e:
        read(AAF / "other_root.xml")
    assert e.value.reason == "root element is <annuaire>, not <ficAlimMENESR>"
    assert e.value.line == 4


@pytest.mark.parametrize("body,reason", [
    (b"<ficAlimMENESR><addRequest>", "malformed or truncated XML"),
    (b"<BEE_ELEVES><PARAMETRES/></BEE_ELEVES>", "root element is <BEE_ELEVES>"),
    (b"<x><ficAlimMENESR/></x>", "root element is <x>"),
    (b"<ficAlimMENESR><g><addRequest/></g></ficAlimMENESR>", "is not a child of"),
])
def test_unreadable_files_are_refused_with_one_line(tmp_path: Path, body: bytes,
                                                    reason: str) -> None:
    p = tmp_path / "f.xml"
    p.write_bytes(body)
    with pytest.raises(FileRejected) as e:
        read(p)
    assert reason in e.value.reason and "\n" not in str(e.value)


def test_malformed_requests_are_rejected_one_by_one() -> None:
    rejected: list[RecordRejected] = []
    got = read(AAF / "malformed_requests.xml", rejected)
    assert [(r.op, r.identifier) for r in got] == [("add", "1004"), ("modify", "1007")]
    # an empty <value/> is kept as '' (absent for the mapping, which skips it)
    assert got[0].attrs["ENTEleveGroupes"] == ("", "100$G1")
    assert got[0].values("ENTEleveGroupes") == ["100$G1"]
    assert got[1].attrs == {"sn": ("Nouveau",), "ENTEleveGroupes": ("100$G1", "100$G2")}
    assert [(r.line, r.element, r.rule) for r in rejected] == [
        (5, "addRequest", "required"),         # no identifier
        (10, "modifyRequest", "operation"),    # operation="add"
        (22, "renameRequest", "unknown_request"),
        (25, "addRequest", "required"),        # no attributes
        (29, "deleteRequest", "required"),     # no category
    ]
    assert all(r.file == "malformed_requests.xml" for r in rejected)
    assert rejected[1].source_key == "1002"  # a person's record: not taken for absent


def test_a_request_without_category_takes_the_files() -> None:
    rejected: list[RecordRejected] = []
    got = list(iter_aaf_records(XmlSource(AAF / "malformed_requests.xml"), rejected=rejected,
                                category="Eleve"))
    assert ("delete", "1006", "Eleve") in [(r.op, r.identifier, r.category) for r in got]
    assert len(rejected) == 4


def test_complet_in_two_parts_reads_each_part() -> None:
    parts = sorted(COMPLET.glob("*_Eleve_*.xml"))
    assert [p.name[-9:] for p in parts] == ["_0000.xml", "_0001.xml"]
    ids = [[r.identifier for r in read(p)] for p in parts]
    assert ids == [["1001", "1002"], ["1003", "1005"]]
    (r,) = [r for r in read(parts[1]) if r.identifier == "1003"]
    assert r.file == "ENT_Complet_20250901_Eleve_0001.xml" and r.line == 5


def test_declared_encoding_is_honoured() -> None:
    """The EtabEducNat file declares ISO-8859-15 (as the 2020 sample): its accents read
    right, and the school's name keeps them."""
    recs = read(COMPLET / "ENT_Complet_20250901_EtabEducNat_0000.xml")
    assert recs[0].first("ENTStructureNomCourant") == "LYCEE$JEAN-JAURÈS"
    out = aaf_school_tables("ac-reims", recs, [], TODAY)
    assert out == {}  # no person: no school tables
    structures, persons = complet()
    out = aaf_school_tables("ac-reims", structures, persons, TODAY)
    (school,) = rows(out, LYCEE, "schools")
    assert school == {"uai": LYCEE, "academy": "ac-reims", "name": "LYCEE-JEAN-JAURÈS",
                      "school_year": None, "source": "AAF",
                      "file": "ENT_Complet_20250901_EtabEducNat_0000.xml"}


def test_delta_has_each_request_kind() -> None:
    got = read(AAF / "delta" / "ENT_Delta_20250902_Eleve_0000.xml")
    assert [(r.op, r.identifier) for r in got] == [("add", "1010"), ("modify", "1001"),
                                                   ("delete", "1003")]
    assert got[1].attrs == {"ENTEleveClasses": ("100$2NDE2",), "ENTEleveGroupes": ("",)}
    assert got[2].attrs == {}


def test_reading_frees_what_it_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a benchmark: the tree the parser builds stays a few requests long however long
    the file (sampled at every 500th release), and the reader's own Python memory stays far
    below the file's size."""
    attrs = "".join(f'<attr name="a{i}"><value>v{i}-{"x" * 20}</value></attr>' for i in range(12))
    req = ('<addRequest><operationalAttributes><attr name="categoriePersonne"><value>Eleve'
           '</value></attr></operationalAttributes><identifier><id>{}</id></identifier>'
           f"<attributes>{attrs}</attributes></addRequest>\n")
    path = tmp_path / "ENT_Complet_20250901_Eleve_0000.xml"
    with path.open("w") as f:
        f.write('<!DOCTYPE ficAlimMENESR SYSTEM "ficAlimMENESR.dtd">\n<ficAlimMENESR>\n')
        for i in range(20_000):
            f.write(req.format(i))
        f.write("</ficAlimMENESR>\n")
    size = path.stat().st_size
    sizes: list[int] = []
    calls = 0
    real = records_mod.release

    def sampling(root: Any, el: Any) -> None:
        nonlocal calls
        calls += 1
        if calls % 500 == 0:
            sizes.append(sum(1 for _ in root.iter()))
        real(root, el)

    monkeypatch.setattr(records_mod, "release", sampling)
    tracemalloc.start()
    try:
        n = sum(1 for _ in iter_aaf_records(XmlSource(path)))
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 20_000 and len(sizes) == 40
    # kept whole, the tree would hold 20,000 requests of 31 elements
    assert max(sizes) < 2_000, max(sizes)
    assert peak - current < 0.05 * size, (peak, current, size)


# --- tables --------------------------------------------------------------------------------


def test_complet_gives_each_school_its_tables() -> None:
    structures, persons = complet()
    out = aaf_school_tables("ac-reims", structures, persons, TODAY)
    assert sorted(out) == [COLLEGE, LAC, LYCEE]
    p = by_key(out, LYCEE)["1001"]
    assert {k: p[k] for k in ("uai", "profile", "source", "source_id", "ine", "last_name",
                              "birth_name", "first_name", "birth_date", "sex", "mef",
                              "has_left", "file", "line")} == {
        "uai": LYCEE, "profile": "ELV", "source": "AAF", "source_id": "1001",
        "ine": "120000001AB", "last_name": "Martin", "birth_name": "MARTIN",
        "first_name": "Élodie", "birth_date": "2009-09-14", "sex": "F",
        "mef": "20010018110", "has_left": False,
        "file": "ENT_Complet_20250901_Eleve_0000.xml", "line": 6}
    # classes and groups by code within the school their structure jointure names
    pupils = [(m["person_key"], m["code"], m["kind"]) for m in rows(out, LYCEE, "memberships")
              if m["role"] == "pupil"]
    assert sorted(pupils) == [("1001", "2NDE1", "D"), ("1001", "2NDEG1", "G"),
                              ("1005", "1G2", "D")]
    groups = [(m["code"], m["kind"]) for m in rows(out, COLLEGE, "memberships")
              if m["person_key"] == "1003"]
    assert groups == [("5B", "D"), ("LATIN", "G")]  # the group named twice, once
    labels = {(s["code"], s["kind"]): s["label"] for s in rows(out, LYCEE, "structures")}
    assert labels == {("2NDE1", "D"): "Seconde 1", ("2NDEG1", "G"): "2NDEG1",
                      ("1G2", "D"): "1G2"}
    for uai in out:
        assert not out[uai].rejected and not out[uai].warnings
    assert not out.unplaced
    assert out.file_records[COLLEGE] == {"ENT_Complet_20250901_Eleve_0000.xml": 1,
                                         "ENT_Complet_20250901_Eleve_0001.xml": 1,
                                         "ENT_Complet_20250901_PersEducNat_0000.xml": 3,
                                         "ENT_Complet_20250901_PersRelEleve_0000.xml": 3}


def test_guardian_of_two_children_in_two_schools() -> None:
    structures, persons = complet()
    out = aaf_school_tables("ac-reims", structures, persons, TODAY)
    for uai, pupil in ((LYCEE, "1001"), (COLLEGE, "1002")):
        g = by_key(out, uai)["5001"]
        assert (g["profile"], g["source"], g["sex"], g["birth_date"], g["mobile"]) == (
            "TUT", "AAF", "M", None, "0600000001")
        links = [(x["pupil_key"], x["level"], x["legal"], x["relation"], x["pays_fees"])
                 for x in rows(out, uai, "guardian_links") if x["guardian_key"] == "5001"]
        assert links == [(pupil, "1", True, "20", "1")]


def test_guardian_levels_from_the_fourth_field_and_parental_authority() -> None:
    structures, persons = complet()
    out = aaf_school_tables("ac-reims", structures, persons, TODAY)
    level = {(x["pupil_key"], x["guardian_key"]): (x["level"], x["legal"])
             for uai in out for x in rows(out, uai, "guardian_links")}
    assert level[("1003", "5003")] == ("2", False)   # person in charge (2)
    assert level[("1003", "5004")] == ("3", False)   # neither (0)
    assert level[("1005", "5005")] == ("1", True)
    assert level[("1005", "5006")] == ("1", True)    # written 2, holds parental authority
    assert level[("1005", "5007")] == ("1", True)    # in ENTEleveAutoriteParentale only
    assert len(level) == 8


def test_teacher_in_two_schools() -> None:
    structures, persons = complet()
    out = aaf_school_tables("ac-reims", structures, persons, TODAY)
    for uai in (LYCEE, COLLEGE):
        t = by_key(out, uai)["3001"]
        assert (t["profile"], t["function"], t["source_id"], t["birth_date"]) == (
            "ENS", "ENS", "3001", "1977-08-07")
    mine = {uai: sorted((m["code"], m["kind"], m["subject"], m["head_teacher"])
                        for m in rows(out, uai, "memberships") if m["person_key"] == "3001")
            for uai in (LYCEE, COLLEGE)}
    assert mine == {LYCEE: [("2NDE1", "D", "061300", True), ("2NDEG1", "G", "061300", False)],
                    COLLEGE: [("6A", "D", "061300", False)]}
    assert all(m["role"] == "teacher" for uai in out for m in rows(out, uai, "memberships")
               if m["person_key"].startswith("3"))


def test_staff_profiles() -> None:
    structures, persons = complet()
    out = aaf_school_tables("ac-reims", structures, persons, TODAY)
    prof = {(uai, k): (p["profile"], p["function"])
            for uai in out for k, p in by_key(out, uai).items() if k.startswith("3")}
    assert prof == {
        (LYCEE, "3001"): ("ENS", "ENS"), (COLLEGE, "3001"): ("ENS", "ENS"),
        (COLLEGE, "3002"): ("DIR", "DIR"),            # DIR ranks before ENS
        (LYCEE, "3003"): ("DOC", "DOC"), (COLLEGE, "3003"): ("EVS", "AED"),
        (LAC, "3004"): ("ENS", None),                 # no function, teaches there
    }
    (m,) = rows(out, LAC, "memberships")
    assert (m["code"], m["subject"]) == ("4C", "ANGLAIS")  # ENTAuxEnsMatiereEnseignEtab


def test_delta_applied_on_the_complet() -> None:
    structures, persons = complet()
    state = {(r.category, r.identifier): r for r in persons}
    apply(state, read(AAF / "delta" / "ENT_Delta_20250902_Eleve_0000.xml"))
    out = aaf_school_tables("ac-reims", structures, state.values(), TODAY)
    assert "1010" in by_key(out, LYCEE) and "1003" not in by_key(out, COLLEGE)
    classes = sorted((m["code"], m["kind"]) for m in rows(out, LYCEE, "memberships")
                     if m["person_key"] == "1001")
    assert classes == [("2NDE2", "D")]  # replaced, and the group cleared by <value/>
    children = sorted(x["pupil_key"] for uai in out for x in rows(out, uai, "guardian_links")
                      if x["guardian_key"] == "5001")
    assert children == ["1001", "1002", "1010"]
    # 1003's relatives are no one's any more
    assert sorted((r.source_key, r.rule) for r in out.unplaced) == [("5003", "no_pupil"),
                                                                    ("5004", "no_pupil")]


def test_records_that_cannot_be_used_are_rejected_with_a_reason() -> None:
    structures, _persons = complet()
    bad = read(AAF / "records_rejected.xml")
    out = aaf_school_tables("ac-reims", structures, bad, TODAY)
    unplaced = sorted((r.source_key, r.rule, r.line) for r in out.unplaced)
    assert unplaced == [("1102", "no_school", 17), ("1103", "unique", 41),
                        ("3101", "no_school", 51), ("5101", "no_pupil", 61)]
    lycee = sorted((r.rule, r.line, r.source_key, r.field) for r in out[LYCEE].rejected)
    assert lycee == [("date_format", 6, "1101", "birth_date"),
                     ("level_code", 28, None, None),     # fourth field 7
                     ("one_division", 28, None, None),   # 2NDE3 after 2NDE1
                     ("value_format", 28, None, None)]   # a group without its structure
    warnings = sorted((w.rule, w.message) for w in out[LYCEE].warnings)
    assert [w for w, _m in warnings] == ["other_school", "unknown_guardian"]
    assert "relatives 5999 have no PersRelEleve" in warnings[1][1]
    assert list(by_key(out, LYCEE)) == ["1103"]
    (m,) = rows(out, LYCEE, "memberships")
    assert m["code"] == "2NDE1"
    for r in [*out.unplaced, *out[LYCEE].rejected]:
        assert r.file == "records_rejected.xml" and "\n" not in r.message
        for name in ("Date", "Bad", "Nowhere", "Kid", "Two", "Classes", "Far", "Away", "Alone"):
            assert not re.search(rf"\b{name}\b", r.message)  # keys and codes only


def test_tables_pass_normalize_and_validation() -> None:
    """The same normalize and validate the SIECLE path runs: every record kept, the keys
    become the directory's jointure ``AC-REIMS$<id>``."""
    structures, persons = complet()
    out = aaf_school_tables("ac-reims", structures, persons, TODAY)
    for uai, res in out.items():
        warnings: list[Any] = []
        tables = normalize_tables(res.tables, "AC-REIMS", warnings)
        v = validate_school(tables, uai, read_rejected=res.rejected,
                            file_records=out.file_records[uai], warnings=res.warnings)
        assert not v.rejected and not v.quarantine, (uai, [r.message for r in v.rejected])
        assert v.tables.counts() == res.tables.counts()
        keys = set(v.tables["persons"]["person_key"].astype(str))
        assert all(k.startswith("AC-REIMS$") for k in keys)
    norm = normalize_tables(out[LYCEE].tables, "AC-REIMS")
    assert "AC-REIMS$1001" in set(norm["persons"]["person_key"].astype(str))
    assert ("AC-REIMS$1001", "AC-REIMS$5001") in {
        (x["pupil_key"], x["guardian_key"]) for x in records(norm["guardian_links"])}


# --- public samples --------------------------------------------------------------------------


SAMPLE_DIR = SAMPLES / "aaf"


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="no ../shared/samples/aaf")
def test_every_sample_file_parses() -> None:
    files = sorted(SAMPLE_DIR.glob("*.xml"))
    assert len(files) >= 6
    for f in files:
        rejected: list[RecordRejected] = []
        got = read(f, rejected)
        assert got and not rejected, f.name
        assert all(r.op == "add" and r.identifier for r in got)
    # the 2020 EtabEducNat declares ISO-8859-15: read as declared
    (etab,) = read(SAMPLE_DIR / "ENT_Complet_20200101_EtabEducNat_0000.xml")
    assert etab.first("ENTEtablissementMinistereTutelle") == "MINISTERE DE L'EDUCATION NATIONALE"


def sample_accounting(prefix: str) -> tuple[AafSchools, Counter[tuple[str, str]],
                                            Counter[tuple[str, str]]]:
    structures: list[AafRecord] = []
    persons: list[AafRecord] = []
    for f in sorted(SAMPLE_DIR.glob(f"*{prefix}*.xml")):
        (structures if "_EtabEducNat_" in f.name else persons).extend(read(f))
    out = aaf_school_tables("ac-aix-marseille", structures, persons, TODAY)
    placed = {(str(p["source"]), k) for uai in out for k, p in by_key(out, uai).items()}
    rejected = [*out.unplaced, *(r for res in out.values() for r in res.rejected)]
    rejected_keys = {r.source_key for r in rejected if r.source_key}
    outcome: Counter[tuple[str, str]] = Counter()
    for r in persons:
        key = r.first("ENTPersonJointure") or r.identifier
        if ("AAF", key) in placed:
            outcome[(r.category, "read")] += 1
        else:
            assert key in rejected_keys, (r.category, key)  # every person read or rejected
            outcome[(r.category, "rejected")] += 1
    reasons = Counter((r.element, r.rule) for r in rejected)
    return out, outcome, reasons


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="no ../shared/samples/aaf")
def test_2013_extract_every_person_read_or_rejected() -> None:
    out, outcome, reasons = sample_accounting("FULL_ENTTSSERVICES")
    print("\n2013 extract:", dict(sorted(outcome.items())), dict(reasons.most_common()))
    assert len(out) == 10
    assert outcome[("Eleve", "read")] == 642
    assert sum(outcome.values()) == 642 + 698 + 8
    # the extract's relatives file is a fragment: no pupil names its 8 people
    assert outcome[("PersRelEleve", "rejected")] == 8
    assert outcome[("PersEducNat", "read")] > 500
    for uai, res in out.items():
        tables = normalize_tables(res.tables, "AC-AIX-MARSEILLE")
        v = validate_school(tables, uai, read_rejected=res.rejected,
                            file_records=out.file_records[uai], warnings=res.warnings)
        assert not v.quarantine, (uai, v.quarantine)
        assert len(v.tables["persons"]) == len(res.tables["persons"])


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="no ../shared/samples/aaf")
def test_2020_set_pupil_names_no_listed_structure() -> None:
    """The 2020 set's pupil points at structure 1000 and classes of 3000, its EtabEducNat is
    structure 1: the pupil is rejected for it, with the reason."""
    out, outcome, reasons = sample_accounting("ENT_Complet_20200101")
    assert out == {} and outcome == {("Eleve", "rejected"): 1}
    assert reasons == {("Eleve", "no_school"): 1}
