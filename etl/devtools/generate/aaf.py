"""The academy as its AAF sends it: ``ficAlimMENESR`` files, one set per academy and night.

Why: most ENTs are fed by their academy's AAF, built by the academy from SIECLE, STS-web and
HR; the same planned academy (same seed: same schools, classes, groups, pupils, INEs,
guardians, teachers and services as the SIECLE/STS files) written the AAF way lets the
demo, the tests and the bench run on either source and compare them.

What differs from the school exports, as in real AAF files: one file per type for the whole
academy (``<prefix>_Complet_<YYYYMMDD>_<Type>_<NNNN>.xml``, split into numbered parts past
``part_records`` records), persons named by the academy's own id (``ENTPersonJointure``,
stable across nights for one seed, never a SIECLE or STS id), schools by their structure
jointure (``ENTStructureJointure``) which every person's classes, groups and functions point
to (``<jointure>$<code>``); a guardian of children in two schools and a teacher in two
schools are one record each. Pupils who left are absent (an AAF lists current pupils).
Only fields real AAF files hold and a reader can use; no addresses.

``ENTElevePersRelEleve`` is ``<guardian id>$<relation>$<financial>$<legal>$<contact>$<pays>``:
the relation is SIECLE's CODE_PARENTE, the fourth field 1 for a legal guardian (2 would be
a person in charge), 0 for neither, as Open ENT NG's feeder reads it (a relative when the
fourth field is not 0).
"""

from __future__ import annotations

import datetime
import io
import random
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from etl.devtools.generate.catalog import _SUBJECTS, _AcademyInfo
from etl.devtools.generate.landing import _draw_school
from etl.devtools.generate.records import (
    GenerateSummary,
    _Family,
    _Pupil,
    _School,
    _SchoolDraws,
    _Teacher,
)
from etl.devtools.generate.xmltext import _esc, _fr, _upper

#: records per file part before the next part starts (real academies split at a few thousand)
DEFAULT_PART_RECORDS = 10_000
DEFAULT_PREFIX = "ENT"
#: the types written, in the order the files reference each other
AAF_TYPES = ("EtabEducNat", "Eleve", "PersRelEleve", "PersEducNat")
DOCTYPE = '<!DOCTYPE ficAlimMENESR SYSTEM "ficAlimMENESR.dtd">'
#: the operational attribute naming each type's category
CATEGORY_ATTR = {"EtabEducNat": "categorieStructure", "Eleve": "categoriePersonne",
                 "PersRelEleve": "categoriePersonne", "PersEducNat": "categoriePersonne"}
#: STS function -> (label, discipline code, discipline label) of non-teaching staff
_FUNCTIONS = {"DIR": ("DIRECTION", "D0010", "DIRECTION"),
              "EDU": ("EDUCATION", "E0030", "EDUCATION"),
              "DOC": ("DOCUMENTATION", "L0080", "DOCUMENTATION")}

Attrs = list[tuple[str, list[str]]]


def part_name(prefix: str, kind: str, date: datetime.date, aaf_type: str, part: int) -> str:
    """``ENT_Complet_20261001_Eleve_0000.xml``: how academies name the parts."""
    return f"{prefix}_{kind}_{date:%Y%m%d}_{aaf_type}_{part:04d}.xml"


def _values(values: Sequence[str]) -> str:
    """``<value>..</value>`` per value; an empty attribute is one ``<value/>``, as AAF writes."""
    return "".join(f"<value>{_esc(v)}</value>" if v else "<value/>" for v in values) or (
        "<value/>"
    )


def _operational(aaf_type: str) -> str:
    return (f'<operationalAttributes><attr name="{CATEGORY_ATTR[aaf_type]}"><value>{aaf_type}'
            "</value></attr></operationalAttributes>")


def add_request(aaf_type: str, ident: str, attrs: Attrs) -> str:
    body = "".join(f'      <attr name="{n}">{_values(v)}</attr>\n' for n, v in attrs)
    return (f"  <addRequest>\n    {_operational(aaf_type)}\n"
            f"    <identifier><id>{_esc(ident)}</id></identifier>\n"
            f"    <attributes>\n{body}    </attributes>\n  </addRequest>\n")


def modify_request(aaf_type: str, ident: str, attrs: Attrs) -> str:
    """A ``modifyRequest`` replacing each attribute of `attrs` with its values."""
    body = "".join(f'      <modification name="{n}" operation="replace">{_values(v)}'
                   "</modification>\n" for n, v in attrs)
    return (f"  <modifyRequest>\n    {_operational(aaf_type)}\n"
            f"    <identifier><id>{_esc(ident)}</id></identifier>\n"
            f"    <modifications>\n{body}    </modifications>\n  </modifyRequest>\n")


def delete_request(aaf_type: str, ident: str) -> str:
    return (f"  <deleteRequest>\n    {_operational(aaf_type)}\n"
            f"    <identifier><id>{_esc(ident)}</id></identifier>\n  </deleteRequest>\n")


class PartWriter:
    """One type's file parts: a new numbered part every `per_part` records; at least one
    part (an empty ``ficAlimMENESR`` says "none of this type"), UTF-8, the DOCTYPE line."""

    def __init__(self, folder: Path, prefix: str, kind: str, date: datetime.date,
                 aaf_type: str, per_part: int) -> None:
        if per_part < 1:
            raise ValueError("records per part must be >= 1")
        self.folder, self.prefix, self.kind, self.date = folder, prefix, kind, date
        self.aaf_type, self.per_part = aaf_type, per_part
        self.files: list[Path] = []
        self.records = 0
        self._out: io.TextIOWrapper | None = None
        self._in_part = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        path = self.folder / part_name(self.prefix, self.kind, self.date, self.aaf_type,
                                       len(self.files))
        self.files.append(path)
        self._out = path.open("w", encoding="utf-8", newline="\n")
        self._out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n{DOCTYPE}\n<ficAlimMENESR>\n')
        self._in_part = 0

    def _close_part(self) -> None:
        if self._out is not None:
            self._out.write("</ficAlimMENESR>\n")
            self._out.close()
            self._out = None

    def write(self, record: str) -> None:
        if self._in_part == self.per_part:
            self._close_part()
            self._open()
        assert self._out is not None
        self._out.write(record)
        self._in_part += 1
        self.records += 1

    def close(self) -> list[Path]:
        self._close_part()
        return self.files

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _AafIds:
    """The academy's own ids, drawn from their own stream (the SIECLE/STS stream is left as
    it is): same seed, same ids every night; 8 digits, so never a SIECLE or STS id."""

    def __init__(self, key: str, schools: Sequence[_School], families: Sequence[_Family],
                 staff: Sequence[_Teacher]) -> None:
        rng = random.Random(f"{key}:aaf")
        n = rng.randint(10000, 40000)
        self.structures: list[str] = []
        for _school in schools:
            n += rng.randint(1, 9)
            self.structures.append(str(n))
        self.pupils: list[list[str]] = []
        self.guardians: list[list[str]] = []
        p = 20_000_000 + rng.randrange(10**6)
        g = 40_000_000 + rng.randrange(10**6)
        for family in families:
            ids = []
            for _pupil in family.pupils:
                p += rng.randint(1, 3)
                ids.append(str(p))
            self.pupils.append(ids)
            ids = []
            for _guardian in family.guardians:
                g += rng.randint(1, 3)
                ids.append(str(g))
            self.guardians.append(ids)
        t = 60_000_000 + rng.randrange(10**6)
        self.staff: list[str] = []
        for _teacher in staff:
            t += rng.randint(1, 3)
            self.staff.append(str(t))


def _title(sex: int) -> str:
    return "M." if sex == 1 else "Mme"


def _school_type(school: _School) -> str:
    return "COLLEGE" if school.college else "LYCEE GENERAL ET TECHNOLOGIQUE"


def _structure_attrs(school: _School, jointure: str, info: _AcademyInfo) -> Attrs:
    return [
        ("ENTStructureJointure", [jointure]),
        ("ENTStructureUAI", [school.uai]),
        ("ENTEtablissementUAI", [school.uai]),
        ("ENTStructureNomCourant", [f"{_school_type(school)} {school.name}"]),
        ("ENTStructureTypeStruct", [_school_type(school)]),
        ("ENTEtablissementMinistereTutelle", ["MINISTERE DE L'EDUCATION NATIONALE"]),
        ("ENTEtablissementContrat", ["PU"]),
        ("ENTServAcAcademie", [info.label]),
        ("ENTStructureClasses", [f"{code}${level.label} {code}"
                                 for code, level in school.divisions]),
        ("ENTStructureGroupes", [f"{g.code}${g.label}" for g in school.groups]),
    ]


def _pupil_attrs(p: _Pupil, ident: str, school: _School, jointure: str,
                 family: _Family, guardian_ids: Sequence[str]) -> Attrs:
    level = school.levels[p.level]
    links = [f"{gid}${g.parente}${int(g.pays)}${1 if g.legal else 0}${int(g.priority)}"
             f"${int(g.pays)}" for g, gid in zip(family.guardians, guardian_ids, strict=True)]
    legal = [gid for g, gid in zip(family.guardians, guardian_ids, strict=True) if g.legal]
    entry = [f"{jointure}${_fr(p.entry)}${p.division}"] if p.entry is not None else []
    return [
        ("ENTPersonJointure", [ident]),
        ("ENTEleveINE", [p.ine or ""]),
        ("ENTEleveStructRattachId", [str(p.eleve_id)]),
        ("ENTPersonDateNaissance", [_fr(p.birth)]),
        ("ENTPersonNomPatro", [_upper(p.last)]),
        ("sn", [_upper(p.usage or p.last)]),
        ("givenName", [p.first]),
        ("ENTPersonAutresPrenoms", [p.first, *((p.first2,) if p.first2 else ())]),
        ("personalTitle", [_title(p.sex)]),
        ("ENTEleveAutoriteParentale", legal),
        ("ENTElevePersRelEleve", links),
        ("ENTEleveStatutEleve", ["SCOLAIRE"]),
        ("ENTEleveMEF", [level.mef]),
        ("ENTEleveLibelleMEF", [level.formation]),
        ("ENTEleveNivFormation", [level.label]),
        ("ENTPersonStructRattach", [jointure]),
        ("ENTEleveDateEntreeClasses", entry),
        ("ENTEleveClasses", [f"{jointure}${p.division}"]),
        ("ENTEleveGroupes", [f"{jointure}${g}" for g in p.groups]),
    ]


def _guardian_attrs(family: _Family, index: int, ident: str, children: Sequence[str]) -> Attrs:
    g = family.guardians[index]
    return [
        ("ENTPersonJointure", [ident]),
        ("ENTPersonDateNaissance", [""]),
        ("ENTPersonNomPatro", [_upper(g.last)]),
        ("sn", [_upper(g.usage or g.last)]),
        ("givenName", [g.first]),
        ("personalTitle", ["M." if g.civility == "M." else "Mme"]),
        ("homePhone", [g.home or ""]),
        ("mobile", [g.mobile or ""]),
        ("mail", [g.email or ""]),
        ("ENTAuxPersRelEleveEleve", list(children)),
    ]


def _staff_attrs(t: _Teacher, ident: str, where: Sequence[tuple[str, _School, _SchoolDraws]],
                 index: int) -> Attrs:
    functions: list[str] = []
    classes: list[str] = []
    groups: list[str] = []
    class_subjects: list[str] = []
    group_subjects: list[str] = []
    head: list[str] = []
    taught: list[str] = []
    for jointure, school, draws in where:
        if t.function == "ENS":
            s = _SUBJECTS[t.subject]
            functions.append(f"{jointure}$ENS$ENSEIGNEMENT${s.discipline}${s.discipline_label}")
        else:
            label, code, discipline = _FUNCTIONS[t.function]
            functions.append(f"{jointure}${t.function}${label}${code}${discipline}")
        group_codes = {g.code for g in school.groups}
        subjects: list[str] = []
        for code, services in draws.services.items():
            for subject, teacher in services:
                if teacher != index:
                    continue
                if code in group_codes:
                    groups.append(f"{jointure}${code}")
                    group_subjects.append(f"{jointure}${code}${subject}")
                else:
                    classes.append(f"{jointure}${code}")
                    class_subjects.append(f"{jointure}${code}${subject}")
                if subject not in subjects:
                    subjects.append(subject)
        taught.extend(f"{jointure}${_SUBJECTS[s].long}" for s in subjects)
        head.extend(f"{jointure}${code}" for code in draws.head.get(index, ()))
    return [
        ("ENTPersonJointure", [ident]),
        ("ENTPersonDateNaissance", [_fr(t.birth)]),
        ("ENTPersonNomPatro", [_upper(t.birth_name)]),
        ("sn", [_upper(t.last)]),
        ("givenName", [t.first]),
        ("personalTitle", [_title(t.sex)]),
        ("mail", [""]),
        ("ENTPersonStructRattach", [where[0][0]]),
        ("ENTPersonFonctions", functions),
        ("ENTAuxEnsMatiereEnseignEtab", taught),
        ("ENTAuxEnsClasses", list(dict.fromkeys(classes))),
        ("ENTAuxEnsGroupes", list(dict.fromkeys(groups))),
        ("ENTAuxEnsClassesMatieres", class_subjects),
        ("ENTAuxEnsGroupesMatieres", group_subjects),
        ("ENTAuxEnsClassesPrincipal", head),
        ("PersEducNatPresenceDevantEleves", ["O" if t.function == "ENS" else "N"]),
    ]


def _write_aaf_academy(
    folder: Path,
    rng: random.Random,
    key: str,
    info: _AcademyInfo,
    plan: Sequence[_School],
    families: Sequence[_Family],
    staff: Sequence[_Teacher],
    next_sts: int,
    export: datetime.date,
    summary: GenerateSummary,
    part_records: int = DEFAULT_PART_RECORDS,
    prefix: str = DEFAULT_PREFIX,
    release: bool = False,
) -> None:
    """Write one planned academy's AAF Complet in `folder`; `key` seeds the AAF ids.

    Each school takes the same draws from `rng` as its SIECLE/STS files would (so the
    services, head teachers and ELEVE_IDs are the STS/SIECLE ones); `release` drops each
    school's pupils once written (the region's memory bound)."""
    ids = _AafIds(key, plan, families, staff)
    pupil_ids: dict[int, str] = {}  # id(pupil) -> AAF id: pupils live as long as `families`
    for family, family_ids in zip(families, ids.pupils, strict=True):
        for pupil, ident in zip(family.pupils, family_ids, strict=True):
            pupil_ids[id(pupil)] = ident
    where: dict[int, list[tuple[str, _School, _SchoolDraws]]] = {}
    with PartWriter(folder, prefix, "Complet", export, "EtabEducNat", part_records) as out:
        for school, jointure in zip(plan, ids.structures, strict=True):
            out.write(add_request("EtabEducNat", jointure,
                                  _structure_attrs(school, jointure, info)))
    files = list(out.files)
    with PartWriter(folder, prefix, "Complet", export, "Eleve", part_records) as out:
        for school, jointure in zip(plan, ids.structures, strict=True):
            draws, next_sts = _draw_school(rng, school, families, staff, next_sts, export)
            for index in school.teachers:
                where.setdefault(index, []).append((jointure, school, draws))
            for pupil in school.pupils:
                if pupil.left is not None:
                    continue
                family = families[pupil.family]
                attrs = _pupil_attrs(pupil, pupil_ids[id(pupil)], school, jointure, family,
                                     ids.guardians[pupil.family])
                out.write(add_request("Eleve", pupil_ids[id(pupil)], attrs))
            if release:
                school.pupils = []
    files += out.files
    summary.pupils += out.records
    with PartWriter(folder, prefix, "Complet", export, "PersRelEleve", part_records) as out:
        for f, family in enumerate(families):
            children = [pupil_ids[id(p)] for p in family.pupils if p.left is None]
            if not children:
                continue
            for g, ident in enumerate(ids.guardians[f]):
                out.write(add_request("PersRelEleve", ident,
                                      _guardian_attrs(family, g, ident, children)))
    files += out.files
    summary.guardians += out.records
    with PartWriter(folder, prefix, "Complet", export, "PersEducNat", part_records) as out:
        for index, person in enumerate(staff):
            if index not in where:
                continue
            out.write(add_request("PersEducNat", ids.staff[index],
                                  _staff_attrs(person, ids.staff[index], where[index], index)))
            summary.teachers += person.function == "ENS"
    files += out.files
    summary.files.extend(files)


def aaf_files(folder: Path, kind: str = "Complet", aaf_type: str | None = None) -> list[Path]:
    """The AAF parts of `kind` in `folder` (one type, or all), in name order."""
    pattern = f"*_{kind}_*_{aaf_type or '*'}_[0-9][0-9][0-9][0-9].xml"
    return sorted(folder.glob(pattern))

