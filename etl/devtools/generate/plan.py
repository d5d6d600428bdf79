"""Planning one academy: its schools, families across schools and teachers, before writing."""

from __future__ import annotations

import datetime
import random
from collections.abc import Sequence

from etl.devtools.generate.catalog import _COLLEGE_LEVELS, _LATIN, _LYCEE_LEVELS, _AcademyInfo
from etl.devtools.generate.names import _GERMAN_SHARE, _SCHOOL_NAMES
from etl.devtools.generate.people import _make_guardians, _make_teacher, _People
from etl.devtools.generate.records import _Family, _Pupil, _School, _Teacher
from etl.devtools.generate.xmltext import ISO, UTF8
from etl.discover.landing import uai_check_letter


def _plan_schools(rng: random.Random, info: _AcademyInfo, count: int) -> list[_School]:
    used: set[str] = set()
    schools: list[_School] = []
    for index in range(count):
        schools.append(_new_school(rng, info, index, index % 3 != 1, used))
    return schools


def _new_school(rng: random.Random, info: _AcademyInfo, index: int, college: bool,
                used: set[str]) -> _School:
    """A school with a fresh valid UAI in the academy's departments (dealt round-robin)."""
    dept = info.departments[index % len(info.departments)]
    while True:
        first7 = f"{dept}{rng.randrange(10000):04d}"
        if first7 not in used:
            used.add(first7)
            break
    return _School(
        index=index,
        uai=first7 + uai_check_letter(first7),
        dept=dept,
        college=college,
        name=rng.choice(_SCHOOL_NAMES),
        levels=_COLLEGE_LEVELS if college else _LYCEE_LEVELS,
        resp_legal=index % 3 == 2,
        sts_encoding=ISO if index % 2 == 1 else UTF8,
    )


def _plan_families(
    rng: random.Random, schools: list[_School], per_school: int, year: int, export: datetime.date
) -> list[_Family]:
    """Fill every school with exactly `per_school` pupils, grouped in families of 1-3 children.

    ~12 % of younger siblings go to another school of the academy (guaranteed once when there
    are two schools); one homonym pair is forced in the first school.
    """
    capacity = [per_school] * len(schools)
    families: list[_Family] = []
    homonym_source: _Pupil | None = None
    homonym_done = False
    while sum(capacity) > 0:
        open_schools = [i for i, c in enumerate(capacity) if c > 0]
        size = min(rng.choices((1, 2, 3), weights=(45, 38, 17))[0], sum(capacity))
        forced_cross = not families and len(open_schools) >= 2
        if forced_cross:
            size = 2
        primary = (
            open_schools[0]
            if forced_cross
            else rng.choices(open_schools, weights=[capacity[i] for i in open_schools])[0]
        )
        dept = schools[primary].dept
        people = _People(rng, _GERMAN_SHARE.get(dept, 0.05))
        guardians, surname = _make_guardians(people, people.surname(), dept)
        if forced_cross:  # the guaranteed shared family must be matchable by name and e-mail
            first = guardians[0]
            first.email = first.email or people.email(first.first, first.usage or first.last)
            first.mobile = first.mobile or people.mobile()
        family = _Family(guardians=guardians)
        for child in range(size):
            target = primary
            if child > 0:
                others = [i for i in range(len(schools)) if i != primary and capacity[i] > 0]
                if others and (forced_cross or rng.random() < 0.12):
                    target = others[0] if forced_cross else rng.choice(others)
            if capacity[target] == 0:
                open_now = [i for i, c in enumerate(capacity) if c > 0]
                if not open_now:
                    break
                target = open_now[0]
            capacity[target] -= 1
            school = schools[target]
            level_index = rng.randrange(len(school.levels))
            pupil = people.pupil(
                surname, school.levels[level_index], level_index, school.college, year, export
            )
            pupil.school, pupil.family = target, len(families)
            while any(s.first == pupil.first for s in family.pupils):  # siblings differ
                pupil.first = people.child_first(pupil.sex)
            if target == 0 and not homonym_done:
                if homonym_source is None:
                    homonym_source = pupil
                elif homonym_source.family != pupil.family:
                    # Same first and last name, another family: rename this family.
                    old = pupil.last
                    pupil.last, pupil.first = homonym_source.last, homonym_source.first
                    pupil.sex, pupil.usage = homonym_source.sex, None
                    for sibling in family.pupils:
                        sibling.last = pupil.last
                    for g in family.guardians:
                        if g.last == old:
                            g.last = pupil.last
                        if g.usage == old:
                            g.usage = pupil.last
                    homonym_done = True
            family.pupils.append(pupil)
            school.pupils.append(pupil)
        families.append(family)
    return families


def _plan_teachers(rng: random.Random, schools: list[_School], per_school: int) -> list[_Teacher]:
    """~1 teacher per 12 pupils (>= 3) per school, ~10 % of them also in another school."""
    staff: list[_Teacher] = []
    for school in schools:
        people = _People(rng, _GERMAN_SHARE.get(school.dept, 0.05))
        taught = [s for s in school.subjects if s != _LATIN]
        rng.shuffle(taught)
        n_teachers = max(3, round(per_school / 12))
        for k in range(n_teachers):
            school.teachers.append(len(staff))
            staff.append(_make_teacher(people, "ENS", taught[k % len(taught)]))
        for function in ("DIR", "EDU", "DOC"):
            school.teachers.append(len(staff))
            staff.append(_make_teacher(people, function, ""))
    if len(schools) < 2:
        return staff
    for school in schools:
        own = [t for t in school.teachers if staff[t].function == "ENS"]
        wanted = max(1 if school.index == 0 else 0, round(len(own) / 10))
        rng.shuffle(own)
        for teacher in own:
            if wanted == 0:
                break
            others = [
                s
                for s in schools
                if s is not school
                and staff[teacher].subject in s.subjects
                and teacher not in s.teachers
            ]
            if others:
                rng.choice(others).teachers.append(teacher)
                wanted -= 1
    return staff


def _ensure_rare_cases(rng: random.Random, schools: Sequence[_School]) -> None:
    """Guarantee at least one pupil without INE and one who left in the academy."""
    pupils = [p for s in schools for p in s.pupils]
    if len(pupils) < 2:
        return
    if all(p.ine is not None for p in pupils):
        rng.choice(pupils).ine = None
    if all(p.left is None for p in pupils):
        pupil = rng.choice(pupils)
        if pupil.entry is not None:
            pupil.left = pupil.entry + datetime.timedelta(days=1)
