"""A school's divisions, groups and pupil ids, cut from its planned pupils."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from etl.devtools.generate.catalog import _LATIN, _LV2, _SUBJECTS, _Level
from etl.devtools.generate.records import _Group, _Pupil, _School

CLASS_SIZE = 28  # divisions are cut so that they hold 25-30 pupils at most


def _division_code(level: _Level, index: int, college: bool, sep: str = "") -> str:
    if sep:  # the next year's numbering (``_School.code_sep``)
        return f"{level.div_prefix}{sep}{index + 1}"
    if college and index < 26:
        return f"{level.div_prefix}{chr(ord('A') + index)}"
    return f"{level.div_prefix}{index + 1}"


def _half_group_code(division: str, number: int) -> str | None:
    for code in (f"_{division}_G{number}", f"{division}G{number}"):
        if len(code) <= 8:
            return code
    return None


def _layout_school(rng: random.Random, school: _School) -> None:
    """Divisions of ~25-30 pupils per level, groups, and each pupil's structures and ids."""
    by_level: list[list[_Pupil]] = [[] for _ in school.levels]
    for pupil in school.pupils:
        by_level[pupil.level].append(pupil)
    alsace = school.dept in ("067", "068", "057")
    for level_index, level in enumerate(school.levels):
        members = by_level[level_index]
        rng.shuffle(members)
        n_div = max(1, math.ceil(len(members) / CLASS_SIZE))
        codes = [_division_code(level, i, school.college, school.code_sep)
                 for i in range(n_div)]
        school.divisions.extend((code, level) for code in codes)
        _add_level_groups(school, level, codes)
        for position, pupil in enumerate(members):
            division = codes[position % n_div]
            pupil.division = division
            pupil.groups = _pick_groups(rng, school, level, division, alsace)
            if level_index > 0 and rng.random() < 0.6:
                previous = school.levels[level_index - 1]
                pupil.previous = (
                    previous.mef,
                    _division_code(previous, rng.randrange(n_div), school.college),
                )
    school.level_counts = [len(m) for m in by_level]
    order = list(school.pupils)
    rng.shuffle(order)
    eleve_id = rng.randint(100000, 2000000)
    elenoet = rng.randint(1000, 5000)
    for pupil in order:
        eleve_id += rng.randint(1, 3)
        elenoet += 1
        pupil.eleve_id, pupil.elenoet = eleve_id, elenoet
    school.pupils = sorted(order, key=lambda p: p.eleve_id)


def _group_prefix(school: _School, level: _Level) -> str:
    return f"{level.grp_prefix}{school.code_sep}"


def _add_level_groups(school: _School, level: _Level, codes: Sequence[str]) -> None:
    divisions = tuple(codes)
    prefix = _group_prefix(school, level)
    if level.lv2:
        for suffix, subject, label in _LV2:
            school.groups.append(
                _Group(
                    f"{prefix}LV2{suffix}",
                    f"{level.label} {label} LV2",
                    divisions,
                    subject,
                    "CG",
                )
            )
        if school.college:
            school.groups.append(
                _Group(f"{prefix}LATIN", f"{level.label} LATIN", divisions, _LATIN, "CG")
            )
    for subject in level.specialities:
        gestion = _SUBJECTS[subject].gestion.replace("-", "")
        school.groups.append(
            _Group(
                f"{prefix}SPE{gestion}"[:8],
                f"{level.label} SPECIALITE {_SUBJECTS[subject].short}",
                divisions,
                subject,
                "CG",
            )
        )
    if not level.specialities:
        half_subject = "070100" if school.college else "061800"
        for code in codes:
            for number in (1, 2):
                group = _half_group_code(code, number)
                if group is not None:
                    school.groups.append(
                        _Group(group, f"{code} GROUPE {number}", (code,), half_subject, "TP")
                    )


def _pick_groups(
    rng: random.Random, school: _School, level: _Level, division: str, alsace: bool
) -> tuple[str, ...]:
    """0 to 2 groups: the LV2 (or latin) group and a half-class or speciality group."""
    groups: list[str] = []
    prefix = _group_prefix(school, level)
    if level.lv2 and rng.random() < 0.9:
        suffix = "ALL" if rng.random() < (0.6 if alsace else 0.25) else "ESP"
        groups.append(f"{prefix}LV2{suffix}")
    if level.specialities:
        subject = rng.choice(level.specialities)
        groups.append(f"{prefix}SPE{_SUBJECTS[subject].gestion.replace('-', '')}"[:8])
    elif school.college and level.lv2 and not groups and rng.random() < 0.5:
        groups.append(f"{prefix}LATIN")
    elif rng.random() < 0.6:
        group = _half_group_code(division, rng.choice((1, 2)))
        if group is not None:
            groups.append(group)
    return tuple(groups[:2])
