"""Deterministic synthetic SIECLE (BEE) and STS-web exports for one academy.

Why: real exports carry personal data and cannot be committed or shared, yet the readers, the
sync and the benchmarks need academy-sized inputs with the awkward cases real files have
(accents, ligatures, apostrophes, homonyms, pupils without INE, guardians and teachers present
in two schools, both responsables conventions, ISO-8859-15 and UTF-8). Same seed, same bytes.

The academy is planned first with cheap records (families, teachers, school layouts), so that
cross-school links exist; then each school's files are streamed out, never built as trees.
Planning: plan.py (an academy), region.py (Grand Est), people.py, layout.py; writers:
eleves.py, responsables.py, structures.py, sts.py, laid out by landing.py; the same academy
as its AAF feed: aaf.py (Complet) and aaf_delta.py (the next night's Delta).
"""

from __future__ import annotations

import datetime
import random
from pathlib import Path

from etl.devtools.generate.aaf import DEFAULT_PART_RECORDS, _write_aaf_academy
from etl.devtools.generate.catalog import ACADEMIES, ACADEMY_DEPARTMENTS
from etl.devtools.generate.landing import _write_school
from etl.devtools.generate.layout import _layout_school
from etl.devtools.generate.plan import (
    _ensure_rare_cases,
    _plan_families,
    _plan_schools,
    _plan_teachers,
)
from etl.devtools.generate.pupils_file import generate_pupils_file
from etl.devtools.generate.records import GenerateSummary, _SchoolDraws
from etl.devtools.generate.region import (
    FORMATS,
    RegionSummary,
    _check_format,
    generate_region,
    region_school_counts,
)
from etl.devtools.generate.rentree import (
    Rentree,
    RentreeShares,
    default_rentree_date,
    plan_rentree,
    write_rentree,
)
from etl.discover.landing import uai_check_letter

__all__ = [
    "ACADEMY_DEPARTMENTS",
    "DEFAULT_PART_RECORDS",
    "FORMATS",
    "GenerateSummary",
    "RegionSummary",
    "Rentree",
    "RentreeShares",
    "default_rentree_date",
    "generate_academy",
    "generate_pupils_file",
    "generate_region",
    "region_school_counts",
    "uai_check_letter",
]


def generate_academy(
    out: Path,
    academy: str,
    schools: int,
    pupils_per_school: int,
    seed: int,
    year: int = 2026,
    export_date: datetime.date | None = None,
    *,
    fmt: str = "siecle",
    part_records: int = DEFAULT_PART_RECORDS,
    rentree: Rentree | None = None,
) -> GenerateSummary:
    """Write `out/<academy>/<UAI>/` SIECLE zips and an STS file per school; same seed, same bytes.

    Collèges and lycées (every third school from the second is a lycée); every third school
    (index 2, 5, ...) uses the older RESP_LEGAL convention; STS files alternate UTF-8 and
    ISO-8859-15. ``fmt="aaf"``: the same academy as its AAF Complet in `out/<academy>/`
    (aaf.py), parts of `part_records` records. `rentree`: also the first export of the
    next school year in ``rentree.out/<academy>/`` (rentree.py; SIECLE/STS only).
    """
    _check_format(fmt)
    if academy not in ACADEMIES:
        raise ValueError(f"unknown academy {academy!r}; expected one of {sorted(ACADEMIES)}")
    if schools < 1 or pupils_per_school < 1:
        raise ValueError("schools and pupils_per_school must be >= 1")
    info = ACADEMIES[academy]
    export = export_date or datetime.date(year, 10, 1)
    rng = random.Random(seed)
    plan = _plan_schools(rng, info, schools)
    families = _plan_families(rng, plan, pupils_per_school, year, export)
    staff = _plan_teachers(rng, plan, pupils_per_school)
    for school in plan:
        _layout_school(rng, school)
    _ensure_rare_cases(rng, plan)
    if rentree is not None and fmt != "siecle":
        raise ValueError("a rentrée export set is written as SIECLE/STS only")
    rentree_rng = random.Random(f"{seed}:rentree")
    rentree_export = (rentree.export or default_rentree_date(year)) if rentree else export
    nxt = (plan_rentree(rentree_rng, plan, families, staff, year, rentree_export,
                        rentree.shares, rentree.renumber) if rentree is not None else None)
    drawn: dict[str, _SchoolDraws] | None = {} if nxt is not None else None
    next_sts = rng.randint(1000, 9000)
    summary = GenerateSummary(
        academy=academy, schools=[s.uai for s in plan], pupils=0, guardians=0, teachers=0, files=[]
    )
    if fmt == "aaf":
        _write_aaf_academy(out / academy, rng, f"{seed}:{academy}", info, plan, families,
                           staff, next_sts, export, summary, part_records)
        return summary
    for school in plan:
        next_sts = _write_school(
            out / academy, rng, info, school, families, staff, next_sts, year, export, summary,
            drawn=drawn,
        )
    if rentree is not None and nxt is not None and drawn is not None:
        summary.rentree = GenerateSummary(academy=academy, schools=[s.uai for s in nxt.schools],
                                          pupils=0, guardians=0, teachers=0, files=[])
        write_rentree(rentree.out / academy, rentree_rng, info, nxt, drawn, next_sts, year + 1,
                      rentree_export, summary.rentree)
    return summary
