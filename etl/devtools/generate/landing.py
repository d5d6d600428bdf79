"""One school's landing folder: the four SIECLE zips and the STS file, as the academy drops them."""

from __future__ import annotations

import datetime
import os
import random
import zipfile
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path

from etl.devtools.generate.catalog import _AcademyInfo
from etl.devtools.generate.eleves import _write_eleves
from etl.devtools.generate.records import (
    GenerateSummary,
    _Family,
    _School,
    _SchoolDraws,
    _Teacher,
)
from etl.devtools.generate.responsables import _draw_guardian_ids, _write_responsables
from etl.devtools.generate.structures import _write_nomenclature, _write_structures
from etl.devtools.generate.sts import _assign_services, _write_sts


def _zip_member(
    path: Path, member: str, when: datetime.datetime
) -> tuple[zipfile.ZipFile, zipfile.ZipInfo]:
    archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
    info = zipfile.ZipInfo(
        member, date_time=(when.year, when.month, when.day, when.hour, when.minute, when.second)
    )
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return archive, info


def _draw_school(
    rng: random.Random,
    school: _School,
    families: Sequence[_Family],
    staff: Sequence[_Teacher],
    next_sts: int,
    export: datetime.date,
) -> tuple[_SchoolDraws, int]:
    """Everything writing one school takes from the random stream, in the stream's order
    (export hour, guardian ids, STS ids, services); returns the draws and the next STS id."""
    when = datetime.datetime(
        export.year,
        export.month,
        export.day,
        rng.randint(6, 19),
        rng.randrange(60),
        rng.randrange(60),
    )
    family_order, person_ids, address_ids = _draw_guardian_ids(rng, school, families)
    sts_ids: dict[int, int] = {}  # STS ids are per (school, teacher)
    for teacher in school.teachers:
        next_sts += rng.randint(1, 40)
        sts_ids[teacher] = next_sts
    services, head = _assign_services(rng, school, staff)
    draws = _SchoolDraws(when, family_order, person_ids, address_ids, sts_ids, services, head)
    return draws, next_sts


def _write_school(
    folder_root: Path,
    rng: random.Random,
    info: _AcademyInfo,
    school: _School,
    families: Sequence[_Family],
    staff: Sequence[_Teacher],
    next_sts: int,
    year: int,
    export: datetime.date,
    summary: GenerateSummary,
    *,
    drawn: MutableMapping[str, _SchoolDraws] | None = None,
    carry: Callable[[_School, _SchoolDraws], None] | None = None,
    stamp_sts: bool = False,
) -> int:
    """Write one school's four SIECLE zips and its STS file; returns the next STS id.

    `carry` may change the draws before they are written (the next school year keeps last
    year's ids, rentree.py); `drawn` keeps them by UAI (what the next year carries);
    `stamp_sts`: the STS file's mtime (its export date: STS-web files carry none) set to the
    export's time, for a set generated before tonight's but exported after it (the rentrée)."""
    draws, next_sts = _draw_school(rng, school, families, staff, next_sts, export)
    if carry is not None:
        carry(school, draws)
    if drawn is not None:
        drawn[school.uai] = draws
    when = draws.when
    folder = folder_root / school.uai
    folder.mkdir(parents=True, exist_ok=True)
    mefs = [level.mef for level in school.levels]

    path = folder / "ExportXML_ElevesSansAdresses.zip"
    archive, member = _zip_member(path, "ElevesSansAdresses.xml", when)
    with archive, archive.open(member, "w", force_zip64=True) as binary:
        summary.pupils += _write_eleves(binary, school.uai, year, when, school.pupils, mefs)
    summary.files.append(path)

    path = folder / "ExportXML_ResponsablesAvecAdresses.zip"
    archive, member = _zip_member(path, "ResponsablesAvecAdresses.xml", when)
    with archive, archive.open(member, "w", force_zip64=True) as binary:
        summary.guardians += _write_responsables(binary, school, families, draws, year, when)
    summary.files.append(path)

    path = folder / "ExportXML_Nomenclature.zip"
    archive, member = _zip_member(path, "Nomenclature.xml", when)
    with archive, archive.open(member, "w") as binary:
        _write_nomenclature(binary, school, year, when)
    summary.files.append(path)

    path = folder / "ExportXML_Structures.zip"
    archive, member = _zip_member(path, "Structures.xml", when)
    with archive, archive.open(member, "w") as binary:
        _write_structures(binary, school, year, when)
    summary.files.append(path)

    path = folder / f"sts_emp_{school.uai}_{year}.xml"
    with path.open("wb") as binary:
        _write_sts(binary, info, school, staff, draws, year)
    if stamp_sts:
        os.utime(path, (when.timestamp(), when.timestamp()))
    summary.files.append(path)
    summary.teachers += sum(1 for t in school.teachers if staff[t].function == "ENS")
    return next_sts
