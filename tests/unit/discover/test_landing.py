"""Landing-zone discovery: root element, UAI, year and export date; rejections with reasons."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from etl.config import get_academy
from etl.discover.landing import Discovered, discover, read_header, uai_is_valid
from etl.discover.xmlsafe import XmlSource
from etl.errors import FileRejected
from tests.conftest import FIXTURES

ACADEMY = get_academy("ac-strasbourg")
SIECLE = FIXTURES / "siecle"
STS = FIXTURES / "sts"
LANDING = FIXTURES / "landing"


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    """An empty landing folder for the academy; tests drop files into it."""
    (tmp_path / ACADEMY.code).mkdir()
    return tmp_path


def drop(zone: Path, fixture: Path, rel: str | None = None) -> Path:
    dest = zone / ACADEMY.code / (rel or fixture.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixture, dest)
    return dest


def by_name(found: list[Discovered]) -> dict[str, Discovered]:
    return {Path(d.path).name + (f"!{d.member}" if d.member else ""): d for d in found}


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
    return path


# --- UAI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("uai", ["0750654D", "0671234C", "0541234Y", "0660864F"])
def test_valid_uai(uai: str) -> None:
    assert uai_is_valid(uai)


@pytest.mark.parametrize(
    "uai", ["0750001A", "0671234D", "067123C", "06712345C", "A671234C", "", None]
)
def test_invalid_uai(uai: str | None) -> None:
    assert not uai_is_valid(uai)


# --- headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "kind", "version"),
    [
        (SIECLE / "eleves_date_sortie.xml", "ELEVES", "3.1"),
        (SIECLE / "responsables_resp_legal.xml", "RESPONSABLES", "2.1"),
        (SIECLE / "nomenclatures_simple.xml", "NOMENCLATURES", "3.1"),
        (SIECLE / "structures_simple.xml", "STRUCTURES", "3.1"),
        (STS / "sts_emp_fonctions_et_services.xml", "STS", None),
    ],
)
def test_header_kind_per_root(fixture: Path, kind: str, version: str | None) -> None:
    d = read_header(XmlSource(fixture))
    assert (d.kind, d.uai, d.school_year) == (kind, "0671234C", 2026)
    assert d.extra["version"] == version
    assert d.status == "discovered"


def test_header_prefers_horodatage_over_date_export() -> None:
    d = read_header(XmlSource(SIECLE / "nomenclatures_simple.xml"))
    assert d.export_date == "2026-10-01T06:31:12"
    d = read_header(XmlSource(LANDING / "eleves_date_export_sans_horodatage.xml"))
    assert d.export_date == "2026-10-01T00:00:00"


def test_sts_header_export_date_is_the_file_time(tmp_path: Path) -> None:
    f = tmp_path / "sts.xml"
    shutil.copyfile(STS / "sts_emp_attributs_ordre_varie.xml", f)
    os.utime(f, (1_790_000_000, 1_790_000_000))
    d = read_header(XmlSource(f))
    assert d.export_date is not None and d.export_date.startswith("2026-09")


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("racine_edt_sts.xml", "EDT_STS is the timetable software's export"),
        ("racine_inconnue.xml", "unknown root element <CATALOGUE_BIBLIOTHEQUE>"),
        ("pas_du_xml.xml", "malformed or truncated XML"),
        ("vide.xml", "empty file"),
        ("xml_tronque.xml", None),  # the header is complete: discovery accepts, reading fails
        ("doctype_dtd_externe.xml", "DOCTYPE"),
        ("billion_laughs.xml", "DOCTYPE"),
        ("uai_lettre_fausse.xml", "UAI '0671234D' is not valid"),
    ],
)
def test_read_header_rejections(fixture: str, reason: str | None) -> None:
    src = XmlSource(LANDING / fixture)
    if reason is None:
        assert read_header(src).kind == "ELEVES"
        return
    with pytest.raises(FileRejected) as ei:
        read_header(src)
    assert reason in ei.value.reason
    assert ei.value.file == str(LANDING / fixture)


def test_bad_uai_rejection_carries_the_uai() -> None:
    with pytest.raises(FileRejected) as ei:
        read_header(XmlSource(LANDING / "uai_lettre_fausse.xml"))
    assert ei.value.uai == "0671234D"


# --- discovery ---------------------------------------------------------------------------


def test_discover_identifies_and_rejects_with_reasons(zone: Path) -> None:
    drop(zone, SIECLE / "eleves_date_sortie.xml", "2026-10-01/ElevesSansAdresses.xml")
    drop(zone, SIECLE / "responsables_resp_legal.xml", "a/b/c/ResponsablesSansAdresses.xml")
    for f in [
        "racine_edt_sts.xml",
        "racine_inconnue.xml",
        "pas_du_xml.xml",
        "vide.xml",
        "uai_lettre_fausse.xml",
        "uai_autre_academie.xml",
        "doctype_dtd_externe.xml",
    ]:
        drop(zone, LANDING / f)
    (zone / ACADEMY.code / "notes.txt").write_text("pas un export")
    found = by_name(discover(zone, ACADEMY))

    ok = {k: d for k, d in found.items() if d.status == "discovered"}
    assert set(ok) == {"ElevesSansAdresses.xml", "ResponsablesSansAdresses.xml"}
    nested = ok["ResponsablesSansAdresses.xml"]
    assert nested.path.endswith("a/b/c/ResponsablesSansAdresses.xml")  # nested sub-folder
    assert nested.kind == "RESPONSABLES" and nested.uai == "0671234C"
    assert nested.sha256 and len(nested.sha256) == 64 and nested.size > 0

    reasons = {k: d.reason or "" for k, d in found.items() if d.status == "rejected"}
    assert "EDT_STS" in reasons["racine_edt_sts.xml"]
    assert "unknown root element" in reasons["racine_inconnue.xml"]
    assert "malformed" in reasons["pas_du_xml.xml"]
    assert "empty file" in reasons["vide.xml"]
    assert "0671234D" in reasons["uai_lettre_fausse.xml"]
    assert found["uai_lettre_fausse.xml"].uai == "0671234D"
    assert "DOCTYPE" in reasons["doctype_dtd_externe.xml"]
    assert "not an XML file" in reasons["notes.txt"]
    # a valid UAI of Nancy-Metz is not a school of Strasbourg
    other = found["uai_autre_academie.xml"]
    assert other.uai == "0541234Y" and not ACADEMY.owns_uai("0541234Y")
    assert "0541234Y is not a school of ac-strasbourg" in reasons["uai_autre_academie.xml"]
    # deterministic order
    assert [d.path for d in discover(zone, ACADEMY)] == sorted(d.path for d in found.values())


def test_discover_skips_hidden_and_reports_symlinks(zone: Path) -> None:
    root = zone / ACADEMY.code
    real = drop(zone, SIECLE / "eleves_date_sortie.xml", "Eleves.xml")
    drop(zone, LANDING / "racine_inconnue.xml", ".upload-en-cours.xml")
    drop(zone, LANDING / "racine_inconnue.xml", ".tmp/Partiel.xml")
    outside = zone / "ailleurs"
    outside.mkdir()
    shutil.copyfile(SIECLE / "structures_simple.xml", outside / "Structures.xml")
    (root / "lien.xml").symlink_to(real)
    (root / "dossier-lien").symlink_to(outside, target_is_directory=True)
    found = by_name(discover(zone, ACADEMY))
    assert set(found) == {"Eleves.xml", "lien.xml", "dossier-lien"}
    assert found["Eleves.xml"].status == "discovered"
    for k in ("lien.xml", "dossier-lien"):
        assert found[k].status == "rejected"
        assert "symbolic links are not followed" in (found[k].reason or "")


def test_discover_missing_academy_folder(tmp_path: Path) -> None:
    assert discover(tmp_path, ACADEMY) == []


def test_discover_zip_with_xml_and_other_member(zone: Path) -> None:
    zip_of(
        zone / ACADEMY.code / "sous" / "dossier" / "ExportXML_ElevesSansAdresses.zip",
        {
            "ElevesSansAdresses.xml": (SIECLE / "eleves_date_sortie.xml").read_bytes(),
            "LISEZMOI.txt": b"notes",
        },
    )
    found = by_name(discover(zone, ACADEMY))
    ok = found["ExportXML_ElevesSansAdresses.zip!ElevesSansAdresses.xml"]
    assert ok.status == "discovered" and ok.kind == "ELEVES" and ok.uai == "0671234C"
    other = found["ExportXML_ElevesSansAdresses.zip!LISEZMOI.txt"]
    assert other.status == "rejected" and other.reason == "not an XML member"


@pytest.mark.hostile
@pytest.mark.parametrize("member", ["../evil.xml", "/tmp/evil.xml"], ids=["dotdot", "absolute"])
def test_discover_rejects_zip_with_unsafe_member(zone: Path, member: str) -> None:
    zip_of(
        zone / ACADEMY.code / "piege.zip",
        {
            "Eleves.xml": (SIECLE / "eleves_date_sortie.xml").read_bytes(),
            member: (SIECLE / "eleves_date_sortie.xml").read_bytes(),
        },
    )
    (d,) = discover(zone, ACADEMY)
    assert d.status == "rejected" and d.member is None
    assert "unsafe path" in (d.reason or "") and member in (d.reason or "")
    assert not (zone / "evil.xml").exists()


@pytest.mark.hostile
def test_discover_rejects_zip_bomb_without_extracting(
    zone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_of(zone / ACADEMY.code / "bombe.zip", {"Eleves.xml": b"\0" * (50 * 1024 * 1024)})

    def no_extract(*_a: object, **_k: object) -> None:
        raise AssertionError("a member was opened")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_extract)
    (d,) = discover(zone, ACADEMY)
    assert d.status == "rejected"
    assert "compression ratio" in (d.reason or "")


def test_discover_empty_and_broken_zips(zone: Path) -> None:
    zip_of(zone / ACADEMY.code / "vide.zip", {})
    (zone / ACADEMY.code / "casse.zip").write_bytes(b"PK\x03\x04 pas un zip")
    found = by_name(discover(zone, ACADEMY))
    assert found["vide.zip"].reason == "empty zip"
    assert "not a readable zip" in (found["casse.zip"].reason or "")


@pytest.mark.samples
def test_sts_sample_is_rejected_for_its_uai_check_letter(samples_dir: Path, zone: Path) -> None:
    (f,) = sorted((samples_dir / "sts").glob("*.xml"))
    drop(zone, f)
    (d,) = discover(zone, ACADEMY)
    assert d.status == "rejected"
    assert "0750001A" in (d.reason or "") and "check letter" in (d.reason or "")


@pytest.mark.samples
def test_siecle_samples_headers(samples_dir: Path) -> None:
    kinds = {}
    for f in sorted((samples_dir / "siecle").glob("*.xml")):
        d = read_header(XmlSource(f))
        kinds[f.name] = d.kind
        assert d.uai and uai_is_valid(d.uai)
        assert d.school_year in (2018, 2019)
        assert d.export_date and d.export_date.startswith("2019-")
    assert set(kinds.values()) == {"ELEVES", "NOMENCLATURES", "RESPONSABLES"}
