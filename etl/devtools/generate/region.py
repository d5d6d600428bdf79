"""The region: Grand Est's three academies at a chosen scale, one academy planned at a time."""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from pathlib import Path

from etl.devtools.generate.aaf import DEFAULT_PART_RECORDS, _write_aaf_academy
from etl.devtools.generate.catalog import _LATIN, ACADEMIES, _AcademyInfo
from etl.devtools.generate.landing import _write_school
from etl.devtools.generate.layout import _layout_school
from etl.devtools.generate.names import _GERMAN_SHARE
from etl.devtools.generate.people import _make_guardians, _make_teacher, _People
from etl.devtools.generate.plan import _ensure_rare_cases, _new_school
from etl.devtools.generate.records import (
    GenerateSummary,
    _Family,
    _School,
    _SchoolDraws,
    _Teacher,
)
from etl.devtools.generate.rentree import (
    Rentree,
    default_rentree_date,
    plan_rentree,
    write_rentree,
)

#: Grand Est at scale 1.0 (rounded public figures): public collèges and lycées (LGT), and the
#: share of them in each academy.
REGION_COLLEGES = 500
REGION_LYCEES = 180
REGION_SHARES: dict[str, float] = {"ac-nancy-metz": 0.45, "ac-strasbourg": 0.30, "ac-reims": 0.25}
COLLEGE_PUPILS = (300, 700)
LYCEE_PUPILS = (600, 1500)
#: share of younger siblings enrolled in another school of the same department
_SIBLING_ELSEWHERE = 0.12
#: share of teachers who also teach in a second school of the same department
_SHARED_TEACHERS = 0.10
#: what `generate_academy` / `generate_region` write: school exports, or the academy's AAF
FORMATS = ("siecle", "aaf")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")


@dataclass
class RegionSummary:
    """What `generate_region` wrote, per academy (row counts as in `GenerateSummary`)."""

    scale: float
    seed: int
    academies: dict[str, GenerateSummary]
    #: the next school year's export set, when one was asked for (rentree.py)
    rentree: RegionSummary | None = None

    @property
    def schools(self) -> int:
        return sum(len(a.schools) for a in self.academies.values())

    @property
    def pupils(self) -> int:
        return sum(a.pupils for a in self.academies.values())

    @property
    def guardians(self) -> int:
        return sum(a.guardians for a in self.academies.values())

    @property
    def teachers(self) -> int:
        return sum(a.teachers for a in self.academies.values())

    @property
    def files(self) -> int:
        return sum(len(a.files) for a in self.academies.values())


def region_school_counts(scale: float) -> dict[str, tuple[int, int]]:
    """(collèges, lycées) per academy at `scale`; at least one school per academy."""
    if scale <= 0:
        raise ValueError("scale must be > 0")
    out: dict[str, tuple[int, int]] = {}
    for academy, share in REGION_SHARES.items():
        colleges = round(REGION_COLLEGES * scale * share)
        lycees = round(REGION_LYCEES * scale * share)
        out[academy] = (max(colleges, 1 if lycees == 0 else 0), lycees)
    return out


def _plan_region_schools(
    rng: random.Random, info: _AcademyInfo, colleges: int, lycees: int
) -> tuple[list[_School], list[int]]:
    """Schools of one academy with their pupil counts, departments dealt round-robin."""
    kinds = [True] * colleges + [False] * lycees
    rng.shuffle(kinds)
    used: set[str] = set()
    schools: list[_School] = []
    sizes: list[int] = []
    for index, college in enumerate(kinds):
        schools.append(_new_school(rng, info, index, college, used))
        sizes.append(rng.randint(*(COLLEGE_PUPILS if college else LYCEE_PUPILS)))
    return schools, sizes


def _plan_region_families(
    rng: random.Random,
    schools: list[_School],
    sizes: list[int],
    year: int,
    export: datetime.date,
) -> list[_Family]:
    """Fill each school to its size with families of 1-3 children, in O(pupils).

    Schools are filled in turn; a younger sibling goes to another school of the same
    department with room left ~12 % of the time (a collège pupil's elder sister at the lycée).
    """
    capacity = list(sizes)
    open_by_dept: dict[str, list[int]] = {}
    for i, school in enumerate(schools):
        open_by_dept.setdefault(school.dept, []).append(i)

    def take(i: int) -> None:
        capacity[i] -= 1
        if capacity[i] == 0:
            open_by_dept[schools[i].dept].remove(i)

    families: list[_Family] = []
    for primary, school in enumerate(schools):
        dept = school.dept
        people = _People(rng, _GERMAN_SHARE.get(dept, 0.05))
        while capacity[primary] > 0:
            size = rng.choices((1, 2, 3), weights=(45, 38, 17))[0]
            guardians, surname = _make_guardians(people, people.surname(), dept)
            family = _Family(guardians=guardians)
            for child in range(size):
                target = primary
                if child > 0 and rng.random() < _SIBLING_ELSEWHERE:
                    others = open_by_dept[dept]
                    pick = others[rng.randrange(len(others))] if others else primary
                    target = pick if capacity[pick] > 0 else primary
                if capacity[target] == 0:
                    break
                take(target)
                where = schools[target]
                level_index = rng.randrange(len(where.levels))
                pupil = people.pupil(
                    surname, where.levels[level_index], level_index, where.college, year, export
                )
                pupil.school, pupil.family = target, len(families)
                while any(s.first == pupil.first for s in family.pupils):  # siblings differ
                    pupil.first = people.child_first(pupil.sex)
                family.pupils.append(pupil)
                where.pupils.append(pupil)
            families.append(family)
    return families


def _plan_region_teachers(
    rng: random.Random, schools: list[_School], sizes: list[int]
) -> list[_Teacher]:
    """~1 teacher per 12 pupils per school plus a head, a CPE and a librarian; ~10 % of the
    teachers also teach in another school of the same department."""
    staff: list[_Teacher] = []
    by_dept: dict[str, list[_School]] = {}
    for school, size in zip(schools, sizes, strict=True):
        by_dept.setdefault(school.dept, []).append(school)
        people = _People(rng, _GERMAN_SHARE.get(school.dept, 0.05))
        taught = [s for s in school.subjects if s != _LATIN]
        rng.shuffle(taught)
        for k in range(max(3, round(size / 12))):
            school.teachers.append(len(staff))
            staff.append(_make_teacher(people, "ENS", taught[k % len(taught)]))
        for function in ("DIR", "EDU", "DOC"):
            school.teachers.append(len(staff))
            staff.append(_make_teacher(people, function, ""))
    for school in schools:
        neighbours = [s for s in by_dept[school.dept] if s is not school]
        if not neighbours:
            continue
        own = [t for t in school.teachers if staff[t].function == "ENS"]
        for teacher in rng.sample(own, round(len(own) * _SHARED_TEACHERS)):
            other = neighbours[rng.randrange(len(neighbours))]
            if staff[teacher].subject in other.subjects and teacher not in other.teachers:
                other.teachers.append(teacher)
    return staff


def generate_region(
    out: Path,
    scale: float,
    seed: int,
    year: int = 2026,
    export_date: datetime.date | None = None,
    *,
    fmt: str = "siecle",
    part_records: int = DEFAULT_PART_RECORDS,
    rentree: Rentree | None = None,
) -> RegionSummary:
    """Write the three Grand Est academies' landing folders at `scale` (1.0: the real region).

    Scale multiplies the region's school counts (`REGION_COLLEGES`, `REGION_LYCEES`, split by
    `REGION_SHARES`). One academy is planned at a time (cheap records), then written school by
    school; same seed, same content: a new `export_date` changes only the dates. `rentree`:
    also the first export of the next school year (rentree.py) in ``rentree.out``, from the
    same academies (tonight's bytes are the same with or without it).
    """
    export = export_date or datetime.date(year, 10, 1)
    summary = RegionSummary(scale=scale, seed=seed, academies={})
    if rentree is not None:
        if fmt != "siecle":
            raise ValueError("a rentrée export set is written as SIECLE/STS only")
        summary.rentree = RegionSummary(scale=scale, seed=seed, academies={})
    for academy, (colleges, lycees) in region_school_counts(scale).items():
        info = ACADEMIES[academy]
        rng = random.Random(f"{seed}:{academy}")
        plan, sizes = _plan_region_schools(rng, info, colleges, lycees)
        families = _plan_region_families(rng, plan, sizes, year, export)
        staff = _plan_region_teachers(rng, plan, sizes)
        for school in plan:
            _layout_school(rng, school)
        _ensure_rare_cases(rng, plan)
        nxt, rentree_rng = None, random.Random(f"{seed}:{academy}:rentree")
        rentree_export = (rentree.export or default_rentree_date(year)) if rentree else export
        if rentree is not None:
            nxt = plan_rentree(rentree_rng, plan, families, staff, year, rentree_export,
                               rentree.shares, rentree.renumber)
        drawn: dict[str, _SchoolDraws] | None = {} if nxt is not None else None
        next_sts = rng.randint(1000, 9000)
        result = GenerateSummary(
            academy=academy, schools=[s.uai for s in plan], pupils=0, guardians=0, teachers=0,
            files=[],
        )
        if fmt == "aaf":
            _write_aaf_academy(out / academy, rng, f"{seed}:{academy}", info, plan, families,
                               staff, next_sts, export, result, part_records, release=True)
            summary.academies[academy] = result
            continue
        for school in plan:
            next_sts = _write_school(
                out / academy, rng, info, school, families, staff, next_sts, year, export, result,
                drawn=drawn,
            )
            school.pupils = []  # written: let the school's records go
        summary.academies[academy] = result
        if rentree is not None and nxt is not None and drawn is not None:
            nxt_summary = GenerateSummary(academy=academy, schools=[s.uai for s in nxt.schools],
                                          pupils=0, guardians=0, teachers=0, files=[])
            write_rentree(rentree.out / academy, rentree_rng, info, nxt, drawn, next_sts,
                          year + 1, rentree_export, nxt_summary, release=True)
            assert summary.rentree is not None
            summary.rentree.academies[academy] = nxt_summary
    return summary
