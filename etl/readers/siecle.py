"""Streaming readers for SIECLE (BEE) exports: pupils, guardians, nomenclatures, structures.

Each reader walks the document once with lxml iterparse, clearing elements as it goes, and
fills column lists (no per-record dicts kept). Records that cannot be used are returned as
``RecordRejected`` (file, school, line, rule); the document itself is rejected whole only
when it cannot be read.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl import canonical as C
from etl.canonical import Tables
from etl.errors import RecordRejected
from etl.readers.base import (
    Columns,
    ReadResult,
    blank_to_none,
    children,
    codes,
    first_rows,
    fr_date,
    reject,
    release,
    stream,
)
from etl.xmlsafe import XmlSource

#: pseudo-divisions SIECLE uses to park pupils: never a real class
PSEUDO_DIVISION = re.compile(
    r"^(INACTIFS?|SORTIS?|ARCHIVES?|PARTIS?|ZZ.*|_?NON[ _]?AFFECTES?)$", re.IGNORECASE
)
SEXE = {"1": "M", "2": "F"}
#: blocks we do not use but must free while streaming (addresses, options, grants)
DROP = ("OPTION", "ADRESSE", "BOURSE")


def pupil_key(uai: str, eleve_id: str) -> str:
    return f"SIECLE${uai}${eleve_id}"


def guardian_key(uai: str, personne_id: str) -> str:
    return f"SIECLE-RESP${uai}${personne_id}"


def read_siecle_eleves(src: XmlSource, uai: str, today: dt.date | None = None) -> ReadResult:
    """BEE_ELEVES: pupils (persons ELV) and their divisions and groups (memberships).

    No per-pupil bookkeeping is kept while streaming (on a large export it weighed as much as
    the tables): duplicate ELEVE_IDs, second divisions and repeated groups are found once the
    tables are built, with vectorized ``duplicated``, and reported exactly as if they had been
    caught in document order.
    """
    today = today or dt.date.today()
    persons = Columns("persons", C.PERSONS)
    members = Columns("memberships", C.MEMBERSHIPS)
    res = ReadResult(Tables())
    name = src.short_name
    key_of = functools.partial(pupil_key, uai)
    bad_dates: list[tuple[str, RecordRejected]] = []  # (ELEVE_ID, rejection), in order

    for el in stream(src, ("ELEVE", "STRUCTURES_ELEVE", *DROP), uai):
        if el.tag in DROP:
            pass
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
                    bad_dates.append((eid, reject(
                        src, uai, el, "ELEVE", "date_format",
                        f"ELEVE_ID {eid}: a date is not dd/mm/yyyy",
                        source_key=pupil_key(uai, eid),
                    )))
                else:
                    persons.append(
                        person_key=key_of(eid),
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
            for st in el.iterchildren("STRUCTURE"):
                s = children(st)
                code = (s.get("CODE_STRUCTURE") or "").strip()
                kind = (s.get("TYPE_STRUCTURE") or "").strip().upper()
                if not code or kind not in ("D", "G") or PSEUDO_DIVISION.match(code):
                    continue
                members.append(
                    uai=uai,
                    person_key=key_of(eid),
                    code=code,
                    kind=kind,
                    role="pupil",
                    head_teacher=False,
                    file=name,
                    line=st.sourceline,
                )
        release(el)
    late = _first_eleve_only(src, uai, persons, bad_dates)
    extra = _one_division(src, uai, members, len(pupil_key(uai, "")))
    # rejections in document order, as a one-pass reader would have found them
    res.rejected = sorted([*res.rejected, *late, *extra], key=lambda r: r.line or 0)
    res.tables["persons"] = persons.frame()
    res.tables["memberships"] = members.frame()
    return res


def _first_eleve_only(src: XmlSource, uai: str, persons: Columns,
                      bad_dates: list[tuple[str, RecordRejected]]) -> list[RecordRejected]:
    """Keep the first ELEVE of each ELEVE_ID; a later one is rejected (``unique``), even when
    its dates are bad too. A record with bad dates does not count as the first."""
    name = src.short_name
    out: list[RecordRejected] = []
    ids = persons.column("source_id")
    dup = ~first_rows(codes(ids))
    first_line: dict[str, int] = {}
    if bad_dates:
        wanted = pa.array(sorted({eid for eid, _r in bad_dates}), type=ids.type)
        at = np.flatnonzero(~dup & pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False))
        first_line = dict(zip(persons.take("source_id", at), persons.take("line", at),
                              strict=True))
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


def _one_division(src: XmlSource, uai: str, members: Columns, prefix_len: int
                  ) -> list[RecordRejected]:
    """One division per pupil (the first; a different later one is rejected, the same one
    repeated is dropped) and each group once (duplicated STRUCTURES_ELEVE blocks)."""
    out: list[RecordRejected] = []
    if not len(members):
        return out
    is_div = pc.equal(members.column("kind"), "D").fill_null(False).to_numpy(
        zero_copy_only=False)
    # a division is "the first" per pupil, a group per (pupil, code)
    first = first_rows(codes(members.column("person_key")),
                       np.where(is_div, 0, codes(members.column("code"))))
    later_div = is_div & ~first
    if later_div.any():
        at = np.flatnonzero(later_div)
        keys = members.take("person_key", at)
        firsts = np.flatnonzero(is_div & first & pc.is_in(
            members.column("person_key"), value_set=pa.array(sorted(set(keys)))
        ).to_numpy(zero_copy_only=False))
        first_code = dict(zip(members.take("person_key", firsts), members.take("code", firsts),
                              strict=True))
        for key, code, line in zip(keys, members.take("code", at), members.take("line", at),
                                   strict=True):
            prev = first_code[key]
            if prev != code:
                out.append(RecordRejected(
                    src.short_name, uai, line, "STRUCTURES_ELEVE", "one_division",
                    f"ELEVE_ID {key[prefix_len:]} is in divisions {prev} and {code}; "
                    f"kept {prev}"))
    if not first.all():
        members.keep(first)
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
    for el in stream(src, ("PERSONNE", "RESPONSABLE_ELEVE", *DROP), uai):
        if el.tag in DROP:
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
        release(el)
    res.tables["persons"] = persons.frame()
    res.tables["guardian_links"] = links.frame()
    return res


def read_siecle_nomenclatures(src: XmlSource, uai: str) -> ReadResult:
    """BEE_NOMENCLATURES: MEFs and subjects (MATIERES)."""
    mefs = Columns("mefs", C.MEFS)
    subjects = Columns("subjects", C.SUBJECTS)
    res = ReadResult(Tables())
    for el in stream(src, ("MEF", "MATIERE"), uai):
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
        release(el)
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
    for el in stream(src, ("DIVISION", "GROUPE"), uai):
        code = (el.get("CODE_STRUCTURE") or "").strip()
        if el.getparent() is not None and el.getparent().tag not in ("DIVISIONS", "GROUPES"):
            continue  # a nested reference, not a structure definition
        res.records += 1
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
        release(el)
    res.tables["structures"] = structures.frame()
    return res
