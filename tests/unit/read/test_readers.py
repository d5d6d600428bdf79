"""Readers: SIECLE (BEE) and STS-web documents into canonical tables.

Each case has its own small hand-written fixture under ``fixtures/siecle`` or ``fixtures/sts``;
the real-shaped public samples are read from ``../shared/samples`` when present.
"""

from __future__ import annotations

import datetime as dt
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import etl.read.base as base_mod
import etl.read.siecle as siecle_mod
from etl.devtools.generate import generate_pupils_file
from etl.discover.landing import read_header
from etl.discover.xmlsafe import XmlSource
from etl.errors import FileRejected
from etl.read import read_document
from etl.read.base import release as base_release
from etl.read.canonical import missing, records
from etl.read.siecle import (
    read_siecle_eleves,
    read_siecle_nomenclatures,
    read_siecle_responsables,
    read_siecle_structures,
)
from etl.read.sts import read_sts
from tests.conftest import FIXTURES

UAI = "0671234C"
TODAY = dt.date(2026, 10, 1)


def siecle(name: str) -> XmlSource:
    return XmlSource(FIXTURES / "siecle" / name)


def sts(name: str) -> XmlSource:
    return XmlSource(FIXTURES / "sts" / name)


def rows(df: Any) -> dict[str, dict[str, Any]]:
    """Rows keyed by source_id (persons) for readable assertions."""
    return {r["source_id"]: r for r in records(df)}


def pkey(eid: str) -> str:
    return f"SIECLE${UAI}${eid}"


# --- guardians ---------------------------------------------------------------------------


def test_responsables_niveau_responsabilite_levels() -> None:
    res = read_siecle_responsables(siecle("responsables_niveau_responsabilite.xml"), UAI)
    assert res.rejected == []
    links = res.tables["guardian_links"].set_index("guardian_key")
    g = f"SIECLE-RESP${UAI}$"
    assert links.loc[g + "5001", "level"] == "1" and links.loc[g + "5001", "legal"]
    assert links.loc[g + "5002", "level"] == "2" and not links.loc[g + "5002", "legal"]
    assert links.loc[g + "5003", "level"] == "3" and not links.loc[g + "5003", "legal"]
    assert links.loc[g + "5001", "relation"] == "10"
    assert links.loc[g + "5001", "pays_fees"] == "1"
    assert links.loc[g + "5002", "lives_with"] == "0"
    assert missing(links.loc[g + "5003", "contact_first"])  # absent element: NULL
    assert set(links["pupil_key"]) == {pkey("1001")}
    persons = rows(res.tables["persons"])
    assert persons["5001"]["profile"] == "TUT"
    assert persons["5001"]["sex"] == "F" and persons["5002"]["sex"] == "M"
    assert persons["5001"]["email"] == "aline.fictivia@example.org"
    assert persons["5001"]["mobile"] == "+33600000001"
    assert persons["5002"]["email"] is None


def test_responsables_resp_legal_older_convention() -> None:
    res = read_siecle_responsables(siecle("responsables_resp_legal.xml"), UAI)
    assert res.rejected == []
    links = res.tables["guardian_links"].set_index("guardian_key")
    g = f"SIECLE-RESP${UAI}$"
    # RESP_LEGAL 1 and 2 are both legal guardians (level 1); 0 is another contact (level 3)
    assert links.loc[g + "6001", "level"] == "1" and links.loc[g + "6001", "legal"]
    assert links.loc[g + "6002", "level"] == "1" and links.loc[g + "6002", "legal"]
    assert links.loc[g + "6003", "level"] == "3" and not links.loc[g + "6003", "legal"]


def test_two_guardians_n1_for_one_pupil_are_both_kept() -> None:
    res = read_siecle_responsables(siecle("responsables_deux_resp_legal_1.xml"), UAI)
    assert res.rejected == []
    links = res.tables["guardian_links"]
    assert len(links) == 2
    assert set(links["pupil_key"]) == {pkey("1001")}
    assert list(links["level"]) == ["1", "1"]
    assert all(links["legal"])
    assert res.records == 4  # 2 PERSONNE + 2 RESPONSABLE_ELEVE


# --- pupils ------------------------------------------------------------------------------


def test_empty_and_absent_elements() -> None:
    res = read_siecle_eleves(siecle("eleves_elements_vides_ou_absents.xml"), UAI, TODAY)
    assert res.rejected == []
    p = rows(res.tables["persons"])
    # MEL absent (1001) and <MEL></MEL> (1002) both end as None; a real one is kept
    assert p["1001"]["email"] is None
    assert p["1002"]["email"] is None
    assert p["1003"]["email"] == "karim.remplinot@example.org"
    # ID_NATIONAL absent (1003) and empty (1002): both None
    assert p["1001"]["ine"] == "123456789AB"
    assert p["1002"]["ine"] is None
    assert p["1003"]["ine"] is None
    # an empty NOM_USAGE falls back to the birth name; a present one wins
    assert p["1002"]["last_name"] == "Videnot"
    assert p["1003"]["last_name"] == "Usagiere" and p["1003"]["birth_name"] == "Remplinot"
    # an empty DATE_SORTIE is not a leave date
    assert p["1002"]["leave_date"] is None and p["1002"]["has_left"] is False
    assert p["1001"]["birth_date"] == "2013-03-02"
    assert p["1001"]["sex"] == "F" and p["1003"]["sex"] == "M"
    assert p["1001"]["profile"] == "ELV"
    assert p["1001"]["person_key"] == pkey("1001")
    assert p["1001"]["file"] == "eleves_elements_vides_ou_absents.xml"
    assert isinstance(p["1001"]["line"], int) and p["1001"]["line"] > 0


def test_date_sortie_absent_past_future() -> None:
    res = read_siecle_eleves(siecle("eleves_date_sortie.xml"), UAI, TODAY)
    p = rows(res.tables["persons"])
    assert p["1001"]["has_left"] is False and p["1001"]["leave_date"] is None
    assert p["1002"]["has_left"] is True and p["1002"]["leave_date"] == "2026-06-30"
    assert p["1003"]["has_left"] is False and p["1003"]["leave_date"] == "2026-12-15"


def test_duplicated_structures_eleve_blocks_are_deduplicated() -> None:
    res = read_siecle_eleves(siecle("eleves_structures_eleve_dupliquees.xml"), UAI, TODAY)
    assert res.rejected == []
    m = res.tables["memberships"]
    assert sorted(zip(m["code"], m["kind"], strict=True)) == [("5A", "D"), ("5ALL1", "G")]
    assert set(m["person_key"]) == {pkey("1001")}
    assert set(m["role"]) == {"pupil"}


def test_pupil_in_two_divisions_keeps_first_and_rejects() -> None:
    res = read_siecle_eleves(siecle("eleves_deux_divisions.xml"), UAI, TODAY)
    assert [r.rule for r in res.rejected] == ["one_division"]
    r = res.rejected[0]
    assert r.file == "eleves_deux_divisions.xml" and r.uai == UAI and r.line
    assert "kept 5A" in r.message
    m = res.tables["memberships"]
    divisions = dict(zip(m["person_key"], m["code"], strict=True))
    assert divisions == {pkey("1001"): "5A", pkey("1002"): "5B"}
    assert len(res.tables["persons"]) == 2  # the pupil itself is kept


def test_pseudo_division_inactifs_is_ignored() -> None:
    res = read_siecle_eleves(siecle("eleves_pseudo_division_inactifs.xml"), UAI, TODAY)
    assert res.rejected == []  # INACTIFS + a real division is not "two divisions"
    m = res.tables["memberships"]
    assert "INACTIFS" not in set(m["code"])
    assert dict(zip(m["person_key"], m["code"], strict=True)) == {pkey("1002"): "4C"}
    # only in Inactifs: she has left (issue 18); in Inactifs and 4C: he is in 4C
    p = res.tables["persons"]
    assert dict(zip(p["person_key"], p["has_left"], strict=True)) == {pkey("1001"): True,
                                                                       pkey("1002"): False}


def test_structures_before_eleves() -> None:
    res = read_siecle_eleves(siecle("eleves_structures_avant_eleves.xml"), UAI, TODAY)
    assert res.rejected == []
    assert set(rows(res.tables["persons"])) == {"1001", "1002"}
    m = res.tables["memberships"]
    assert sorted(zip(m["person_key"], m["code"], strict=True)) == [
        (pkey("1001"), "6A"),
        (pkey("1001"), "6LATIN"),
        (pkey("1002"), "6B"),
    ]


def test_duplicate_eleve_id_rejects_the_second_record() -> None:
    res = read_siecle_eleves(siecle("eleves_eleve_id_duplique.xml"), UAI, TODAY)
    assert [(r.rule, r.element) for r in res.rejected] == [("unique", "ELEVE")]
    p = rows(res.tables["persons"])
    assert set(p) == {"1001", "1002"}
    assert p["1001"]["last_name"] == "Premier"
    assert res.records == 3
    # the rejection names where, never the person
    assert "Second" not in str(res.rejected[0]) and "Wanda" not in str(res.rejected[0])


def test_bad_date_format_rejects_the_record() -> None:
    res = read_siecle_eleves(siecle("eleves_date_mal_formee.xml"), UAI, TODAY)
    assert [r.rule for r in res.rejected] == ["date_format"]
    assert res.rejected[0].line is not None
    assert set(rows(res.tables["persons"])) == {"1001"}


@pytest.mark.parametrize(
    ("fixture", "last_name"),
    [
        # the same bytes 0xA4 0xBD are ¤ ½ in ISO-8859-1 and € œ in ISO-8859-15
        ("eleves_iso_8859_1.xml", "Ren¤ C½ur"),
        ("eleves_iso_8859_15.xml", "Ren€ Cœur"),
        ("eleves_utf8_bom.xml", "Lefèvre-Œuvray"),
    ],
)
def test_names_decode_per_declared_encoding(fixture: str, last_name: str) -> None:
    res = read_siecle_eleves(siecle(fixture), UAI, TODAY)
    assert res.rejected == []
    p = rows(res.tables["persons"])
    assert p["1001"]["last_name"] == last_name
    assert p["1001"]["first_name"] == "Zoé"


def test_truncated_xml_rejects_the_file_with_a_line() -> None:
    src = XmlSource(FIXTURES / "landing" / "xml_tronque.xml")
    with pytest.raises(FileRejected) as ei:
        read_siecle_eleves(src, UAI, TODAY)
    e = ei.value
    assert e.file == "xml_tronque.xml"
    assert "truncated" in e.reason
    assert isinstance(e.line, int) and e.line > 1
    assert e.uai == UAI


def test_nomenclatures_and_structures() -> None:
    nom = read_siecle_nomenclatures(siecle("nomenclatures_simple.xml"), UAI)
    assert list(nom.tables["mefs"]["code"]) == ["10010012110"]
    assert list(nom.tables["subjects"]["code"]) == ["030201"]
    assert nom.tables["subjects"]["short_label"][0] == "ANGLAIS LV1"
    st = read_siecle_structures(siecle("structures_simple.xml"), UAI)
    s = st.tables["structures"].set_index("code")
    assert sorted(s.index) == ["6A", "6LATIN"]  # INACTIFS is not a class
    assert s.loc["6A", "kind"] == "D" and s.loc["6A", "mefs"] == "10010012110"
    assert s.loc["6LATIN", "kind"] == "G" and s.loc["6LATIN", "divisions"] == "6A"


def test_read_document_dispatches_on_kind() -> None:
    for fixture, table in [
        ("eleves_date_sortie.xml", "persons"),
        ("responsables_resp_legal.xml", "guardian_links"),
        ("nomenclatures_simple.xml", "mefs"),
        ("structures_simple.xml", "structures"),
    ]:
        d = read_header(siecle(fixture))
        assert len(read_document(d, TODAY).tables[table]) > 0, fixture
    d = read_header(sts("sts_emp_fonctions_et_services.xml"))
    assert d.kind == "STS"
    assert len(read_document(d).tables["persons"]) == 5


# --- STS-web -----------------------------------------------------------------------------


def test_sts_teachers_staff_and_profiles() -> None:
    res = read_sts(sts("sts_emp_fonctions_et_services.xml"), UAI)
    assert res.rejected == []
    p = rows(res.tables["persons"])
    profiles = {k: v["profile"] for k, v in p.items()}
    assert profiles == {"101": "ENS", "102": "ENS", "201": "DIR", "202": "EVS", "203": "DOC"}
    assert p["101"]["person_key"] == f"STS${UAI}$101"
    assert p["101"]["last_name"] == "Enseignante" and p["101"]["birth_name"] == "Tableau"
    assert p["101"]["birth_date"] == "1980-05-17"
    assert p["101"]["sex"] == "F" and p["201"]["sex"] == "M"
    assert p["202"]["function"] == "EDU"


def test_sts_services_groups_and_head_teachers() -> None:
    res = read_sts(sts("sts_emp_fonctions_et_services.xml"), UAI)
    m = res.tables["memberships"]
    got = {
        (r["person_key"].rsplit("$", 1)[1], r["code"]): (r["kind"], r["subject"], r["head_teacher"])
        for r in m.pipe(records)
    }
    assert got == {
        ("101", "6A"): ("D", "030201", True),  # teaches English in 6A and heads it
        ("101", "6AGL1"): ("G", "030201", False),  # the group
        ("102", "6A"): ("D", "061300", False),
        ("102", "6B"): ("D", None, True),  # heads 6B without a service there
    }
    assert set(m["role"]) == {"teacher"}
    s = res.tables["structures"].set_index("code")
    assert s.loc["6A", "kind"] == "D" and s.loc["6A", "mefs"] == "10010012110"
    assert s.loc["6AGL1", "kind"] == "G" and s.loc["6AGL1", "divisions"] == "6A"
    assert sorted(res.tables["subjects"]["code"]) == ["030201", "061300"]
    assert list(res.tables["mefs"]["code"]) == ["10010012110"]


def test_sts_attribute_order_does_not_matter() -> None:
    res = read_sts(sts("sts_emp_attributs_ordre_varie.xml"), UAI)
    assert res.rejected == []
    assert list(res.tables["persons"]["source_id"]) == ["301"]
    m = res.tables["memberships"].pipe(records)
    assert [(r["person_key"], r["code"], r["subject"]) for r in m] == [
        (f"STS${UAI}$301", "5C", "061300")
    ]


# --- public samples ----------------------------------------------------------------------


@pytest.mark.samples
def test_siecle_samples_read_without_error(samples_dir: Path) -> None:
    files = sorted((samples_dir / "siecle").glob("*.xml"))
    assert files
    subjects = 0
    for f in files:
        d = read_header(XmlSource(f))
        assert d.uai and d.kind, f.name
        res = read_document(d, TODAY)
        assert res.rejected == [], f.name
        assert res.records > 0, f.name
        if d.kind == "ELEVES":
            assert len(res.tables["persons"]) > 0
            assert len(res.tables["memberships"]) > 0
        elif d.kind == "RESPONSABLES":
            assert len(res.tables["persons"]) > 0
            assert len(res.tables["guardian_links"]) > 0
        elif d.kind == "NOMENCLATURES":
            assert len(res.tables["mefs"]) > 0  # not every sample has MATIERES
            subjects += len(res.tables["subjects"])
    assert subjects > 0


@pytest.mark.samples
def test_sts_sample_reads_directly(samples_dir: Path) -> None:
    (f,) = sorted((samples_dir / "sts").glob("*.xml"))
    # discovery refuses it (its UAI 0750001A has a wrong check letter: see test_landing),
    # but the reader itself handles its shape
    res = read_sts(XmlSource(f), "0750001A")
    assert res.rejected == []
    assert len(res.tables["persons"]) == 1
    assert res.tables["persons"]["profile"][0] == "ENS"
    m = res.tables["memberships"].pipe(records)
    assert {(r["code"], r["kind"], r["subject"], r["head_teacher"]) for r in m} == {
        ("6E1", "D", "030101", True),
        ("6LV1.ALL", "G", "030101", False),
    }


# --- memory ------------------------------------------------------------------------------


def test_pupils_reader_releases_elements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a benchmark: proves the streaming reader frees what it has read.

    libxml2's tree lives outside Python's allocator, so tree size is sampled directly (every
    1000th released element); tracemalloc bounds the reader's Python working memory: rows
    are packed into Arrow arrays (outside tracemalloc) every ``CHUNK_ROWS`` rows, so its
    peak stays far below the file size however many pupils there are.
    """
    path = generate_pupils_file(tmp_path / "ElevesSansAdresses.xml", 20_000, 7, UAI)
    size = path.stat().st_size
    tree_sizes: list[int] = []
    calls = 0
    real_release = base_release

    def sampling_release(el: Any) -> None:
        nonlocal calls
        calls += 1
        if calls % 1000 == 0:
            tree_sizes.append(sum(1 for _ in el.getroottree().iter()))
        real_release(el)

    monkeypatch.setattr(siecle_mod, "release", sampling_release)
    monkeypatch.setattr(base_mod, "CHUNK_ROWS", 2000)  # Python objects for 2000 rows at most
    tracemalloc.start()
    try:
        res = read_siecle_eleves(XmlSource(path), UAI, TODAY)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(res.tables["persons"]) == 20_000
    # bounded by what the parser reads ahead (one chunk); unreleased it would be ~500k elements
    assert tree_sizes and max(tree_sizes) < 5000
    assert peak - current < 0.25 * size, (peak, current, size)


def test_pupils_tables_stay_smaller_than_the_file(tmp_path: Path) -> None:
    """A size bound, not a benchmark: the tables a pupils file is read into (every value
    counted, as pandas measures it) are well under the file's size. Kept as Python string
    objects they were about 1.6 times the file; as Arrow strings without the categorical
    columns, about 0.4 times; as they are, under 0.2."""
    path = generate_pupils_file(tmp_path / "ElevesSansAdresses.xml", 3_000, 11, UAI)
    size = path.stat().st_size
    res = read_siecle_eleves(XmlSource(path), UAI, TODAY)
    persons, members = res.tables["persons"], res.tables["memberships"]
    assert len(persons) == 3_000 and len(members) > 3_000
    used = sum(int(df.memory_usage(deep=True, index=False).sum()) for df in (persons, members))
    assert used < 0.3 * size, (used, size)
    # and the values are all there: missing stays missing, nothing became a number
    rows = records(persons)
    assert all(isinstance(r["person_key"], str) and isinstance(r["line"], int) for r in rows)
    assert {type(r["email"]) for r in rows} <= {str, type(None)}


def test_chunked_reading_matches_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows packed in many small chunks read exactly like rows packed at once, duplicates
    and second divisions included (they are found after packing)."""
    src = siecle("eleves_deux_divisions.xml")
    whole = read_siecle_eleves(src, UAI, TODAY)
    monkeypatch.setattr(base_mod, "CHUNK_ROWS", 1)
    tiny = read_siecle_eleves(src, UAI, TODAY)
    for t in ("persons", "memberships"):
        assert records(tiny.tables[t]) == records(whole.tables[t])
    assert [str(r) for r in tiny.rejected] == [str(r) for r in whole.rejected]


def _eleve(eid: str, birth: str) -> str:
    return (f'<ELEVE ELEVE_ID="{eid}"><NOM_DE_FAMILLE>Nom{eid}</NOM_DE_FAMILLE>'
            f"<PRENOM>Prenom</PRENOM><DATE_NAISS>{birth}</DATE_NAISS></ELEVE>\n")


def _structures(eid: str, *structures: tuple[str, str]) -> str:
    inner = "".join(f"<STRUCTURE><CODE_STRUCTURE>{c}</CODE_STRUCTURE>"
                    f"<TYPE_STRUCTURE>{k}</TYPE_STRUCTURE></STRUCTURE>\n" for c, k in structures)
    return f'<STRUCTURES_ELEVE ELEVE_ID="{eid}">\n{inner}</STRUCTURES_ELEVE>\n'


DUPLICATES_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<BEE_ELEVES VERSION="3.1"><DONNEES><ELEVES>\n'
    + _eleve("2001", "02/03/2013")
    + _eleve("2001", "2013-03-02")  # same id again, bad date too: "unique"
    + _eleve("2002", "31/02/2013")  # bad date first: it is not "the first" 2002
    + _eleve("2002", "01/03/2013")
    + _eleve("2003", "01/03/2013") + _eleve("2003", "01/03/2013") + _eleve("2003", "01/03/2013")
    + "</ELEVES><STRUCTURES>\n"
    + _structures("2001", ("5A", "D"), ("GR1", "G"))
    + _structures("2001", ("5B", "D"), ("GR1", "G"), ("GR2", "G"))  # second division
    + _structures("2001", ("5A", "D"))  # the same division again: dropped, not reported
    + _structures("2002", ("5B", "D"))
    + "</STRUCTURES></DONNEES></BEE_ELEVES>\n"
)


def _duplicates(tmp_path: Path) -> tuple[list[tuple[str, str, int | None]], Any, Any]:
    path = tmp_path / "ElevesSansAdresses.xml"
    path.write_text(DUPLICATES_XML, encoding="utf-8")
    res = read_siecle_eleves(XmlSource(path), UAI, TODAY)
    rejected = [(r.rule, r.message, r.line) for r in res.rejected]
    return rejected, records(res.tables["persons"]), records(res.tables["memberships"])


def test_duplicates_are_found_after_packing_as_in_document_order(tmp_path: Path) -> None:
    rejected, persons, members = _duplicates(tmp_path)
    assert [(rule, msg) for rule, msg, _ in rejected] == [
        ("unique", "ELEVE_ID 2001 appears twice"),
        ("date_format", "ELEVE_ID 2002: a date is not dd/mm/yyyy"),
        ("unique", "ELEVE_ID 2003 appears twice"),
        ("unique", "ELEVE_ID 2003 appears twice"),
        ("one_division", "ELEVE_ID 2001 is in divisions 5A and 5B; kept 5A"),
    ]
    lines = [line for _, _, line in rejected]
    assert lines == sorted(lines) and None not in lines
    assert [(p["source_id"], p["line"]) for p in persons] == [
        ("2001", 3), ("2002", 6), ("2003", 7)]
    assert [(m["person_key"], m["code"], m["kind"]) for m in members] == [
        (pkey("2001"), "5A", "D"), (pkey("2001"), "GR1", "G"), (pkey("2001"), "GR2", "G"),
        (pkey("2002"), "5B", "D")]


def test_colliding_hashes_or_tiny_chunks_change_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Duplicates are looked for among rows with equal hashes, then compared exactly: with
    every hash equal, and with one row per chunk, the result is the same."""
    expected = _duplicates(tmp_path)
    monkeypatch.setattr(siecle_mod, "hash", lambda _v: 0, raising=False)
    assert _duplicates(tmp_path) == expected
    monkeypatch.setattr(base_mod, "CHUNK_ROWS", 1)
    assert _duplicates(tmp_path) == expected
