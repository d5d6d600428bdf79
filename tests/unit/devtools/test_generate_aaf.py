"""`generate --format aaf`: the same academy as the SIECLE/STS generation, as AAF files."""

from __future__ import annotations

import datetime
import hashlib
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
from lxml import etree

from etl.devtools.generate import GenerateSummary, generate_academy, generate_region
from etl.devtools.generate.aaf import AAF_TYPES, DOCTYPE, aaf_files
from etl.devtools.generate.aaf_delta import Records, generate_aaf_delta, read_complet, read_night
from tests.paths import SAMPLES

ACADEMY = "ac-strasbourg"
SCHOOLS = 3
PUPILS = 120
SEED = 20261001
PART = 50
DTD_PATH = SAMPLES / "aaf" / "ficAlimMENESR.dtd"


def _parse(path: Path) -> etree._ElementTree:
    return etree.parse(str(path), etree.XMLParser(load_dtd=False, resolve_entities=False,
                                                  no_network=True))


def _records(folder: Path, aaf_type: str) -> Records:
    return read_complet(aaf_files(folder, "Complet", aaf_type))


def _one(attrs: list[tuple[str, list[str]]], name: str) -> list[str]:
    return next((v for n, v in attrs if n == name), [])


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, GenerateSummary]:
    """The same seed as SIECLE/STS and as AAF (parts of PART records)."""
    siecle = tmp_path_factory.mktemp("siecle")
    aaf = tmp_path_factory.mktemp("aaf")
    generate_academy(siecle, ACADEMY, SCHOOLS, PUPILS, SEED)
    summary = generate_academy(aaf, ACADEMY, SCHOOLS, PUPILS, SEED, fmt="aaf",
                               part_records=PART)
    return siecle / ACADEMY, aaf / ACADEMY, summary


def _siecle(folder: Path, zname: str, member: str) -> etree._Element:
    with zipfile.ZipFile(folder / zname) as archive:
        return etree.fromstring(archive.read(member),
                                etree.XMLParser(resolve_entities=False, no_network=True))


def _siecle_pupils(root: Path) -> dict[str, dict[str, str]]:
    """Per current pupil (no DATE_SORTIE) with an INE: UAI, ELEVE_ID and division."""
    out: dict[str, dict[str, str]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        eleves = _siecle(folder, "ExportXML_ElevesSansAdresses.zip", "ElevesSansAdresses.xml")
        division = {
            s.get("ELEVE_ID"): s.findtext("STRUCTURE[TYPE_STRUCTURE='D']/CODE_STRUCTURE")
            for s in eleves.iterfind("DONNEES/STRUCTURES/STRUCTURES_ELEVE")}
        for e in eleves.iterfind("DONNEES/ELEVES/ELEVE"):
            if e.find("DATE_SORTIE") is None and e.findtext("ID_NATIONAL"):
                out[e.findtext("ID_NATIONAL", "")] = {
                    "uai": folder.name, "eleve_id": e.get("ELEVE_ID", ""),
                    "division": division[e.get("ELEVE_ID")] or ""}
    return out


def test_file_names_parts_and_prolog(both: tuple[Path, Path, GenerateSummary]) -> None:
    _siecle_root, folder, summary = both
    assert sorted(summary.files) == sorted(folder.iterdir())
    for aaf_type in AAF_TYPES:
        parts = aaf_files(folder, "Complet", aaf_type)
        assert [p.name for p in parts] == [
            f"ENT_Complet_20261001_{aaf_type}_{n:04d}.xml" for n in range(len(parts))]
        counts = [len(_parse(p).getroot().findall("addRequest")) for p in parts]
        assert all(c == PART for c in counts[:-1]) and 0 < counts[-1] <= PART, counts
        for p in parts:
            head = p.read_bytes()[:200].decode("utf-8")
            assert head.startswith(f'<?xml version="1.0" encoding="UTF-8"?>\n{DOCTYPE}\n'
                                   "<ficAlimMENESR>\n")
    assert len(aaf_files(folder, "Complet", "Eleve")) > 2  # the split really happened
    assert summary.pupils == len(_records(folder, "Eleve"))
    assert summary.guardians == len(_records(folder, "PersRelEleve"))


@pytest.mark.skipif(not DTD_PATH.is_file(), reason="shared/samples/aaf absent")
def test_every_file_valid_against_the_dtd(both: tuple[Path, Path, GenerateSummary],
                                          tmp_path: Path) -> None:
    _siecle_root, folder, _summary = both
    generate_aaf_delta(folder.parent, tmp_path / "delta", datetime.date(2026, 10, 2), 3,
                       share=0.1, part_records=PART)
    dtd = etree.DTD(str(DTD_PATH))
    files = sorted(folder.glob("*.xml")) + sorted((tmp_path / "delta").rglob("*.xml"))
    assert len(files) > 8
    for path in files:
        assert dtd.validate(_parse(path)), (path.name, dtd.error_log.filter_from_errors())


def test_same_seed_same_bytes_other_seed_other_people(tmp_path: Path) -> None:
    a = generate_academy(tmp_path / "a", "ac-reims", 2, 40, seed=7, fmt="aaf")
    generate_academy(tmp_path / "b", "ac-reims", 2, 40, seed=7, fmt="aaf")
    generate_academy(tmp_path / "c", "ac-reims", 2, 40, seed=8, fmt="aaf")
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    eleves = "ac-reims/ENT_Complet_20261001_Eleve_0000.xml"
    assert _tree_bytes(tmp_path / "a")[eleves] != _tree_bytes(tmp_path / "c")[eleves]
    assert a.pupils > 0


def test_siecle_output_unchanged_by_the_aaf_writer(tmp_path: Path) -> None:
    """The SIECLE/STS bytes of a small academy, pinned from before the AAF writer existed
    (its per-school draws were moved, not changed)."""
    generate_academy(tmp_path, "ac-reims", 2, 30, seed=5)
    digest = hashlib.sha256()
    for name, data in _tree_bytes(tmp_path).items():
        digest.update(name.encode() + b"\0" + data)
    assert digest.hexdigest() == PINNED_SIECLE


#: sha256 of generate_academy(tmp, "ac-reims", 2, 30, seed=5) at c45e61a, before the AAF writer
PINNED_SIECLE = "b6d75a12cf681e1bf63d3fa39eb85b3ca34f2acecea7b106866bb5c9401086c8"


def test_same_people_schools_and_classes_as_siecle(
        both: tuple[Path, Path, GenerateSummary]) -> None:
    siecle_root, folder, _summary = both
    schools = _records(folder, "EtabEducNat")
    uai_of = {j: _one(a, "ENTStructureUAI")[0] for j, a in schools.items()}
    assert sorted(uai_of.values()) == sorted(p.name for p in siecle_root.iterdir())
    siecle = _siecle_pupils(siecle_root)
    pupils = _records(folder, "Eleve")
    by_ine = {_one(a, "ENTEleveINE")[0]: a for a in pupils.values() if _one(a, "ENTEleveINE")[0]}
    assert set(by_ine) == set(siecle)
    assert len(pupils) > len(by_ine)  # pupils without INE are there too, with an empty INE
    for ine, attrs in by_ine.items():
        jointure = _one(attrs, "ENTPersonStructRattach")[0]
        assert uai_of[jointure] == siecle[ine]["uai"]
        assert _one(attrs, "ENTEleveStructRattachId") == [siecle[ine]["eleve_id"]]
        assert _one(attrs, "ENTEleveClasses") == [f"{jointure}${siecle[ine]['division']}"]
    for jointure, attrs in schools.items():
        structures = _siecle(siecle_root / uai_of[jointure], "ExportXML_Structures.zip",
                             "Structures.xml")
        divisions = [d.get("CODE_STRUCTURE") for d in structures.iterfind(
            "DONNEES/DIVISIONS/DIVISION")]
        groups = [g.get("CODE_STRUCTURE") for g in structures.iterfind(
            "DONNEES/GROUPES/GROUPE")]
        assert [v.split("$")[0] for v in _one(attrs, "ENTStructureClasses")] == divisions
        assert [v.split("$")[0] for v in _one(attrs, "ENTStructureGroupes")] == groups


def test_ids_are_the_academys_not_siecle_or_sts(both: tuple[Path, Path, GenerateSummary],
                                                tmp_path: Path) -> None:
    siecle_root, folder, _summary = both
    siecle_ids: set[str] = set()
    for school in siecle_root.iterdir():
        eleves = _siecle(school, "ExportXML_ElevesSansAdresses.zip", "ElevesSansAdresses.xml")
        resp = _siecle(school, "ExportXML_ResponsablesAvecAdresses.zip",
                       "ResponsablesAvecAdresses.xml")
        sts = _parse(next(school.glob("sts_emp_*.xml"))).getroot()
        siecle_ids |= {e.get("ELEVE_ID", "") for e in eleves.iter("ELEVE")}
        siecle_ids |= {p.get("PERSONNE_ID", "") for p in resp.iter("PERSONNE")}
        siecle_ids |= {i.get("ID", "") for i in sts.iter("INDIVIDU")}
    ids = {aaf_type: set(_records(folder, aaf_type)) for aaf_type in AAF_TYPES}
    people = ids["Eleve"] | ids["PersRelEleve"] | ids["PersEducNat"]
    assert len(people) == sum(len(ids[t]) for t in ("Eleve", "PersRelEleve", "PersEducNat"))
    assert not people & siecle_ids
    for aaf_type in ("Eleve", "PersRelEleve", "PersEducNat"):
        for ident, attrs in _records(folder, aaf_type).items():
            assert _one(attrs, "ENTPersonJointure") == [ident]
    # another night (export date) of the same seed: the same ids for the same people
    generate_academy(tmp_path, ACADEMY, SCHOOLS, PUPILS, SEED, fmt="aaf",
                     export_date=datetime.date(2026, 10, 9))
    later = tmp_path / ACADEMY
    for aaf_type in AAF_TYPES:
        assert read_complet(aaf_files(later, "Complet", aaf_type)) == _records(folder, aaf_type)


def test_guardian_of_two_children_in_two_schools(
        both: tuple[Path, Path, GenerateSummary]) -> None:
    _siecle_root, folder, _summary = both
    pupils = _records(folder, "Eleve")
    shared = [
        (ident, attrs) for ident, attrs in _records(folder, "PersRelEleve").items()
        if len({_one(pupils[c], "ENTPersonStructRattach")[0]
                for c in _one(attrs, "ENTAuxPersRelEleveEleve")}) == 2]
    assert shared, "generate_academy guarantees a family across two schools"
    ident, attrs = shared[0]
    for child in _one(attrs, "ENTAuxPersRelEleveEleve"):
        links = {v.split("$")[0]: v.split("$") for v in _one(pupils[child],
                                                            "ENTElevePersRelEleve")}
        assert len(links[ident]) == 6 and links[ident][3] == "1"  # fourth field: legal
        assert ident in _one(pupils[child], "ENTEleveAutoriteParentale")


def _sts_teachers(siecle_root: Path) -> dict[tuple[str, str, str], set[str]]:
    """(last name, first name, birth date dd/mm/yyyy) -> UAIs of every STS individual."""
    out: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for school in siecle_root.iterdir():
        for i in _parse(next(school.glob("sts_emp_*.xml"))).getroot().iter("INDIVIDU"):
            born = datetime.date.fromisoformat(i.findtext("DATE_NAISSANCE", ""))
            out[(i.findtext("NOM_USAGE", ""), i.findtext("PRENOM", ""),
                 f"{born:%d/%m/%Y}")].add(school.name)
    return out


def test_staff_are_sts_staff_one_record_across_schools(
        both: tuple[Path, Path, GenerateSummary]) -> None:
    siecle_root, folder, _summary = both
    uai_of = {j: _one(a, "ENTStructureUAI")[0] for j, a in _records(folder, "EtabEducNat").items()}
    staff = _records(folder, "PersEducNat")
    aaf: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for attrs in staff.values():
        key = (_one(attrs, "sn")[0], _one(attrs, "givenName")[0],
               _one(attrs, "ENTPersonDateNaissance")[0])
        aaf[key] |= {uai_of[f.split("$")[0]] for f in _one(attrs, "ENTPersonFonctions")}
    assert aaf == _sts_teachers(siecle_root)
    two = [a for a in staff.values()
           if len({f.split("$")[0] for f in _one(a, "ENTPersonFonctions")}) == 2]
    assert two, "generate_academy guarantees a teacher in two schools"
    structures = {f.split("$")[0] for f in _one(two[0], "ENTPersonFonctions")}
    taught = {c.split("$")[0] for c in _one(two[0], "ENTAuxEnsClasses")
              + _one(two[0], "ENTAuxEnsGroupes")}
    assert taught <= structures and _one(two[0], "ENTPersonFonctions")[0].split("$")[1] == "ENS"


def test_services_and_head_teachers_are_the_sts_ones(
        both: tuple[Path, Path, GenerateSummary]) -> None:
    siecle_root, folder, _summary = both
    uai_of = {j: _one(a, "ENTStructureUAI")[0] for j, a in _records(folder, "EtabEducNat").items()}
    sts_head: set[tuple[str, str, str]] = set()
    sts_services: set[tuple[str, str, str]] = set()
    for school in siecle_root.iterdir():
        root = _parse(next(school.glob("sts_emp_*.xml"))).getroot()
        names = {i.get("ID"): i.findtext("NOM_USAGE", "") + " " + i.findtext("PRENOM", "")
                 for i in root.iter("INDIVIDU")}
        for i in root.iter("INDIVIDU"):
            for code in i.iterfind("PROFS_PRINC/PROF_PRINC/CODE_STRUCTURE"):
                sts_head.add((names[i.get("ID")], school.name, code.text or ""))
        for structure in root.iterfind("DONNEES/STRUCTURE/*/*"):
            for service in structure.iterfind("SERVICES/SERVICE"):
                for t in service.iterfind("ENSEIGNANTS/ENSEIGNANT"):
                    sts_services.add((names[t.get("ID")], school.name,
                                      f"{structure.get('CODE')}${service.get('CODE_MATIERE')}"))
    aaf_head: set[tuple[str, str, str]] = set()
    aaf_services: set[tuple[str, str, str]] = set()
    for attrs in _records(folder, "PersEducNat").values():
        name = f"{_one(attrs, 'sn')[0]} {_one(attrs, 'givenName')[0]}"
        for v in _one(attrs, "ENTAuxEnsClassesPrincipal"):
            if v:
                j, code = v.split("$")
                aaf_head.add((name, uai_of[j], code))
        for v in _one(attrs, "ENTAuxEnsClassesMatieres") + _one(attrs,
                                                                "ENTAuxEnsGroupesMatieres"):
            if v:
                j, code, subject = v.split("$")
                aaf_services.add((name, uai_of[j], f"{code}${subject}"))
    assert sts_head and aaf_head == sts_head
    assert sts_services and aaf_services == sts_services


def _apply(previous: dict[str, Records], delta_folder: Path) -> dict[str, Records]:
    """A reference Delta applier: add, replace the attributes named, delete."""
    out = {t: {k: list(v) for k, v in r.items()} for t, r in previous.items()}
    for aaf_type in AAF_TYPES:
        records = out.setdefault(aaf_type, {})
        for path in aaf_files(delta_folder, "Delta", aaf_type):
            for el in _parse(path).getroot():
                ident = el.findtext("identifier/id") or ""
                if el.tag == "addRequest":
                    assert ident not in records
                    records[ident] = [(a.get("name", ""), [v.text or "" for v in a])
                                      for a in el.iterfind("attributes/attr")]
                elif el.tag == "modifyRequest":
                    attrs = dict(records[ident])
                    for m in el.iterfind("modifications/modification"):
                        assert m.get("operation") == "replace"
                        attrs[m.get("name", "")] = [v.text or "" for v in m]
                    records[ident] = list(attrs.items())
                else:
                    assert el.tag == "deleteRequest"
                    del records[ident]
    return out


def _as_dicts(night: dict[str, Records]) -> dict[str, dict[str, dict[str, list[str]]]]:
    return {t: {k: {n: v for n, v in a if v != [""]} for k, a in r.items()}
            for t, r in night.items()}


def test_delta_turns_the_complet_into_the_next_nights(
        both: tuple[Path, Path, GenerateSummary], tmp_path: Path) -> None:
    _siecle_root, folder, _summary = both
    night = generate_aaf_delta(folder.parent, tmp_path / "delta", datetime.date(2026, 10, 2),
                               seed=3, share=0.05, complet_out=tmp_path / "complet")
    counts = night.delta[ACADEMY]
    assert counts.add and counts.modify and counts.delete  # each request kind
    assert night.mutations["arrival"] and night.mutations["departure"]
    names = sorted(p.name for p in (tmp_path / "delta" / ACADEMY).iterdir())
    assert names == sorted(f"ENT_Delta_20261002_{t}_0000.xml" for t in AAF_TYPES)
    before = read_night(folder)
    after = read_night(tmp_path / "complet" / ACADEMY)
    assert before != after
    assert _as_dicts(_apply(before, tmp_path / "delta" / ACADEMY)) == _as_dicts(after)
    # the same previous night and seed: the same Delta bytes
    generate_aaf_delta(folder.parent, tmp_path / "again", datetime.date(2026, 10, 2), seed=3,
                       share=0.05)
    assert _tree_bytes(tmp_path / "again") == _tree_bytes(tmp_path / "delta")


def test_region_as_aaf_has_a_teacher_in_two_schools(tmp_path: Path) -> None:
    region = generate_region(tmp_path, 0.01, seed=7, fmt="aaf")
    assert set(region.academies) == {p.name for p in tmp_path.iterdir()}
    two = 0
    for academy in region.academies:
        for attrs in _records(tmp_path / academy, "PersEducNat").values():
            two += len({f.split("$")[0] for f in _one(attrs, "ENTPersonFonctions")}) > 1
    assert two > 0
    assert region.pupils == sum(len(_records(tmp_path / a, "Eleve")) for a in region.academies)


def test_cli_generate_aaf_and_delta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from etl.cli import main

    assert main(["generate", "--academy", "ac-reims", "--schools", "2",
                 "--pupils-per-school", "30", "--format", "aaf", "--part-records", "20",
                 "--out", str(tmp_path / "night1")]) == 0
    parts = aaf_files(tmp_path / "night1" / "ac-reims", "Complet", "Eleve")
    assert len(parts) >= 3
    assert main(["generate", "--aaf-delta-from", str(tmp_path / "night1"),
                 "--out", str(tmp_path / "night2"), "--delta-share", "0.1"]) == 0
    assert aaf_files(tmp_path / "night2" / "ac-reims", "Delta", "Eleve")[0].name == (
        "ENT_Delta_20261002_Eleve_0000.xml")
    assert main(["generate", "--aaf-delta-from", str(tmp_path / "none"),
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["generate", "--academy", "ac-reims", "--format", "aaf", "--part-records",
                 "0", "--out", str(tmp_path / "y")]) == 2
    capsys.readouterr()
