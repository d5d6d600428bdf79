"""Streaming readers for SIECLE (BEE) exports: pupils, guardians, nomenclatures, structures.

Each reader walks the document once with lxml iterparse, clearing elements as it goes, and
fills column lists, packed every few thousand rows into Arrow-backed and categorical columns
(``etl.read.base.Columns``; no per-record dicts kept). Records that cannot be used are
returned as ``RecordRejected`` (file, school, line, rule); the document itself is rejected
whole only when it cannot be read.
"""

from __future__ import annotations

import datetime as dt
import re
from array import array
from typing import Any

import numpy as np
import pandas as pd

from etl.discover.xmlsafe import XmlSource
from etl.errors import RecordRejected
from etl.read import canonical as C
from etl.read.base import (
    Columns,
    ReadResult,
    UnknownElements,
    blank_to_none,
    children,
    fr_date,
    reject,
    release,
    stream,
)
from etl.read.canonical import Tables

#: pseudo-divisions SIECLE uses to park pupils: never a real class
PSEUDO_DIVISION = re.compile(
    r"^(INACTIFS?|SORTIS?|ARCHIVES?|PARTIS?|ZZ.*|_?NON[ _]?AFFECTES?)$", re.IGNORECASE
)
#: of those, the ones SIECLE parks pupils in once they no longer attend: a pupil whose only
#: division is one of them has left (as with a past DATE_SORTIE); the others (``NON
#: AFFECTES``, ``ZZ...``) park a pupil still enrolled, who keeps an account with no class
LEFT_DIVISION = re.compile(r"^(INACTIFS?|SORTIS?|ARCHIVES?|PARTIS?)$", re.IGNORECASE)
SEXE = {"1": "M", "2": "F"}
#: blocks we do not use but must free while streaming (addresses, options, grants)
DROP = ("OPTION", "ADRESSE", "BOURSE")
#: container -> the elements the readers read in it (anything else there is reported,
#: ``UnknownElements``); names as SIECLE/BEE writes them (BEE spec, public exports)
EXPECTED_ELEVES = {"ELEVES": frozenset({"ELEVE"}),
                   "STRUCTURES": frozenset({"STRUCTURES_ELEVE"}),
                   "STRUCTURES_ELEVE": frozenset({"STRUCTURE"})}
EXPECTED_RESPONSABLES = {"PERSONNES": frozenset({"PERSONNE"}),
                         "RESPONSABLES": frozenset({"RESPONSABLE_ELEVE"})}
EXPECTED_NOMENCLATURES = {"MEFS": frozenset({"MEF"}), "MATIERES": frozenset({"MATIERE"})}
EXPECTED_STRUCTURES = {"DIVISIONS": frozenset({"DIVISION"}), "GROUPES": frozenset({"GROUPE"}),
                       "MEFS_APPARTENANCE": frozenset({"MEF_APPARTENANCE"}),
                       "DIVISIONS_APPARTENANCE": frozenset({"DIVISION_APPARTENANCE"})}


def _container(el: Any, expected: dict[str, frozenset[str]]) -> bool:
    """Whether ``el`` is one of the document's lists (a child of DONNEES) the reader knows."""
    parent = el.getparent()
    return el.tag in expected and parent is not None and parent.tag == "DONNEES"


def pupil_key(uai: str, eleve_id: str) -> str:
    return f"SIECLE${uai}${eleve_id}"


def guardian_key(uai: str, personne_id: str) -> str:
    return f"SIECLE-RESP${uai}${personne_id}"


def read_siecle_eleves(src: XmlSource, uai: str, today: dt.date | None = None) -> ReadResult:
    """BEE_ELEVES: pupils (persons ELV) and their divisions and groups (memberships).

    No per-pupil set or dict is kept while streaming (on a large export they weighed as much
    as the tables): each row leaves an 8-byte hash of what must not repeat; once the rows are
    packed, only rows whose hash repeats are compared exactly, and duplicate ELEVE_IDs,
    second divisions and repeated groups are reported as if caught in document order.
    """
    today = today or dt.date.today()
    # person_key is appended as the bare ELEVE_ID and prefixed when packed
    prefixes = {"person_key": pupil_key(uai, "")}
    persons = Columns("persons", C.PERSONS, prefixes=prefixes)
    members = Columns("memberships", C.MEMBERSHIPS, prefixes=prefixes)
    res = ReadResult(Tables())
    name = src.short_name
    bad_dates: list[tuple[str, RecordRejected]] = []  # (ELEVE_ID, rejection), in order
    # one 8-byte hash per row, what duplicates are looked for in (then checked exactly)
    person_hash, member_hash = array("q"), array("q")
    parked: set[str] = set()  # ELEVE_IDs placed in a LEFT_DIVISION (few)

    unknown = UnknownElements(src, uai, EXPECTED_ELEVES)
    for el in stream(src, ("ELEVE", "STRUCTURES_ELEVE", "ELEVES", "STRUCTURES", *DROP), uai):
        if el.tag in DROP:
            pass
        elif el.tag in ("ELEVES", "STRUCTURES"):
            if _container(el, EXPECTED_ELEVES):
                unknown.check(el)
            else:
                continue  # the same name elsewhere: freed with what holds it
        elif el.tag == "ELEVE":
            res.records += 1
            eid = (el.get("ELEVE_ID") or "").strip()
            line = el.sourceline
            f = children(el)
            if not eid:
                res.rejected.append(
                    reject(src, uai, el, "ELEVE", "required", "ELEVE_ID attribute missing")
                )
            else:
                try:
                    birth = fr_date(f.get("DATE_NAISS"))
                    leave = fr_date(f.get("DATE_SORTIE"))
                    entry = fr_date(f.get("DATE_ENTREE"))
                except ValueError:
                    r = reject(src, uai, el, "ELEVE", "date_format",
                               f"ELEVE_ID {eid}: a date is not dd/mm/yyyy",
                               source_key=pupil_key(uai, eid))
                    r.field = _bad_date(f)
                    bad_dates.append((eid, r))
                else:
                    person_hash.append(hash(eid))
                    persons.append(
                        person_key=eid,
                        uai=uai,
                        profile=C.PROFILE_PUPIL,
                        source="SIECLE",
                        source_id=eid,
                        ine=blank_to_none(f.get("ID_NATIONAL")),
                        last_name=f.get("NOM_USAGE") or f.get("NOM_DE_FAMILLE"),
                        birth_name=f.get("NOM_DE_FAMILLE"),
                        first_name=f.get("PRENOM"),
                        birth_date=birth,
                        sex=SEXE.get((f.get("CODE_SEXE") or "").strip()),
                        email=blank_to_none(f.get("MEL")),
                        mef=blank_to_none(f.get("CODE_MEF")),
                        entry_date=entry,
                        leave_date=leave,
                        has_left=bool(leave and leave <= today.isoformat()),
                        file=name,
                        line=line,
                    )
        else:  # STRUCTURES_ELEVE
            eid = (el.get("ELEVE_ID") or "").strip()
            unknown.check(el)
            for st in el.iterchildren("STRUCTURE"):
                s = children(st)
                code = (s.get("CODE_STRUCTURE") or "").strip()
                kind = (s.get("TYPE_STRUCTURE") or "").strip().upper()
                if not code or kind not in ("D", "G") or PSEUDO_DIVISION.match(code):
                    if kind == "D" and LEFT_DIVISION.match(code):
                        parked.add(eid)
                    continue
                # one division per pupil, each group once
                member_hash.append(hash((eid, "D") if kind == "D" else (eid, "G", code)))
                members.append(
                    uai=uai,
                    person_key=eid,
                    code=code,
                    kind=kind,
                    role="pupil",
                    head_teacher=False,
                    file=name,
                    line=st.sourceline,
                )
        release(unknown.released(el))
    res.warnings = unknown.warnings()
    late = _first_eleve_only(src, uai, persons, person_hash, bad_dates)
    extra = _one_division(src, uai, members, member_hash, len(pupil_key(uai, "")))
    del person_hash, member_hash
    # rejections in document order, as a one-pass reader would have found them
    res.rejected = sorted([*res.rejected, *late, *extra], key=lambda r: r.line or 0)
    res.tables["persons"] = persons.frame()
    res.tables["memberships"] = members.frame()
    if parked:
        _left_through_division(res.tables, parked, pupil_key(uai, ""))
    return res


#: a pupil's dates, as the canonical column each fills
_DATES = (("DATE_NAISS", "birth_date"), ("DATE_ENTREE", "entry_date"),
          ("DATE_SORTIE", "leave_date"))


def _bad_date(f: dict[str, str]) -> str | None:
    """Which of a rejected pupil's dates is not dd/mm/yyyy (None when several are)."""
    bad = []
    for tag, col in _DATES:
        try:
            fr_date(f.get(tag))
        except ValueError:
            bad.append(col)
    return bad[0] if len(bad) == 1 else None


def _left_through_division(tables: Tables, parked: set[str], prefix: str) -> None:
    """Pupils SIECLE placed in "Inactifs" (``LEFT_DIVISION``) and in no real division have
    left: marked so, as a past DATE_SORTIE would (absent, then disabled, then deleted)."""
    m = tables["memberships"]
    placed = set(m.loc[m["kind"] == "D", "person_key"].astype(str)) if len(m) else set()
    p = tables["persons"]
    left = {prefix + eid for eid in parked} - placed
    mask = p["person_key"].astype(str).isin(left)
    if mask.any():
        p.loc[mask, "has_left"] = True


def _candidates(hashes: array[int]) -> np.ndarray:
    """Positions of the rows whose hash is not unique: the only rows that can repeat an
    earlier one (equal values have equal hashes); they are then compared exactly."""
    h = np.frombuffer(hashes, dtype=np.int64) if len(hashes) else np.zeros(0, dtype=np.int64)
    return np.flatnonzero(pd.Series(h, copy=False).duplicated(keep=False).to_numpy())


def _first_eleve_only(src: XmlSource, uai: str, persons: Columns, hashes: array[int],
                      bad_dates: list[tuple[str, RecordRejected]]) -> list[RecordRejected]:
    """Keep the first ELEVE of each ELEVE_ID; a later one is rejected (``unique``), even when
    its dates are bad too. A record with bad dates does not count as the first."""
    name = src.short_name
    out: list[RecordRejected] = []
    first_line: dict[str, int] = {}  # ELEVE_ID -> line of the ELEVE kept
    dup = np.zeros(len(persons), dtype=bool)
    at = _candidates(hashes)
    for i, eid, line in zip(at, persons.take("source_id", at), persons.take("line", at),
                            strict=True):
        if eid in first_line:
            dup[i] = True
        else:
            first_line[eid] = line
    if bad_dates:
        wanted = {eid for eid, _r in bad_dates} - set(first_line)
        h = np.frombuffer(hashes, dtype=np.int64) if len(hashes) else np.zeros(0, np.int64)
        at = np.flatnonzero(np.isin(h, [hash(e) for e in wanted]))
        for eid, line in zip(persons.take("source_id", at), persons.take("line", at),
                             strict=True):
            if eid in wanted:
                first_line[eid] = line
    for eid, r in bad_dates:
        seen_at = first_line.get(eid)
        if seen_at is not None and seen_at < (r.line or 0):
            r = RecordRejected(name, uai, r.line, "ELEVE", "unique",
                               f"ELEVE_ID {eid} appears twice")
        out.append(r)
    if dup.any():
        at = np.flatnonzero(dup)
        for eid, line in zip(persons.take("source_id", at), persons.take("line", at),
                             strict=True):
            out.append(RecordRejected(name, uai, line, "ELEVE", "unique",
                                      f"ELEVE_ID {eid} appears twice"))
        persons.keep(~dup)
    return out


def _one_division(src: XmlSource, uai: str, members: Columns, hashes: array[int],
                  prefix_len: int) -> list[RecordRejected]:
    """One division per pupil (the first; a different later one is rejected, the same one
    repeated is dropped) and each group once (duplicated STRUCTURES_ELEVE blocks)."""
    out: list[RecordRejected] = []
    at = _candidates(hashes)
    if not len(at):
        return out
    drop = np.zeros(len(members), dtype=bool)
    division: dict[str, str] = {}
    groups: set[tuple[str, str]] = set()
    for i, key, kind, code, line in zip(
            at, members.take("person_key", at), members.take("kind", at),
            members.take("code", at), members.take("line", at), strict=True):
        if kind == "D":
            prev = division.get(key)
            if prev is None:
                division[key] = code
                continue
            drop[i] = True
            if prev != code:
                out.append(RecordRejected(
                    src.short_name, uai, line, "STRUCTURES_ELEVE", "one_division",
                    f"ELEVE_ID {key[prefix_len:]} is in divisions {prev} and {code}; "
                    f"kept {prev}"))
        elif (key, code) in groups:
            drop[i] = True
        else:
            groups.add((key, code))
    if drop.any():
        members.keep(~drop)
    return out


RESP_LEGAL_LEVEL = {"1": "1", "2": "1", "0": "3"}


def _bool(v: str | None) -> str | None:
    if v is None or v.strip() == "":
        return None
    return "1" if v.strip().lower() in ("1", "true", "oui", "o") else "0"


def read_siecle_responsables(src: XmlSource, uai: str) -> ReadResult:
    """BEE_RESPONSABLES: guardians (persons TUT) and their links to pupils.

    Both conventions are read: NIVEAU_RESPONSABILITE (1 legal, 2 in charge, 3 contact) and the
    older RESP_LEGAL (1 and 2 legal, 0 other contact, mapped to level 3).
    """
    persons = Columns("persons", C.PERSONS)
    links = Columns("guardian_links", C.GUARDIAN_LINKS)
    res = ReadResult(Tables())
    seen: set[str] = set()
    seen_links: set[tuple[str, str]] = set()
    name = src.short_name
    unknown = UnknownElements(src, uai, EXPECTED_RESPONSABLES)
    for el in stream(src, ("PERSONNE", "RESPONSABLE_ELEVE", *EXPECTED_RESPONSABLES, *DROP),
                     uai):
        if el.tag in DROP:
            release(el)
            continue
        if el.tag in EXPECTED_RESPONSABLES:
            if _container(el, EXPECTED_RESPONSABLES):
                unknown.check(el)
                release(el)
            continue
        res.records += 1
        f = children(el)
        if el.tag == "PERSONNE":
            pid = (el.get("PERSONNE_ID") or "").strip()
            if not pid:
                res.rejected.append(
                    reject(src, uai, el, "PERSONNE", "required", "PERSONNE_ID attribute missing")
                )
            elif pid in seen:
                res.rejected.append(
                    reject(src, uai, el, "PERSONNE", "unique", f"PERSONNE_ID {pid} appears twice")
                )
            else:
                seen.add(pid)
                civ = (f.get("LC_CIVILITE") or "").strip().upper()
                persons.append(
                    person_key=guardian_key(uai, pid),
                    uai=uai,
                    profile=C.PROFILE_GUARDIAN,
                    source="SIECLE",
                    source_id=pid,
                    last_name=f.get("NOM_USAGE") or f.get("NOM_DE_FAMILLE"),
                    birth_name=f.get("NOM_DE_FAMILLE"),
                    first_name=f.get("PRENOM"),
                    sex={"M.": "M", "M": "M", "MME": "F", "MLLE": "F"}.get(civ),
                    email=blank_to_none(f.get("MEL")),
                    mobile=blank_to_none(f.get("TEL_PORTABLE")),
                    has_left=False,
                    file=name,
                    line=el.sourceline,
                )
        else:
            eid = (f.get("ELEVE_ID") or "").strip()
            pid = (f.get("PERSONNE_ID") or "").strip()
            if not eid or not pid:
                res.rejected.append(
                    reject(
                        src,
                        uai,
                        el,
                        "RESPONSABLE_ELEVE",
                        "required",
                        "ELEVE_ID or PERSONNE_ID missing",
                    )
                )
            elif (eid, pid) not in seen_links:
                seen_links.add((eid, pid))
                # the newer NIVEAU_RESPONSABILITE wins; an empty one falls back to RESP_LEGAL
                level = blank_to_none(f.get("NIVEAU_RESPONSABILITE"))
                if level is None:
                    level = RESP_LEGAL_LEVEL.get((f.get("RESP_LEGAL") or "").strip())
                links.append(
                    uai=uai,
                    pupil_key=pupil_key(uai, eid),
                    guardian_key=guardian_key(uai, pid),
                    level=level,
                    legal=level == "1",
                    relation=blank_to_none(f.get("CODE_PARENTE")),
                    pays_fees=_bool(f.get("PAIE_FRAIS_SCOLAIRES")),
                    lives_with=_bool(f.get("HEBERGE_ELEVE")),
                    contact_first=_bool(f.get("A_CONTACTER_EN_PRIORITE")),
                    file=name,
                    line=el.sourceline,
                )
        release(unknown.released(el))
    res.warnings = unknown.warnings()
    res.tables["persons"] = persons.frame()
    res.tables["guardian_links"] = links.frame()
    return res


def read_siecle_nomenclatures(src: XmlSource, uai: str) -> ReadResult:
    """BEE_NOMENCLATURES: MEFs and subjects (MATIERES)."""
    mefs = Columns("mefs", C.MEFS)
    subjects = Columns("subjects", C.SUBJECTS)
    res = ReadResult(Tables())
    unknown = UnknownElements(src, uai, EXPECTED_NOMENCLATURES)
    for el in stream(src, ("MEF", "MATIERE", *EXPECTED_NOMENCLATURES), uai):
        if el.tag in EXPECTED_NOMENCLATURES:
            if _container(el, EXPECTED_NOMENCLATURES):
                unknown.check(el)
                release(el)
            continue
        res.records += 1
        f = children(el)
        if el.tag == "MEF":
            code = (el.get("CODE_MEF") or "").strip()
            if code:
                mefs.append(
                    uai=uai,
                    code=code,
                    formation=blank_to_none(f.get("FORMATION")),
                    label=blank_to_none(f.get("LIBELLE_LONG")),
                    attached_to=blank_to_none(f.get("MEF_RATTACHEMENT")),
                    source="SIECLE",
                )
        else:
            code = (el.get("CODE_MATIERE") or "").strip()
            if code:
                subjects.append(
                    uai=uai,
                    code=code,
                    short_label=blank_to_none(f.get("LIBELLE_COURT")),
                    long_label=blank_to_none(f.get("LIBELLE_LONG")),
                    source="SIECLE",
                )
        release(unknown.released(el))
    res.warnings = unknown.warnings()
    res.tables["mefs"] = mefs.frame()
    res.tables["subjects"] = subjects.frame()
    return res


def _codes(el: Any, path: str) -> str | None:
    vals = [(x.text or "").strip() for x in el.iterfind(path)]
    vals = [v for v in vals if v]
    return "|".join(sorted(set(vals))) or None


def read_siecle_structures(src: XmlSource, uai: str) -> ReadResult:
    """BEE_STRUCTURES: divisions (classes) and groups with their MEFs and parent divisions."""
    structures = Columns("structures", C.STRUCTURES)
    res = ReadResult(Tables())
    name = src.short_name
    unknown = UnknownElements(src, uai, EXPECTED_STRUCTURES)
    for el in stream(src, ("DIVISION", "GROUPE", "DIVISIONS", "GROUPES"), uai):
        if el.tag in ("DIVISIONS", "GROUPES"):
            if _container(el, EXPECTED_STRUCTURES):
                unknown.check(el)
                release(el)
            continue
        code = (el.get("CODE_STRUCTURE") or "").strip()
        if el.getparent() is not None and el.getparent().tag not in ("DIVISIONS", "GROUPES"):
            continue  # a nested reference, not a structure definition
        res.records += 1
        unknown.within(el)
        if not code:
            res.rejected.append(reject(src, uai, el, el.tag, "required", "CODE_STRUCTURE missing"))
        elif not PSEUDO_DIVISION.match(code):
            f = children(el)
            is_div = el.tag == "DIVISION"
            structures.append(
                uai=uai,
                code=code,
                kind="D" if is_div else "G",
                label=blank_to_none(f.get("LIBELLE_LONG")) or code,
                mefs=_codes(el, "MEFS_APPARTENANCE/MEF_APPARTENANCE/CODE_MEF") if is_div else None,
                divisions=None
                if is_div
                else _codes(el, "DIVISIONS_APPARTENANCE/DIVISION_APPARTENANCE/CODE_STRUCTURE"),
                source="SIECLE",
                file=name,
                line=el.sourceline,
            )
        release(unknown.released(el))
    res.warnings = unknown.warnings()
    res.tables["structures"] = structures.frame()
    return res
