"""The cheap planning records (pupils, guardians, teachers, schools) and the run's summary."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from etl.devtools.generate.catalog import _COLLEGE_CORE, _LATIN, _LYCEE_CORE, _Level


@dataclass(slots=True)
class _Guardian:
    civility: str  # LC_CIVILITE: MME or M.
    last: str
    usage: str | None
    first: str
    mobile: str | None
    home: str | None
    email: str | None  # None: absent element, "": empty element
    profession: str
    parente: str
    legal: bool
    pays: bool
    hosts: bool
    priority: bool
    address: tuple[str, str, str, str]  # line1, postcode, insee, postal label


@dataclass(slots=True)
class _Pupil:
    last: str
    first: str
    sex: int
    birth: datetime.date
    first2: str | None = None
    usage: str | None = None
    ine: str | None = None
    regime: str = "24"
    mel: str | None = None
    left: datetime.date | None = None
    entry: datetime.date | None = None
    level: int = 0
    school: int = 0
    family: int = -1
    eleve_id: int = 0
    elenoet: int = 0
    division: str = ""
    groups: tuple[str, ...] = ()
    previous: tuple[str, str] | None = None  # (MEF, structure) of last year, same school


@dataclass(slots=True)
class _Family:
    guardians: list[_Guardian]
    pupils: list[_Pupil] = field(default_factory=list)


@dataclass(slots=True)
class _Teacher:
    last: str
    birth_name: str
    first: str
    sex: int
    birth: datetime.date
    grade: str
    function: str  # ENS, DIR, EDU, DOC
    subject: str  # CODE_MATIERE of the subject taught ("" for non-teachers)


@dataclass(slots=True)
class _Group:
    code: str
    label: str
    divisions: tuple[str, ...]
    subject: str
    mode: str  # CODE_MOD_COURS


@dataclass(slots=True)
class _School:
    index: int
    uai: str
    dept: str
    college: bool
    name: str
    levels: tuple[_Level, ...]
    resp_legal: bool  # older RESP_LEGAL convention
    sts_encoding: str
    level_counts: list[int] = field(default_factory=list)
    divisions: list[tuple[str, _Level]] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=list)
    pupils: list[_Pupil] = field(default_factory=list)
    teachers: list[int] = field(default_factory=list)  # indexes in the academy teacher list
    #: the school year's class codes: "" tonight's (6A, 2NDE1, 6LV2ESP), "-" the next year's,
    #: all renumbered (6-1, 2NDE-1, 6-LV2ESP: no code of last year comes back)
    code_sep: str = ""

    @property
    def subjects(self) -> tuple[str, ...]:
        core = _COLLEGE_CORE if self.college else _LYCEE_CORE
        return (*core, "030602", "030102", *((_LATIN,) if self.college else ()))


@dataclass(slots=True)
class _SchoolDraws:
    """What writing one school draws from the academy's random stream, drawn in one place
    and in the stream's order, so that every output format of the same seed sees the same
    hours, ids and services (who teaches which class, head teachers)."""

    when: datetime.datetime  # the export's timestamp
    family_order: list[int]  # families in the order the school meets them
    person_ids: dict[int, list[int]]  # family -> PERSONNE_ID of each guardian
    address_ids: dict[int, list[int]]  # family -> ADRESSE_ID of each guardian
    sts_ids: dict[int, int]  # teacher index -> STS INDIVIDU ID in this school
    services: dict[str, list[tuple[str, int]]]  # structure -> [(subject, teacher index)]
    head: dict[int, list[str]]  # teacher index -> divisions they are head teacher of


@dataclass
class GenerateSummary:
    """What `generate_academy` wrote.

    Counts are rows in the files: `guardians` counts PERSONNE elements and `teachers` counts
    FONCTION=ENS individuals over all schools, so a guardian or teacher present in two schools
    is counted twice (as the files list them twice).
    """

    academy: str
    schools: list[str]
    pupils: int
    guardians: int
    teachers: int
    files: list[Path]
    #: the next school year's export set, when one was asked for (rentree.py)
    rentree: GenerateSummary | None = None
