"""La rentrée export set (etl/devtools/generate/rentree.py): the next school year of the same
academy, deterministic, leaving tonight's bytes alone, with the moves a September brings."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from etl.cli import main
from etl.config import get_academy
from etl.devtools.generate import (
    Rentree,
    RentreeShares,
    default_rentree_date,
    generate_academy,
    generate_region,
)
from etl.discover.landing import discover
from etl.read import read_document

ACADEMY = "ac-strasbourg"
SEED = 4


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _xml(folder: Path, zname: str, member: str) -> etree._Element:
    with zipfile.ZipFile(folder / zname) as z:
        return etree.fromstring(z.read(member))


def _pupils(folder: Path) -> dict[str, dict[str, str | None]]:
    """ELEVE_ID -> INE, MEF, division, previous class, entry date."""
    root = _xml(folder, "ExportXML_ElevesSansAdresses.zip", "ElevesSansAdresses.xml")
    div = {s.get("ELEVE_ID"): s.findtext("STRUCTURE[TYPE_STRUCTURE='D']/CODE_STRUCTURE")
           for s in root.iterfind("DONNEES/STRUCTURES/STRUCTURES_ELEVE")}
    return {e.get("ELEVE_ID") or "": {
        "ine": e.findtext("ID_NATIONAL"), "mef": e.findtext("CODE_MEF"),
        "div": div.get(e.get("ELEVE_ID")), "left": e.findtext("DATE_SORTIE"),
        "previous": e.findtext("SCOLARITE_AN_DERNIER/CODE_STRUCTURE")}
        for e in root.iterfind("DONNEES/ELEVES/ELEVE")}


def _guardian_ids(folder: Path) -> set[str]:
    root = _xml(folder, "ExportXML_ResponsablesAvecAdresses.zip",
                "ResponsablesAvecAdresses.xml")
    return {p.get("PERSONNE_ID") or "" for p in root.iterfind("DONNEES/PERSONNES/PERSONNE")}


def _teachers(folder: Path, year: int) -> dict[str, str]:
    """STS id -> name and birth date of the school's individuals."""
    root = etree.parse(str(folder / f"sts_emp_{folder.name}_{year}.xml")).getroot()
    return {i.get("ID") or "": f"{i.findtext('NOM_USAGE')}|{i.findtext('PRENOM')}|"
            f"{i.findtext('DATE_NAISSANCE')}" for i in root.iterfind(".//INDIVIDU")}


@pytest.fixture(scope="module")
def years(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """Tonight (2026) and its rentrée (2027) of four schools: collèges 0, 2, 3; lycée 1."""
    tmp = tmp_path_factory.mktemp("rentree")
    s = generate_academy(tmp / "a", ACADEMY, 4, 150, SEED, rentree=Rentree(tmp / "r"))
    assert s.rentree is not None and s.rentree.pupils > 0
    return tmp / "a" / ACADEMY, tmp / "r" / ACADEMY, s.schools


def test_tonight_is_the_same_with_or_without_a_rentree(tmp_path: Path,
                                                       years: tuple[Path, Path, list[str]]) -> None:
    generate_academy(tmp_path / "plain", ACADEMY, 4, 150, SEED)
    assert _tree(tmp_path / "plain" / ACADEMY) == _tree(years[0])


def test_same_seed_same_rentree_bytes(tmp_path: Path) -> None:
    for name in ("x", "y"):
        generate_region(tmp_path / name, 0.004, SEED, rentree=Rentree(tmp_path / f"{name}-r"))
    assert _tree(tmp_path / "x-r") == _tree(tmp_path / "y-r")
    generate_region(tmp_path / "z", 0.004, SEED, rentree=Rentree(
        tmp_path / "z-r", dt.date(2027, 10, 5)))
    # another date: the same content dated outside the window (the headers differ)
    assert _tree(tmp_path / "x-r").keys() == _tree(tmp_path / "z-r").keys()
    assert _tree(tmp_path / "x-r") != _tree(tmp_path / "z-r")
    for uai_dir in (tmp_path / "x-r").glob("*/*"):
        other = tmp_path / "z-r" / uai_dir.relative_to(tmp_path / "x-r")
        assert _pupils(uai_dir) == _pupils(other)


def test_next_school_year_and_date(years: tuple[Path, Path, list[str]]) -> None:
    _tonight, rentree, uais = years
    assert default_rentree_date(2026) == dt.date(2027, 9, 3)
    docs = discover(rentree.parent, get_academy(ACADEMY))
    assert {d.uai for d in docs} == set(uais)
    assert {d.school_year for d in docs if d.kind} == {2027}
    # STS-web files carry no date: their mtime is the export's, so a rentrée generated before
    # tonight's files is still newer than them for discovery
    assert {d.export_date[:10] for d in docs if d.export_date} == {"2027-09-03"}
    # every document reads without a rejected record
    for d in docs:
        assert not read_document(d, dt.date(2027, 9, 3)).rejected, d.path


def test_pupils_move_up_leave_and_arrive(years: tuple[Path, Path, list[str]]) -> None:
    tonight, rentree, uais = years
    college, lycee = uais[0], uais[1]
    before, after = _pupils(tonight / college), _pupils(rentree / college)
    mefs = ["10010012110", "10110001110", "10210001110", "10310019110"]  # 6e..3e
    stayed = set(before) & set(after)
    assert len(stayed) > len(before) / 2
    moved_up = sum(1 for i in stayed if mefs.index(after[i]["mef"] or "")
                   == mefs.index(before[i]["mef"] or "") + 1)
    assert moved_up > 0.9 * len(stayed)
    for i in stayed:  # same pupil: same INE, last year's class as SCOLARITE_AN_DERNIER
        assert after[i]["ine"] == before[i]["ine"]
        assert after[i]["previous"] == before[i]["div"]
    # 3e leave: none of them is in this collège's 4e/3e... except the few who repeat
    third = {i for i, p in before.items() if p["mef"] == mefs[3] and not p["left"]}
    assert len(third & set(after)) < max(3, len(third) / 5)
    # 6e arrive: new ids, no previous year here, about last year's 6e
    new6 = [p for i, p in after.items() if i not in before and p["mef"] == mefs[0]]
    old6 = [p for p in before.values() if p["mef"] == mefs[0]]
    assert abs(len(new6) - len(old6)) <= max(3, len(old6) / 5)
    assert all(p["previous"] is None for p in new6)
    assert int(min(i for i in after if i not in before)) > int(max(before))
    # leavers during the year are gone
    assert not {i for i, p in before.items() if p["left"]} & set(after)
    # collège 3e in the lycée's 2nde, with their INE
    third_ines = {p["ine"] for p in before.values() if p["mef"] == mefs[3] and p["ine"]}
    lycee_now = _pupils(rentree / lycee)
    came = [p for p in lycee_now.values() if p["ine"] in third_ines]
    assert came and all(p["mef"] == "20010018110" for p in came)
    # terminale leave the lycée
    lycee_before = _pupils(tonight / lycee)
    tle = {i for i, p in lycee_before.items() if p["mef"] == "20211010110"}
    assert len(tle & set(lycee_now)) < max(3, len(tle) / 5)


def test_every_class_and_group_is_renumbered(years: tuple[Path, Path, list[str]]) -> None:
    tonight, rentree, uais = years
    for uai in uais:
        codes = []
        for root in (tonight, rentree):
            x = _xml(root / uai, "ExportXML_Structures.zip", "Structures.xml")
            codes.append({d.get("CODE_STRUCTURE") for d in x.iter("DIVISION", "GROUPE")})
        assert codes[0] and codes[1] and not codes[0] & codes[1], uai
        assert all("-" in c for c in codes[1])


def test_guardians_and_teachers_change(years: tuple[Path, Path, list[str]]) -> None:
    tonight, rentree, uais = years
    kept_guardians = kept_teachers = moved = 0
    who: dict[str, set[str]] = {}
    for uai in uais:
        g0, g1 = _guardian_ids(tonight / uai), _guardian_ids(rentree / uai)
        kept_guardians += len(g0 & g1)
        assert g1 - g0 and g0 - g1  # arrivals' guardians new, leavers' gone
        t0, t1 = _teachers(tonight / uai, 2026), _teachers(rentree / uai, 2027)
        # a teacher who stays keeps the STS id
        assert all(t0[i] == t1[i] for i in set(t0) & set(t1))
        kept_teachers += len(set(t0) & set(t1))
        for name in set(t1.values()) - set(t0.values()):
            who.setdefault(name, set()).add(uai)
    assert kept_guardians and kept_teachers
    everyone_before = {n for uai in uais for n in _teachers(tonight / uai, 2026).values()}
    moved = sum(1 for n in who if n in everyone_before)
    assert moved >= 1  # some teachers moved between schools


def test_shares_parse_and_refuse() -> None:
    s = RentreeShares.parse(["to_lycee=0.8", "teacher-move=0.1"])
    assert (s.to_lycee, s.teacher_move, s.repeat) == (0.8, 0.1, RentreeShares().repeat)
    for bad in (["nope=1"], ["to_lycee"], ["repeat=1.5"]):
        with pytest.raises(ValueError):
            RentreeShares.parse(bad)


def test_cli_rentree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--region", "--scale", "0.003", "--seed", "2", "--out",
                 str(tmp_path / "a"), "--rentree-out", str(tmp_path / "r"), "--rentree-date",
                 "2027-10-05", "--rentree-share", "to_lycee=0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rentree"]["pupils"] > 0 and out["rentree"]["files"] > 0
    assert any((tmp_path / "r").glob("*/*/sts_emp_*_2027.xml"))
    assert main(["generate", "--region", "--scale", "0.003", "--out", str(tmp_path / "b"),
                 "--rentree-out", str(tmp_path / "c"), "--rentree-share", "x=1"]) == 2
    assert main(["generate", "--academy", ACADEMY, "--schools", "2", "--pupils-per-school",
                 "20", "--out", str(tmp_path / "d"), "--rentree-out", str(tmp_path / "e"),
                 "--format", "aaf"]) == 2
