"""One bare, arbitrarily large BEE_ELEVES file for the reader benchmarks, streamed."""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Iterator
from pathlib import Path

from etl.devtools.generate.catalog import _COLLEGE_LEVELS
from etl.devtools.generate.eleves import _write_eleves
from etl.devtools.generate.layout import CLASS_SIZE, _division_code, _pick_groups
from etl.devtools.generate.names import _GERMAN_SHARE
from etl.devtools.generate.people import _People
from etl.devtools.generate.records import _Pupil, _School
from etl.devtools.generate.xmltext import ISO
from etl.discover.landing import uai_check_letter


def _stream_pupils(
    rng: random.Random, pupils: int, uai: str, year: int, export: datetime.date
) -> Iterator[_Pupil]:
    """Pupils of one big collège, generated one at a time (nothing kept in memory)."""
    dept = uai[:3]
    people = _People(rng, _GERMAN_SHARE.get(dept, 0.05))
    levels = _COLLEGE_LEVELS
    per_level = math.ceil(pupils / len(levels))
    n_div = max(1, math.ceil(per_level / CLASS_SIZE))
    school = _School(
        index=0,
        uai=uai,
        dept=dept,
        college=True,
        name="",
        levels=levels,
        resp_legal=False,
        sts_encoding=ISO,
    )
    alsace = dept in ("067", "068", "057")
    eleve_id = rng.randint(100000, 2000000)
    for n in range(pupils):
        level_index = n % len(levels)
        level = levels[level_index]
        pupil = people.pupil(people.surname(), level, level_index, True, year, export)
        eleve_id += rng.randint(1, 3)
        pupil.eleve_id, pupil.elenoet = eleve_id, 1000 + n
        pupil.division = _division_code(level, (n // len(levels)) % n_div, True)
        pupil.groups = _pick_groups(rng, school, level, pupil.division, alsace)
        if level_index > 0 and rng.random() < 0.6:
            previous = levels[level_index - 1]
            pupil.previous = (previous.mef, _division_code(previous, rng.randrange(n_div), True))
        yield pupil


def generate_pupils_file(path: Path, pupils: int, seed: int, uai: str) -> Path:
    """Write one bare BEE_ELEVES file (ISO-8859-15), streaming, for the reader benchmarks."""
    if len(uai) != 8 or not uai[:7].isdigit() or uai_check_letter(uai[:7]) != uai[7]:
        raise ValueError(f"invalid UAI {uai!r}")
    year = 2026
    export = datetime.date(year, 10, 1)
    rng = random.Random(seed)
    when = datetime.datetime(export.year, export.month, export.day, 9, 45, 58)
    path.parent.mkdir(parents=True, exist_ok=True)
    mefs = [level.mef for level in _COLLEGE_LEVELS]
    with path.open("wb") as binary:
        _write_eleves(binary, uai, year, when, _stream_pupils(rng, pupils, uai, year, export), mefs)
    return path
