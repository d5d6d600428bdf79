"""The AAF records of an academy -> the canonical tables of each school it names.

``aaf_school_tables`` takes the current state (the caller applied Complets and Deltas):
``EtabEducNat`` records and the person records (``Eleve``, ``PersRelEleve``,
``PersEducNat``), and returns one ``ReadResult`` per school UAI, with the columns, keys and
codes the SIECLE and STS-web readers give, so the normalizer, the validation and the planner
treat both sources alike. What the mapping decides (from the samples in
``../shared/samples/aaf``, ``docs/formats.md`` and Open ENT NG's feeder mappings):

- Keys: ``person_key`` is the bare AAF id (``ENTPersonJointure``, else ``identifier``), so the
  normalizer's ``<ACADEMY PREFIX>$<person_key>`` is ``AC-REIMS$2605692``, the jointure real
  AAF-fed directories carry; ``source`` ``AAF``, ``source_id`` the same id. Ids are unique
  per academy: a teacher in two schools, or a guardian of pupils of two schools, has the same
  key in each school's tables.
- Schools: ``EtabEducNat`` gives the UAI (``ENTStructureUAI``, else ``ENTEtablissementUAI``),
  the name (``ENTStructureNomCourant``, ``$`` read as ``-`` as the feeder does) and the
  structure jointure (``ENTStructureJointure``, else ``identifier``) every other file points
  to. A school is never named by UAI in the person files.
- Classes and groups: values ``<structure jointure>$<code>`` (``ENTEleveClasses`` D,
  ``ENTEleveGroupes`` G; staff: ``ENTAuxEnsClasses``/``ENTAuxEnsClassesMatieres`` D,
  ``ENTAuxEnsGroupes``/``ENTAuxEnsGroupesMatieres`` G, the latter two with a third field,
  the subject code). The code is the class code within the school of that structure, as
  SIECLE's CODE_STRUCTURE; ``structures`` lists every class/group the school's records name
  (and ``ENTStructureClasses``/``ENTStructureGroupes``, ``code[$label]``), labelled by code
  unless the structure gives a label. A structure absent from ``EtabEducNat`` (outside the
  ENT's schools) is skipped with a warning (``unknown_structure``), not a rejection.
- Pupils: school from ``ENTPersonStructRattach`` (else their class's structure); INE
  ``ENTEleveINE``; birth date ``ENTPersonDateNaissance`` (dd/mm/yyyy -> ISO; a malformed one
  rejects the pupil, ``date_format``, as SIECLE); MEF ``ENTEleveMEF``; sex from
  ``personalTitle`` (``M.`` M, ``Mme``/``Mlle`` F); names ``sn`` (usage), ``ENTPersonNomPatro``
  (birth), ``givenName``; entry/leave dates ``ENTEleveDateEntreeStructRattach`` /
  ``ENTEleveDateSortieStructRattach`` when present (``has_left``: left on or before
  ``today``). One division per pupil (a second one is rejected, ``one_division``); a class of
  another school is skipped with a warning (``other_school``).
- Guardians: links from the pupil's ``ENTElevePersRelEleve``
  (``id$relation$financial$legal$contact$payment``): the fourth field gives ``level`` (1 legal
  guardian -> 1, 2 person in charge -> 2, 0 neither -> 3, as the feeder reads it),
  ``relation`` the second, ``pays_fees`` the third. A relative named in
  ``ENTEleveAutoriteParentale`` holds parental authority: level 1 whatever the fourth field
  says (2013 files wrote 1 and 2 for the two legal guardians, RESP_LEGAL style), and a link
  of level 1 when the relation list omits them. ``legal`` is level 1. A ``PersRelEleve`` is
  in the tables of each school where a pupil names them; one no pupil names is rejected
  (``no_pupil``); a link to a relative with no ``PersRelEleve`` record is skipped with a
  warning (``unknown_guardian``: the pupils' file is not blamed for the relatives' one).
  Guardians carry no birth date (as SIECLE's).
- Staff (``PersEducNat``): in each school of ``ENTPersonStructRattach``, of their functions
  (``ENTPersonFonctions`` ``structure$code$label$discipline$label``), classes, groups and head
  teacher classes. Profile per school from the functions there (else anywhere) through
  ``STS_FUNCTION_PROFILE`` (an unknown code is ETA, as STS), the highest of DIR, ENS, DOC,
  EVS, ETA; with no function, ENS when they teach there (classes, groups or
  ``PersEducNatPresenceDevantEleves`` O), else ETA. ``function`` is the code chosen. Subjects:
  the codes of ``ENTAuxEnsClassesMatieres``/``ENTAuxEnsGroupesMatieres`` for that class;
  without one, the school's ``ENTAuxEnsMatiereEnseignEtab`` (``structure$subject``). Head
  teacher from ``ENTAuxEnsClassesPrincipal`` (``structure$class``).
- An empty ``<value/>`` is absent. Nothing the canonical tables lack is kept (no address,
  phone but the mobile, regime, grant...).
- A record with no school (its structures are none of the feed's) is rejected
  (``no_school``) in ``AafSchools.unplaced``; a person key seen twice is rejected
  (``unique``, the first kept).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from etl.errors import RecordRejected, RecordWarning
from etl.read import canonical as C
from etl.read.aaf.records import AafRecord
from etl.read.base import ReadResult, fr_date, iso_date
from etl.read.canonical import Tables

SOURCE: Final = "AAF"
TITLE_SEX: Final = {"M.": "M", "M": "M", "MR": "M", "MME": "F", "MLLE": "F", "MELLE": "F"}
#: fourth field of ``ENTElevePersRelEleve`` -> ``guardian_links.level``
RESPONSIBILITY_LEVEL: Final = {"1": "1", "2": "2", "0": "3"}
#: when a person has several functions in a school, the profile shown is the first here
PROFILE_RANK: Final = ("DIR", "ENS", "DOC", "EVS", "ETA")
_UAI: Final = re.compile(r"[0-9]{7}[A-Z]")
#: a code or key shown in a message as it is (else ``?``): never a name
_PLAIN: Final = re.compile(r"[A-Za-z0-9_.\- ]{1,40}")


def _shown(v: str) -> str:
    return v if _PLAIN.fullmatch(v) else "?"


class AafSchools(dict[str, ReadResult]):
    """UAI -> that school's ``ReadResult`` (tables, rejected records, warnings, records).

    ``unplaced``: the records that belong to no school (no structure of the feed, a
    structure without a usable UAI, a guardian no pupil names), rejected with a reason.
    ``file_records``: UAI -> file part -> how many records of that file the school's tables
    were built from (read or rejected), for the error budget of each file in each school."""

    def __init__(self) -> None:
        super().__init__()
        self.unplaced: list[RecordRejected] = []
        self.unplaced_warnings: list[RecordWarning] = []
        self.file_records: dict[str, dict[str, int]] = {}


@dataclass
class _Etab:
    uai: str
    name: str | None
    file: str
    line: int
    structures: list[tuple[str, str, str | None]] = field(default_factory=list)


@dataclass
class _School:
    uai: str
    rows: dict[str, list[dict[str, object]]] = field(
        default_factory=lambda: {t: [] for t in C.TABLES})
    structures: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)
    result: ReadResult = field(default_factory=lambda: ReadResult(Tables()))
    files: dict[str, int] = field(default_factory=dict)

    def count(self, rec: AafRecord) -> None:
        self.result.records += 1
        self.files[rec.file] = self.files.get(rec.file, 0) + 1

    def structure(self, code: str, kind: str, file: str, line: int | None,
                  label: str | None = None) -> None:
        row = self.structures.get((code, kind))
        if row is None:
            self.structures[(code, kind)] = {
                "uai": self.uai, "code": code, "kind": kind, "label": label or code,
                "source": SOURCE, "file": file, "line": line}
        elif label and row["label"] == code:
            row["label"] = label

    def tables(self) -> Tables:
        self.rows["structures"] = list(self.structures.values())
        out = Tables()
        for t, rows in self.rows.items():
            if rows:
                out[t] = C.frame(t, {c: [r.get(c) for r in rows] for c in C.TABLES[t]})
        return out


def _key(rec: AafRecord) -> str:
    return rec.first("ENTPersonJointure") or rec.identifier


def _lenient_date(v: str | None) -> str | None:
    """A date that is no requirement (entry, leave): dd/mm/yyyy or ISO, else absent."""
    for parse in (fr_date, iso_date):
        try:
            return parse(v)
        except ValueError:
            continue
    return None


def _sex(rec: AafRecord) -> str | None:
    return TITLE_SEX.get((rec.first("personalTitle") or "").upper())


def _flag(v: str | None) -> str | None:
    v = (v or "").strip()
    return v if v in ("0", "1") else None


class _Builder:
    def __init__(self, academy: str, today: dt.date) -> None:
        self.academy, self.today = academy, today
        self.etabs: dict[str, _Etab] = {}
        self.schools: dict[str, _School] = {}
        self.out = AafSchools()
        self.seen: dict[str, str] = {}  # person key -> category of the record kept
        #: (uai, pupil key, relative id, level, relation, pays_fees, file, line)
        self.links: list[tuple[str, str, str, str, str | None, str | None, str, int]] = []

    # ------------------------------------------------------------------ helpers
    def school(self, uai: str) -> _School:
        s = self.schools.get(uai)
        if s is None:
            s = self.schools[uai] = _School(uai)
            e = next((e for e in self.etabs.values() if e.uai == uai), None)
            if e is not None:
                s.rows["schools"].append({"uai": uai, "academy": self.academy, "name": e.name,
                                          "source": SOURCE, "file": e.file})
                for code, kind, label in e.structures:
                    s.structure(code, kind, e.file, e.line, label)
        return s

    def reject(self, rec: AafRecord, uai: str | None, rule: str, message: str,
               key: str | None = None, fieldname: str | None = None) -> None:
        r = RecordRejected(rec.file, uai, rec.line, rec.category, rule, message,
                           source_key=key)
        r.field = fieldname
        if uai is None:
            self.out.unplaced.append(r)
        else:
            self.school(uai).result.rejected.append(r)

    def warn(self, rec: AafRecord, uai: str | None, rule: str, message: str) -> None:
        w = RecordWarning(rec.file, uai, rec.line, rec.category, rule, message)
        if uai is None:
            self.out.unplaced_warnings.append(w)
        else:
            self.school(uai).result.warnings.append(w)

    def uai_of(self, jointure: str) -> str | None:
        e = self.etabs.get(jointure)
        return e.uai if e is not None else None

    def first_seen(self, rec: AafRecord, key: str) -> bool:
        """Whether ``key`` is new (else the record is rejected, ``unique``)."""
        prev = self.seen.get(key)
        if prev is None:
            self.seen[key] = rec.category
            return True
        self.reject(rec, None, "unique",
                    f"{rec.category} {_shown(key)}: this id is already a {prev} record of "
                    "the feed; the first is kept", key)
        return False

    def split(self, rec: AafRecord, attr: str, v: str, uai: str | None,
              parts: int = 2) -> list[str] | None:
        """``v`` as ``<structure>$<code>[$...]``; None (rejected) when it is not."""
        p = [x.strip() for x in v.split("$")]
        if len(p) < parts or not p[0] or not p[1]:
            self.reject(rec, uai, "value_format",
                        f"{rec.category} {_shown(_key(rec))}: a {attr} value is not "
                        "<structure>$<code>: skipped")
            return None
        return p

    # ------------------------------------------------------------------ structures
    def etab(self, rec: AafRecord) -> None:
        if rec.category != "EtabEducNat":
            self.reject(rec, None, "category",
                        f"{_shown(rec.category)} {_shown(rec.identifier)}: not an EtabEducNat "
                        "record")
            return
        uai = (rec.first("ENTStructureUAI") or rec.first("ENTEtablissementUAI") or "").upper()
        if not _UAI.fullmatch(uai):
            self.reject(rec, None, "uai_format",
                        f"EtabEducNat {_shown(rec.identifier)}: UAI {_shown(uai)!r} is not 7 "
                        "digits and a letter; its people cannot be placed")
            return
        name = rec.first("ENTStructureNomCourant")
        e = next((x for x in self.etabs.values() if x.uai == uai), None)
        if e is None:
            e = _Etab(uai, name.replace("$", "-") if name else None, rec.file, rec.line)
        for attr, kind in (("ENTStructureClasses", "D"), ("ENTStructureGroupes", "G")):
            for v in rec.values(attr):
                code, _, label = v.partition("$")
                if code.strip():
                    e.structures.append((code.strip(), kind, label.strip() or None))
        for j in [*rec.values("ENTStructureJointure"), rec.identifier]:
            self.etabs.setdefault(j, e)

    # ------------------------------------------------------------------ pupils
    def pupil(self, rec: AafRecord) -> None:
        key = _key(rec)
        rattach = rec.values("ENTPersonStructRattach")
        uai = next((u for j in rattach if (u := self.uai_of(j))), None)
        classes = rec.values("ENTEleveClasses")
        if uai is None:
            uai = next((u for v in classes if (u := self.uai_of(v.split("$")[0].strip()))),
                       None)
        if uai is None:
            shown = ", ".join(_shown(j) for j in rattach) or "none"
            self.reject(rec, None, "no_school",
                        f"Eleve {_shown(key)}: ENTPersonStructRattach ({shown}) is no "
                        "structure of the feed's EtabEducNat", key)
            return
        s = self.school(uai)
        s.count(rec)
        if not self.first_seen(rec, key):
            return
        try:
            birth = fr_date(rec.first("ENTPersonDateNaissance"))
        except ValueError:
            self.reject(rec, uai, "date_format",
                        f"Eleve {_shown(key)}: ENTPersonDateNaissance is not dd/mm/yyyy",
                        key, "birth_date")
            return
        leave = _lenient_date(rec.first("ENTEleveDateSortieStructRattach"))
        s.rows["persons"].append({
            "person_key": key, "uai": uai, "profile": C.PROFILE_PUPIL, "source": SOURCE,
            "source_id": key, "ine": rec.first("ENTEleveINE"), "last_name": rec.first("sn"),
            "birth_name": rec.first("ENTPersonNomPatro"), "first_name": rec.first("givenName"),
            "birth_date": birth, "sex": _sex(rec), "email": rec.first("mail"),
            "mef": rec.first("ENTEleveMEF"),
            "entry_date": _lenient_date(rec.first("ENTEleveDateEntreeStructRattach")),
            "leave_date": leave, "has_left": bool(leave and leave <= self.today.isoformat()),
            "file": rec.file, "line": rec.line})
        division: str | None = None
        groups: set[str] = set()
        unknown: set[str] = set()
        elsewhere: set[str] = set()
        for attr, kind in (("ENTEleveClasses", "D"), ("ENTEleveGroupes", "G")):
            for v in rec.values(attr):
                p = self.split(rec, attr, v, uai)
                if p is None:
                    continue
                where = self.uai_of(p[0])
                if where is None:
                    unknown.add(p[0])
                    continue
                if where != uai:
                    elsewhere.add(p[0])
                    continue
                code = p[1]
                if kind == "D":
                    if division is not None:
                        if division != code:
                            self.reject(rec, uai, "one_division",
                                        f"Eleve {_shown(key)} is in divisions "
                                        f"{_shown(division)} and {_shown(code)}; kept "
                                        f"{_shown(division)}")
                        continue
                    division = code
                elif code in groups:
                    continue
                else:
                    groups.add(code)
                s.structure(code, kind, rec.file, rec.line)
                s.rows["memberships"].append({
                    "uai": uai, "person_key": key, "code": code, "kind": kind,
                    "role": "pupil", "head_teacher": False, "file": rec.file,
                    "line": rec.line})
        self.skipped(rec, uai, key, unknown, elsewhere)
        self.relatives(rec, uai, key)

    def skipped(self, rec: AafRecord, uai: str, key: str, unknown: set[str],
                elsewhere: set[str]) -> None:
        if unknown:
            self.warn(rec, uai, "unknown_structure",
                      f"{rec.category} {_shown(key)}: classes or groups of structures "
                      f"{', '.join(sorted(map(_shown, unknown)))}, which no EtabEducNat "
                      "record of the feed describes: skipped")
        if elsewhere:
            self.warn(rec, uai, "other_school",
                      f"{rec.category} {_shown(key)}: classes or groups of another school "
                      f"(structures {', '.join(sorted(map(_shown, elsewhere)))}): skipped")

    def relatives(self, rec: AafRecord, uai: str, key: str) -> None:
        authority = set(rec.values("ENTEleveAutoriteParentale"))
        named: set[str] = set()
        for v in rec.values("ENTElevePersRelEleve"):
            p = [x.strip() for x in v.split("$")]
            if len(p) < 4 or not p[0]:
                self.reject(rec, uai, "value_format",
                            f"Eleve {_shown(key)}: an ENTElevePersRelEleve value is not "
                            "id$relation$financial$legal$...: skipped")
                continue
            if p[0] in named:
                continue
            level = "1" if p[0] in authority else RESPONSIBILITY_LEVEL.get(p[3])
            if level is None:
                self.reject(rec, uai, "level_code",
                            f"Eleve {_shown(key)}: relative {_shown(p[0])} has responsibility "
                            f"{_shown(p[3])!r} (not 0, 1 or 2): link skipped")
                continue
            named.add(p[0])
            self.links.append((uai, key, p[0], level, p[1] or None, _flag(p[2]), rec.file,
                               rec.line))
        for gid in rec.values("ENTEleveAutoriteParentale"):
            if gid not in named:
                named.add(gid)
                self.links.append((uai, key, gid, "1", None, None, rec.file, rec.line))

    # ------------------------------------------------------------------ staff
    def staff(self, rec: AafRecord) -> None:
        key = _key(rec)
        functions: list[tuple[str, str]] = []
        for v in rec.values("ENTPersonFonctions"):
            p = [x.strip() for x in v.split("$")]
            if len(p) >= 2 and p[0] and p[1] and p[1] != "-":
                functions.append((p[0], p[1].upper()))
        bad: list[str] = []
        links: dict[tuple[str, str, str], set[str]] = {}
        for attr, kind in (("ENTAuxEnsClasses", "D"), ("ENTAuxEnsClassesMatieres", "D"),
                           ("ENTAuxEnsGroupes", "G"), ("ENTAuxEnsGroupesMatieres", "G")):
            for v in rec.values(attr):
                p = [x.strip() for x in v.split("$")]
                if len(p) < 2 or not p[0] or not p[1]:
                    bad.append(attr)
                    continue
                subj = links.setdefault((p[0], p[1], kind), set())
                if len(p) >= 3 and p[2]:
                    subj.add(p[2])
        heads: set[tuple[str, str]] = set()
        for v in rec.values("ENTAuxEnsClassesPrincipal"):
            p = [x.strip() for x in v.split("$")]
            if len(p) < 2 or not p[0] or not p[1]:
                bad.append("ENTAuxEnsClassesPrincipal")
            else:
                heads.add((p[0], p[1]))
        taught: dict[str, set[str]] = {}
        for v in rec.values("ENTAuxEnsMatiereEnseignEtab"):
            j, _, subject = v.partition("$")
            if (u := self.uai_of(j.strip())) and subject.strip():
                taught.setdefault(u, set()).add(subject.strip())
        jointures = [*rec.values("ENTPersonStructRattach"), *(j for j, _c in functions),
                     *(j for j, _c, _k in links), *(j for j, _c in heads)]
        schools = list(dict.fromkeys(u for j in jointures if (u := self.uai_of(j))))
        if not schools:
            shown = ", ".join(sorted({_shown(j) for j in jointures})) or "none"
            self.reject(rec, None, "no_school",
                        f"PersEducNat {_shown(key)}: none of its structures ({shown}) is a "
                        "structure of the feed's EtabEducNat", key)
            return
        for uai in schools:
            self.school(uai).count(rec)
        if not self.first_seen(rec, key):
            return
        for attr in sorted(set(bad)):
            self.reject(rec, schools[0], "value_format",
                        f"PersEducNat {_shown(key)}: a {attr} value is not "
                        "<structure>$<code>: skipped")
        try:
            birth = fr_date(rec.first("ENTPersonDateNaissance"))
        except ValueError:
            for uai in schools:
                self.reject(rec, uai, "date_format",
                            f"PersEducNat {_shown(key)}: ENTPersonDateNaissance is not "
                            "dd/mm/yyyy", key, "birth_date")
            return
        unknown = {j for j, _c, _k in links if self.uai_of(j) is None}
        unknown |= {j for j, _c in heads if self.uai_of(j) is None}
        self.skipped(rec, schools[0], key, unknown, set())
        presence = (rec.first("PersEducNatPresenceDevantEleves") or "").upper() == "O"
        for uai in schools:
            here = [c for j, c in functions if self.uai_of(j) == uai]
            mine = [(c, j, k) for (j, c, k) in links if self.uai_of(j) == uai]
            function = _main_function(here or [c for _j, c in functions])
            if function is not None:
                profile = C.STS_FUNCTION_PROFILE.get(function, "ETA")
            else:
                profile = C.PROFILE_TEACHER if (mine or presence) else "ETA"
            s = self.school(uai)
            s.rows["persons"].append({
                "person_key": key, "uai": uai, "profile": profile, "source": SOURCE,
                "source_id": key, "last_name": rec.first("sn"),
                "birth_name": rec.first("ENTPersonNomPatro"),
                "first_name": rec.first("givenName"), "birth_date": birth, "sex": _sex(rec),
                "email": rec.first("mail"), "function": function, "has_left": False,
                "file": rec.file, "line": rec.line})
            head_here = {c for j, c in heads if self.uai_of(j) == uai}
            fallback = "|".join(sorted(taught.get(uai, ()))) or None
            linked: set[str] = set()
            for code, j, kind in sorted(mine):
                subjects = links[(j, code, kind)]
                s.structure(code, kind, rec.file, rec.line)
                s.rows["memberships"].append({
                    "uai": uai, "person_key": key, "code": code, "kind": kind,
                    "role": "teacher", "subject": "|".join(sorted(subjects)) or fallback,
                    "head_teacher": kind == "D" and code in head_here, "file": rec.file,
                    "line": rec.line})
                if kind == "D":
                    linked.add(code)
            for code in sorted(head_here - linked):
                s.structure(code, "D", rec.file, rec.line)
                s.rows["memberships"].append({
                    "uai": uai, "person_key": key, "code": code, "kind": "D",
                    "role": "teacher", "subject": fallback, "head_teacher": True,
                    "file": rec.file, "line": rec.line})

    # ------------------------------------------------------------------ guardians
    def guardians(self, records: list[AafRecord]) -> None:
        key_of: dict[str, str] = {}
        for rec in records:
            key_of.setdefault(rec.identifier, _key(rec))
            key_of.setdefault(_key(rec), _key(rec))
        present = set(key_of.values())
        where: dict[str, dict[str, None]] = {}
        missing: dict[tuple[str, str, str, int], list[str]] = {}
        for uai, pupil, gid, level, relation, pays, file, line in self.links:
            gkey = key_of.get(gid, gid)
            if gkey not in present:
                missing.setdefault((uai, pupil, file, line), []).append(gid)
                continue
            where.setdefault(gkey, {})[uai] = None
            self.school(uai).rows["guardian_links"].append({
                "uai": uai, "pupil_key": pupil, "guardian_key": gkey, "level": level,
                "legal": level == "1", "relation": relation, "pays_fees": pays,
                "file": file, "line": line})
        for (uai, pupil, file, line), gids in missing.items():
            self.school(uai).result.warnings.append(RecordWarning(
                file, uai, line, "Eleve", "unknown_guardian",
                f"Eleve {_shown(pupil)}: relatives {', '.join(map(_shown, gids))} have no "
                "PersRelEleve record in the feed: links skipped"))
        for rec in records:
            key = _key(rec)
            schools = list(where.get(key, {}))
            if not schools:
                self.reject(rec, None, "no_pupil",
                            f"PersRelEleve {_shown(key)}: no pupil of the feed names this "
                            "person as a relative", key)
                continue
            for uai in schools:
                self.school(uai).count(rec)
            if not self.first_seen(rec, key):
                continue
            for uai in schools:
                self.school(uai).rows["persons"].append({
                    "person_key": key, "uai": uai, "profile": C.PROFILE_GUARDIAN,
                    "source": SOURCE, "source_id": key, "last_name": rec.first("sn"),
                    "birth_name": rec.first("ENTPersonNomPatro"),
                    "first_name": rec.first("givenName"), "sex": _sex(rec),
                    "email": rec.first("mail"),
                    "mobile": rec.first("mobile") or rec.first("ENTPersonMobileSMS"),
                    "has_left": False, "file": rec.file, "line": rec.line})

    def result(self) -> AafSchools:
        for uai in sorted(self.schools):
            s = self.schools[uai]
            s.result.tables = s.tables()
            s.result.rejected.sort(key=lambda r: (r.file, r.line or 0))
            self.out[uai] = s.result
            self.out.file_records[uai] = dict(s.files)
        return self.out


def _main_function(codes: list[str]) -> str | None:
    """Of a person's function codes, the one whose profile ranks first (``PROFILE_RANK``)."""
    if not codes:
        return None
    return min(codes, key=lambda c: PROFILE_RANK.index(C.STS_FUNCTION_PROFILE.get(c, "ETA")))


def aaf_school_tables(academy: str, structures: Iterable[AafRecord],
                      persons: Iterable[AafRecord],
                      today: dt.date | None = None) -> AafSchools:
    """The canonical tables of each school the records name (module docstring).

    ``academy``: the academy code (the ``schools`` table's ``academy``); ``structures``: the
    ``EtabEducNat`` records; ``persons``: the current ``Eleve``, ``PersRelEleve`` and
    ``PersEducNat`` records (``add`` records, deltas already applied; a ``delete`` is
    skipped, other categories are rejected into ``unplaced``)."""
    b = _Builder(academy, today or dt.date.today())
    for rec in structures:
        b.etab(rec)
    relatives: list[AafRecord] = []
    for rec in persons:
        if rec.op == "delete":
            continue
        if rec.category == "Eleve":
            b.pupil(rec)
        elif rec.category == "PersEducNat":
            b.staff(rec)
        elif rec.category == "PersRelEleve":
            relatives.append(rec)
        else:
            b.reject(rec, None, "category",
                     f"{_shown(rec.category)} {_shown(rec.identifier)}: not a person record")
    b.guardians(relatives)
    return b.result()
