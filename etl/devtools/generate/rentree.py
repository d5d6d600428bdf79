"""La rentrée: the first export of the next school year, from the same planned academy.

Why: the night the ops team fears is the first one of a school year (``ANNEE_SCOLAIRE`` + 1):
a third of the pupils leave, a third arrive, every class and group is new, teachers get new
services, last year's classes are archived and the roll-over window and the disaster guards
decide what is written. The bench and the tests need that night built from tonight's
academy, so that the same people come back where they should.

From the academy as planned and laid out for tonight (plan.py/region.py, layout.py), with a
random stream of its own (tonight's bytes do not change when a rentrée is asked for):

- pupils move up a level in their school (6e→5e→4e→3e, 2nde→1re→terminale), except the
  ``repeat`` share (same level) and the ``move_away`` share (gone); 3e and terminale leave,
  the ``to_lycee`` share of each collège's 3e reappearing in the 2nde of a lycée of the
  academy (same department first) with their INE, names and family; pupils who had left
  during the year are gone;
- 6e and 2nde arrive: each school's first level is filled back to last year's size
  (``arrivals``), new families with new guardians (``sibling`` of them younger siblings of a
  family the school has); leavers' guardians are gone with them; ``guardian_change`` of the
  families who stay get new contact details (e-mail, mobile or address);
- every class and group is renumbered (``_School.code_sep``: 6A → 6-1, 6LV2ESP → 6-LV2ESP;
  ``Rentree.renumber=False``: the codes come back, on new classes) and cut again; services
  are drawn again for the new classes; ``teacher_move`` of the teachers move to another
  school of the academy teaching their subject, ``teacher_turnover`` leave and are replaced
  by new ones;
- ids are what a school's databases keep from one year to the next: ELEVE_ID and ELENOET of
  the pupils who stay, PERSONNE_ID of the guardians whose family stays, STS ids of the
  teachers who stay; newcomers get new ones.

The export date defaults to 3 September of the next year (inside the default roll-over
window, ``rollover_window`` 20 Aug-30 Sep); another date (``Rentree.export``) gives the same
content dated outside it.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from etl.devtools.generate.catalog import _AcademyInfo
from etl.devtools.generate.landing import _write_school
from etl.devtools.generate.layout import _layout_school
from etl.devtools.generate.names import _GERMAN_SHARE
from etl.devtools.generate.people import _make_guardians, _make_teacher, _People
from etl.devtools.generate.records import (
    GenerateSummary,
    _Family,
    _School,
    _SchoolDraws,
    _Teacher,
)


@dataclass(frozen=True)
class RentreeShares:
    """How the next school year differs from this one (shares of the people concerned)."""

    to_lycee: float = 0.65  # of a collège's 3e: in the 2nde of a lycée of the academy
    repeat: float = 0.03  # pupils who stay in their level
    move_away: float = 0.03  # pupils of the other levels who leave the school
    arrivals: float = 1.0  # each school's first level filled back to this share of its size
    sibling: float = 0.15  # of the arrivals: a younger sibling of a family the school has
    guardian_change: float = 0.05  # families who stay whose guardian gets new contact details
    teacher_move: float = 0.06  # teachers who move to another school of the academy
    teacher_turnover: float = 0.04  # teachers who leave, replaced by new ones

    @classmethod
    def parse(cls, items: Sequence[str]) -> RentreeShares:
        """``["to_lycee=0.7", "repeat=0.02"]`` over the defaults; ValueError names a bad one."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, float] = {}
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in names:
                raise ValueError(f"rentrée share {item!r}: expected KEY=VALUE, KEY one of "
                                 f"{sorted(names)}")
            value = float(raw)
            if not 0.0 <= value <= (2.0 if key == "arrivals" else 1.0):
                raise ValueError(f"rentrée share {key}={raw}: out of range")
            values[key] = value
        return cls(**values)


def default_rentree_date(year: int) -> datetime.date:
    """The first export of school year ``year + 1``: early September, in the roll-over
    window of the default academies file."""
    return datetime.date(year + 1, 9, 3)


@dataclass(frozen=True)
class Rentree:
    """A next-school-year export set to write beside tonight's: where, dated when, how."""

    out: Path
    export: datetime.date | None = None  # default: default_rentree_date(year)
    shares: RentreeShares = field(default_factory=RentreeShares)
    #: every class and group renumbered (6A -> 6-1); False: this year's codes come back, as
    #: new classes of new pupils (6A of next year is not last year's 6A)
    renumber: bool = True


@dataclass
class _NextYear:
    """The academy of next year: its schools, families (same indexes as this year's, then the
    arrivals') and staff (same indexes, then the new teachers)."""

    schools: list[_School]
    families: list[_Family]
    staff: list[_Teacher]
    #: families whose guardians' address changed (their ADRESSE_IDs are new)
    moved_house: set[int] = field(default_factory=set)
    #: per school index, last year's (ELEVE_ID, ELENOET) ceiling for the newcomers' ids
    id_floor: dict[int, tuple[int, int]] = field(default_factory=dict)


def plan_rentree(
    rng: random.Random,
    schools: Sequence[_School],
    families: Sequence[_Family],
    staff: Sequence[_Teacher],
    year: int,
    export: datetime.date,
    shares: RentreeShares,
    renumber: bool = True,
) -> _NextYear:
    """The academy of school year ``year + 1`` from this year's, laid out (module docstring).
    Nothing of this year's records is changed."""
    nxt = _NextYear(
        schools=[dataclasses.replace(s, divisions=[], groups=[], pupils=[], level_counts=[],
                                     teachers=list(s.teachers),
                                     code_sep="-" if renumber else "")
                 for s in schools],
        families=[_Family(guardians=f.guardians) for f in families],
        staff=list(staff),
    )
    _change_guardians(rng, nxt, families, schools, shares)
    kept: dict[int, tuple[tuple[str, str], int, int]] = {}  # id(pupil) -> previous, ids
    lycees_by_dept: dict[str, list[int]] = {}
    for s in schools:
        if not s.college:
            lycees_by_dept.setdefault(s.dept, []).append(s.index)
    lycees = [s.index for s in schools if not s.college]
    for school in schools:
        top = len(school.levels) - 1
        nxt.id_floor[school.index] = (max((p.eleve_id for p in school.pupils), default=0),
                                      max((p.elenoet for p in school.pupils), default=0))
        for p in school.pupils:
            if p.left is not None:
                continue
            level, target = p.level, school.index
            if rng.random() < shares.repeat:
                pass
            elif level == top:
                where = lycees_by_dept.get(school.dept) or lycees
                if not (school.college and where and rng.random() < shares.to_lycee):
                    continue  # 3e or terminale: gone
                level, target = 0, where[rng.randrange(len(where))]
            elif rng.random() < shares.move_away:
                continue
            else:
                level += 1
            q = dataclasses.replace(p, level=level, school=target, division="", groups=(),
                                    previous=None, left=None)
            if target == school.index:
                kept[id(q)] = ((school.levels[p.level].mef, p.division), p.eleve_id,
                               p.elenoet)
            else:
                q.entry = min(datetime.date(year + 1, 9, 1), export)
            nxt.schools[target].pupils.append(q)
            nxt.families[p.family].pupils.append(q)
    for school, last in zip(nxt.schools, schools, strict=True):
        _arrivals(rng, nxt, school, last, year + 1, export, shares)
    _move_teachers(rng, nxt, shares)
    for school in nxt.schools:
        _layout_school(rng, school)
        _carry_pupil_ids(rng, school, kept, nxt.id_floor[school.index])
    return nxt


def _change_guardians(rng: random.Random, nxt: _NextYear, families: Sequence[_Family],
                      schools: Sequence[_School], shares: RentreeShares) -> None:
    """New contact details for ``guardian_change`` of the families: their first guardian's
    e-mail or mobile, or the household's address (a move within the school's department)."""
    for index, family in enumerate(nxt.families):
        if rng.random() >= shares.guardian_change or not families[index].pupils:
            continue
        dept = schools[families[index].pupils[0].school].dept
        people = _People(rng, _GERMAN_SHARE.get(dept, 0.05))
        what = rng.randrange(3)
        first = dataclasses.replace(family.guardians[0])
        if what == 0:
            first.email = people.email(first.first, first.usage or first.last)
        elif what == 1:
            first.mobile = people.mobile()
        else:
            old, new = first.address, people.address(dept)
            family.guardians = [dataclasses.replace(g, address=new) if g.address == old else g
                                for g in family.guardians]
            nxt.moved_house.add(index)
            continue
        family.guardians = [first, *family.guardians[1:]]


def _arrivals(rng: random.Random, nxt: _NextYear, school: _School, last: _School, year: int,
              export: datetime.date, shares: RentreeShares) -> None:
    """Fill the school's first level (6e, 2nde) back to ``arrivals`` x its size last year."""
    first_level = sum(1 for p in last.pupils if p.level == 0)
    have = sum(1 for p in school.pupils if p.level == 0)
    wanted = round(first_level * shares.arrivals) - have
    people = _People(rng, _GERMAN_SHARE.get(school.dept, 0.05))
    here = sorted({p.family for p in school.pupils})
    for _ in range(max(0, wanted)):
        if here and rng.random() < shares.sibling:
            fam_index = here[rng.randrange(len(here))]
            family = nxt.families[fam_index]
            surname = family.pupils[0].last
        else:
            guardians, surname = _make_guardians(people, people.surname(), school.dept)
            family = _Family(guardians=guardians)
            fam_index = len(nxt.families)
            nxt.families.append(family)
        pupil = people.pupil(surname, school.levels[0], 0, school.college, year, export)
        pupil.left = None  # a pupil who arrives tonight has not left yet
        pupil.school, pupil.family = school.index, fam_index
        while any(s.first == pupil.first for s in family.pupils):  # siblings differ
            pupil.first = people.child_first(pupil.sex)
        family.pupils.append(pupil)
        school.pupils.append(pupil)


def _move_teachers(rng: random.Random, nxt: _NextYear, shares: RentreeShares) -> None:
    """``teacher_move`` of the teachers go to another school of the academy that teaches their
    subject (same department first); ``teacher_turnover`` leave, replaced by a new teacher of
    the same subject. A school keeps at least three teachers."""
    home: dict[int, _School] = {}
    for school in nxt.schools:
        for t in school.teachers:
            home.setdefault(t, school)
    for t, school in sorted(home.items()):
        teacher = nxt.staff[t]
        if teacher.function != "ENS":
            continue
        own = sum(1 for x in school.teachers if nxt.staff[x].function == "ENS")
        draw = rng.random()
        if own <= 3 or draw >= shares.teacher_move + shares.teacher_turnover:
            continue
        if draw < shares.teacher_move:
            others = [s for s in nxt.schools if s is not school and t not in s.teachers
                      and teacher.subject in s.subjects]
            near = [s for s in others if s.dept == school.dept] or others
            if not near:
                continue
            school.teachers.remove(t)
            near[rng.randrange(len(near))].teachers.append(t)
            continue
        for s in nxt.schools:
            if t in s.teachers:
                s.teachers.remove(t)
        people = _People(rng, _GERMAN_SHARE.get(school.dept, 0.05))
        school.teachers.append(len(nxt.staff))
        nxt.staff.append(_make_teacher(people, "ENS", teacher.subject))


def _carry_pupil_ids(rng: random.Random, school: _School,
                     kept: Mapping[int, tuple[tuple[str, str], int, int]],
                     floor: tuple[int, int]) -> None:
    """The pupils who stay keep their ELEVE_ID, ELENOET and get last year's class as
    SCOLARITE_AN_DERNIER; newcomers get ids above last year's and no previous year here."""
    eleve_id, elenoet = floor[0] or rng.randint(100000, 2000000), floor[1] or 1000
    for pupil in school.pupils:  # in the order the layout drew (shuffled, then by id)
        carried = kept.get(id(pupil))
        if carried is not None:
            pupil.previous, pupil.eleve_id, pupil.elenoet = carried
        else:
            eleve_id += rng.randint(1, 3)
            elenoet += 1
            pupil.previous, pupil.eleve_id, pupil.elenoet = None, eleve_id, elenoet
    school.pupils.sort(key=lambda p: p.eleve_id)


def write_rentree(
    folder_root: Path,
    rng: random.Random,
    info: _AcademyInfo,
    nxt: _NextYear,
    last: Mapping[str, _SchoolDraws],
    next_sts: int,
    year: int,
    export: datetime.date,
    summary: GenerateSummary,
    *,
    release: bool = False,
) -> int:
    """Write next year's schools (school year ``year``) under ``folder_root``; ids carried
    from ``last`` (this year's draws per UAI). Returns the next STS id; ``release`` lets each
    school's pupils go once written (region scale)."""

    def carry(school: _School, draws: _SchoolDraws) -> None:
        before = last.get(school.uai)
        if before is None:
            return
        for t, sid in before.sts_ids.items():
            if t in draws.sts_ids:
                draws.sts_ids[t] = sid  # new ones were drawn above every id of last year
        top_p = max((i for ids in before.person_ids.values() for i in ids), default=100000)
        top_a = max((i for ids in before.address_ids.values() for i in ids), default=100000)
        for fam in draws.family_order:
            guardians = nxt.families[fam].guardians
            ids = before.person_ids.get(fam)
            if ids is not None and len(ids) == len(guardians):
                draws.person_ids[fam] = ids
                if fam not in nxt.moved_house:
                    draws.address_ids[fam] = before.address_ids[fam]
                    continue
            else:
                fresh = []
                for _g in guardians:
                    top_p += rng.randint(1, 4)
                    fresh.append(top_p)
                draws.person_ids[fam] = fresh
            seen: dict[tuple[str, str, str, str], int] = {}
            addresses = []
            for g in guardians:
                if g.address not in seen:
                    top_a += rng.randint(1, 3)
                    seen[g.address] = top_a
                addresses.append(seen[g.address])
            draws.address_ids[fam] = addresses

    for school in nxt.schools:
        next_sts = _write_school(folder_root, rng, info, school, nxt.families, nxt.staff,
                                 next_sts, year, export, summary, carry=carry,
                                 stamp_sts=True)
        if release:
            school.pupils = []
    return next_sts

