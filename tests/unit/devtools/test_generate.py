"""The synthetic export generator: deterministic, well-formed, and carrying the hard cases."""

from __future__ import annotations

import datetime
import json
import re
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from lxml import etree

from etl.config import get_academy
from etl.devtools.generate import (
    ACADEMY_DEPARTMENTS,
    GenerateSummary,
    RegionSummary,
    generate_academy,
    generate_pupils_file,
    generate_region,
    region_school_counts,
    uai_check_letter,
)
from etl.discover.landing import discover
from etl.read import read_document
from etl.read.canonical import Tables
from etl.read.normalize import normalize_tables
from etl.validate.school import tables_fingerprint

ACADEMY = "ac-strasbourg"
SCHOOLS = 3
PUPILS = 120
SEED = 20261001
ISO_PROLOG = b'<?xml version="1.0" encoding="ISO-8859-15"?>\n'
SIECLE_ZIPS = {
    "ExportXML_ElevesSansAdresses.zip": ("ElevesSansAdresses.xml", "BEE_ELEVES"),
    "ExportXML_ResponsablesAvecAdresses.zip": ("ResponsablesAvecAdresses.xml", "BEE_RESPONSABLES"),
    "ExportXML_Nomenclature.zip": ("Nomenclature.xml", "BEE_NOMENCLATURES"),
    "ExportXML_Structures.zip": ("Structures.xml", "BEE_STRUCTURES"),
}
LEGAL_LINKS = "DONNEES/RESPONSABLES/RESPONSABLE_ELEVE[NIVEAU_RESPONSABILITE='1' or RESP_LEGAL!='0']"
INE = re.compile(r"^(\d{9}[A-Z]{2}|\d{10}[A-Z])$")


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True)


def _parse(raw: bytes) -> etree._ElementTree:
    return etree.ElementTree(etree.fromstring(raw, _parser()))


def _member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [name]
        return archive.read(name)


class School:
    """Parsed files of one generated school."""

    def __init__(self, folder: Path, year: int) -> None:
        self.uai = folder.name
        self.raw = {
            kind: _member(folder / zname, member) for zname, (member, kind) in SIECLE_ZIPS.items()
        }
        self.sts_raw = (folder / f"sts_emp_{self.uai}_{year}.xml").read_bytes()
        self.eleves = _parse(self.raw["BEE_ELEVES"]).getroot()
        self.resp = _parse(self.raw["BEE_RESPONSABLES"]).getroot()
        self.nomenclature = _parse(self.raw["BEE_NOMENCLATURES"]).getroot()
        self.structures = _parse(self.raw["BEE_STRUCTURES"]).getroot()
        self.sts_tree = _parse(self.sts_raw)
        self.sts = self.sts_tree.getroot()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerateSummary]:
    out = tmp_path_factory.mktemp("gen")
    return out, generate_academy(out, ACADEMY, SCHOOLS, PUPILS, SEED)


@pytest.fixture(scope="module")
def schools(generated: tuple[Path, GenerateSummary]) -> list[School]:
    out, summary = generated
    return [School(out / ACADEMY / uai, 2026) for uai in summary.schools]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = generate_academy(tmp_path / "a", "ac-reims", 2, 40, seed=7)
    second = generate_academy(tmp_path / "b", "ac-reims", 2, 40, seed=7)
    assert first.schools == second.schools
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 10
    assert a == b
    other = generate_academy(tmp_path / "c", "ac-reims", 2, 40, seed=8)
    assert other.schools != first.schools


def test_summary_lists_every_file(generated: tuple[Path, GenerateSummary]) -> None:
    out, summary = generated
    assert summary.academy == ACADEMY
    assert len(summary.schools) == SCHOOLS
    on_disk = sorted(p for p in (out / ACADEMY).rglob("*") if p.is_file())
    assert sorted(summary.files) == on_disk
    assert len(on_disk) == 5 * SCHOOLS


def test_zip_entries_are_dated_with_the_export_date(
    generated: tuple[Path, GenerateSummary],
) -> None:
    _out, summary = generated
    for path in summary.files:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                assert archive.infolist()[0].date_time[:3] == (2026, 10, 1)


def test_siecle_files_declare_and_use_iso_8859_15(schools: list[School]) -> None:
    for school in schools:
        for kind, raw in school.raw.items():
            assert raw.startswith(ISO_PROLOG), kind
            tree = _parse(raw)
            assert tree.docinfo.encoding == "ISO-8859-15"
            assert tree.getroot().tag == kind
            assert tree.getroot().findtext("PARAMETRES/UAJ") == school.uai
            assert tree.getroot().findtext("PARAMETRES/ANNEE_SCOLAIRE") == "2026"
            assert tree.getroot().findtext("PARAMETRES/DATE_EXPORT") == "01/10/2026"
            assert re.fullmatch(
                r"01/10/2026 \d\d:\d\d:\d\d", tree.getroot().findtext("PARAMETRES/HORODATAGE") or ""
            )
        # Non-ASCII names survive: decoding with the declared codec gives real accents.
        text = school.raw["BEE_ELEVES"].decode("iso8859_15")
        assert re.search("[éèêëçïîôöüäßœŒ]", text)
        assert "Ã" not in text  # no UTF-8 read as Latin-9
        assert school.eleves.get("VERSION") == "3.0"


def test_sts_files_use_both_encodings(schools: list[School]) -> None:
    encodings = set()
    for school in schools:
        encoding = school.sts_tree.docinfo.encoding
        encodings.add(encoding)
        assert school.sts_raw.startswith(f'<?xml version="1.0" encoding="{encoding}"?>'.encode())
        school.sts_raw.decode("utf-8" if encoding == "UTF-8" else "iso8859_15")
        assert school.sts.tag == "STS_EDT"
        assert school.sts.find("PARAMETRES/UAJ").get("CODE") == school.uai
        assert school.sts.find("PARAMETRES/ANNEE_SCOLAIRE").get("ANNEE") == "2026"
    assert encodings == {"UTF-8", "ISO-8859-15"}


@pytest.mark.parametrize("academy", sorted(ACADEMY_DEPARTMENTS))
def test_uais_are_valid_for_the_academy(tmp_path: Path, academy: str) -> None:
    summary = generate_academy(tmp_path, academy, 6, 5, seed=1)
    assert len(set(summary.schools)) == 6
    for uai in summary.schools:
        assert re.fullmatch(r"0\d{6}[A-Z]", uai)
        assert uai[:3] in ACADEMY_DEPARTMENTS[academy]
        assert uai[7] == uai_check_letter(uai[:7])
        assert (tmp_path / academy / uai).is_dir()


def test_counts_match_the_summary(
    generated: tuple[Path, GenerateSummary], schools: list[School]
) -> None:
    _out, summary = generated
    pupils = sum(len(s.eleves.findall("DONNEES/ELEVES/ELEVE")) for s in schools)
    guardians = sum(len(s.resp.findall("DONNEES/PERSONNES/PERSONNE")) for s in schools)
    teachers = sum(len(s.sts.xpath("DONNEES/INDIVIDUS/INDIVIDU[FONCTION='ENS']")) for s in schools)
    assert (pupils, guardians, teachers) == (summary.pupils, summary.guardians, summary.teachers)
    assert pupils == SCHOOLS * PUPILS
    for school in schools:
        assert len(school.eleves.findall("DONNEES/ELEVES/ELEVE")) == PUPILS
        ens = school.sts.xpath("DONNEES/INDIVIDUS/INDIVIDU[FONCTION='ENS']")
        assert len(ens) >= max(3, PUPILS // 12)
        for function in ("DIR", "EDU", "DOC"):
            assert len(school.sts.xpath(f"DONNEES/INDIVIDUS/INDIVIDU[FONCTION='{function}']")) == 1
    # About 1.6 legal guardians per pupil.
    legal = 0
    for school in schools:
        legal += len(school.resp.xpath(LEGAL_LINKS))
    assert 1.4 <= legal / pupils <= 1.9


def test_pupil_records_follow_the_format(schools: list[School]) -> None:
    without_ine = 0
    left = 0
    for school in schools:
        ids = Counter()
        for eleve in school.eleves.iterfind("DONNEES/ELEVES/ELEVE"):
            ids[eleve.get("ELEVE_ID")] += 1
            ine = eleve.findtext("ID_NATIONAL")
            if ine is None:
                without_ine += 1
            else:
                assert INE.match(ine), ine
            last = eleve.findtext("NOM_DE_FAMILLE") or ""
            assert last and last == "".join(c if c == "ß" else c.upper() for c in last)
            first = eleve.findtext("PRENOM") or ""
            assert first[:1].isupper()
            assert re.fullmatch(r"\d\d/\d\d/\d{4}", eleve.findtext("DATE_NAISS") or "")
            assert eleve.findtext("CODE_SEXE") in ("1", "2")
            assert len(eleve.findtext("CODE_MEF") or "") == 11
            sortie = eleve.findtext("DATE_SORTIE")
            if sortie is not None:
                left += 1
                assert datetime.datetime.strptime(sortie, "%d/%m/%Y").date() < datetime.date(
                    2026, 10, 1
                )
            etab = eleve.findtext("ID_ELEVE_ETAB") or ""
            assert len(etab) == 11 and etab.endswith(school.uai[1:7])
        assert set(ids.values()) == {1}
    assert without_ine >= 1
    assert without_ine < 0.1 * SCHOOLS * PUPILS
    assert left >= 1


def test_mel_is_sometimes_empty_and_sometimes_absent(schools: list[School]) -> None:
    empty = absent = 0
    for school in schools:
        for eleve in school.eleves.iterfind("DONNEES/ELEVES/ELEVE"):
            mel = eleve.find("MEL")
            if mel is None:
                absent += 1
            elif not mel.text:
                empty += 1
    assert empty and absent


def test_homonym_pupils_exist_in_one_school(schools: list[School]) -> None:
    found = False
    for school in schools:
        names = Counter(
            (e.findtext("NOM_DE_FAMILLE"), e.findtext("PRENOM"))
            for e in school.eleves.iterfind("DONNEES/ELEVES/ELEVE")
        )
        found = found or any(n >= 2 for n in names.values())
    assert found


def test_names_carry_accents_ligatures_and_punctuation(tmp_path: Path) -> None:
    text = ""
    summary = generate_academy(tmp_path, "ac-strasbourg", 4, 300, seed=3)
    for uai in summary.schools:
        for zname, (member, _kind) in SIECLE_ZIPS.items():
            if zname.startswith("ExportXML_Eleves") or zname.startswith("ExportXML_Resp"):
                text += _member(tmp_path / "ac-strasbourg" / uai / zname, member).decode(
                    "iso8859_15"
                )
    for needle in ("-", "'", " "):
        assert re.search(f"<(NOM_DE_FAMILLE|PRENOM)>[^<]*{needle}[^<]*<", text), needle
    assert re.search("<NOM_DE_FAMILLE>[^<]*[ÜÄÖß][^<]*<", text)
    assert re.search("<PRENOM>[^<]*[éèëïç][^<]*<", text)


def test_guardians_shared_across_schools(schools: list[School]) -> None:
    where: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    ids: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for school in schools:
        for person in school.resp.iterfind("DONNEES/PERSONNES/PERSONNE"):
            mel = person.findtext("MEL")
            if mel:
                key = (
                    person.findtext("NOM_DE_FAMILLE") or "",
                    person.findtext("PRENOM") or "",
                    mel,
                )
                where[key].add(school.uai)
                ids[key].add(f"{school.uai}:{person.get('PERSONNE_ID')}")
    shared = [k for k, uais in where.items() if len(uais) >= 2]
    assert shared
    assert all(len(ids[k]) >= 2 for k in shared)


def test_responsables_reference_pupils_and_persons(schools: list[School]) -> None:
    for school in schools:
        pupils = {e.get("ELEVE_ID") for e in school.eleves.iterfind("DONNEES/ELEVES/ELEVE")}
        persons = {p.get("PERSONNE_ID") for p in school.resp.iterfind("DONNEES/PERSONNES/PERSONNE")}
        addresses = {a.get("ADRESSE_ID") for a in school.resp.iterfind("DONNEES/ADRESSES/ADRESSE")}
        covered = set()
        for link in school.resp.iterfind("DONNEES/RESPONSABLES/RESPONSABLE_ELEVE"):
            assert link.findtext("ELEVE_ID") in pupils
            assert link.findtext("PERSONNE_ID") in persons
            assert link.findtext("CODE_PARENTE") in {"10", "20", "38", "50", "90"}
            covered.add(link.findtext("ELEVE_ID"))
        assert covered == pupils
        for person in school.resp.iterfind("DONNEES/PERSONNES/PERSONNE"):
            assert person.findtext("ADRESSE_ID") in addresses
            mobile = person.findtext("TEL_PORTABLE")
            assert mobile is None or re.fullmatch(r"\+33[67]\d{8}", mobile)


def test_both_responsables_conventions_present(schools: list[School]) -> None:
    conventions = set()
    for school in schools:
        links = school.resp.findall("DONNEES/RESPONSABLES/RESPONSABLE_ELEVE")
        old = [link for link in links if link.find("RESP_LEGAL") is not None]
        new = [link for link in links if link.find("NIVEAU_RESPONSABILITE") is not None]
        assert not (old and new), "one convention per file"
        if old:
            conventions.add("RESP_LEGAL")
            assert {link.findtext("RESP_LEGAL") for link in old} <= {"0", "1", "2"}
        if new:
            conventions.add("NIVEAU_RESPONSABILITE")
            assert {link.findtext("NIVEAU_RESPONSABILITE") for link in new} <= {"1", "3"}
    assert conventions == {"RESP_LEGAL", "NIVEAU_RESPONSABILITE"}


def test_non_legal_contacts_exist(tmp_path: Path) -> None:
    summary = generate_academy(tmp_path, "ac-nancy-metz", 3, 300, seed=11)
    parentes = Counter()
    for uai in summary.schools:
        raw = _member(
            tmp_path / "ac-nancy-metz" / uai / "ExportXML_ResponsablesAvecAdresses.zip",
            "ResponsablesAvecAdresses.xml",
        )
        root = _parse(raw).getroot()
        for link in root.iterfind("DONNEES/RESPONSABLES/RESPONSABLE_ELEVE"):
            parentes[link.findtext("CODE_PARENTE")] += 1
    assert parentes["10"] and parentes["20"]
    assert parentes["38"] + parentes["90"] >= 1


def test_sts_teacher_references_resolve(schools: list[School]) -> None:
    for school in schools:
        individus = {i.get("ID") for i in school.sts.iterfind("DONNEES/INDIVIDUS/INDIVIDU")}
        refs = school.sts.findall(".//ENSEIGNANT")
        assert refs
        for ref in refs:
            assert ref.get("ID") in individus
            assert ref.get("TYPE") == "epp"
        for individu in school.sts.iterfind("DONNEES/INDIVIDUS/INDIVIDU"):
            assert individu.get("TYPE") == "epp"
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", individu.findtext("DATE_NAISSANCE") or "")
            assert individu.findtext("SEXE") in ("1", "2")
        divisions = {
            d.get("CODE") for d in school.sts.iterfind("DONNEES/STRUCTURE/DIVISIONS/DIVISION")
        }
        heads = school.sts.findall("DONNEES/INDIVIDUS/INDIVIDU/PROFS_PRINC/PROF_PRINC")
        assert heads
        assert {h.findtext("CODE_STRUCTURE") for h in heads} <= divisions
        for group in school.sts.iterfind("DONNEES/STRUCTURE/GROUPES/GROUPE"):
            for link in group.iterfind("DIVISIONS_APPARTENANCE/DIVISION_APPARTENANCE"):
                assert link.get("CODE") in divisions


def test_teachers_teach_several_structures(schools: list[School]) -> None:
    for school in schools:
        per_teacher = Counter(
            ref.get("ID") for ref in school.sts.iterfind(".//SERVICE/ENSEIGNANTS/ENSEIGNANT")
        )
        ens = school.sts.xpath("DONNEES/INDIVIDUS/INDIVIDU[FONCTION='ENS']/@ID")
        busy = [i for i in ens if per_teacher[i] >= 2]
        assert len(busy) >= 0.8 * len(ens)


def test_teachers_in_two_schools_exist(schools: list[School]) -> None:
    where: dict[tuple[str, str, str], set[tuple[str, str]]] = defaultdict(set)
    for school in schools:
        for t in school.sts.xpath("DONNEES/INDIVIDUS/INDIVIDU[FONCTION='ENS']"):
            key = (t.findtext("NOM_USAGE"), t.findtext("PRENOM"), t.findtext("DATE_NAISSANCE"))
            where[key].add((school.uai, t.get("ID")))
    shared = [v for v in where.values() if len({uai for uai, _id in v}) >= 2]
    assert shared
    for entries in shared:
        assert len({sts_id for _uai, sts_id in entries}) == len(entries)


def test_structures_are_consistent(schools: list[School]) -> None:
    for school in schools:
        divisions = {
            d.get("CODE_STRUCTURE")
            for d in school.structures.iterfind("DONNEES/DIVISIONS/DIVISION")
        }
        groups = {
            g.get("CODE_STRUCTURE") for g in school.structures.iterfind("DONNEES/GROUPES/GROUPE")
        }
        mefs = {m.get("CODE_MEF") for m in school.nomenclature.iterfind("DONNEES/MEFS/MEF")}
        assert divisions and groups and mefs
        assert all(len(code) <= 8 for code in divisions | groups)
        assert "INACTIFS" not in {c.upper() for c in divisions}
        for division in school.structures.iterfind("DONNEES/DIVISIONS/DIVISION"):
            assert division.findtext("MEFS_APPARTENANCE/MEF_APPARTENANCE/CODE_MEF") in mefs
        for group in school.structures.iterfind("DONNEES/GROUPES/GROUPE"):
            links = group.findall("DIVISIONS_APPARTENANCE/DIVISION_APPARTENANCE/CODE_STRUCTURE")
            assert links and {link.text for link in links} <= divisions
        # Same structure codes in STS.
        sts_divisions = {
            d.get("CODE") for d in school.sts.iterfind("DONNEES/STRUCTURE/DIVISIONS/DIVISION")
        }
        assert sts_divisions == divisions
        # ELEVES come before STRUCTURES; each pupil has one D and at most two G.
        donnees = [child.tag for child in school.eleves.find("DONNEES")]
        assert donnees.index("ELEVES") < donnees.index("STRUCTURES")
        sizes = Counter()
        pupils = {e.get("ELEVE_ID") for e in school.eleves.iterfind("DONNEES/ELEVES/ELEVE")}
        seen = set()
        for block in school.eleves.iterfind("DONNEES/STRUCTURES/STRUCTURES_ELEVE"):
            seen.add(block.get("ELEVE_ID"))
            kinds = Counter(s.findtext("TYPE_STRUCTURE") for s in block.iterfind("STRUCTURE"))
            assert kinds["D"] == 1 and kinds["G"] <= 2
            for structure in block.iterfind("STRUCTURE"):
                code = structure.findtext("CODE_STRUCTURE")
                if structure.findtext("TYPE_STRUCTURE") == "D":
                    assert code in divisions
                    sizes[code] += 1
                else:
                    assert code in groups
        assert seen == pupils
        assert max(sizes.values()) <= 30


def test_collèges_and_lycées_are_generated(schools: list[School]) -> None:
    kinds = {s.sts.findtext("PARAMETRES/UAJ/DENOM_PRINC") for s in schools}
    assert kinds == {"COLLEGE", "LYCEE GENERAL ET TECHNOLOGIQUE"}
    codes = {
        d.get("CODE_STRUCTURE")
        for s in schools
        for d in s.structures.iterfind("DONNEES/DIVISIONS/DIVISION")
    }
    assert "6A" in codes and "2NDE1" in codes and "TG1" in codes


def test_export_date_and_year_are_honoured(tmp_path: Path) -> None:
    summary = generate_academy(
        tmp_path, "ac-reims", 1, 10, seed=5, year=2025, export_date=datetime.date(2026, 3, 15)
    )
    folder = tmp_path / "ac-reims" / summary.schools[0]
    root = _parse(
        _member(folder / "ExportXML_ElevesSansAdresses.zip", "ElevesSansAdresses.xml")
    ).getroot()
    assert root.findtext("PARAMETRES/ANNEE_SCOLAIRE") == "2025"
    assert root.findtext("PARAMETRES/DATE_EXPORT") == "15/03/2026"
    assert (folder / f"sts_emp_{summary.schools[0]}_2025.xml").is_file()


def test_rejects_unknown_academy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="academy"):
        generate_academy(tmp_path, "ac-paris", 1, 10, seed=1)


def test_generate_pupils_file(tmp_path: Path) -> None:
    uai = "0672615" + uai_check_letter("0672615")
    path = generate_pupils_file(tmp_path / "big" / "eleves.xml", 500, seed=9, uai=uai)
    again = generate_pupils_file(tmp_path / "again.xml", 500, seed=9, uai=uai)
    raw = path.read_bytes()
    assert raw == again.read_bytes()
    assert raw.startswith(ISO_PROLOG)
    root = _parse(raw).getroot()
    assert root.tag == "BEE_ELEVES"
    assert root.findtext("PARAMETRES/UAJ") == uai
    pupils = root.findall("DONNEES/ELEVES/ELEVE")
    assert len(pupils) == 500
    assert len(root.findall("DONNEES/STRUCTURES/STRUCTURES_ELEVE")) == 500
    assert 600 <= len(raw) / 500 <= 1600  # about 1 KB per pupil
    with pytest.raises(ValueError, match="UAI"):
        wrong = "A" if uai[7] != "A" else "B"
        generate_pupils_file(tmp_path / "bad.xml", 1, seed=1, uai=uai[:7] + wrong)


# --------------------------------------------------------------------------------------------
# The region generator


REGION_SCALE = 0.01  # 7 schools, ~5k pupils: both kinds in two academies, under a second


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RegionSummary]:
    out = tmp_path_factory.mktemp("region")
    return out, generate_region(out, REGION_SCALE, seed=5)


@pytest.fixture(scope="module")
def region_schools(region: tuple[Path, RegionSummary]) -> dict[str, list[School]]:
    out, summary = region
    return {
        academy: [School(out / academy / uai, 2026) for uai in s.schools]
        for academy, s in summary.academies.items()
    }


def test_region_counts_follow_grand_est_proportions() -> None:
    full = region_school_counts(1.0)
    colleges = sum(c for c, _l in full.values())
    lycees = sum(lycees for _c, lycees in full.values())
    assert 490 <= colleges <= 510 and 175 <= lycees <= 185
    total = colleges + lycees
    shares = {a: (c + lycees) / total for a, (c, lycees) in full.items()}
    assert shares["ac-nancy-metz"] == pytest.approx(0.45, abs=0.01)
    assert shares["ac-strasbourg"] == pytest.approx(0.30, abs=0.01)
    assert shares["ac-reims"] == pytest.approx(0.25, abs=0.01)
    tiny = region_school_counts(0.0001)
    assert set(tiny) == set(ACADEMY_DEPARTMENTS)
    assert all(c + lycees == 1 for c, lycees in tiny.values())
    with pytest.raises(ValueError):
        region_school_counts(0)


def test_region_writes_every_academy_with_its_departments(
    region: tuple[Path, RegionSummary],
) -> None:
    out, summary = region
    assert set(summary.academies) == set(ACADEMY_DEPARTMENTS)
    expected = region_school_counts(REGION_SCALE)
    for academy, s in summary.academies.items():
        assert len(s.schools) == sum(expected[academy])
        assert sorted(p.name for p in (out / academy).iterdir()) == sorted(s.schools)
        assert all(u[:3] in ACADEMY_DEPARTMENTS[academy] for u in s.schools)
        assert all(uai_check_letter(u[:7]) == u[7] for u in s.schools)
    assert summary.schools == sum(sum(c) for c in expected.values())
    assert summary.files == 5 * summary.schools


def test_region_school_sizes_and_ratios_are_realistic(
    region: tuple[Path, RegionSummary], region_schools: dict[str, list[School]]
) -> None:
    _out, summary = region
    kinds = Counter()
    pupils = links = teachers = 0
    for schools in region_schools.values():
        for school in schools:
            n = len(school.eleves.findall("DONNEES/ELEVES/ELEVE"))
            college = school.sts.findtext("PARAMETRES/UAJ/DENOM_PRINC") == "COLLEGE"
            kinds[college] += 1
            low, high = (300, 700) if college else (600, 1500)
            assert low <= n <= high, (school.uai, n)
            pupils += n
            links += len(school.resp.xpath(LEGAL_LINKS))
            teachers += len(school.sts.xpath("DONNEES/INDIVIDUS/INDIVIDU[FONCTION='ENS']"))
    assert kinds[True] and kinds[False]
    assert pupils == summary.pupils
    assert 1.45 <= links / pupils <= 1.85  # ~1.6 legal guardians per pupil
    assert 10 <= pupils / teachers <= 14  # ~1 teacher per 12 pupils


def test_region_guardians_shared_between_siblings_and_teachers_between_schools(
    region_schools: dict[str, list[School]],
) -> None:
    sibling_guardians = 0
    teacher_schools: dict[tuple[str | None, ...], set[str]] = defaultdict(set)
    for schools in region_schools.values():
        for school in schools:
            per_person = Counter(
                link.findtext("PERSONNE_ID") for link in school.resp.xpath(LEGAL_LINKS)
            )
            sibling_guardians += sum(1 for n in per_person.values() if n >= 2)
            for t in school.sts.xpath("DONNEES/INDIVIDUS/INDIVIDU[FONCTION='ENS']"):
                key = (t.findtext("NOM_USAGE"), t.findtext("PRENOM"), t.findtext("DATE_NAISSANCE"))
                teacher_schools[key].add(school.uai)
    assert sibling_guardians > 100
    assert sum(1 for uais in teacher_schools.values() if len(uais) >= 2) > 5


def test_region_same_seed_same_bytes_and_new_date_same_people(tmp_path: Path) -> None:
    first = generate_region(tmp_path / "a", 0.002, seed=3)
    again = generate_region(tmp_path / "b", 0.002, seed=3)
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    later = generate_region(tmp_path / "c", 0.002, seed=3, export_date=datetime.date(2026, 10, 2))
    assert [a.schools for a in later.academies.values()] == [
        a.schools for a in first.academies.values()
    ]
    assert (later.pupils, later.guardians, later.teachers) == (
        again.pupils,
        again.guardians,
        again.teachers,
    )
    assert _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")
    # what the exports say of people is the same: only the export dates moved, so each
    # school's normalized tables hash the same (the no-change night of `make bench`)
    academy = get_academy("ac-reims")
    for uai in sorted(p.name for p in (tmp_path / "a" / "ac-reims").iterdir()):
        prints = set()
        for tree in ("a", "c"):
            docs = [d for d in discover(tmp_path / tree, academy) if d.uai == uai]
            tables = normalize_tables(Tables.concat([read_document(d).tables for d in docs]),
                                      academy.jointure_prefix)
            prints.add(tables_fingerprint(tables, sorted({str(d.kind) for d in docs})))
        assert len(prints) == 1, uai
    # and the files' bytes past their headers are the same: the sync skips them unread
    for academy_code in ACADEMY_DEPARTMENTS:
        academy = get_academy(academy_code)
        a = {(d.uai, d.kind): d for d in discover(tmp_path / "a", academy)}
        c = {(d.uai, d.kind): d for d in discover(tmp_path / "c", academy)}
        assert a.keys() == c.keys() and a
        assert all(a[k].content_sha256 == c[k].content_sha256 for k in a)
        assert any(a[k].sha256 != c[k].sha256 for k in a)


def test_cli_generates_the_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from etl.cli import main

    assert main(["generate", "--region", "--scale", "0.002", "--seed", "2", "--out",
                 str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schools"] == 3 and set(out["academies"]) == set(ACADEMY_DEPARTMENTS)
    assert main(["generate", "--academy", "ac-reims", "--schools", "1", "--pupils-per-school",
                 "20", "--out", str(tmp_path / "one")]) == 0
    assert json.loads(capsys.readouterr().out)["pupils"] == 20
    assert main(["generate", "--out", str(tmp_path / "none")]) == 2
